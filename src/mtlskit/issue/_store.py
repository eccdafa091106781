"""The records a CA keeps, and the ``Store`` protocol its logic is written against.

The CA core never opens a database: it is handed a ``Store`` (``mtlskit.store`` has the
SQLAlchemy one). Every mutating method appends its audit entry in the same transaction
as the change, and returns only after both are durably committed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, Protocol

from cryptography import x509

from mtlskit.errors import InputError, MtlskitError
from mtlskit.issue._audit import AuditEntry

__all__ = [
    "REVOCATION_REASONS",
    "CertificateRecord",
    "CertificateStatus",
    "SerialTaken",
    "Store",
    "StoreUnavailable",
    "UnknownCertificate",
]

# What ``Store.revoke`` records, by RFC 5280 §5.3.1 name as cryptography spells it
# ("keyCompromise"): the choices ``mtlskit ca revoke`` and the console offer.
REVOCATION_REASONS: Final = tuple(reason.value for reason in x509.ReasonFlags)


class CertificateStatus(StrEnum):
    """``expired`` is computed from notAfter at read time; only ``revoked`` is ever written."""

    VALID = "valid"
    REVOKED = "revoked"
    EXPIRED = "expired"


class SerialTaken(MtlskitError):
    """The store already holds this serial: the CA draws a new one and signs again."""


class StoreUnavailable(InputError):
    """The CA's database did not answer (unreachable, wrong password, lost mid-request).

    Nothing is known to have been recorded. A command reports it as unusable input (one
    line, exit 2); the CA server answers 503 and the client retries, never a guess.
    """


class UnknownCertificate(InputError):
    """No certificate with that serial was issued by this CA (or it is already revoked)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CertificateRecord:
    """One issued certificate as the CA remembers it."""

    serial: int
    identity: str
    fingerprint: str  # "sha256:HEX"
    not_before: dt.datetime
    not_after: dt.datetime
    profile: str
    pem: bytes
    issued_at: dt.datetime
    revoked_at: dt.datetime | None = None
    revocation_reason: x509.ReasonFlags | None = None

    def status(self, now: dt.datetime) -> CertificateStatus:
        if self.revoked_at is not None:
            return CertificateStatus.REVOKED
        if self.not_after <= now:
            return CertificateStatus.EXPIRED
        return CertificateStatus.VALID

    def as_dict(self, now: dt.datetime) -> dict[str, Any]:
        return {
            "serial": f"{self.serial:x}",
            "identity": self.identity,
            "fingerprint": self.fingerprint,
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "profile": self.profile,
            "status": self.status(now).value,
            "issued_at": self.issued_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "revocation_reason": self.revocation_reason.value if self.revocation_reason else None,
        }


class Store(Protocol):
    """What the CA logic needs from its records; one implementation per database family."""

    def add_certificate(self, record: CertificateRecord) -> None:
        """Record an issued certificate (and its audit entry), committed durably.

        Raises ``SerialTaken`` when the serial exists; nothing is written then.
        """

    def revoke(
        self, serial: int, *, reason: x509.ReasonFlags, at: dt.datetime
    ) -> CertificateRecord:
        """Mark a certificate revoked; ``UnknownCertificate`` if absent or already revoked."""

    def get(self, serial: int) -> CertificateRecord | None: ...

    def certificates(
        self, *, status: CertificateStatus | None = None, now: dt.datetime
    ) -> Sequence[CertificateRecord]: ...

    def revoked_unexpired(self, now: dt.datetime) -> Sequence[CertificateRecord]:
        """What a CRL issued at ``now`` must list."""

    def next_crl_number(self, *, at: dt.datetime, detail: Mapping[str, Any]) -> int:
        """Increment and return the CRL number (monotonic, audited)."""

    def record_event(self, event: str, detail: Mapping[str, Any], *, at: dt.datetime) -> None:
        """Append an audit entry that changes no other record (init, refusals)."""

    def audit_entries(self) -> Sequence[AuditEntry]: ...

    def group(self) -> AbstractContextManager[None]:
        """Writes made inside commit together when it ends without an exception (group
        commit), and none of them if it raises; a store without group commit may commit
        each write as it is made. Nothing may be handed out before the group ends."""
