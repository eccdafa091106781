"""Enrollment rules: one-time tokens, the approval queue, and what a CSR may name.

Pure. A token is 256 random bits shown once to the operator; the CA keeps only its
SHA-256, so a copy of the database redeems nothing. Redeeming is the store's atomic
conditional update; this module decides what a failed one is called. Approvals are
counted per distinct approver and only when they name the exact CSR being signed, so a
different key cannot ride on someone else's approval; who an approver is, and whether
their signature holds, is ``_approvers``'.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from mtlskit.certs import UNREADABLE_EXTENSIONS
from mtlskit.errors import MtlskitError
from mtlskit.identity import ClientIdentity
from mtlskit.issue._policy import IdentityPattern

__all__ = [
    "TOKEN_PREFIX",
    "Approval",
    "ApprovalRule",
    "EnrollmentRefused",
    "EnrollmentRequest",
    "EnrollmentStore",
    "RequestStatus",
    "TokenRecord",
    "approvals_counted",
    "check_csr_identity",
    "csr_hash",
    "csr_identities",
    "foreign_csr_names",
    "new_request_id",
    "new_token",
    "required_approvals",
    "token_hash",
    "unredeemable",
]

TOKEN_PREFIX: Final = "mtk1_"
_TOKEN: Final = re.compile(r"mtk1_[A-Za-z0-9_-]{43}")  # 32 bytes, base64url without padding


class EnrollmentRefused(MtlskitError):
    """The client's enrollment or renewal is refused; ``code`` is stable, ``status`` the HTTP hint.

    Raised for the requester's fault only (bad token, wrong identity, revoked certificate),
    so the CA server maps it to a 4xx JSON error without reading the message.
    """

    def __init__(self, code: str, message: str, *, status: int = 403) -> None:
        self.code = code
        self.message = message
        self.status = status
        super().__init__(f"{code}: {message}")


# --- tokens ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenRecord:
    """What the CA remembers of a token: its hash, never the token."""

    hash: str  # hex SHA-256 of the token text
    identity: str
    created_at: dt.datetime
    expires_at: dt.datetime
    used_at: dt.datetime | None = None


def token_hash(token: str) -> str:
    """The stored form of a token; ``token_invalid`` when it is not one mtlskit could issue."""
    if not isinstance(token, str) or _TOKEN.fullmatch(token) is None:
        raise EnrollmentRefused(
            "token_invalid", "not an mtlskit enrollment token (mtk1_…)", status=401
        )
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def new_token(
    identity: ClientIdentity, *, now: dt.datetime, ttl: dt.timedelta, secret: bytes | None = None
) -> tuple[str, TokenRecord]:
    """A fresh token (shown once) and the record to store. ``secret``: 32 bytes, for tests."""
    raw = secret if secret is not None else secrets.token_bytes(32)
    if len(raw) != 32:
        raise ValueError("a token secret is exactly 32 bytes")
    token = TOKEN_PREFIX + base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")
    record = TokenRecord(
        hash=token_hash(token), identity=identity.value, created_at=now, expires_at=now + ttl
    )
    return token, record


def unredeemable(record: TokenRecord | None, now: dt.datetime) -> EnrollmentRefused:
    """Why a token could not be redeemed, as the error the client gets."""
    if record is None:
        return EnrollmentRefused("token_invalid", "unknown enrollment token", status=401)
    if record.used_at is not None:
        return EnrollmentRefused("token_used", "this enrollment token was already used", status=409)
    if record.expires_at <= now:
        return EnrollmentRefused(
            "token_expired",
            f"this enrollment token expired at {record.expires_at.isoformat()}",
            status=401,
        )
    return EnrollmentRefused("token_invalid", "enrollment token not redeemable", status=401)


# --- what a CSR names ---------------------------------------------------------------


def csr_hash(csr: x509.CertificateSigningRequest) -> str:
    """Hex SHA-256 of the CSR's DER: what an approver approves."""
    return hashlib.sha256(csr.public_bytes(serialization.Encoding.DER)).hexdigest()


def csr_identities(csr: x509.CertificateSigningRequest) -> tuple[str, ...]:
    """Every identity the CSR names: URI, DNS and email SANs, then the subject's CNs."""
    names: list[str] = []
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    except UNREADABLE_EXTENSIONS:
        raise EnrollmentRefused(
            "csr_invalid", "the CSR's extensions are malformed", status=400
        ) from None
    if san is not None:
        for kind in (x509.UniformResourceIdentifier, x509.DNSName, x509.RFC822Name):
            names += [str(value) for value in san.get_values_for_type(kind)]
    names += [
        str(attribute.value)
        for attribute in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    ]
    return tuple(names)


def foreign_csr_names(csr: x509.CertificateSigningRequest, identity: str) -> tuple[str, ...]:
    """The names a CSR asks for that are not ``identity`` (sorted, each once)."""
    return tuple(sorted({name for name in csr_identities(csr) if name != identity}))


def check_csr_identity(csr: x509.CertificateSigningRequest, identity: str) -> None:
    """A CSR may name nothing, or only the identity the token (or certificate) is bound to.

    Applied only when ``ca.toml`` says ``csr_names = "must_match"``; by default the CA
    ignores (and reports) the names it will not use, as most CSR tools set a CN."""
    others = foreign_csr_names(csr, identity)
    if others:
        raise EnrollmentRefused(
            "identity_mismatch",
            f"the CSR names {', '.join(others)}, but this enrollment is for {identity}",
        )


# --- the approval queue -------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ApprovalRule:
    """Identities matching ``ids`` need ``approvers`` distinct people to approve each request."""

    ids: tuple[IdentityPattern, ...]
    approvers: int

    def applies(self, identity: str) -> bool:
        return any(pattern.matches(identity) for pattern in self.ids)


def required_approvals(rules: Iterable[ApprovalRule], identity: str) -> int:
    """How many distinct approvers ``identity`` needs: the strictest matching rule, else 0."""
    return max((rule.approvers for rule in rules if rule.applies(identity)), default=0)


class RequestStatus(StrEnum):
    """pending → approved → issued, or pending → denied; ``issuing`` while one poll signs."""

    PENDING = "pending"
    APPROVED = "approved"
    ISSUING = "issuing"
    ISSUED = "issued"
    DENIED = "denied"


@dataclass(frozen=True, slots=True, kw_only=True)
class Approval:
    """One approver's yes, bound to the hash of the CSR they looked at.

    ``approver`` is the verified, case-folded identity of a registered approver, and
    ``signature`` their key's (``fingerprint``) signature over request and CSR hash.
    Records from before approvals were signed have neither and count for nothing."""

    approver: str
    csr_sha256: str
    at: dt.datetime
    fingerprint: str = ""
    signature: bytes = b""


@dataclass(frozen=True, slots=True, kw_only=True)
class EnrollmentRequest:
    """A redeemed token waiting for approval; the CSR is kept exactly as received."""

    id: str
    identity: str
    csr_pem: bytes
    csr_sha256: str
    required: int
    status: RequestStatus
    created_at: dt.datetime
    approvals: tuple[Approval, ...] = ()
    serial: int | None = None
    client: str = ""

    @property
    def approved_by(self) -> tuple[str, ...]:
        return approvals_counted(self.approvals, self.csr_sha256)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "identity": self.identity,
            "status": self.status.value,
            "csr_sha256": self.csr_sha256,
            "approvals": len(self.approved_by),
            "required": self.required,
            "approved_by": list(self.approved_by),
            "created_at": self.created_at.isoformat(),
            "serial": f"{self.serial:x}" if self.serial is not None else None,
            "client": self.client,
        }


def approvals_counted(approvals: Iterable[Approval], csr_sha256: str) -> tuple[str, ...]:
    """The distinct approvers whose signed approval names this CSR (same person twice, in
    any letter case, counts once). The signatures themselves are checked by
    ``verified_approvers`` when they are recorded and before the CA signs."""
    return tuple(
        sorted(
            {a.approver.casefold() for a in approvals if a.csr_sha256 == csr_sha256 and a.signature}
        )
    )


def new_request_id() -> str:
    """128 random bits: the id is all a client needs to poll, so it must not be guessable."""
    return secrets.token_hex(16)


class EnrollmentStore(Protocol):
    """What enrollment needs from the CA's records, beside ``Store``; each write is audited."""

    def add_token(self, record: TokenRecord) -> None: ...

    def find_token(self, hash: str) -> TokenRecord | None: ...

    def redeem_token(self, hash: str, *, at: dt.datetime, detail: Mapping[str, Any]) -> TokenRecord:
        """Mark the token used iff unused and unexpired (one conditional UPDATE), else raise
        the ``EnrollmentRefused`` of ``unredeemable``. Exactly one concurrent caller wins."""

    def add_request(self, request: EnrollmentRequest) -> None: ...

    def get_request(self, request_id: str) -> EnrollmentRequest | None: ...

    def requests(self, *, status: RequestStatus | None = None) -> Sequence[EnrollmentRequest]: ...

    def approve_request(
        self,
        request_id: str,
        *,
        approver: str,
        csr_sha256: str,
        at: dt.datetime,
        fingerprint: str = "",
        signature: bytes = b"",
    ) -> tuple[EnrollmentRequest, bool]:
        """Record an approval; returns the request and whether it added a new approver."""

    def approvers(self) -> Sequence[Any]:
        """The registered approvers (``ApproverRecord``)."""

    def deny_request(
        self, request_id: str, *, approver: str, reason: str, at: dt.datetime
    ) -> EnrollmentRequest: ...

    def claim_request(self, request_id: str) -> bool:
        """approved → issuing, for exactly one caller."""

    def finish_request(
        self, request_id: str, *, serial: int | None, at: dt.datetime
    ) -> EnrollmentRequest:
        """issuing → issued (``serial``), or back to approved when ``serial`` is None."""
