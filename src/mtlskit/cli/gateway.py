"""``mtlskit gateway --config FILE``: run the mTLS reverse proxy until SIGTERM.

SIGHUP reloads trust, CRLs, policy and the server certificate; SIGTERM drains.
A bad config is exit 2 with one line naming the file and the key.
"""

from __future__ import annotations

import asyncio

import click

from mtlskit.gateway import Gateway, load_config


async def _serve(config_path: str) -> None:
    gateway = Gateway(load_config(config_path))
    await gateway.serve()


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
    try:
        import uvloop
    except ImportError:
        asyncio.run(_serve(config_path))
    else:
        uvloop.run(_serve(config_path))
    return 0
