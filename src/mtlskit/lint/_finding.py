"""What lint says about one certificate: findings with a stable code, a severity and a source."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = ["CertificateReport", "Finding", "Severity"]


class Severity(StrEnum):
    """How bad a finding is; only ``error`` makes ``mtlskit lint`` exit 1.

    error: a peer (the load balancer, pyca's verifier, an SVID verifier) will reject it.
    warning: it works, but it is a risk or against a SHOULD. notice: worth knowing,
    e.g. a policy conflict or a date ahead. info: neutral facts.
    """

    ERROR = "error"
    WARNING = "warning"
    NOTICE = "notice"
    INFO = "info"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.NOTICE: 2, Severity.INFO: 3}


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    """One broken (or noteworthy) property; ``message`` says what was found and what to do."""

    code: str
    severity: Severity
    message: str
    reference: str

    def as_dict(self) -> dict[str, str]:
        return {
            "code": self.code,
            "severity": self.severity.value,
            "message": self.message,
            "reference": self.reference,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class CertificateReport:
    """The findings for ``chain[index]``, most severe first."""

    index: int
    subject: str
    findings: tuple[Finding, ...]

    @property
    def has_errors(self) -> bool:
        return any(finding.severity is Severity.ERROR for finding in self.findings)

    @property
    def codes(self) -> set[str]:
        return {finding.code for finding in self.findings}

    def at_least(self, severity: Severity) -> tuple[Finding, ...]:
        """The findings as severe as ``severity`` or worse."""
        return tuple(f for f in self.findings if f.severity.rank <= severity.rank)

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "subject": self.subject,
            "findings": [finding.as_dict() for finding in self.findings],
        }
