"""The probe's battery as data: which cases, what each must get, and how a verdict follows.

No IO here. A case says what it needs (the public certificate, its key, a CA
directory, an echo backend) and what the endpoint should do with it; the shell
reports an ``Observation``; ``judge`` turns the pair into a ``Verdict`` through one
table. Expectations come in three strengths, because not every refusal is a
security boundary:

- ``refuse``: accepting it is a hole (a copied certificate without its key, an
  unknown issuer, an expired or revoked certificate, a serverAuth-only one, weak
  crypto an attacker can forge). Accepted → ``FAIL`` and exit 1.
- ``should_refuse``: a certificate the endpoint's own CA signed but that breaks the
  client profile (CA:TRUE leaf, no SAN, two SPIFFE IDs, another trust domain).
  Only the endpoint's CA could have made it, so accepting it is a ``finding``,
  not a breach: whether it matters depends on what reads the identity next.
- ``info``: a policy choice with no right answer. A leaf without EKU is valid for
  every purpose (RFC 5280 §4.2.1.12), OpenSSL and pyca accept it, mtlskit's gateway
  refuses it unless ``allow_missing_eku``: the probe reports what it saw.

``accept`` marks the controls (the real client with its key, a clean certificate
from the CA directory): if a control is refused, the refusals around it prove
nothing, so that is a ``FAIL`` too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

__all__ = [
    "CASES",
    "SPOOF_HEADERS",
    "Case",
    "CaseResult",
    "Expect",
    "Needs",
    "Observation",
    "Outcome",
    "ProbeReport",
    "Verdict",
    "alert_from_ssl_error",
    "http_status",
    "judge",
    "spoofed_arrivals",
]


class Expect(StrEnum):
    REFUSE = "refuse"
    SHOULD_REFUSE = "should_refuse"
    ACCEPT = "accept"
    INFO = "info"


class Needs(StrEnum):
    """What a case needs besides the target and the public certificate."""

    CERT = "cert"
    KEY = "key"  # the legitimate client's private key (--key)
    CA = "ca"  # a CA directory the endpoint trusts (--ca-dir)
    ECHO = "echo"  # a backend that echoes the headers it received (--echo), and --key


class Outcome(StrEnum):
    ACCEPTED = "accepted"  # handshake done and HTTP status < 400 (or no HTTP at all)
    REFUSED = "refused"  # a TLS alert, a closed connection, or HTTP status >= 400
    ERROR = "error"  # the probe could not tell: unreachable, timeout, a local failure
    SKIPPED = "skipped"  # not run: a missing input or tool, with the reason


class Verdict(StrEnum):
    PASS = "pass"
    FAIL = "FAIL"
    FINDING = "finding"
    INFO = "info"
    SKIPPED = "skipped"
    ERROR = "error"


@dataclass(frozen=True, slots=True, kw_only=True)
class Case:
    id: str
    title: str
    expect: Expect
    needs: Needs
    why: str


CASES: Final[tuple[Case, ...]] = (
    Case(
        id="control",
        title="legitimate certificate with its key",
        expect=Expect.ACCEPT,
        needs=Needs.KEY,
        why="negative control: without it every refusal below could be a broken setup",
    ),
    Case(
        id="no-client-cert",
        title="no client certificate",
        expect=Expect.REFUSE,
        needs=Needs.CERT,
        why="an mTLS endpoint that lets anonymous clients in is not mTLS",
    ),
    Case(
        id="foreign-key-tls1.2",
        title="legitimate certificate, foreign key (TLS 1.2)",
        expect=Expect.REFUSE,
        needs=Needs.CERT,
        why="the certificate is public; only CertificateVerify proves possession of the key",
    ),
    Case(
        id="foreign-key-tls1.3",
        title="legitimate certificate, foreign key (TLS 1.3)",
        expect=Expect.REFUSE,
        needs=Needs.CERT,
        why="the certificate is public; only CertificateVerify proves possession of the key",
    ),
    Case(
        id="unknown-ca",
        title="same subject and SAN from an unknown CA",
        expect=Expect.REFUSE,
        needs=Needs.CERT,
        why="names are free to copy; the issuer must be one the endpoint trusts",
    ),
    Case(
        id="self-signed-impostor",
        title="self-signed certificate with the same subject and SAN",
        expect=Expect.REFUSE,
        needs=Needs.CERT,
        why="anyone can sign their own certificate for any name",
    ),
    Case(
        id="ca-control",
        title="clean certificate from the CA directory",
        expect=Expect.ACCEPT,
        needs=Needs.CA,
        why="control for every CA case: the endpoint trusts this CA",
    ),
    Case(
        id="expired",
        title="expired",
        expect=Expect.REFUSE,
        needs=Needs.CA,
        why="validity ends trust; short lifetimes mean nothing if expiry is ignored",
    ),
    Case(
        id="not-yet-valid",
        title="not yet valid",
        expect=Expect.REFUSE,
        needs=Needs.CA,
        why="a certificate dated in the future was not meant to be used yet",
    ),
    Case(
        id="server-auth-only",
        title="EKU serverAuth only",
        expect=Expect.REFUSE,
        needs=Needs.CA,
        why="a server certificate is not a client credential (EKU clientAuth)",
    ),
    Case(
        id="no-eku",
        title="no EKU",
        expect=Expect.INFO,
        needs=Needs.CA,
        why="RFC 5280: no EKU means any purpose; OpenSSL and pyca accept it, policy decides",
    ),
    Case(
        id="ca-true-leaf",
        title="leaf with CA:TRUE",
        expect=Expect.SHOULD_REFUSE,
        needs=Needs.CA,
        why="a client certificate must be CA:FALSE (client-auth and SPIFFE profiles)",
    ),
    Case(
        id="no-san",
        title="no subjectAltName",
        expect=Expect.SHOULD_REFUSE,
        needs=Needs.CA,
        why="SAN carries the identity (RFC 5280 §4.2.1.6); subject CN is a legacy fallback",
    ),
    Case(
        id="two-spiffe-ids",
        title="two SPIFFE URI SANs",
        expect=Expect.SHOULD_REFUSE,
        needs=Needs.CA,
        why="an X509-SVID has exactly one URI SAN; verifiers must reject more",
    ),
    Case(
        id="foreign-trust-domain",
        title="SPIFFE ID in another trust domain",
        expect=Expect.SHOULD_REFUSE,
        needs=Needs.CA,
        why="a bundle vouches for its own trust domain only",
    ),
    Case(
        id="rsa-1024",
        title="RSA-1024 key",
        expect=Expect.REFUSE,
        needs=Needs.CA,
        why="1024-bit RSA is within reach of factoring; below every baseline (GCP: 2048)",
    ),
    Case(
        id="sha1",
        title="SHA-1 signature",
        expect=Expect.REFUSE,
        needs=Needs.CA,
        why="SHA-1 chosen-prefix collisions are practical: a SHA-1 signature can be forged",
    ),
    Case(
        id="header-spoofing",
        title="client-sent identity headers",
        expect=Expect.REFUSE,
        needs=Needs.ECHO,
        why="a backend reading a client's own X-Client-Cert-* / XFCC believes anything",
    ),
    Case(
        id="revoked",
        title="revoked (CRL published)",
        expect=Expect.REFUSE,
        needs=Needs.CA,
        why="revocation is the only way to stop a leaked key before expiry",
    ),
)
# ``revoked`` runs last on purpose: its CRL is published before the battery starts,
# so an endpoint that polls its CRL file has the whole run to pick it up.


@dataclass(frozen=True, slots=True, kw_only=True)
class Observation:
    """What the endpoint did: an outcome, the TLS alert or HTTP status that shows it, a detail."""

    outcome: Outcome
    alert: str | None = None
    http_status: int | None = None
    tls_version: str | None = None
    detail: str = ""

    def summary(self) -> str:
        """One short phrase for a table cell: ``refused: alert decrypt_error``."""
        if self.outcome is Outcome.SKIPPED:
            return f"skipped: {self.detail}"
        if self.outcome is Outcome.ERROR:
            return f"error: {self.detail}"
        parts = []
        if self.alert:
            parts.append(f"alert {self.alert}")
        if self.http_status is not None:
            parts.append(f"HTTP {self.http_status}")
        if self.detail:
            parts.append(self.detail)
        return f"{self.outcome.value}: {', '.join(parts)}" if parts else self.outcome.value

    def as_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome.value,
            "alert": self.alert,
            "http_status": self.http_status,
            "tls_version": self.tls_version,
            "detail": self.detail,
        }


_VERDICTS: Final[dict[tuple[Expect, Outcome], Verdict]] = {
    (Expect.REFUSE, Outcome.REFUSED): Verdict.PASS,
    (Expect.REFUSE, Outcome.ACCEPTED): Verdict.FAIL,
    (Expect.SHOULD_REFUSE, Outcome.REFUSED): Verdict.PASS,
    (Expect.SHOULD_REFUSE, Outcome.ACCEPTED): Verdict.FINDING,
    (Expect.ACCEPT, Outcome.ACCEPTED): Verdict.PASS,
    (Expect.ACCEPT, Outcome.REFUSED): Verdict.FAIL,
    (Expect.INFO, Outcome.ACCEPTED): Verdict.INFO,
    (Expect.INFO, Outcome.REFUSED): Verdict.INFO,
}


def judge(case: Case, observation: Observation) -> Verdict:
    """The verdict for one case; errors and skips keep their own name whatever was expected."""
    if observation.outcome is Outcome.ERROR:
        return Verdict.ERROR
    if observation.outcome is Outcome.SKIPPED:
        return Verdict.SKIPPED
    return _VERDICTS[case.expect, observation.outcome]


@dataclass(frozen=True, slots=True, kw_only=True)
class CaseResult:
    case: Case
    observation: Observation
    verdict: Verdict

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.case.id,
            "title": self.case.title,
            "expect": self.case.expect.value,
            "why": self.case.why,
            "observed": self.observation.as_dict(),
            "summary": self.observation.summary(),
            "verdict": self.verdict.value,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class ProbeReport:
    """Every case's result against one endpoint, and the exit code they add up to."""

    target: str
    server_name: str | None
    results: tuple[CaseResult, ...]
    notes: tuple[str, ...] = field(default=())

    def count(self, verdict: Verdict) -> int:
        return sum(1 for result in self.results if result.verdict is verdict)

    def result(self, case_id: str) -> CaseResult:
        return next(result for result in self.results if result.case.id == case_id)

    @property
    def exit_code(self) -> int:
        """1: a must-refuse case was accepted or a control refused; 2: some case could not run
        (an error, not a skip), so the battery is incomplete; else 0 (findings included)."""
        if self.count(Verdict.FAIL):
            return 1
        return 2 if self.count(Verdict.ERROR) else 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "server_name": self.server_name,
            "cases": [result.as_dict() for result in self.results],
            "counts": {verdict.value: self.count(verdict) for verdict in Verdict},
            "notes": list(self.notes),
            "exit_code": self.exit_code,
        }


_ALERT_REASON: Final = re.compile(r"(?:SSLV3|TLSV1|TLSV13)_ALERT_([A-Z_]+)")


def alert_from_ssl_error(reason: str | None, message: str = "") -> str | None:
    """The TLS alert name in an OpenSSL reason: ``TLSV1_ALERT_DECRYPT_ERROR`` → ``decrypt_error``.

    OpenSSL names a received alert ``SSLV3_ALERT_*``, ``TLSV1_ALERT_*`` or
    ``TLSV13_ALERT_*`` by the version that introduced it; the suffix is the RFC name.
    Python's ``SSLError.reason`` is that identifier; the message is a fallback for
    errors raised without one.
    """
    for text in (reason or "", message):
        found = _ALERT_REASON.search(text.upper())
        if found:
            return found.group(1).lower()
    return None


_STATUS_LINE: Final = re.compile(rb"HTTP/\d(?:\.\d)? (\d{3})")


def http_status(response: bytes) -> int | None:
    """The status code of an HTTP/1.x response, or ``None`` if the bytes are not one."""
    found = _STATUS_LINE.match(response)
    return int(found.group(1)) if found else None


# The names a TLS-terminating proxy writes and a client must never get through:
# GCP-style, Envoy XFCC, RFC 9440, AWS ALB, nginx-config folklore, mtlskit's own.
SPOOF_HEADERS: Final[tuple[str, ...]] = (
    "X-Client-Cert-Present",
    "X-Client-Cert-Chain-Verified",
    "X-Client-Cert-Spiffe",
    "X-Client-Cert-Uri-Sans",
    "X-Forwarded-Client-Cert",
    "Client-Cert",
    "Client-Cert-Chain",
    "X-Amzn-Mtls-Clientcert-Subject",
    "X-Amzn-Mtls-Clientcert-Leaf",
    "X-SSL-Client-Verify",
    "X-Mtlskit-Client-Identity",
)


def spoofed_arrivals(echoed: bytes, markers: dict[str, str]) -> list[str]:
    """The header names whose unique marker value shows up in the echoed response.

    Searching for the marker, not parsing the echo's format, works with any
    backend that reflects what it received; a marker inside a proxy's own header
    (XFCC appended rather than replaced) counts as arrived, as it should.
    """
    return [name for name, marker in markers.items() if marker.encode() in echoed]
