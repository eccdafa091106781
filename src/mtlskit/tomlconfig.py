"""TOML configuration files: parse, and turn a pydantic error into one line naming the key.

Pure: bytes in, a mapping or a ``ConfigError`` out. The gateway, the authz server and the
policy file share it, so "unknown key 'listen.colour'" reads the same everywhere.
"""

from __future__ import annotations

import tomllib
from typing import Any

from pydantic import ValidationError

from mtlskit.errors import ConfigError

__all__ = ["config_error", "parse_toml"]


def parse_toml(text: str | bytes, *, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text.decode() if isinstance(text, bytes) else text)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"is not valid TOML: {exc}", source=source) from None


def _location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def config_error(exc: ValidationError, *, source: str) -> ConfigError:
    """The first validation problem as ``unknown key 'a.b'``, ``missing key …`` or ``a.b: why``."""
    first = exc.errors()[0]
    where = _location(tuple(first["loc"]))
    if first["type"] == "extra_forbidden":
        return ConfigError(f"unknown key {where!r}", source=source)
    if first["type"] == "missing":
        return ConfigError(f"missing key {where!r}", source=source)
    message = str(first["msg"]).removeprefix("Value error, ")
    return ConfigError(f"{where}: {message}", source=source)
