"""JSON-lines logs: one object per connection or request, for machines first.

The connection log carries what operators ask peers for and rarely get: the TLS
version and cipher, handshake latency, the leaf's subject/serial/validity and the
verify status with every stable reason code. Clients never see any of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Callable
from typing import IO, Any

__all__ = ["JsonLog", "json_members"]

# Buffered as nginx's ``access_log ... buffer=64k flush=...``: one write per batch, not per
# pass of the event loop (that was a write syscall per request at moderate load).
_FLUSH_SECONDS = 0.1
_BUFFER_CHARS = 64 * 1024
_LATER_CHARS = 320  # what a record formatted at flush counts against the buffer
# What follows the seconds of a line's time, for each millisecond: '.042+00:00",'.
_MILLISECONDS = tuple(f'.{n:03d}+00:00",' for n in range(1000))
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

    __slots__ = ("_handle", "_owned", "_pending", "_size", "enabled")

    def __init__(self, target: str) -> None:
        self.enabled = target != "off"  # as nginx's ``access_log off``
        if target == "-" or not self.enabled:
            self._handle: IO[str] = sys.stderr
            self._owned = False
        else:
            self._handle = open(target, "a", encoding="utf-8")  # noqa: SIM115
            self._owned = True
        # (time.time(), render or None, its arguments or the members), formatted at flush
        self._pending: list[tuple[float, Callable[..., str] | None, Any]] = []
        self._size = 0

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            self.write_fields(json_members(record))

    def write_fields(self, fields: str) -> None:
        """A record given as its JSON members (``"key":value,...``, no braces, not empty).

        For the access log, whose line is formatted directly: building a dict and
        encoding it was a quarter of a kept-alive request served in-process.
        """
        if self.enabled:
            self._add((time.time(), None, fields), len(fields))

    def write_later(self, render: Callable[..., str], args: tuple[Any, ...]) -> None:
        """A record whose members ``render(*args)`` formats when the buffer is written.

        For the access log: a tuple per request, the JSON made in one loop over the batch
        when it is written. Formatting each line between a request's TLS and HTTP work
        cost the gateway 15,600 against 17,900 relayed keep-alive requests/s (user CPU 42
        against 36 µs per request, ``ab -k -c 16``). ``args`` must not change until then.
        """
        if not self.enabled:
            return
        pending = self._pending
        if pending and self._size < _BUFFER_CHARS - _LATER_CHARS:  # the common case, inline
            pending.append((time.time(), render, args))
            self._size += _LATER_CHARS
        else:  # the batch's first record (its timer), or its last (the flush)
            self._add((time.time(), render, args), _LATER_CHARS)

    def _add(self, record: tuple[float, Callable[..., str] | None, Any], size: int) -> None:
        pending = self._pending
        if not pending:
            try:
                asyncio.get_running_loop().call_later(_FLUSH_SECONDS, self.flush)
            except RuntimeError:  # no loop (CLI checks, tests): write now
                pending.append(record)
                self.flush()
                return
        pending.append(record)
        self._size += size
        if self._size > _BUFFER_CHARS:
            self.flush()  # the timer finds nothing left, or the next batch's first lines

    def flush(self) -> None:
        records, self._pending = self._pending, []
        self._size = 0
        if not records:
            return
        lines = []
        second = -1
        prefix = ""
        for seconds, render, args in records:
            whole, millisecond = divmod(int(seconds * 1000), 1000)
            if whole != second:  # the date and time formatted once per second, not per line
                second = whole
                prefix = '{"time":"' + time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
            fields = args if render is None else render(*args)
            lines.append(prefix + _MILLISECONDS[millisecond] + fields + "}")
        # A full disk must not take the gateway down; the metrics still count.
        with contextlib.suppress(OSError, ValueError):
            self._handle.write("\n".join(lines) + "\n")
            self._handle.flush()

    def close(self) -> None:
        self.flush()
        if self._owned:
            self._handle.close()
