"""What ``inspect`` shows about a certificate, as one plain value both renderers share.

Pure: a certificate (and the rest of the file it came in) goes in, a
``CertificateSummary`` comes out; its ``rows`` are what ``mtlskit inspect`` prints
(as lines or a rich table) and the operator console shows, its ``as_dict`` the JSON.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID

from mtlskit.certs import UNREADABLE_EXTENSIONS, Fingerprint, key_info
from mtlskit.identity import ClientIdentity, IdentityError, san_entries
from mtlskit.publicca import find_public_root

__all__ = ["CertificateSummary", "IssuerClass", "SummaryRow", "summarize"]

EKU_NAMES: dict[x509.ObjectIdentifier, str] = {
    ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
    ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
    ExtendedKeyUsageOID.CODE_SIGNING: "codeSigning",
    ExtendedKeyUsageOID.EMAIL_PROTECTION: "emailProtection",
    ExtendedKeyUsageOID.TIME_STAMPING: "timeStamping",
    ExtendedKeyUsageOID.OCSP_SIGNING: "OCSPSigning",
    ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE: "anyExtendedKeyUsage",
}
_KEY_USAGE_FLAGS = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
)


class IssuerClass(StrEnum):
    """Who signed it, in the three ways the seed compares (plus "we cannot tell")."""

    SELF_SIGNED = "self-signed"
    PRIVATE = "private"
    PUBLIC = "public"
    UNKNOWN = "unknown"


# (field, plain value, rich style name of the value or None): a style is only a name, so
# this module stays free of rich; shells without colour (the console, piped output) drop it.
SummaryRow = tuple[str, str, str | None]

_CLASS_STYLE: dict[IssuerClass, str] = {
    IssuerClass.SELF_SIGNED: "yellow",
    IssuerClass.PRIVATE: "green",
    IssuerClass.PUBLIC: "bold red",
    IssuerClass.UNKNOWN: "dim",
}


def is_self_signed(cert: x509.Certificate) -> bool:
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def issuer_class(chain: list[x509.Certificate]) -> IssuerClass:
    """Public root, self-signed end entity, private root, or unknown.

    A self-signed CA certificate not among the public roots is a private root; a
    leaf given without its issuer is ``unknown`` unless a public root signed it
    directly: "private" is only said when a private root is actually in hand.
    """
    if find_public_root(chain) is not None:
        return IssuerClass.PUBLIC
    if is_self_signed(chain[0]) and not _is_ca(chain[0]):
        return IssuerClass.SELF_SIGNED
    return IssuerClass.PRIVATE if is_self_signed(chain[-1]) else IssuerClass.UNKNOWN


def _is_ca(cert: x509.Certificate) -> bool:
    basic = extension_or_none(cert, x509.BasicConstraints)
    return bool(basic and basic.value.ca)


def extension_or_none(cert: x509.Certificate, kind: type[Any]) -> Any:
    """The extension, or ``None`` when it is absent or the extensions cannot be read."""
    try:
        return cert.extensions.get_extension_for_class(kind)
    except (x509.ExtensionNotFound, *UNREADABLE_EXTENSIONS):
        return None


def san_strings(cert: x509.Certificate) -> list[str]:
    """Every SAN entry as ``TYPE:value`` (URI:, DNS:, email:, IP:, dirName:, other:)."""
    san = san_entries(cert)
    if san is None:
        return []
    out: list[str] = []
    for name in san:
        if isinstance(name, x509.UniformResourceIdentifier):
            out.append(f"URI:{name.value}")
        elif isinstance(name, x509.DNSName):
            out.append(f"DNS:{name.value}")
        elif isinstance(name, x509.RFC822Name):
            out.append(f"email:{name.value}")
        elif isinstance(name, x509.IPAddress):
            out.append(f"IP:{name.value}")
        elif isinstance(name, x509.DirectoryName):
            out.append(f"dirName:{name.value.rfc4514_string()}")
        elif isinstance(name, x509.RegisteredID):
            out.append(f"RID:{name.value.dotted_string}")
        elif isinstance(name, x509.OtherName):
            out.append(f"otherName:{name.type_id.dotted_string}")
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class CertificateSummary:
    subject: str
    issuer: str
    serial: str
    not_before: dt.datetime
    not_after: dt.datetime
    key: str
    signature_algorithm: str
    basic_constraints: str | None
    key_usage: list[str] | None
    key_usage_critical: bool
    eku: list[tuple[str, str]] | None  # (name, dotted OID)
    san: list[str]
    identity: ClientIdentity | None
    identity_error: str | None
    extensions_error: str | None  # the extensions cannot be read: the fields above are empty
    fingerprint: Fingerprint
    issuer_class: IssuerClass
    index: int

    def time_left(self, now: dt.datetime) -> dt.timedelta:
        return self.not_after - now

    def rows(self, now: dt.datetime) -> list[SummaryRow]:
        """The fields ``mtlskit inspect`` prints, in its order and words: one content
        for its lines, its rich table and the console's certificate page."""
        found = self.identity
        identity: tuple[str, str | None] = (f"none ({self.identity_error})", "red")
        if found is not None:
            legacy = " (legacy: subject CN)" if found.legacy else ""
            identity = (f"{found.kind.value}: {found.value}{legacy}", "yellow" if legacy else None)
        left, left_style = _format_left(self.time_left(now))
        absent = ("absent", "dim")
        key_usage = (
            (", ".join(self.key_usage) + (" (critical)" if self.key_usage_critical else ""), None)
            if self.key_usage is not None
            else absent
        )
        eku = (
            (", ".join(f"{name} ({oid})" for name, oid in self.eku), None)
            if self.eku is not None
            else absent
        )
        rows = [
            ("Identity", *identity),
            ("Subject", self.subject, None),
            ("Issuer", self.issuer, None),
            ("Issuer class", str(self.issuer_class), _CLASS_STYLE[self.issuer_class]),
            ("Serial", self.serial, None),
            ("Not before", self.not_before.isoformat(), None),
            ("Not after", f"{self.not_after.isoformat()}  ({left})", left_style),
            ("Key", self.key, None),
            ("Signature", self.signature_algorithm, None),
            (
                "Basic constraints",
                *((self.basic_constraints, None) if self.basic_constraints else absent),
            ),
            ("Key usage", *key_usage),
            ("Extended key usage", *eku),
            (
                "Subject alt names",
                *((", ".join(self.san), None) if self.san else ("none", "dim")),
            ),
            ("SHA-256", self.fingerprint.colon_hex, None),
            ("SHA-256 base64", self.fingerprint.base64, None),
        ]
        if self.extensions_error:
            rows.insert(1, ("Extensions", f"unreadable ({self.extensions_error})", "red"))
        return rows

    def as_dict(self, now: dt.datetime) -> dict[str, Any]:
        return {
            "index": self.index,
            "subject": self.subject,
            "issuer": self.issuer,
            "serial": self.serial,
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "seconds_left": int(self.time_left(now).total_seconds()),
            "key": self.key,
            "signature_algorithm": self.signature_algorithm,
            "basic_constraints": self.basic_constraints,
            "key_usage": self.key_usage,
            "key_usage_critical": self.key_usage_critical,
            "extended_key_usage": (
                [{"name": name, "oid": oid} for name, oid in self.eku]
                if self.eku is not None
                else None
            ),
            "subject_alt_names": self.san,
            "identity": self.identity.as_dict() | {"legacy": self.identity.legacy}
            if self.identity
            else None,
            "identity_error": self.identity_error,
            "extensions_error": self.extensions_error,
            "fingerprint_sha256": self.fingerprint.hex,
            "fingerprint_sha256_base64": self.fingerprint.base64,
            "issuer_class": self.issuer_class.value,
        }


def summarize(chain: list[x509.Certificate], index: int = 0) -> CertificateSummary:
    """The summary of ``chain[index]``; the rest of the chain decides the issuer class."""
    cert = chain[index]
    extensions_error: str | None = None
    try:
        cert.extensions  # noqa: B018 - parsed lazily: read once to learn whether it can be
    except UNREADABLE_EXTENSIONS as exc:
        extensions_error = str(exc)
    basic = extension_or_none(cert, x509.BasicConstraints)
    usage = extension_or_none(cert, x509.KeyUsage)
    eku = extension_or_none(cert, x509.ExtendedKeyUsage)
    identity: ClientIdentity | None = None
    identity_error: str | None = None
    try:
        identity = ClientIdentity.from_certificate(cert, allow_cn=True)
    except IdentityError as exc:
        identity_error = f"{exc.code}: {exc}"
    signature = cert.signature_algorithm_oid._name
    return CertificateSummary(
        index=index,
        subject=cert.subject.rfc4514_string() or "(empty)",
        issuer=cert.issuer.rfc4514_string() or "(empty)",
        serial=f"{cert.serial_number:x}",
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        key=str(key_info(cert.public_key())),
        signature_algorithm=signature,
        basic_constraints=(
            None
            if basic is None
            else f"CA:{'TRUE' if basic.value.ca else 'FALSE'}"
            + (
                f", pathlen:{basic.value.path_length}"
                if basic.value.path_length is not None
                else ""
            )
            + (" (critical)" if basic.critical else "")
        ),
        key_usage=None if usage is None else _key_usage_names(usage.value),
        key_usage_critical=bool(usage and usage.critical),
        eku=None
        if eku is None
        else [(EKU_NAMES.get(oid, oid.dotted_string), oid.dotted_string) for oid in eku.value],
        san=[] if extensions_error else san_strings(cert),
        identity=identity,
        identity_error=identity_error,
        extensions_error=extensions_error,
        fingerprint=Fingerprint.of(cert),
        issuer_class=issuer_class(chain[index:]),
    )


def _key_usage_names(usage: x509.KeyUsage) -> list[str]:
    names = [flag for flag in _KEY_USAGE_FLAGS if getattr(usage, flag)]
    if usage.key_agreement:
        names += [flag for flag in ("encipher_only", "decipher_only") if getattr(usage, flag)]
    return names


def _format_left(delta: dt.timedelta) -> tuple[str, str | None]:
    seconds = int(delta.total_seconds())
    if seconds < 0:
        return f"expired {_span(-seconds)} ago", "red"
    return f"{_span(seconds)} left", None


def _span(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    if days:
        return f"{days}d {hours}h"
    return f"{hours}h {rest // 60}m"
