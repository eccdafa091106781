"""JSON-lines logs: one object per connection or request, for machines first.

The connection log carries what operators ask peers for and rarely get: the TLS
version and cipher, handshake latency, the leaf's subject/serial/validity and the
verify status with every stable reason code. Clients never see any of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import sys
from typing import IO, Any

__all__ = ["JsonLog"]

# One encoder for every record: json.dumps with options builds a new one per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str)


class JsonLog:
    """Appends one JSON object per line to a file, or to standard error for ``-``.

    Inside an event loop, lines are written together at the end of the loop's current
    iteration (``call_soon``): under load that is one write for many requests instead
    of a write syscall each (a line-buffered file cost ~5% of a relayed request), and
    a record still reaches the file before the loop waits for more network input.
    """

    __slots__ = ("_handle", "_owned", "_pending", "_stamp")

    def __init__(self, target: str) -> None:
        if target == "-":
            self._handle: IO[str] = sys.stderr
            self._owned = False
        else:
            self._handle = open(target, "a", encoding="utf-8")  # noqa: SIM115
            self._owned = True
        self._pending: list[str] = []
        self._stamp = ""

    def write(self, record: dict[str, Any]) -> None:
        self.write_fields(_ENCODER.encode(record)[1:-1])

    def write_fields(self, fields: str) -> None:
        """A record given as its JSON members (``"key":value,...``, no braces, not empty).

        For the access log, whose line is formatted directly: building a dict and
        encoding it was a quarter of a kept-alive request served in-process.
        """
        if not self._pending:
            # One timestamp per batch: its records are from one pass of the event loop.
            self._stamp = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
        line = '{"time":"' + self._stamp + '",' + fields + "}"
        if not self._pending:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no loop (CLI checks, tests): write now
                self._pending.append(line)
                self.flush()
                return
        self._pending.append(line)

    def flush(self) -> None:
        lines, self._pending = self._pending, []
        if not lines:
            return
        # A full disk must not take the gateway down; the metrics still count.
        with contextlib.suppress(OSError, ValueError):
            self._handle.write("\n".join(lines) + "\n")
            self._handle.flush()

    def close(self) -> None:
        self.flush()
        if self._owned:
            self._handle.close()
