"""Who a client certificate says the client is.

``SpiffeId`` and ``TrustDomain`` follow the SPIFFE-ID specification exactly (the
strict parser of go-spiffe v2, whose error texts these reuse). ``ClientIdentity``
is the one place mtlskit decides which certificate field is the identity: the
subjectAltName (RFC 5280 §4.2.1.6), in a fixed precedence, and the subject CN
only when a caller explicitly allows that legacy fallback.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from cryptography import x509
from cryptography.x509.oid import ExtensionOID, NameOID

from mtlskit.certs import UNREADABLE_EXTENSIONS
from mtlskit.errors import MtlskitError

__all__ = [
    "ClientIdentity",
    "IdentityError",
    "IdentityKind",
    "SpiffeId",
    "SpiffeIdError",
    "TrustDomain",
    "san_entries",
    "san_text_problem",
]

MAX_SPIFFE_ID_BYTES: Final = 2048
MAX_TRUST_DOMAIN_BYTES: Final = 255

_TD_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-_")
_PATH_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_")

_BAD_TD_CHAR: Final = (
    "trust domain characters are limited to lowercase letters, numbers, dots, dashes, "
    + "and underscores"
)
_BAD_PATH_CHAR: Final = (
    "path segment characters are limited to letters, numbers, dots, dashes, and underscores"
)


def _utf8_length(text: str) -> int:
    """Bytes in UTF-8; a lone surrogate (found by fuzzing) counts instead of raising."""
    return len(text.encode("utf-8", "surrogatepass"))


class SpiffeIdError(MtlskitError, ValueError):
    """A string is not a valid SPIFFE ID or trust domain; ``reason`` is the spec rule broken."""

    def __init__(self, value: str, reason: str, *, what: str = "SPIFFE ID") -> None:
        self.value = value
        self.reason = reason
        super().__init__(f"invalid {what} {value!r}: {reason}")


def _check_trust_domain(name: str, whole: str, what: str) -> None:
    if len(name) <= MAX_TRUST_DOMAIN_BYTES and _VALID_TRUST_DOMAIN.fullmatch(name):
        return
    if not name:
        raise SpiffeIdError(whole, "trust domain is missing", what=what)
    if _utf8_length(name) > MAX_TRUST_DOMAIN_BYTES:
        raise SpiffeIdError(
            whole, f"trust domain is longer than {MAX_TRUST_DOMAIN_BYTES} bytes", what=what
        )
    if not _TD_CHARS.issuperset(name):
        raise SpiffeIdError(whole, _BAD_TD_CHAR, what=what)


_VALID_PATH: Final = re.compile(r"(?:/(?!\.\.?(?:/|$))[A-Za-z0-9._-]+)*")
_VALID_TRUST_DOMAIN: Final = re.compile(r"[a-z0-9._-]+")
# The two above in one pass over a whole ID, for ``SpiffeId.parse``'s common case.
_VALID_ID: Final = re.compile(r"spiffe://([a-z0-9._-]+)((?:/(?!\.\.?(?:/|$))[A-Za-z0-9._-]+)*)")


def _check_path(path: str, whole: str) -> None:
    """Empty, or '/'-led segments; checked left to right so the first fault is the one named."""
    if not path or _VALID_PATH.fullmatch(path):
        return  # the common case, in one regex; the loop below only names the fault
    if not path.startswith("/"):
        raise SpiffeIdError(whole, "path must have a leading slash")
    start = 0
    for position, char in enumerate(path):
        if char == "/":
            if position:
                _check_segment(path[start:position], whole, last=False)
            start = position
        elif char not in _PATH_CHARS:
            raise SpiffeIdError(whole, _BAD_PATH_CHAR)
    _check_segment(path[start:], whole, last=True)


def _check_segment(segment: str, whole: str, *, last: bool) -> None:
    if segment == "/":
        reason = (
            "path cannot have a trailing slash" if last else "path cannot contain empty segments"
        )
        raise SpiffeIdError(whole, reason)
    if segment in {"/.", "/.."}:
        raise SpiffeIdError(whole, "path cannot contain dot segments")


@dataclass(frozen=True, slots=True)
class TrustDomain:
    """A SPIFFE trust domain such as ``acme.com``: the unit that one CA bundle vouches for."""

    name: str

    def __post_init__(self) -> None:
        _check_trust_domain(self.name, self.name, "trust domain")

    @classmethod
    def parse(cls, text: str) -> TrustDomain:
        """``acme.com`` or ``spiffe://acme.com`` (a SPIFFE ID's trust domain is taken too)."""
        if text.startswith("spiffe://"):
            return SpiffeId.parse(text).trust_domain
        if not text:
            raise SpiffeIdError(text, "trust domain is missing", what="trust domain")
        return cls(text)

    @property
    def id_string(self) -> str:
        return f"spiffe://{self.name}"

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True)
class SpiffeId:
    """``spiffe://trust-domain/path``, validated when constructed."""

    trust_domain: TrustDomain
    path: str = ""

    def __post_init__(self) -> None:
        _check_path(self.path, f"spiffe://{self.trust_domain.name}{self.path}")
        if _utf8_length(str(self)) > MAX_SPIFFE_ID_BYTES:
            raise SpiffeIdError(str(self), f"longer than {MAX_SPIFFE_ID_BYTES} bytes")

    @classmethod
    def parse(cls, text: str) -> SpiffeId:
        """Parse the whole string; nothing is normalized, so what passes is byte-exact."""
        valid = _VALID_ID.fullmatch(text)
        if (
            valid is not None  # ASCII only, so characters are bytes
            and len(text) <= MAX_SPIFFE_ID_BYTES
            and valid.end(1) - 9 <= MAX_TRUST_DOMAIN_BYTES
        ):
            name, path = valid.group(1, 2)
        else:
            name, path = cls._split_checked(text)
        # Validated: build without running the constructors' checks a second time
        # (this sits on the verifier's per-handshake path).
        trust_domain = object.__new__(TrustDomain)
        object.__setattr__(trust_domain, "name", name)
        spiffe_id = object.__new__(cls)
        object.__setattr__(spiffe_id, "trust_domain", trust_domain)
        object.__setattr__(spiffe_id, "path", path)
        return spiffe_id

    @staticmethod
    def _split_checked(text: str) -> tuple[str, str]:
        """(trust domain, path) of ``text``, or a ``SpiffeIdError`` naming the first broken rule."""
        if not text:
            raise SpiffeIdError(text, "cannot be empty")
        if not text.startswith("spiffe://"):
            raise SpiffeIdError(text, "scheme is missing or invalid")
        if _utf8_length(text) > MAX_SPIFFE_ID_BYTES:
            raise SpiffeIdError(text, f"longer than {MAX_SPIFFE_ID_BYTES} bytes")
        rest = text[len("spiffe://") :]
        slash = rest.find("/")
        name, path = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])
        _check_trust_domain(name, text, "SPIFFE ID")
        _check_path(path, text)
        return name, path

    @classmethod
    def is_spiffe_uri(cls, uri: str) -> bool:
        """Whether a URI claims to be a SPIFFE ID (scheme compared case-insensitively)."""
        return uri[:9].lower() == "spiffe://" or uri[:7].lower() == "spiffe:"

    def member_of(self, trust_domain: TrustDomain) -> bool:
        return self.trust_domain == trust_domain

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.path[1:].split("/")) if self.path else ()

    def __str__(self) -> str:
        return f"spiffe://{self.trust_domain.name}{self.path}"


class IdentityKind(StrEnum):
    """Where the identity was found, in the order ``ClientIdentity`` looks."""

    SPIFFE = "spiffe"
    URI = "uri"
    DNS = "dns"
    EMAIL = "email"
    CN = "cn"


class IdentityError(MtlskitError):
    """No usable identity; ``code`` is the stable rejection code (DESIGN.md §5)."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


def san_entries(cert: x509.Certificate) -> x509.SubjectAlternativeName | None:
    try:
        # By OID: the by-class lookup runs an ABC isinstance on every extension before it.
        extension = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
        return extension.value  # type: ignore[no-any-return]
    except x509.ExtensionNotFound:
        return None


# A DNS SAN is a host name (RFC 5280 §4.2.1.6 "preferred name syntax", RFC 1034 §3.5),
# with the '_' of service labels and one leading '*.' wildcard tolerated; an email SAN is
# a mailbox (RFC 5321 §4.1.2 dot-atom local part, host-name domain).
_LABEL: Final = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOST_NAME: Final = re.compile(rf"(?:\*\.)?(?:{_LABEL}\.)*{_LABEL}\.?")
_ATOM: Final = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_MAILBOX: Final = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@(?:{_LABEL}\.)*{_LABEL}")
_URI_SCHEME: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")


def san_text_problem(kind: IdentityKind, text: str) -> str | None:
    """Why ``text`` cannot be the value of a ``kind`` (DNS or email) SAN, or ``None``.

    A DNS or email SAN that reads like a URI is how a partner CA's certificate poses as
    a SPIFFE ID to a rule that compares text (issue 27): such a SAN is malformed, not
    merely unusual. URI SANs are checked by ``SpiffeId.parse`` where that matters.
    """
    if kind is IdentityKind.DNS:
        what, pattern, limit = "a host name", _HOST_NAME, 253
    elif kind is IdentityKind.EMAIL:
        what, pattern, limit = "a mailbox (local-part@host)", _MAILBOX, 320
    else:
        return None
    if "://" in text or (kind is IdentityKind.DNS and _URI_SCHEME.match(text)):
        return f"{kind.value} SAN {text!r} looks like a URI, not {what}"
    if len(text) > limit or not pattern.fullmatch(text):
        return f"{kind.value} SAN {text!r} is not {what}"
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientIdentity:
    """The identity a client certificate asserts, and where it came from.

    ``legacy`` is true when it came from the subject CN, which no standard defines
    as a client identity: callers must opt in and should show it as a warning.
    """

    kind: IdentityKind
    value: str
    spiffe_id: SpiffeId | None = None
    legacy: bool = False
    others: tuple[str, ...] = field(default=())  # the other SAN values, for display

    def __post_init__(self) -> None:
        # A SPIFFE identity is exactly its parsed ID, and nothing else may claim that kind
        # or spell a SPIFFE ID under another one (authz matches spiffe:// rules by kind).
        if self.kind is IdentityKind.SPIFFE:
            if self.spiffe_id is None or str(self.spiffe_id) != self.value:
                raise ValueError(f"a spiffe identity needs its parsed SPIFFE ID: {self.value!r}")
        elif self.spiffe_id is not None:
            raise ValueError(f"a {self.kind.value} identity carries no SPIFFE ID")
        elif self.kind is IdentityKind.URI and SpiffeId.is_spiffe_uri(self.value):
            raise ValueError(f"a spiffe:// URI is a spiffe identity, not a uri: {self.value!r}")

    @classmethod
    def from_certificate(cls, cert: x509.Certificate, *, allow_cn: bool = False) -> ClientIdentity:
        """Precedence: SPIFFE URI SAN, other URI SAN, DNS SAN, email SAN, then CN if allowed.

        A certificate that carries a SPIFFE URI is judged as an SVID: the URI must be a
        valid SPIFFE ID and the only URI SAN, or no identity is returned at all.
        """
        try:
            san = san_entries(cert)
        except UNREADABLE_EXTENSIONS:  # cryptography parses extensions lazily (fuzzing)
            raise IdentityError("san_missing", "certificate extensions are malformed") from None
        return cls.from_subject_alt_name(san, cn_of=cert if allow_cn else None)

    @classmethod
    def from_subject_alt_name(
        cls, san: x509.SubjectAlternativeName | None, *, cn_of: x509.Certificate | None = None
    ) -> ClientIdentity:
        """``from_certificate`` for a SAN already in hand (``None``: the certificate has none).

        The verifier reads the leaf's extensions in one pass and hands the SAN over
        here. ``cn_of`` turns on the legacy CN fallback (``allow_cn``); its subject is
        read only when the SAN has nothing to offer, as before.
        """
        uris: list[str] = []
        dns: list[str] = []
        emails: list[str] = []
        # One pass; get_values_for_type would walk the SAN three times (and ``san or ()``
        # would ask cryptography for its length first).
        for name in () if san is None else san:
            if isinstance(name, x509.UniformResourceIdentifier):
                uris.append(name.value)
            elif isinstance(name, x509.DNSName):
                dns.append(name.value)
            elif isinstance(name, x509.RFC822Name):
                emails.append(name.value)
        if uris or dns or emails:
            return cls.from_sans(uris, dns, emails)
        if cn_of is not None:
            cns = cn_of.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            if cns and isinstance(cns[0].value, str) and cns[0].value:
                return cls(kind=IdentityKind.CN, value=cns[0].value, legacy=True)
        if san is None:
            raise IdentityError("san_missing", "certificate has no subjectAltName extension")
        raise IdentityError(
            "san_missing", "subjectAltName has no URI, DNS or email entry to take an identity from"
        )

    @classmethod
    def from_sans(
        cls,
        uris: Sequence[str],
        dns: Sequence[str] = (),
        emails: Sequence[str] = (),
    ) -> ClientIdentity:
        """The same precedence and SVID rule for SAN values that arrive without a certificate
        (a proxy's XFCC or GCP headers): SPIFFE URI, other URI, DNS, email."""
        if any(map(SpiffeId.is_spiffe_uri, uris)):
            if len(uris) > 1:
                raise IdentityError(
                    "spiffe_multiple_uri_sans",
                    f"an X509-SVID must carry exactly one URI SAN; this one has {len(uris)}: "
                    + ", ".join(uris),
                )
            uri = uris[0]
            try:
                spiffe_id = SpiffeId.parse(uri)
            except SpiffeIdError as exc:
                raise IdentityError("spiffe_id_invalid", str(exc)) from None
            others = _without((*dns, *emails), uri) if dns or emails else ()
            return cls._prevalidated(IdentityKind.SPIFFE, uri, spiffe_id, others)
        everything = (*uris, *dns, *emails)
        for kind, values in (
            (IdentityKind.URI, uris),
            (IdentityKind.DNS, dns),
            (IdentityKind.EMAIL, emails),
        ):
            if values:
                return cls._prevalidated(kind, values[0], None, _without(everything, values[0]))
        raise IdentityError(
            "san_missing", "subjectAltName has no URI, DNS or email entry to take an identity from"
        )

    @classmethod
    def _prevalidated(
        cls, kind: IdentityKind, value: str, spiffe_id: SpiffeId | None, others: tuple[str, ...]
    ) -> ClientIdentity:
        """Valid by construction (``from_sans`` found the kind; ``SpiffeId.parse`` normalizes
        nothing, so a SPIFFE value is ``str(spiffe_id)``): the fields set directly, without
        ``__post_init__``, as ``SpiffeId.parse`` does. This is the verifier's per-handshake
        path, where the check would cost ~0.2-0.4 us an identity for nothing."""
        identity = object.__new__(cls)
        put = object.__setattr__
        put(identity, "kind", kind)
        put(identity, "value", value)
        put(identity, "spiffe_id", spiffe_id)
        put(identity, "legacy", False)
        put(identity, "others", others)
        return identity

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind.value, "value": self.value}

    def __str__(self) -> str:
        return self.value


def _without(values: tuple[str, ...], chosen: str) -> tuple[str, ...]:
    return tuple(value for value in values if value != chosen)
