"""How many failed token attempts one client address may make before it must wait, and
how large a request body the CA reads (``read_body``, for ``/v1/*`` and EST alike).

A token is 256 bits, so guessing is hopeless; the limit is there so that a client
with a stale or mistyped token, or a scanner, cannot flood the store and the audit
log. The clock is a parameter, as everywhere in mtlskit's logic.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Final

from starlette.requests import Request

from mtlskit.issue import EnrollmentRefused

__all__ = ["MAX_BODY", "FailureLimiter", "read_body"]

MAX_BODY: Final = 64 * 1024  # a CSR is ~1 KiB; an RSA-4096 one with extensions stays far below


async def read_body(request: Request) -> bytes:
    """The whole body, read until it passes ``MAX_BODY``: 413 ``request_too_large`` then."""
    size, chunks = 0, []
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise EnrollmentRefused(
                "request_too_large", f"request body is larger than {MAX_BODY} bytes", status=413
            )
        chunks.append(chunk)
    return b"".join(chunks)


@dataclass(slots=True, kw_only=True)
class FailureLimiter:
    """At most ``limit`` failures per ``window`` seconds per address (a sliding window)."""

    limit: int
    window: float
    _failures: dict[str, deque[float]] = field(default_factory=dict)

    def _recent(self, address: str, now: float) -> deque[float]:
        times = self._failures.setdefault(address, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        return times

    def retry_after(self, address: str, now: float) -> float | None:
        """Seconds this address must wait, or None when it may try again."""
        times = self._recent(address, now)
        if len(times) < self.limit:
            if not times:
                self._failures.pop(address, None)
            return None
        return max(times[0] + self.window - now, 0.001)

    def failed(self, address: str, now: float) -> None:
        self._recent(address, now).append(now)
