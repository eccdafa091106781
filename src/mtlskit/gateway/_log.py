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
import time
from typing import IO, Any

__all__ = ["JsonLog", "json_members"]

# Buffered as nginx's ``access_log ... buffer=64k flush=...``: one write per batch, not per
# pass of the event loop (that was a write syscall per request at moderate load).
_FLUSH_SECONDS = 0.1
_BUFFER_CHARS = 64 * 1024
# One encoder for every record: json.dumps with options builds a new one per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str)


def json_members(record: dict[str, Any]) -> str:
    """``record`` as JSON object members (no braces), for ``JsonLog.write_fields``."""
    return _ENCODER.encode(record)[1:-1]


class JsonLog:
    """Appends one JSON object per line to a file, to standard error for ``-``, or nowhere
    for ``off``.

    Inside an event loop, lines are buffered and written together at most 0.1 s later
    (or at 64 KiB): one write for many requests instead of a write syscall each (a
    line-buffered file cost ~5% of a relayed request, a write per event-loop pass still
    ~10% of a kept-alive request served in-process). ``close`` writes what is left.
    """

    __slots__ = ("_handle", "_millisecond", "_owned", "_pending", "_size", "_stamp", "enabled")

    def __init__(self, target: str) -> None:
        self.enabled = target != "off"  # as nginx's ``access_log off``
        if target == "-" or not self.enabled:
            self._handle: IO[str] = sys.stderr
            self._owned = False
        else:
            self._handle = open(target, "a", encoding="utf-8")  # noqa: SIM115
            self._owned = True
        self._pending: list[str] = []
        self._size = 0
        self._stamp = ""
        self._millisecond = 0

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            self.write_fields(json_members(record))

    def write_fields(self, fields: str) -> None:
        """A record given as its JSON members (``"key":value,...``, no braces, not empty).

        For the access log, whose line is formatted directly: building a dict and
        encoding it was a quarter of a kept-alive request served in-process.
        """
        if not self.enabled:
            return
        millisecond = int(time.time() * 1000)
        if millisecond != self._millisecond:  # formatted once per millisecond, not per record
            self._millisecond = millisecond
            self._stamp = dt.datetime.fromtimestamp(millisecond / 1000, dt.UTC).isoformat(
                timespec="milliseconds"
            )
        line = '{"time":"' + self._stamp + '",' + fields + "}"
        if not self._pending:
            try:
                asyncio.get_running_loop().call_later(_FLUSH_SECONDS, self.flush)
            except RuntimeError:  # no loop (CLI checks, tests): write now
                self._pending.append(line)
                self.flush()
                return
        self._pending.append(line)
        self._size += len(line)
        if self._size > _BUFFER_CHARS:
            self.flush()  # the timer finds nothing left, or the next batch's first lines

    def flush(self) -> None:
        lines, self._pending = self._pending, []
        self._size = 0
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
