"""The CA's decisions in one place: check the request, build, lint, record, hand out.

Pure over a ``Store``: the clock is a parameter, the records come through the protocol.
The order of ``issue`` is the point of this module: policy before signing, lint before
recording, recording (durably) before returning. A certificate that fails lint is
never returned and never recorded as valid.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass, field
from typing import Final, Literal

from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, VerificationError
from cryptography.x509.verification import Store as TrustAnchors

from mtlskit.certs import Fingerprint, PublicKey, certificate_pem
from mtlskit.identity import ClientIdentity
from mtlskit.issue._build import BACKDATE, Issuer, build_leaf, build_server_certificate
from mtlskit.issue._crl import build_crl
from mtlskit.issue._csr import CsrReview, review_csr
from mtlskit.issue._enroll import foreign_csr_names
from mtlskit.issue._policy import IdentityPolicy, IssuanceRefused, format_duration
from mtlskit.issue._profile import SERVER_AUTH, CertificateProfile
from mtlskit.issue._store import CertificateRecord, SerialTaken, Store
from mtlskit.lint import Severity, lint_chain

__all__ = ["CertificateAuthority", "Issued", "lint_errors"]

SERIAL_ATTEMPTS: Final = 4  # a collision of 159 random bits is a bug or an attack, not luck


@dataclass(frozen=True, slots=True, kw_only=True)
class Issued:
    """A certificate the CA signed, its chain (leaf first, root last), and what it refused."""

    cert: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    dropped: tuple[str, ...] = field(default=())
    recorded: bool = True

    @property
    def fingerprint(self) -> Fingerprint:
        return Fingerprint.of(self.cert)


def lint_errors(
    chain: tuple[x509.Certificate, ...],
    profile: CertificateProfile,
    now: dt.datetime,
    *,
    leaf_signature_vouched: bool = False,
) -> list[str]:
    """The error findings mtlskit's own lint reports for ``chain`` under the profile.

    ``leaf_signature_vouched`` is ``lint_chain``'s: only ``CertificateAuthority.issue``
    sets it, for a leaf it has just signed with an issuer whose signatures are proven.
    """
    if profile.lint_profile is None:
        raise ValueError(f"profile {profile.name} has no lint profile")
    reports = lint_chain(
        list(chain), [profile.lint_profile], at=now, leaf_signature_vouched=leaf_signature_vouched
    )
    return [
        f"{finding.code} (certificate {report.index}): {finding.message}"
        for report in reports
        for finding in report.findings
        if finding.severity is Severity.ERROR
    ]


def _server_verify_problem(
    chain: tuple[x509.Certificate, ...], hosts: tuple[str, ...], now: dt.datetime
) -> str | None:
    """Why a TLS client trusting ``chain[-1]`` would refuse ``chain[0]`` for one of
    ``hosts`` (pyca's web-PKI server verifier, as browsers and curl judge it); None if
    none would."""
    verifier_policy = PolicyBuilder().store(TrustAnchors([chain[-1]])).time(now)
    for host in hosts:
        try:
            subject: x509.DNSName | x509.IPAddress = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            subject = x509.DNSName(host)
        try:
            verifier_policy.build_server_verifier(subject).verify(chain[0], list(chain[1:-1]))
        except VerificationError as exc:
            return f"the certificate does not verify as a server for {host}: {exc}"
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class CertificateAuthority:
    """A private CA: one issuer, one profile, one identity policy, one store."""

    issuer: Issuer
    profile: CertificateProfile
    policy: IdentityPolicy
    store: Store
    default_ttl: dt.timedelta
    crl_validity: dt.timedelta
    # ca.toml ``csr_names``: "ignore" drops (and reports) a CN or SAN the CA will not use,
    # for ``ca sign`` and enrollment alike; "must_match" refuses such a CSR.
    csr_names: Literal["ignore", "must_match"] = "ignore"

    def renewal_ttl(self, record: CertificateRecord) -> dt.timedelta:
        """The lifetime a renewal of ``record`` gets: its own (a 2-minute certificate renews
        as one, not as ``default_ttl``), capped at today's ``max_ttl``."""
        lifetime = record.not_after - record.not_before - BACKDATE  # issue() backdates
        if lifetime <= dt.timedelta(0):
            return self.default_ttl
        return min(lifetime, self.policy.max_ttl)

    def check_csr_names(
        self, csr: x509.CertificateSigningRequest, identity: ClientIdentity
    ) -> None:
        """Raise ``IssuanceRefused`` (rule ``csr_names``) when the policy wants the CSR to
        name only ``identity`` and it names something else; otherwise nothing to refuse."""
        if self.csr_names != "must_match":
            return
        others = foreign_csr_names(csr, identity.value)
        if others:
            raise IssuanceRefused(
                "csr_names",
                f"the CSR names {', '.join(others)}, but this certificate is for {identity}",
            )

    def _check(
        self, identity: ClientIdentity, key: PublicKey, ttl: dt.timedelta, now: dt.datetime
    ) -> None:
        if self.profile.spiffe_only and identity.spiffe_id is None:
            raise IssuanceRefused(
                "profile", f"profile {self.profile.name} issues SPIFFE IDs only, not {identity}"
            )
        self.policy.check(identity, key, ttl)
        self._check_issuer_validity(ttl, now)

    def _check_issuer_validity(self, ttl: dt.timedelta, now: dt.datetime) -> None:
        if now + ttl > self.issuer.cert.not_valid_after_utc:
            raise IssuanceRefused(
                "issuer_validity",
                f"a {format_duration(ttl)} certificate would outlive the issuing CA "
                f"(valid until {self.issuer.cert.not_valid_after_utc.isoformat()})",
            )

    def check(
        self,
        identity: ClientIdentity,
        public_key: PublicKey,
        *,
        now: dt.datetime,
        ttl: dt.timedelta | None = None,
    ) -> None:
        """Raise ``IssuanceRefused`` as ``issue`` would, without signing or recording anything.

        Enrollment asks first, so a request the policy refuses never burns its token.
        """
        self._check(identity, public_key, ttl or self.default_ttl, now)

    def record_refusal(
        self, refused: IssuanceRefused, identity: ClientIdentity, now: dt.datetime
    ) -> None:
        """Audit a refusal found by ``check`` (``issue`` audits its own)."""
        self._refuse(refused, identity, now)

    def _refuse(self, refused: IssuanceRefused, identity: ClientIdentity, now: dt.datetime) -> None:
        self._record_refusal(refused, identity.value, now)

    def _record_refusal(self, refused: IssuanceRefused, identity: str, now: dt.datetime) -> None:
        self.store.record_event(
            "refuse", {"identity": identity, "rule": refused.rule, "reason": refused.reason}, at=now
        )

    def issue(
        self,
        identity: ClientIdentity,
        public_key: PublicKey,
        *,
        now: dt.datetime,
        ttl: dt.timedelta | None = None,
        dropped: tuple[str, ...] = (),
        dry_run: bool = False,
    ) -> Issued:
        """Sign a certificate for ``identity`` and ``public_key``, or raise ``IssuanceRefused``.

        ``dry_run`` builds, signs and lints exactly as for real, but records nothing and
        writes no audit entry: what it returns is what would have been issued.
        """
        ttl = ttl or self.default_ttl
        try:
            self._check(identity, public_key, ttl, now)
        except IssuanceRefused as refused:
            if not dry_run:
                self._refuse(refused, identity, now)
            raise
        for _ in range(SERIAL_ATTEMPTS):
            cert = build_leaf(
                issuer=self.issuer,
                identity=identity,
                public_key=public_key,
                profile=self.profile,
                not_before=now - BACKDATE,
                not_after=now + ttl,
                serial=x509.random_serial_number(),
            )
            chain = (cert, *self.issuer.chain)
            # The whole chain, every time: a CA defect (a root's pathlen of 0 over an
            # intermediate) shows up only when the leaf is linted with all of it. The
            # signature just made is not verified again when the issuer proved, once,
            # that the leaves it signs verify (``Issuer.leaf_signatures_proven``).
            errors = lint_errors(
                chain,
                self.profile,
                now,
                leaf_signature_vouched=self.issuer.leaf_signatures_proven,
            )
            if errors:
                refused = IssuanceRefused("lint", "; ".join(errors))
                if not dry_run:
                    self._refuse(refused, identity, now)
                raise refused
            if dry_run:
                return Issued(cert=cert, chain=chain, dropped=dropped, recorded=False)
            try:
                self._add_leaf(cert, identity, now)
            except SerialTaken:
                continue
            return Issued(cert=cert, chain=chain, dropped=dropped)
        raise RuntimeError(f"{SERIAL_ATTEMPTS} random serials in a row were taken")

    def _add_leaf(self, cert: x509.Certificate, identity: ClientIdentity, now: dt.datetime) -> None:
        self.store.add_certificate(
            CertificateRecord(
                serial=cert.serial_number,
                identity=identity.value,
                fingerprint=str(Fingerprint.of(cert)),
                not_before=cert.not_valid_before_utc,
                not_after=cert.not_valid_after_utc,
                profile=self.profile.name,
                pem=certificate_pem(cert),
                issued_at=now,
            )
        )

    def record(self, signed: Issued, identity: ClientIdentity, *, now: dt.datetime) -> Issued:
        """Record what ``issue(..., dry_run=True)`` signed for ``identity`` at ``now``.

        Enrollment signs first and burns its token after, so a CA key that cannot sign
        (a token pulled out) leaves the token usable on a store where each write commits
        itself. ``SerialTaken`` (a 159-bit random serial drawn twice) is raised, for the
        caller to ``issue`` afresh."""
        self._add_leaf(signed.cert, identity, now)
        return Issued(cert=signed.cert, chain=signed.chain, dropped=signed.dropped)

    def issue_server(
        self,
        hosts: tuple[str, ...],
        public_key: PublicKey,
        *,
        now: dt.datetime,
        ttl: dt.timedelta | None = None,
    ) -> Issued:
        """A TLS server certificate (profile ``SERVER_AUTH``) for ``hosts`` (DNS names and IP
        addresses, as ``parse_server_hosts`` gives them), or ``IssuanceRefused``.

        ``max_ttl``, ``key_types`` and the issuer's validity apply as to any certificate;
        ``allowed_ids`` does not (it names clients). Before it is recorded, the chain must
        verify as a server for every host under the CA's root (pyca's web-PKI verifier, so
        a CA name constraint that excludes a host refuses it here, not in the browser). It
        is recorded like a client certificate: ``ca list`` shows it, ``ca revoke`` and the
        CRL cover it; its recorded identity is the hosts joined by ``,``.
        """
        identity = ",".join(hosts)
        ttl = ttl or self.default_ttl
        try:
            self.policy.check_lifetime_and_key(public_key, ttl)
            self._check_issuer_validity(ttl, now)
        except IssuanceRefused as refused:
            self._record_refusal(refused, identity, now)
            raise
        for _ in range(SERIAL_ATTEMPTS):
            cert = build_server_certificate(
                issuer=self.issuer,
                public_key=public_key,
                hosts=hosts,
                not_before=now - BACKDATE,
                not_after=now + ttl,
                serial=x509.random_serial_number(),
            )
            chain = (cert, *self.issuer.chain)
            problem = _server_verify_problem(chain, hosts, now)
            if problem:
                refused = IssuanceRefused("server_verify", problem)
                self._record_refusal(refused, identity, now)
                raise refused
            try:
                self.store.add_certificate(
                    CertificateRecord(
                        serial=cert.serial_number,
                        identity=identity,
                        fingerprint=str(Fingerprint.of(cert)),
                        not_before=cert.not_valid_before_utc,
                        not_after=cert.not_valid_after_utc,
                        profile=SERVER_AUTH.name,
                        pem=certificate_pem(cert),
                        issued_at=now,
                    )
                )
            except SerialTaken:
                continue
            return Issued(cert=cert, chain=chain)
        raise RuntimeError(f"{SERIAL_ATTEMPTS} random serials in a row were taken")

    def sign(
        self,
        csr: x509.CertificateSigningRequest,
        identity: ClientIdentity,
        *,
        now: dt.datetime,
        ttl: dt.timedelta | None = None,
        dry_run: bool = False,
        source: str = "<csr>",
    ) -> Issued:
        """Issue for a CSR's key: the CA, not the CSR, decides every extension."""
        review: CsrReview = review_csr(csr, identity=identity, profile=self.profile, source=source)
        try:
            self.check_csr_names(csr, identity)
        except IssuanceRefused as refused:
            if not dry_run:
                self._refuse(refused, identity, now)
            raise
        return self.issue(
            identity,
            review.public_key,
            now=now,
            ttl=ttl,
            dropped=review.dropped,
            dry_run=dry_run,
        )

    def revoke(
        self, serial: int, *, reason: x509.ReasonFlags, now: dt.datetime
    ) -> CertificateRecord:
        return self.store.revoke(serial, reason=reason, at=now)

    def crl(self, *, now: dt.datetime) -> x509.CertificateRevocationList:
        """A fresh CRL with the next CRL number; expired certificates drop off it."""
        revoked = self.store.revoked_unexpired(now)
        number = self.store.next_crl_number(
            at=now,
            detail={"revoked": len(revoked), "next_update": (now + self.crl_validity).isoformat()},
        )
        return build_crl(
            issuer=self.issuer,
            revoked=revoked,
            number=number,
            this_update=now,
            next_update=now + self.crl_validity,
        )
