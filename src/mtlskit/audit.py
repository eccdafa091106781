"""Audit a client-auth trust store: what would it let in that it should not?

A client trust store answers "whose signature makes a client?". A public root in it
answers "anyone who can pass domain validation"; an expired anchor or a CA whose
EKU excludes clientAuth answers nothing at all. Pure: certificates and the time
go in, findings come out (reusing lint's ``Finding``).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from mtlskit.certinfo import extension_or_none, is_self_signed
from mtlskit.certs import Fingerprint, key_info
from mtlskit.lint import Finding, Severity
from mtlskit.publicca import find_public_root

__all__ = ["AuditEntry", "AuditReport", "audit_trust_store"]

EXPIRY_WARNING = dt.timedelta(days=30)
GCP_MAX_DEPTH = 10  # GCP LB: chain depth at most 10
AWS_MAX_DEPTH = 4  # AWS ALB: chain depth at most 4
GCP_MAX_SAME_SUBJECT_KEY = 10  # GCP LB: at most 10 intermediates sharing subject and key

_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
_HAPROXY = "HAProxy configuration manual, 'ca-file' (client certificates)"
_GCP = "Google Cloud, mTLS client certificate requirements"
_AWS = "AWS ALB, mutual TLS authentication"
_RFC5280 = "RFC 5280 §4.1.2.5, §6.1"


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEntry:
    source: str
    index: int
    subject: str
    fingerprint: Fingerprint
    is_ca: bool
    findings: tuple[Finding, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "index": self.index,
            "subject": self.subject,
            "fingerprint": str(self.fingerprint),
            "ca": self.is_ca,
            "findings": [finding.as_dict() for finding in self.findings],
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditReport:
    entries: tuple[AuditEntry, ...]
    findings: tuple[Finding, ...]  # about the store as a whole

    @property
    def has_errors(self) -> bool:
        every = [f for entry in self.entries for f in entry.findings] + list(self.findings)
        return any(finding.severity is Severity.ERROR for finding in every)

    def as_dict(self) -> dict[str, Any]:
        return {
            "entries": [entry.as_dict() for entry in self.entries],
            "findings": [finding.as_dict() for finding in self.findings],
            "verdict": "fail" if self.has_errors else "pass",
        }


def _finding(code: str, severity: Severity, message: str, reference: str) -> Finding:
    return Finding(code=code, severity=severity, message=message, reference=reference)


def _is_ca(cert: x509.Certificate) -> bool:
    basic = extension_or_none(cert, x509.BasicConstraints)
    return bool(basic and basic.value.ca)


def _entry_findings(cert: x509.Certificate, now: dt.datetime) -> list[Finding]:
    findings: list[Finding] = []
    is_ca = _is_ca(cert)
    if find_public_root([cert]) is not None:
        kind = "a publicly trusted root" if is_self_signed(cert) else "issued by a public root"
        findings.append(
            _finding(
                "public_root_in_client_trust_store",
                Severity.ERROR,
                f"{kind}: anyone who can pass domain validation at a public CA becomes a "
                "client. Trust your private CA's root instead.",
                _HAPROXY,
            )
        )
    if cert.not_valid_after_utc < now:
        findings.append(
            _finding(
                "anchor_expired",
                Severity.ERROR,
                f"expired {cert.not_valid_after_utc:%Y-%m-%d}: no client chain can validate to it",
                _RFC5280,
            )
        )
    elif cert.not_valid_after_utc - now < EXPIRY_WARNING:
        days = (cert.not_valid_after_utc - now).days
        findings.append(
            _finding(
                "anchor_expiring_soon",
                Severity.WARNING,
                f"expires in {days} days ({cert.not_valid_after_utc:%Y-%m-%d}): roll it over now",
                _RFC5280,
            )
        )
    info = key_info(cert.public_key())
    if (
        (info.algorithm == "RSA" and info.size < 2048)
        or (info.algorithm == "EC" and info.size < 256)
        or info.algorithm == "DSA"
    ):
        findings.append(
            _finding(
                "anchor_key_weak",
                Severity.ERROR,
                f"{info} is too weak to anchor trust; use RSA ≥ 2048 or ECDSA P-256/P-384",
                "NIST SP 800-57 Part 1 Rev. 5, Table 2",
            )
        )
    eku = extension_or_none(cert, x509.ExtendedKeyUsage)
    if (
        is_ca
        and eku is not None
        and ExtendedKeyUsageOID.CLIENT_AUTH not in eku.value
        and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in eku.value
    ):
        findings.append(
            _finding(
                "ca_eku_excludes_client_auth",
                Severity.WARNING,
                "this CA's extendedKeyUsage excludes clientAuth, so it can never validate a "
                "client certificate: remove it or use a CA made for clients",
                "CA/B Forum TLS BR §7.1.2.2 (EKU chaining), " + _GCP,
            )
        )
    if not is_ca:
        kind = "self-signed client" if is_self_signed(cert) else "end-entity certificate"
        findings.append(
            _finding(
                "pinned_certificate",
                Severity.INFO,
                f"{kind}, trusted as a pin: check sha256 {Fingerprint.of(cert).colon_hex} "
                "out of band",
                "RFC 5280 §6.1 (trust anchors)",
            )
        )
    return findings


def _depth_above(cert: x509.Certificate, by_subject: dict[bytes, list[x509.Certificate]]) -> int:
    """How many CA certificates in the store lie above ``cert`` (signature-checked links)."""
    depth, current, seen = 0, cert, {Fingerprint.of(cert)}
    while not is_self_signed(current):
        parent = None
        for candidate in by_subject.get(current.issuer.public_bytes(), []):
            try:
                current.verify_directly_issued_by(candidate)
            except (ValueError, TypeError, InvalidSignature):
                continue
            parent = candidate
            break
        if parent is None or Fingerprint.of(parent) in seen:
            break
        seen.add(Fingerprint.of(parent))
        depth, current = depth + 1, parent
    return depth


def audit_trust_store(
    certificates: list[tuple[str, x509.Certificate]], *, now: dt.datetime
) -> AuditReport:
    """Audit every (source, certificate) of a client trust store at time ``now``."""
    counts = Counter(Fingerprint.of(cert) for _, cert in certificates)
    reported_duplicate: set[Fingerprint] = set()
    entries: list[AuditEntry] = []
    for index, (source, cert) in enumerate(certificates):
        fingerprint = Fingerprint.of(cert)
        findings = _entry_findings(cert, now)
        if counts[fingerprint] > 1 and fingerprint in reported_duplicate:
            findings.append(
                _finding(
                    "duplicate_certificate",
                    Severity.WARNING,
                    f"listed {counts[fingerprint]} times; keep one copy",
                    "housekeeping",
                )
            )
        reported_duplicate.add(fingerprint)
        entries.append(
            AuditEntry(
                source=source,
                index=index,
                subject=cert.subject.rfc4514_string() or "(empty)",
                fingerprint=fingerprint,
                is_ca=_is_ca(cert),
                findings=tuple(sorted(findings, key=lambda f: f.severity.rank)),
            )
        )
    return AuditReport(entries=tuple(entries), findings=tuple(_store_findings(certificates)))


def _store_findings(certificates: list[tuple[str, x509.Certificate]]) -> list[Finding]:
    unique = {Fingerprint.of(cert): cert for _, cert in certificates}
    cas = [cert for cert in unique.values() if _is_ca(cert)]
    findings: list[Finding] = []
    same: defaultdict[tuple[bytes, bytes], int] = defaultdict(int)
    for cert in cas:
        if not is_self_signed(cert):
            key = cert.public_key().public_bytes(*_SPKI)
            same[(cert.subject.public_bytes(), key)] += 1
    for count in same.values():
        if count > GCP_MAX_SAME_SUBJECT_KEY:
            findings.append(
                _finding(
                    "too_many_intermediates_same_subject_key",
                    Severity.WARNING,
                    f"{count} intermediates share one subject and key; GCP's load balancer "
                    f"accepts at most {GCP_MAX_SAME_SUBJECT_KEY}",
                    _GCP,
                )
            )
    by_subject: dict[bytes, list[x509.Certificate]] = defaultdict(list)
    for cert in cas:
        by_subject[cert.subject.public_bytes()].append(cert)
    deepest = max((_depth_above(cert, by_subject) + 1 for cert in cas), default=0)
    chain_depth = deepest + 1  # the client's leaf sits below the deepest CA
    for limit, peer, reference in ((GCP_MAX_DEPTH, "GCP", _GCP), (AWS_MAX_DEPTH, "AWS ALB", _AWS)):
        if chain_depth > limit:
            findings.append(
                _finding(
                    "chain_too_deep",
                    Severity.WARNING,
                    f"client chains under this store are {chain_depth} certificates deep; "
                    f"{peer} accepts at most {limit}",
                    reference,
                )
            )
    return findings
