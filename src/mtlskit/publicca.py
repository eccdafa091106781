"""Is a certificate publicly trusted, and what do the root programs say about clientAuth in it?

A public CA validates control of a domain, which says nothing about who a client
is; since 2026 the root programs also push public CAs out of clientAuth. This
module knows the Mozilla roots (certifi) and the dated policy events, and
evaluates a certificate against them. No network, no clock: the caller passes
the time.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from pathlib import Path

import certifi
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mtlskit.certs import UNREADABLE_EXTENSIONS, Fingerprint, load_certificates

__all__ = [
    "CLIENT_AUTH_TIMELINE",
    "EXTRA_ROOTS_ENV",
    "ClientAuthStatus",
    "ClientAuthVerdict",
    "PolicyEvent",
    "client_auth_status",
    "find_public_root",
    "public_roots",
]

EXTRA_ROOTS_ENV = "MTLSKIT_EXTRA_PUBLIC_ROOTS"
"""A PEM bundle treated as publicly trusted beside certifi's roots (a CCADB export, or a
simulated public root in tests and the demo). Read once per bundle path."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyEvent:
    """One dated rule about clientAuth in publicly trusted certificates, with its source.

    ``issuer_org`` limits a CA's own decision to certificates that CA issued (matched
    against the issuer's organizationName); ``None`` means a root-program rule for all.
    """

    date: dt.date
    applies_to: str  # "leaf" or "intermediate"
    rule: str
    source: str
    issuer_org: str | None = None
    final: bool = False  # from this date on, clientAuth is not issued at all under the rule

    def applies(self, cert: x509.Certificate, kind: str) -> bool:
        if self.applies_to != kind:
            return False
        if self.issuer_org is None:
            return True
        orgs = cert.issuer.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        return any(attribute.value == self.issuer_org for attribute in orgs)


_LE = "Let's Encrypt, 'Ending TLS Client Authentication Certificate Support in 2026'"
_CHROME = "Chrome Root Program Policy v1.8 §1.3.2"

CLIENT_AUTH_TIMELINE: tuple[PolicyEvent, ...] = (
    PolicyEvent(
        date=dt.date(2026, 2, 11),
        applies_to="leaf",
        rule="Let's Encrypt's default profile no longer includes clientAuth",
        source=_LE,
        issuer_org="Let's Encrypt",
    ),
    PolicyEvent(
        date=dt.date(2026, 6, 15),
        applies_to="intermediate",
        rule="intermediates disclosed under Chrome roots must be serverAuth-only",
        source=_CHROME,
        final=True,
    ),
    PolicyEvent(
        date=dt.date(2026, 6, 15),
        applies_to="leaf",
        rule="leaves under Chrome roots were to be serverAuth-only "
        "(the date of earlier policy versions; v1.8 moved it to 2027-03-15)",
        source="Chrome Root Program Policy before v1.8, §1.3.2",
    ),
    PolicyEvent(
        date=dt.date(2026, 7, 8),
        applies_to="leaf",
        rule="Let's Encrypt's tlsclient profile (serverAuth+clientAuth) ended",
        source=_LE,
        issuer_org="Let's Encrypt",
        final=True,
    ),
    PolicyEvent(
        date=dt.date(2027, 3, 15),
        applies_to="leaf",
        rule="leaf certificates under Chrome roots must carry serverAuth only",
        source=_CHROME,
        final=True,
    ),
)
"""The dates DESIGN.md §4 lists. The CA/B Forum baseline still allows clientAuth (MAY):
the split is a root-program rule, which is why every entry cites a root program or a CA."""


def public_roots(bundle: str | None = None) -> dict[bytes, list[x509.Certificate]]:
    """Public roots keyed by raw subject DER: certifi's Mozilla roots plus ``bundle``.

    ``bundle`` defaults to the file named by ``$MTLSKIT_EXTRA_PUBLIC_ROOTS``, if set.
    """
    return _roots(bundle if bundle is not None else os.environ.get(EXTRA_ROOTS_ENV))


@cache
def _roots(extra: str | None) -> dict[bytes, list[x509.Certificate]]:
    paths = [Path(certifi.where())] + ([Path(extra)] if extra else [])
    roots: dict[bytes, list[x509.Certificate]] = {}
    for path in paths:
        for cert in load_certificates(path.read_bytes(), source=str(path)):
            roots.setdefault(cert.subject.public_bytes(), []).append(cert)
    return roots


@cache
def _fingerprints(extra: str | None) -> frozenset[Fingerprint]:
    return frozenset(Fingerprint.of(cert) for certs in _roots(extra).values() for cert in certs)


def find_public_root(
    chain: list[x509.Certificate], *, bundle: str | None = None
) -> x509.Certificate | None:
    """The public root the given chain ends in, or ``None``.

    The top of the chain must either be a public root itself or be signed by one
    (signature checked, not just the issuer name), so a private CA that copies a
    public root's name is not mistaken for it.
    """
    if not chain:
        return None
    extra = bundle if bundle is not None else os.environ.get(EXTRA_ROOTS_ENV)
    top = chain[-1]
    if Fingerprint.of(top) in _fingerprints(extra):
        return top
    for root in _roots(extra).get(top.issuer.public_bytes(), []):
        try:
            top.verify_directly_issued_by(root)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return root
    return None


class ClientAuthStatus(StrEnum):
    """Where a publicly trusted certificate stands on clientAuth, judged at its notBefore."""

    NOT_CLIENT_AUTH = "no clientAuth"  # serverAuth-only: what the root programs want
    ALLOWED = "allowed"  # clientAuth was still permitted when it was issued
    PHASING_OUT = "being phased out"  # issued after a policy date, before the final cut-off
    NO_LONGER_ISSUED = "no longer issued"  # issued after the final cut-off: non-compliant


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientAuthVerdict:
    status: ClientAuthStatus
    events: tuple[PolicyEvent, ...]  # the events already in force at notBefore

    @property
    def compliant(self) -> bool:
        return self.status is not ClientAuthStatus.NO_LONGER_ISSUED

    def explain(self) -> str:
        if not self.events:
            return str(self.status)
        last = self.events[-1]
        return f"{self.status}: {last.rule} from {last.date.isoformat()} ({last.source})"


def _has_client_auth(cert: x509.Certificate) -> bool:
    """clientAuth explicitly, or no EKU at all (which means any purpose).

    Unreadable extensions count as "may": the verdict is there to flag, so a certificate
    whose EKU cannot be read is judged as if it allowed clientAuth.
    """
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except (x509.ExtensionNotFound, *UNREADABLE_EXTENSIONS):
        return True
    return ExtendedKeyUsageOID.CLIENT_AUTH in usages or (
        ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in usages
    )


def client_auth_status(cert: x509.Certificate, *, is_ca: bool = False) -> ClientAuthVerdict:
    """Judge a publicly trusted certificate's clientAuth by the policy in force at notBefore.

    Issued after a final rule's date: non-compliant; after an earlier date: being phased
    out. An intermediate is judged by the intermediate rule (its notBefore stands in for
    the disclosure date, which the certificate does not carry).
    """
    if not _has_client_auth(cert):
        return ClientAuthVerdict(status=ClientAuthStatus.NOT_CLIENT_AUTH, events=())
    issued = cert.not_valid_before_utc.date()
    kind = "intermediate" if is_ca else "leaf"
    relevant = tuple(e for e in CLIENT_AUTH_TIMELINE if e.date <= issued and e.applies(cert, kind))
    if any(event.final for event in relevant):
        status = ClientAuthStatus.NO_LONGER_ISSUED
    elif relevant:
        status = ClientAuthStatus.PHASING_OUT
    else:
        status = ClientAuthStatus.ALLOWED
    return ClientAuthVerdict(status=status, events=relevant)
