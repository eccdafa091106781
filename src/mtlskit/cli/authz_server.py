"""``mtlskit authz-server --config FILE``: the decision service behind nginx, HAProxy, Envoy."""

from __future__ import annotations

import click

from mtlskit.authzserver import load_config, serve


@click.command("authz-server")
@click.option(
    "--config",
    "config_file",
    required=True,
    type=click.Path(dir_okay=False, path_type=str),
    help="authz.toml: listen address, [client_auth] trust/CRLs/policy, cache, log.",
)
@click.option("--check", is_flag=True, help="Load the config and every file it names, then exit.")
def command(*, config_file: str, check: bool) -> int:
    """Answer nginx auth_request, Envoy ext_authz and HAProxy (Lua) checks for client certificates.

    Allowed requests get 200 and identity headers for the proxy to forward; denied
    ones a bare 403, with the reasons in the JSON decision log only. SIGHUP
    reloads trust, CRLs and policy. Generate the proxy side with `mtlskit config`.

    \b
    Example:
      mtlskit authz-server --config authz.toml
    """
    config = load_config(config_file)
    if check:
        from mtlskit.authzserver import build_decision_point

        build_decision_point(config)
        click.echo(f"{config_file}: ok")
        return 0
    serve(config)
    return 0
