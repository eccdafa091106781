"""Writes held until the event loop has run every callback that was ready, then made together.

A relayed keep-alive request costs a write to the upstream and one to the client. Made
at once, each write woke a peer that had gone back to sleep since the previous one, and
on a VM a wake-up across CPUs is an interrupt to the other vCPU: with 16 clients the
gateway spent more time in the kernel waking peers than nginx spends in all (issue 6).
Held to the end of the loop's pass, the writes of all requests that were ready go out
back to back, and a peer woken by the first finds the rest when it runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

__all__ = ["WriteBatch"]


class WriteBatch:
    """``later(write, arg)``: call ``write(arg)`` once the loop's ready callbacks have run.

    A write's bytes stay where their writer keeps them (a connection's outgoing TLS
    BIO): whatever flushes that earlier — the connection's task, its close — writes
    them in order, and the held call then finds nothing left.
    """

    __slots__ = ("_loop", "_pending")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._pending: list[tuple[Callable[[Any], None], Any]] = []

    def later(self, write: Callable[[Any], None], arg: Any) -> None:
        pending = self._pending
        if not pending:
            self._loop.call_soon(self._run)
        pending.append((write, arg))

    def _run(self) -> None:
        pending, self._pending = self._pending, []
        for write, arg in pending:
            write(arg)  # each guards its own transport (closed, lost): none raises
