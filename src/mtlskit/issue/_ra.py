"""The registration authority: who gets a certificate through enrollment and renewal.

Pure over the store protocols. The order of ``enroll`` is the point: every check that
needs no state change (token known and fresh, CSR signature, identity, CA policy) runs
before the one atomic redemption, so a bad request burns no token and a good one can
be redeemed exactly once. Renewal trusts the TLS layer for proof of possession and
checks the rest against the CA's own records.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding

from mtlskit.certs import Fingerprint, load_certificates
from mtlskit.errors import InputError
from mtlskit.issue._approvers import revoked_by, verified_approvers
from mtlskit.issue._ca import CertificateAuthority, Issued
from mtlskit.issue._csr import CsrReview, load_csr, review_csr
from mtlskit.issue._enroll import (
    ApprovalRule,
    EnrollmentRefused,
    EnrollmentRequest,
    EnrollmentStore,
    RequestStatus,
    csr_hash,
    new_request_id,
    required_approvals,
    token_hash,
    unredeemable,
)
from mtlskit.issue._policy import IssuanceRefused
from mtlskit.issue._profile import CertificateProfile, parse_identity
from mtlskit.issue._provisioner import (
    OidcProvisioner,
    TokenIdStore,
    TokenRefused,
    VerifiedToken,
)
from mtlskit.issue._store import SerialTaken, Store

__all__ = ["RegistrationAuthority"]


class _Records(Store, EnrollmentStore, TokenIdStore, Protocol):
    """A store that keeps both certificates and enrollment state (``SqlStore`` does)."""


def _csr(data: bytes | str) -> x509.CertificateSigningRequest:
    raw = data.encode() if isinstance(data, str) else data
    try:
        return load_csr(raw, source="csr")
    except InputError as exc:
        raise EnrollmentRefused("csr_invalid", str(exc), status=400) from None


def _refused(refused: IssuanceRefused) -> EnrollmentRefused:
    return EnrollmentRefused("issuance_refused", str(refused), status=403)


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistrationAuthority:
    """Enrollment by token (with an optional approval queue) and renewal, over one CA."""

    authority: CertificateAuthority
    records: _Records
    approval: tuple[ApprovalRule, ...] = ()
    provisioners: tuple[OidcProvisioner, ...] = ()
    # ca.toml [est.labels]: other profiles this CA issues under, by EST label
    labels: Mapping[str, CertificateProfile] = field(default_factory=dict)

    def _check_csr(
        self, csr: x509.CertificateSigningRequest, identity: str, now: dt.datetime
    ) -> CsrReview:
        """Everything about a CSR that can be refused without changing a record; the review
        is what ``_issue`` signs from, so the CSR's signature is verified once. A name the
        CA will not use is dropped (and listed in the review), as ``ca sign`` does, unless
        ca.toml says ``csr_names = "must_match"``: then it is ``identity_mismatch``."""
        target = parse_identity(identity)
        try:
            review = review_csr(csr, identity=target, profile=self.authority.profile, source="csr")
        except InputError as exc:
            raise EnrollmentRefused("csr_invalid", str(exc), status=400) from None
        try:
            self.authority.check_csr_names(csr, target)
        except IssuanceRefused as refused:
            self.authority.record_refusal(refused, target, now)
            raise EnrollmentRefused("identity_mismatch", refused.reason) from None
        try:
            self.authority.check(target, review.public_key, now=now)
        except IssuanceRefused as refused:
            self.authority.record_refusal(refused, target, now)
            raise _refused(refused) from None
        return review

    def _issue(
        self,
        review: CsrReview,
        identity: str,
        now: dt.datetime,
        *,
        ttl: dt.timedelta | None = None,
    ) -> Issued:
        try:
            return self.authority.issue(
                parse_identity(identity),
                review.public_key,
                now=now,
                ttl=ttl,
                dropped=review.dropped,
            )
        except IssuanceRefused as refused:
            raise _refused(refused) from None

    def _sign(self, csr: x509.CertificateSigningRequest, identity: str, now: dt.datetime) -> Issued:
        try:
            return self.authority.sign(csr, parse_identity(identity), now=now, source="csr")
        except IssuanceRefused as refused:
            raise _refused(refused) from None

    def enroll(
        self, token: str, csr_data: bytes | str, *, now: dt.datetime, client: str = ""
    ) -> Issued | EnrollmentRequest:
        """Redeem ``token`` for a certificate, or for a pending request when approval is needed."""
        hashed = token_hash(token)
        csr = _csr(csr_data)
        record = self.records.find_token(hashed)
        if record is None or record.used_at is not None or record.expires_at <= now:
            raise unredeemable(record, now)
        review = self._check_csr(csr, record.identity, now)
        digest = csr_hash(csr)
        signed = self._presign(review, record.identity, now)
        self.records.redeem_token(
            hashed,
            at=now,
            detail={"identity": record.identity, "csr_sha256": digest, "client": client},
        )
        return self._issue_or_queue(
            review,
            csr,
            digest=digest,
            identity=record.identity,
            now=now,
            client=client,
            signed=signed,
        )

    def _presign(self, review: CsrReview, identity: str, now: dt.datetime) -> Issued | None:
        """The certificate, signed before the token is burned; ``None`` when people must
        approve first. On PostgreSQL each write commits itself (no group to roll back), so
        a CA key that cannot sign (``KeyUnavailable``: a token pulled out) must fail before
        the redemption, not after it: the token stays usable and nothing is recorded."""
        if required_approvals(self.approval, identity):
            return None
        target = parse_identity(identity)
        try:
            return self.authority.issue(
                target, review.public_key, now=now, dropped=review.dropped, dry_run=True
            )
        except IssuanceRefused as refused:  # a dry run audits nothing: this refusal is real
            self.authority.record_refusal(refused, target, now)
            raise _refused(refused) from None

    def _issue_or_queue(
        self,
        review: CsrReview,
        csr: x509.CertificateSigningRequest,
        *,
        digest: str,
        identity: str,
        now: dt.datetime,
        client: str,
        signed: Issued | None,
    ) -> Issued | EnrollmentRequest:
        required = required_approvals(self.approval, identity)
        if not required:
            if signed is not None:
                try:
                    return self.authority.record(signed, parse_identity(identity), now=now)
                except SerialTaken:
                    pass  # drawn twice: a new serial, signed again
            return self._issue(review, identity, now)
        request = EnrollmentRequest(
            id=new_request_id(),
            identity=identity,
            csr_pem=csr.public_bytes(Encoding.PEM),
            csr_sha256=digest,
            required=required,
            status=RequestStatus.PENDING,
            created_at=now,
            client=client,
        )
        self.records.add_request(request)
        return request

    def enroll_verified(
        self, token: VerifiedToken, csr_data: bytes | str, *, now: dt.datetime, client: str = ""
    ) -> Issued | EnrollmentRequest:
        """Enroll with a workload-identity token already verified (``verify_token``): its
        templated identity through the same CSR and policy checks as a one-time token's,
        then its ``jti`` burned (every node sees it: the CA database), then issuance."""
        if not any(
            p.name == token.provisioner and p.issuer == token.issuer for p in self.provisioners
        ):  # ca.toml changed between verification and this decision
            raise TokenRefused("token_issuer_unknown", f"provisioner {token.provisioner} is gone")
        csr = _csr(csr_data)
        review = self._check_csr(csr, token.identity, now)
        digest = csr_hash(csr)
        signed = self._presign(review, token.identity, now)
        detail = {
            "provisioner": token.provisioner,
            "issuer": token.issuer,
            "subject": token.subject,
            "identity": token.identity,
            "csr_sha256": digest,
            "client": client,
        }
        if token.jti is not None:
            self.records.use_token_id(
                token.issuer, token.jti, expires_at=token.expires_at, at=now, detail=detail
            )
        else:
            self.authority.store.record_event("id_token", detail, at=now)
        return self._issue_or_queue(
            review,
            csr,
            digest=digest,
            identity=token.identity,
            now=now,
            client=client,
            signed=signed,
        )

    def poll(self, request_id: str, *, now: dt.datetime) -> Issued | EnrollmentRequest:
        """A pending request as it stands, or its certificate once enough people approved it."""
        request = self.records.get_request(request_id)
        if request is None:
            raise EnrollmentRefused("request_unknown", "no such enrollment request", status=404)
        if request.status is RequestStatus.DENIED:
            raise EnrollmentRefused("request_denied", "this enrollment request was denied")
        if request.status is RequestStatus.ISSUED and request.serial is not None:
            stored = self.authority.store.get(request.serial)
            if stored is None:
                raise RuntimeError(
                    f"request {request.id} names serial {request.serial:x}, not stored"
                )
            cert = load_certificates(stored.pem, source="store")[0]
            return Issued(cert=cert, chain=(cert, *self.authority.issuer.chain))
        if request.status is not RequestStatus.APPROVED:
            return request
        # The database says approved; the CA counts again, from the signatures.
        issuer = self.authority.issuer.cert
        people = verified_approvers(
            request,
            {record.fingerprint: record for record in self.records.approvers()},
            ca_public_key=issuer.public_key(),
            revoked=revoked_by(issuer, self.authority.store),
        )
        if len(people) < request.required:
            self.authority.store.record_event(
                "approval_unverified",
                {"request": request.id, "verified": list(people), "required": request.required},
                at=now,
            )
            return request
        if not self.records.claim_request(request.id):
            return request
        csr = _csr(request.csr_pem)
        if csr_hash(csr) != request.csr_sha256:
            self.records.finish_request(request.id, serial=None, at=now)
            raise RuntimeError(f"request {request.id} was approved for a different CSR")
        try:
            issued = self._sign(csr, request.identity, now)
        except BaseException:
            self.records.finish_request(request.id, serial=None, at=now)
            raise
        self.records.finish_request(request.id, serial=issued.cert.serial_number, at=now)
        return issued

    def renew(
        self,
        presented: x509.Certificate,
        csr_data: bytes | str | None,
        *,
        now: dt.datetime,
    ) -> Issued:
        """A new certificate for the holder of ``presented`` (its key proven by the TLS
        handshake): same identity, new serial, the same key unless a CSR brings a new one."""
        issuer = self.authority.issuer.cert
        try:
            presented.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature):
            raise EnrollmentRefused(
                "cert_unknown", "certificate was not issued by this CA"
            ) from None
        stored = self.authority.store.get(presented.serial_number)
        if stored is None or stored.fingerprint != str(Fingerprint.of(presented)):
            raise EnrollmentRefused("cert_unknown", "certificate is not in this CA's records")
        if stored.revoked_at is not None:
            raise EnrollmentRefused("cert_revoked", "certificate is revoked")
        if stored.not_after <= now:
            raise EnrollmentRefused("cert_expired", "certificate has expired; enroll again")
        identity = parse_identity(stored.identity)
        ttl = self.authority.renewal_ttl(stored)  # the lifetime it had, not default_ttl
        try:
            if csr_data is None:
                issued = self.authority.issue(identity, presented.public_key(), now=now, ttl=ttl)
            else:
                review = self._check_csr(_csr(csr_data), stored.identity, now)
                issued = self._issue(review, stored.identity, now, ttl=ttl)
        except IssuanceRefused as refused:
            raise _refused(refused) from None
        self.authority.store.record_event(
            "renew",
            {
                "identity": stored.identity,
                "from": f"{stored.serial:x}",
                "to": f"{issued.cert.serial_number:x}",
                "rekey": csr_data is not None,
            },
            at=now,
        )
        return issued
