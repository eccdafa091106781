"""JSON-lines logs: one object per connection or request, for machines first.

The connection log carries what operators ask peers for and rarely get: the TLS
version and cipher, handshake latency, the leaf's subject/serial/validity and the
verify status with every stable reason code. Clients never see any of it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import sys
from typing import IO, Any

__all__ = ["JsonLog"]


class JsonLog:
    """Appends one JSON object per line to a file, or to standard error for ``-``."""

    __slots__ = ("_handle", "_owned")

    def __init__(self, target: str) -> None:
        if target == "-":
            self._handle: IO[str] = sys.stderr
            self._owned = False
        else:
            self._handle = open(target, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
            self._owned = True

    def write(self, record: dict[str, Any]) -> None:
        record = {"time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"), **record}
        # A full disk must not take the gateway down; the metrics still count.
        with contextlib.suppress(OSError, ValueError):
            self._handle.write(json.dumps(record, separators=(",", ":"), default=str) + "\n")

    def close(self) -> None:
        if self._owned:
            self._handle.close()
