"""Where human output goes decides its shape: rich tables on a terminal, one line per row elsewhere.

A table sized to a pipe (80 columns) folds its cells across lines, so
``mtlskit audit cacert.pem | grep public_root_in_client_trust_store`` found nothing.
When stdout is not a terminal, or ``NO_COLOR`` is set, or ``TERM=dumb``, every command
prints each finding or row as one self-contained line (as git and kubectl do) and
never imports rich: plain lines cost microseconds where a rich table cost ~1.5 ms.
Every command that reports asks ``rich_output()`` and nothing else.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence
from typing import Final

import click

__all__ = ["aligned", "echo_lines", "one_line", "rich_output"]

# C0 controls and DEL become spaces: a newline in a subject or message must not split a row
# (nor an escape sequence reach the terminal of whoever pipes the output into `less -R`).
_CONTROLS: Final = {code: " " for code in (*range(0x20), 0x7F)}


def rich_output() -> bool:
    """True when stdout is a terminal and the environment does not ask for plain text."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    return sys.stdout.isatty()


def one_line(text: object) -> str:
    """``text`` with every control character (newlines, tabs, escapes) turned into a space."""
    return str(text).translate(_CONTROLS)


def echo_lines(lines: Iterable[str]) -> None:
    """Write the lines to stdout in one call (a thousand findings, one write)."""
    text = "\n".join(lines)
    if text:
        click.echo(text)


def aligned(header: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    """A header and one line per row, columns padded to their widest cell (kubectl's ``get``)."""
    cells = [list(header), *([one_line(cell) for cell in row] for row in rows)]
    widths = [max(len(row[column]) for row in cells) for column in range(len(header) - 1)]
    return [
        "  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[-1]])
        for row in cells
    ]
