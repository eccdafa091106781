"""Who may approve an enrollment request, and what makes one approval count.

Pure. An approver is registered by the CA operator (``mtlskit ca approvers add``): the
CA's issuing key signs a statement binding the approver's public key to the identity
in their certificate, so a registration cannot be made, or an identity renamed, by
anyone who can write the database but does not hold the CA passphrase. An approval is
the approver's own signature over the request id, the CSR hash and their key; the CA
checks it when it is recorded and again before it signs, so a forged row counts for
nothing. An approval given in the operator console (``mtlskit ca console``) cannot be
signed by the browser: there the CA's key countersigns it instead, attesting that the
approver's registered key authenticated over mTLS; such a signature is marked, and it is
checked against the CA's key, so a row written without that key still counts for nothing.
People are told apart by verified identity (case-folded) and by key: the same person
under two spellings counts once, and the requester never counts.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa

from mtlskit.certs import Fingerprint, PrivateKey, certificate_pem, load_certificates
from mtlskit.errors import MtlskitError
from mtlskit.identity import ClientIdentity, IdentityError
from mtlskit.issue._build import CaKey, is_external_key, signature_hash
from mtlskit.issue._enroll import Approval, EnrollmentRequest
from mtlskit.issue._store import Store

__all__ = [
    "ApprovalRefused",
    "ApproverRecord",
    "approval_message",
    "approver_identity",
    "check_approval",
    "check_not_counted",
    "countersign_approval",
    "key_fingerprint",
    "register_approver",
    "revoked_by",
    "sign_approval",
    "verified_approvers",
]

_REGISTRATION: Final = b"mtlskit approver registration v1\0"
_APPROVAL: Final = b"mtlskit enrollment approval v1\0"
# A console approval's stored signature: this marker, then the CA's signature over
# _COUNTERSIGNED + approval_message + _CONSOLE_MTLS (never valid as the approver's own).
_COUNTERSIGNED: Final = b"mtlskit ca countersigned v1\0"
_CONSOLE_MTLS: Final = b"\0console mTLS"
_SPKI: Final = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


class ApprovalRefused(MtlskitError):
    """An approval that does not count: a negative verdict with a stable ``code``."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")


def key_fingerprint(public_key: Any) -> str:
    """``sha256:HEX`` of a public key's SubjectPublicKeyInfo: one key, one approver."""
    return "sha256:" + hashlib.sha256(public_key.public_bytes(*_SPKI)).hexdigest()


def approver_identity(cert: x509.Certificate) -> str:
    """The approver's identity from their certificate's SAN (CN as a fallback), case-folded
    so that ``Alice@acme.com`` and ``alice@acme.com`` are one person."""
    try:
        identity = ClientIdentity.from_certificate(cert, allow_cn=True)
    except IdentityError as exc:
        raise ApprovalRefused("approver_identity_missing", str(exc)) from None
    return identity.value.casefold()


def _sign(key: CaKey, data: bytes) -> bytes:
    if is_external_key(key):
        return key.sign_data(data)
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return key.sign(data)
    algorithm = signature_hash(key)
    assert algorithm is not None
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(algorithm))
    return key.sign(data, _PSS, algorithm)


_PSS: Final = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)


def _verifies(public_key: Any, signature: bytes, data: bytes) -> bool:
    try:
        if isinstance(public_key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            public_key.verify(signature, data)
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            algorithm = hashes.SHA384() if public_key.curve.key_size >= 384 else hashes.SHA256()
            public_key.verify(signature, data, ec.ECDSA(algorithm))
        elif isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, data, _PSS, hashes.SHA256())
        else:
            return False
    except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError):
        return False
    return True


def _registration_message(fingerprint: str, identity: str, cert_pem: bytes) -> bytes:
    digest = hashlib.sha256(cert_pem).hexdigest()
    return _REGISTRATION + "\0".join((fingerprint, identity, digest)).encode()


@dataclass(frozen=True, slots=True, kw_only=True)
class ApproverRecord:
    """A registered approver: their certificate, key fingerprint, identity, and the CA's
    signature over the three (``signature``), made with the passphrase-protected key."""

    fingerprint: str  # key_fingerprint of the certificate's public key
    identity: str  # approver_identity of the certificate
    cert_pem: bytes
    signature: bytes
    added_at: dt.datetime

    @property
    def cert(self) -> x509.Certificate:
        return load_certificates(self.cert_pem, source="approver record")[0]

    def registered_by(self, ca_public_key: Any) -> bool:
        """Whether the CA made this registration (not someone with only the database)."""
        message = _registration_message(self.fingerprint, self.identity, self.cert_pem)
        return _verifies(ca_public_key, self.signature, message)

    def as_dict(self) -> dict[str, Any]:
        cert = self.cert
        return {
            "identity": self.identity,
            "fingerprint": self.fingerprint,
            "certificate": str(Fingerprint.of(cert)),
            "not_after": cert.not_valid_after_utc.isoformat(),
            "added_at": self.added_at.isoformat(),
        }


def register_approver(cert: x509.Certificate, *, ca_key: CaKey, now: dt.datetime) -> ApproverRecord:
    """The record that makes ``cert``'s holder an approver, signed with the CA's key."""
    if not cert.not_valid_before_utc <= now < cert.not_valid_after_utc:
        raise ApprovalRefused(
            "approver_cert_expired",
            f"the approver certificate is valid {cert.not_valid_before_utc.isoformat()} to "
            f"{cert.not_valid_after_utc.isoformat()}, not now",
        )
    identity = approver_identity(cert)
    fingerprint = key_fingerprint(cert.public_key())
    pem = certificate_pem(cert)
    signature = _sign(ca_key, _registration_message(fingerprint, identity, pem))
    return ApproverRecord(
        fingerprint=fingerprint, identity=identity, cert_pem=pem, signature=signature, added_at=now
    )


def approval_message(request_id: str, csr_sha256: str, fingerprint: str) -> bytes:
    """What an approver signs: this request, this CSR, this approver's key."""
    return _APPROVAL + "\0".join((request_id, csr_sha256.lower(), fingerprint)).encode()


def sign_approval(
    request_id: str, csr_sha256: str, *, cert: x509.Certificate, key: PrivateKey
) -> tuple[str, bytes]:
    """(key fingerprint, signature) of an approval, made with the approver's own key."""
    fingerprint = key_fingerprint(cert.public_key())
    return fingerprint, _sign(key, approval_message(request_id, csr_sha256, fingerprint))


def _countersigned_message(request_id: str, csr_sha256: str, fingerprint: str) -> bytes:
    return _COUNTERSIGNED + approval_message(request_id, csr_sha256, fingerprint) + _CONSOLE_MTLS


def countersign_approval(
    request_id: str, csr_sha256: str, *, fingerprint: str, ca_key: CaKey
) -> bytes:
    """The stored signature of an approval given over the console's mTLS: the CA's key
    attests that the holder of the registered key ``fingerprint`` approved this CSR (the
    caller has checked that the presented certificate's key is that one)."""
    message = _countersigned_message(request_id, csr_sha256, fingerprint)
    return _COUNTERSIGNED + _sign(ca_key, message)


def _approval_verifies(
    request: EnrollmentRequest,
    cert: x509.Certificate,
    fingerprint: str,
    signature: bytes,
    ca_public_key: Any,
) -> bool:
    """The approver's own signature, or the CA's countersignature of a console approval."""
    if signature.startswith(_COUNTERSIGNED):
        message = _countersigned_message(request.id, request.csr_sha256, fingerprint)
        return _verifies(ca_public_key, signature[len(_COUNTERSIGNED) :], message)
    message = approval_message(request.id, request.csr_sha256, fingerprint)
    return _verifies(cert.public_key(), signature, message)


def _csr_key_fingerprint(request: EnrollmentRequest) -> str | None:
    try:
        return key_fingerprint(x509.load_pem_x509_csr(request.csr_pem).public_key())
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return None


def check_approval(
    request: EnrollmentRequest,
    record: ApproverRecord | None,
    *,
    fingerprint: str,
    signature: bytes,
    at: dt.datetime,
    ca_public_key: Any,
    revoked: Callable[[x509.Certificate], bool],
) -> str:
    """The verified identity an approval counts for, or ``ApprovalRefused``.

    ``record``: the registration of the key that signed (None: not registered);
    ``revoked``: whether a certificate is revoked by this CA (False for others'); ``at``:
    when the approval was (or is being) given. ``signature``: the approver's own
    (``sign_approval``) or the CA's countersignature (``countersign_approval``)."""
    if (
        record is None
        or record.fingerprint != fingerprint
        or not record.registered_by(ca_public_key)
    ):
        raise ApprovalRefused(
            "approver_unregistered",
            f"key {fingerprint} is not a registered approver (`mtlskit ca approvers add`)",
        )
    cert = record.cert
    if key_fingerprint(cert.public_key()) != fingerprint:
        raise ApprovalRefused("approver_unregistered", "the registration names another key")
    if not cert.not_valid_before_utc <= at < cert.not_valid_after_utc:
        raise ApprovalRefused(
            "approver_cert_expired",
            f"{record.identity}'s certificate is not valid at {at.isoformat()}",
        )
    if revoked(cert):
        raise ApprovalRefused(
            "approver_cert_revoked", f"{record.identity}'s certificate is revoked"
        )
    if not _approval_verifies(request, cert, fingerprint, signature, ca_public_key):
        raise ApprovalRefused(
            "approval_signature_invalid",
            f"the approval is not signed by {record.identity}'s key",
        )
    if record.identity == request.identity.casefold() or fingerprint == _csr_key_fingerprint(
        request
    ):
        raise ApprovalRefused(
            "approver_is_requester",
            f"{record.identity} is the requester of {request.id} and cannot approve it",
        )
    return record.identity


def _same_person(approval: Approval, identity: str, fingerprint: str) -> bool:
    return approval.approver.casefold() == identity or approval.fingerprint == fingerprint


def check_not_counted(request: EnrollmentRequest, identity: str, fingerprint: str) -> bool:
    """False when this very key already approved (a retry: it still counts once); raises
    ``approver_already_counted`` when the same person approved with another key or name."""
    for given in request.approvals:
        if not _same_person(given, identity, fingerprint):
            continue
        if given.fingerprint == fingerprint and given.approver == identity:
            return False
        raise ApprovalRefused(
            "approver_already_counted",
            f"{identity} already approved {request.id} (as {given.approver}); "
            "one person counts once",
        )
    return True


def verified_approvers(
    request: EnrollmentRequest,
    records: Mapping[str, ApproverRecord],
    *,
    ca_public_key: Any,
    revoked: Callable[[x509.Certificate], bool],
) -> tuple[str, ...]:
    """The distinct people whose approval of this CSR checks out now: what the CA counts
    before it signs, whatever the database claims."""
    people: set[str] = set()
    keys: set[str] = set()
    approvals: Iterable[Approval] = request.approvals
    for given in approvals:
        if given.csr_sha256 != request.csr_sha256 or not given.fingerprint:
            continue
        try:
            identity = check_approval(
                request,
                records.get(given.fingerprint),
                fingerprint=given.fingerprint,
                signature=given.signature,
                at=given.at,
                ca_public_key=ca_public_key,
                revoked=revoked,
            )
        except ApprovalRefused:
            continue
        if identity != given.approver or identity in people or given.fingerprint in keys:
            continue
        people.add(identity)
        keys.add(given.fingerprint)
    return tuple(sorted(people))


def revoked_by(issuer: x509.Certificate, store: Store) -> Callable[[x509.Certificate], bool]:
    """``revoked`` for ``check_approval``: a certificate this CA signed counts as revoked
    when its records say so, or hold no such certificate; others' are never revoked here
    (their registration is the pin)."""

    def revoked(cert: x509.Certificate) -> bool:
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            return False
        record = store.get(cert.serial_number)
        return (
            record is None
            or record.fingerprint != str(Fingerprint.of(cert))
            or record.revoked_at is not None
        )

    return revoked
