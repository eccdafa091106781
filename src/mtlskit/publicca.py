"""Is a certificate publicly trusted, and what do the root programs say about clientAuth in it?

A public CA validates control of a domain, which says nothing about who a client
is; since 2026 the root programs also push public CAs out of clientAuth. This
module knows the Mozilla roots (certifi) and the dated policy events, and
evaluates a certificate against them. No network, no clock: the caller passes
the time.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import certifi
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from mtlskit.certs import Fingerprint, load_certificates

__all__ = [
    "CLIENT_AUTH_TIMELINE",
    "PolicyEvent",
    "find_public_root",
    "public_roots",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyEvent:
    """One dated rule about clientAuth in publicly trusted certificates, with its source."""

    date: dt.date
    applies_to: str  # "leaf" or "intermediate"
    rule: str
    source: str


CLIENT_AUTH_TIMELINE: tuple[PolicyEvent, ...] = (
    PolicyEvent(
        date=dt.date(2026, 2, 11),
        applies_to="leaf",
        rule="Let's Encrypt's default profile no longer includes clientAuth",
        source="Let's Encrypt, 'Ending TLS Client Authentication Certificate Support in 2026'",
    ),
    PolicyEvent(
        date=dt.date(2026, 6, 15),
        applies_to="intermediate",
        rule="new intermediates under Chrome roots must be serverAuth-only",
        source="Chrome Root Program Policy v1.8 §1.3.2",
    ),
    PolicyEvent(
        date=dt.date(2026, 7, 8),
        applies_to="leaf",
        rule="Let's Encrypt's tlsclient profile (serverAuth+clientAuth) ended",
        source="Let's Encrypt, 'Ending TLS Client Authentication Certificate Support in 2026'",
    ),
    PolicyEvent(
        date=dt.date(2027, 3, 15),
        applies_to="leaf",
        rule="leaf certificates under Chrome roots must carry serverAuth only "
        "(earlier policy versions said 2026-06-15)",
        source="Chrome Root Program Policy v1.8 §1.3.2",
    ),
)


@cache
def public_roots(bundle: str | None = None) -> dict[bytes, x509.Certificate]:
    """Roots keyed by raw subject DER; certifi's Mozilla bundle unless a path is given."""
    path = Path(bundle or certifi.where())
    roots: dict[bytes, x509.Certificate] = {}
    for cert in load_certificates(path.read_bytes(), source=str(path)):
        roots.setdefault(cert.subject.public_bytes(), cert)
    return roots


@cache
def _root_fingerprints(bundle: str | None = None) -> frozenset[Fingerprint]:
    return frozenset(Fingerprint.of(cert) for cert in public_roots(bundle).values())


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
    top = chain[-1]
    if Fingerprint.of(top) in _root_fingerprints(bundle):
        return top
    root = public_roots(bundle).get(top.issuer.public_bytes())
    if root is None:
        return None
    try:
        top.verify_directly_issued_by(root)
    except (ValueError, TypeError, InvalidSignature):
        return None
    return root
