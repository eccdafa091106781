"""``mtlskit gateway --config FILE``: run the mTLS reverse proxy until SIGTERM.

SIGHUP reloads trust, CRLs, policy and the server certificate; SIGTERM drains.
A bad config is exit 2 with one line naming the file and the key.
"""

from __future__ import annotations

import click

from mtlskit.gateway import Gateway, GatewayConfig, load_config


@click.command("gateway")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="gateway.toml (DESIGN.md §6); relative paths in it are relative to its directory.",
)
@click.option(
    "--check",
    is_flag=True,
    help="Load the config and every file it names, then exit (0 if usable, 2 if not).",
)
def command(config_path: str, check: bool) -> int:
    """Run the mTLS-terminating reverse proxy (uvloop when installed)."""
    config = load_config(config_path)
    if check:
        from mtlskit.gateway._generation import load_generation

        load_generation(config)
        click.echo(f"{config_path}: ok")
        return 0
    return run_configured(config, source=config_path)  # read once, as --check reads it


def run_configured(
    config: GatewayConfig, *, source: str | None = None, serve_app: str | None = None
) -> int:
    """One gateway process, or with ``[listen] workers`` > 1 a master and its workers.

    ``source``: gateway.toml, which a reload (SIGHUP, the file poll) reads again;
    ``serve_app``: ``mtlskit serve``'s APP, which that re-read keeps (the file names none)."""
    count = config.listen.worker_count
    if count > 1:
        from mtlskit.gateway._workers import run_workers

        return run_workers(config, count, source=source, serve_app=serve_app)
    Gateway(config, source=source, serve_app=serve_app).run()  # until SIGTERM or SIGINT
    return 0
