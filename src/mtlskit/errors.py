"""Exception types, split by whose fault the failure is.

A shell picks its reaction from the type, never by parsing a message: an
``InputError`` is the user's unreadable file or bad argument (exit 2, one line),
a ``ConfigError`` is an operator's bad configuration (exit 2, names the key),
and anything else escaping the core is mtlskit's own bug.
"""

from __future__ import annotations

__all__ = ["ConfigError", "InputError", "MtlskitError"]


class MtlskitError(Exception):
    """Base of every error mtlskit raises on purpose."""


class InputError(MtlskitError):
    """Input that cannot be used: malformed, truncated, wrong type, wrong password.

    ``source`` names where it came from (a path, ``<stdin>``, a config key) so the
    one-line message can say which file is wrong.
    """

    def __init__(self, message: str, *, source: str | None = None) -> None:
        self.source = source
        self.detail = message
        super().__init__(f"{source}: {message}" if source else message)


class ConfigError(InputError):
    """An operator's configuration is invalid (unknown key, bad value, missing file)."""
