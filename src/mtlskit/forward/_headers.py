"""Headers as the gateway holds them: a list of ``(name, value)`` byte pairs.

Bytes because httptools hands the gateway bytes and ASGI hands a backend bytes;
order and repeats are kept because HTTP keeps them. Names compare
case-insensitively; values are read as Latin-1 (HTTP's obs-text) so that any
byte a client sends reaches a parser, which then decides whether it is valid.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["Headers", "header", "header_values"]

Headers = Sequence[tuple[bytes, bytes]]


def header(name: str, value: str) -> tuple[bytes, bytes]:
    """One pair; values written by mtlskit are ASCII by construction (see ``_encoding``)."""
    return name.encode("ascii"), value.encode("ascii")


def header_values(headers: Headers, name: str) -> list[str]:
    """Every value of ``name`` in order (names compared case-insensitively)."""
    wanted = name.lower().encode("ascii")
    return [value.decode("latin-1") for key, value in headers if key.strip().lower() == wanted]
