"""What an issued certificate looks like: the client profiles, the one server profile, and
the identity a client certificate names.

A ``CertificateProfile`` is data, not code: the builder reads it and decides every
extension from it, so what the CA signs never depends on what a requester asked for.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Final

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

from mtlskit.errors import InputError
from mtlskit.identity import (
    ClientIdentity,
    IdentityKind,
    SpiffeId,
    SpiffeIdError,
    san_text_problem,
)

__all__ = [
    "CLIENT_AUTH",
    "PROFILES",
    "SERVER_AUTH",
    "SPIFFE",
    "CertificateProfile",
    "general_name",
    "parse_identity",
    "parse_server_hosts",
]

_DNS_LABEL: Final = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


@dataclass(frozen=True, slots=True, kw_only=True)
class CertificateProfile:
    """The fixed shape of a leaf: EKUs, whether the identity must be a SPIFFE ID, and which
    lint profile it must pass before it leaves the CA (None: no lint profile judges it;
    the server profile's certificates are path-validated as a server for each name)."""

    name: str
    eku: tuple[ObjectIdentifier, ...]
    spiffe_only: bool
    lint_profile: str | None
    description: str


CLIENT_AUTH: Final = CertificateProfile(
    name="client-auth",
    eku=(ExtendedKeyUsageOID.CLIENT_AUTH,),
    spiffe_only=False,
    lint_profile="client-auth",
    description="CA:FALSE, keyUsage digitalSignature (critical), EKU clientAuth only, "
    "SAN = the identity",
)
SPIFFE: Final = CertificateProfile(
    name="spiffe",
    # The X509-SVID spec expects both when EKU is present: an SVID serves and connects.
    eku=(ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH),
    spiffe_only=True,
    lint_profile="spiffe",
    description="X509-SVID: one SPIFFE ID URI SAN, CA:FALSE, keyUsage digitalSignature "
    "(critical), EKU serverAuth + clientAuth",
)
PROFILES: Final = {profile.name: profile for profile in (CLIENT_AUTH, SPIFFE)}
# Not in PROFILES: those are what ``ca init --profile`` may make the CA issue to clients.
# A server certificate is asked for by name (``ca issue --server``), never by a client.
SERVER_AUTH: Final = CertificateProfile(
    name="server-auth",
    # serverAuth only: OpenSSL and pyca refuse it as a client certificate (code 26), so a
    # stolen server key does not log in anywhere as a client.
    eku=(ExtendedKeyUsageOID.SERVER_AUTH,),
    spiffe_only=False,
    lint_profile=None,
    description="CA:FALSE, keyUsage digitalSignature (critical), EKU serverAuth only, "
    "SAN = the DNS names and IP addresses it serves",
)


def parse_identity(text: str) -> ClientIdentity:
    """The identity a certificate is issued for, from ``--id``.

    ``spiffe://…`` is a SPIFFE ID (validated per spec), ``scheme:…`` another URI,
    ``user@host`` an email, anything else a DNS name. Nothing is normalized: what is
    allowed by policy is byte-for-byte what goes into the SAN.
    """
    if SpiffeId.is_spiffe_uri(text):
        try:
            spiffe_id = SpiffeId.parse(text)
        except SpiffeIdError as exc:
            raise InputError(str(exc), source="--id") from None
        return ClientIdentity(kind=IdentityKind.SPIFFE, value=text, spiffe_id=spiffe_id)
    if re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*:\S+", text) and "@" not in text.split(":", 1)[0]:
        return ClientIdentity(kind=IdentityKind.URI, value=text)
    if "@" in text:
        if problem := san_text_problem(IdentityKind.EMAIL, text):
            raise InputError(f"not a valid email identity: {problem}", source="--id")
        return ClientIdentity(kind=IdentityKind.EMAIL, value=text)
    labels = text.split(".")
    if len(text) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in labels):
        raise InputError(
            f"not a valid identity: {text!r} (expected spiffe://…, a URI, an email, "
            "or a lower-case DNS name)",
            source="--id",
        )
    return ClientIdentity(kind=IdentityKind.DNS, value=text)


def parse_server_hosts(dns: tuple[str, ...], ips: tuple[str, ...]) -> tuple[str, ...]:
    """The names a server certificate is for, from ``--dns`` and ``--ip``: DNS names first
    (the first one is also the CN), each once, IP addresses in their canonical spelling.

    A DNS name is lower-case letters, digits and hyphens in dot-separated labels, as
    ``--id`` takes them; no wildcards (one certificate per name set, nothing implied). An
    address typed as ``--dns`` is refused rather than quietly made an IP SAN.
    """
    hosts: list[str] = []
    for name in dns:
        try:
            ipaddress.ip_address(name)
        except ValueError:
            pass
        else:
            raise InputError(f"{name!r} is an IP address: pass it as --ip", source="--dns")
        labels = name.split(".")
        if len(name) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in labels):
            raise InputError(
                f"not a DNS name: {name!r} (lower-case labels of letters, digits and '-')",
                source="--dns",
            )
        hosts.append(name)
    for text in ips:
        try:
            hosts.append(str(ipaddress.ip_address(text)))
        except ValueError:
            raise InputError(f"not an IP address: {text!r}", source="--ip") from None
    if not hosts:
        raise InputError("a server certificate needs at least one --dns or --ip", source="--server")
    return tuple(dict.fromkeys(hosts))


def general_name(identity: ClientIdentity) -> x509.GeneralName:
    """The SAN entry that carries ``identity``."""
    if identity.kind in {IdentityKind.SPIFFE, IdentityKind.URI}:
        return x509.UniformResourceIdentifier(identity.value)
    if identity.kind is IdentityKind.EMAIL:
        return x509.RFC822Name(identity.value)
    if identity.kind is IdentityKind.DNS:
        return x509.DNSName(identity.value)
    raise ValueError(f"cannot issue for a {identity.kind} identity")
