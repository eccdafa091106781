"""Remember verdicts so a reconnecting client costs a dict lookup, not a path validation.

Keyed by the verifier's trust-store generation (and the verifier itself) plus the
presented chain, leaf first: a reload makes every old entry unreachable, and a
different chain for the same leaf is judged afresh. An entry never outlives the
earliest notAfter in the chain or the nextUpdate of a CRL it consulted; rejections
are kept briefly, and never past a notBefore that could turn them into accepts.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Final

from cryptography import x509

from mtlskit.verify._decision import Decision
from mtlskit.verify._verifier import Verifier

__all__ = ["VerificationCache"]

_DEFAULT_TTL: Final = dt.timedelta(minutes=5)
_DEFAULT_REJECT_TTL: Final = dt.timedelta(seconds=30)

ChainItem = x509.Certificate | bytes


class VerificationCache:
    """A bounded verdict cache in front of ``Verifier.verify``; the clock is a parameter.

    Chains may be given as DER ``bytes`` (what TLS libraries hand over, parsed only
    on a miss) or as certificates. Not thread-safe; use one per event loop.
    """

    __slots__ = ("_entries", "hits", "max_entries", "misses", "reject_ttl", "ttl")

    def __init__(
        self,
        *,
        max_entries: int = 100_000,
        ttl: dt.timedelta = _DEFAULT_TTL,
        reject_ttl: dt.timedelta = _DEFAULT_REJECT_TTL,
    ) -> None:
        self.max_entries = max_entries
        self.ttl = ttl
        self.reject_ttl = reject_ttl
        self.hits = 0
        self.misses = 0
        self._entries: dict[tuple[object, ...], tuple[Decision, dt.datetime, dt.datetime]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()

    def verify(
        self, verifier: Verifier, chain: Sequence[ChainItem], *, at: dt.datetime
    ) -> Decision:
        key = (verifier.trust.generation, verifier.serial, *chain)
        entry = self._entries.get(key)
        if entry is not None:
            decision, since, until = entry
            if since <= at < until:
                self.hits += 1
                return decision
            del self._entries[key]
        self.misses += 1
        certs = [
            x509.load_der_x509_certificate(item) if isinstance(item, bytes) else item
            for item in chain
        ]
        decision = verifier.verify(certs, at=at)
        until = at + (self.ttl if decision.accepted else self.reject_ttl)
        if decision.valid_until is not None:
            until = min(until, decision.valid_until)
        if not decision.accepted:
            upcoming = [c.not_valid_before_utc for c in certs if c.not_valid_before_utc > at]
            until = min([until, *upcoming])
        if until > at:
            if len(self._entries) >= self.max_entries:
                del self._entries[next(iter(self._entries))]  # oldest first
            self._entries[key] = (decision, at, until)
        return decision
