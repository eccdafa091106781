"""The audit log's hash chain: how an entry's hash is computed, and how tampering is found.

Pure. Each entry's hash covers its own fields and the previous entry's hash, so an
edit to any stored row breaks that row's hash, and a deleted or re-hashed row breaks
the link of the row after it; ``verify_audit_chain`` names the first broken entry.
Truncating the newest entries leaves a valid shorter chain: keep the exported head
hash somewhere else if that matters.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["GENESIS_HASH", "AuditEntry", "AuditProblem", "verify_audit_chain"]

GENESIS_HASH: Final = "0" * 64


# One encoder: ``json.dumps`` with options builds a new one per call, on every append.
_CANONICAL: Final = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _canonical(detail: Mapping[str, Any]) -> str:
    return _CANONICAL.encode(detail)


def _digest(seq: int, at: str, event: str, detail: str, prev_hash: str) -> str:
    text = "\n".join((str(seq), at, event, detail, prev_hash))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEntry:
    """One append-only log entry; ``detail`` is canonical JSON, exactly as hashed."""

    seq: int
    at: str  # ISO 8601 UTC, stored as text so the hashed bytes survive every database
    event: str
    detail: str
    prev_hash: str
    hash: str

    @classmethod
    def after(
        cls,
        head: tuple[int, str] | None,
        *,
        at: dt.datetime,
        event: str,
        detail: Mapping[str, Any],
    ) -> AuditEntry:
        """The entry that follows ``head`` = (seq, hash) of the newest entry, None if empty."""
        seq = head[0] + 1 if head else 1
        prev_hash = head[1] if head else GENESIS_HASH
        stamp = at.astimezone(dt.UTC).isoformat()
        body = _canonical(detail)
        return cls(
            seq=seq,
            at=stamp,
            event=event,
            detail=body,
            prev_hash=prev_hash,
            hash=_digest(seq, stamp, event, body, prev_hash),
        )

    @property
    def computed_hash(self) -> str:
        return _digest(self.seq, self.at, self.event, self.detail, self.prev_hash)

    def as_dict(self) -> dict[str, Any]:
        try:
            detail: Any = json.loads(self.detail)
        except ValueError:
            detail = self.detail
        return {
            "seq": self.seq,
            "at": self.at,
            "event": self.event,
            "detail": detail,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditProblem:
    """The first place the chain breaks: which entry, and how."""

    seq: int
    message: str

    def __str__(self) -> str:
        return f"audit entry {self.seq}: {self.message}"


def verify_audit_chain(entries: Iterable[AuditEntry]) -> AuditProblem | None:
    """``None`` when every entry hashes correctly and links to the one before it."""
    expected_seq, prev_hash = 1, GENESIS_HASH
    for entry in entries:
        if entry.seq != expected_seq:
            return AuditProblem(
                seq=entry.seq,
                message=f"sequence jumps from {expected_seq - 1} to {entry.seq} "
                "(entries deleted or inserted)",
            )
        if entry.prev_hash != prev_hash:
            return AuditProblem(
                seq=entry.seq,
                message="previous-hash link does not match the entry before it "
                "(that entry was replaced or re-hashed)",
            )
        if entry.computed_hash != entry.hash:
            return AuditProblem(
                seq=entry.seq, message="contents do not match the stored hash (entry was edited)"
            )
        expected_seq, prev_hash = entry.seq + 1, entry.hash
    return None
