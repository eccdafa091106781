"""``mtlskit serve package.module:app --config gateway.toml``: an ASGI app behind mTLS, in-process.

The gateway with ``[upstream] asgi`` set to APP: the same listener, both
verification gates, policy, logs, reload and drain, and no proxy hop. The app
finds the verified client in ``scope["extensions"]["tls"]`` (ASGI TLS extension
v0.2) and ``scope["extensions"]["mtlskit"]["decision"]``. The config's
``[upstream]`` section may be left out; if it names ``urls`` that is an error.
"""

from __future__ import annotations

import os
import sys

import click

from mtlskit.cli.gateway import run_configured
from mtlskit.gateway import load_config


@click.command("serve")
@click.argument("app")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="gateway.toml (DESIGN.md §6) without [upstream] urls; paths relative to its directory.",
)
@click.option(
    "--app-dir",
    default=".",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Put this directory first on sys.path before importing APP (as uvicorn does).",
)
def command(app: str, config_path: str, app_dir: str) -> int:
    """Serve the ASGI app APP (package.module:attribute) over mTLS (uvloop when installed)."""
    path = os.path.abspath(app_dir)
    if path not in sys.path:
        sys.path.insert(0, path)
    config = load_config(config_path, asgi=app)
    # imports APP first: an import error is exit 2; a reload re-reads config_path for APP
    return run_configured(config, source=config_path, serve_app=app)
