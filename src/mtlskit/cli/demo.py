"""``mtlskit demo``: the whole story on embedded defaults, in a temporary directory."""

from __future__ import annotations

import click


@click.command("demo")
def command() -> int:
    """Mint clean and defective client certificates, then inspect and lint each.

    Everything happens in a temporary directory that is removed afterwards; the
    exit code is 0 only if every certificate got the verdict it should.

    \b
    Example:
      mtlskit demo
    """
    from mtlskit.demo import run

    return run()
