"""Envoy's ``x-forwarded-client-cert`` (XFCC): writer and parser.

Format, as Envoy documents it (docs/root/configuration/http/http_conn_man/headers.rst,
"x-forwarded-client-cert"): elements joined by ``,``, one per proxy, the nearest
proxy's last; ``key=value`` pairs joined by ``;``; keys case-insensitive; a value
containing ``,``, ``;`` or ``=`` is double-quoted and ``"`` inside it written
``\\"``. Keys ``By``, ``Hash``, ``Cert``, ``Chain``, ``Subject``, ``URI``, ``DNS``.

What the writer copies from Envoy's code (source/common/http/conn_manager_utility.cc,
``mutateXfccRequestHeader``): ``By`` once per URI SAN of the proxy's own
certificate, then ``Hash``, then the configured details in the fixed order Cert,
Chain, Subject, URI, DNS; ``Cert``, ``Chain`` and ``Subject`` always quoted; one
``URI=`` per URI SAN and one ``DNS=`` per DNS SAN. URL encoding as Envoy's
``urlEncodedPemEncodedPeerCertificate`` (``\\n``, space, ``+``, ``/``, ``=``
percent-encoded). Subject as ``X509_NAME_print_ex(XN_FLAG_RFC2253)``.

Where mtlskit departs from Envoy: Envoy writes ``URI=`` for a leaf without a URI SAN and
``Subject=""`` for an empty subject; mtlskit omits an element with no value (issue 28
item 3), since a bare ``URI=`` reads as an empty URI identity to a parser that does not
special-case it. The parser accepts both spellings. URI/DNS/By values are quoted when they
contain ``,;="`` (the documented rule; Envoy writes them bare), and a backslash
inside a quoted value is written ``\\\\`` so that a DN ending in ``\\`` cannot
unbalance the quotes. The parser accepts both ``\\"`` and ``\\\\`` and keeps any
other backslash literally, so Envoy's own ``Subject="CN=a\\,b"`` reads back as
written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from cryptography import x509

from mtlskit.certs import Fingerprint
from mtlskit.errors import InputError
from mtlskit.forward._client import ForwardedClient, identity_from_sans
from mtlskit.forward._encoding import (
    certificates_from_url_encoded_pem,
    printable,
    rfc2253,
    url_encoded_pem,
)
from mtlskit.forward._headers import Headers, header, header_values
from mtlskit.identity import ClientIdentity, IdentityError, san_entries

__all__ = [
    "XFCC",
    "XfccConfig",
    "XfccDetail",
    "XfccElement",
    "XfccMode",
    "parse_xfcc",
    "read_xfcc",
    "xfcc_headers",
    "xfcc_value",
]

XFCC: Final = "X-Forwarded-Client-Cert"
_SOURCE: Final = "x-forwarded-client-cert"
_HEX64: Final = re.compile(r"[0-9a-fA-F]{64}")
_NEEDS_QUOTES: Final = frozenset(',;="')


class XfccMode(StrEnum):
    """Envoy's ``forward_client_cert_details`` values that an edge proxy may use.

    Both remove whatever XFCC the client sent (mtlskit's sanitizer always does);
    ``sanitize`` then adds nothing, ``sanitize_set`` (the default) adds this hop's
    element. Envoy's forward-only/append modes trust a client-sent XFCC, which an
    edge gateway must never do, so they are not offered.
    """

    SANITIZE = "sanitize"
    SANITIZE_SET = "sanitize_set"


class XfccDetail(StrEnum):
    """Envoy's ``set_current_client_cert_details`` switches (``By`` and ``Hash`` are always set)."""

    CERT = "cert"
    CHAIN = "chain"
    SUBJECT = "subject"
    URI = "uri"
    DNS = "dns"


_DETAIL_ORDER: Final = (
    XfccDetail.CERT,
    XfccDetail.CHAIN,
    XfccDetail.SUBJECT,
    XfccDetail.URI,
    XfccDetail.DNS,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class XfccConfig:
    """Which XFCC element the gateway sets.

    ``by``: the URI SANs of the gateway's own server certificate (Envoy's ``By``, from
    ``uriSanLocalCertificate``); the gateway fills it in. ``details`` defaults to
    Subject, URI and DNS — what Istio's sidecars configure — because those carry
    the identity without the several-kilobyte ``Cert``/``Chain`` values.
    """

    mode: XfccMode = XfccMode.SANITIZE_SET
    by: tuple[str, ...] = ()
    details: frozenset[XfccDetail] = frozenset({XfccDetail.SUBJECT, XfccDetail.URI, XfccDetail.DNS})

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", XfccMode(self.mode))
        object.__setattr__(self, "details", frozenset(XfccDetail(d) for d in self.details))


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _bare_or_quoted(value: str) -> str:
    value = printable(value)
    return _quote(value) if _NEEDS_QUOTES.intersection(value) else value


def xfcc_value(client: ForwardedClient, config: XfccConfig = XfccConfig()) -> str | None:
    """This hop's XFCC element, or ``None`` when nothing is to be set.

    Nothing for ``sanitize`` mode, and nothing for a client that is absent or not
    verified: XFCC has no verdict field, and backends read its presence as "the
    proxy accepted this certificate" (the verdict headers carry failures instead).
    """
    if config.mode is XfccMode.SANITIZE or not client.verified or not client.chain:
        return None
    leaf = client.chain[0]
    pairs = [f"By={_bare_or_quoted(uri)}" for uri in config.by]
    pairs.append(f"Hash={Fingerprint.of(leaf).hex}")
    san = san_entries(leaf)
    uris = san.get_values_for_type(x509.UniformResourceIdentifier) if san else []
    dns = san.get_values_for_type(x509.DNSName) if san else []
    for detail in _DETAIL_ORDER:
        if detail not in config.details:
            continue
        if detail is XfccDetail.CERT:
            pairs.append(f'Cert="{url_encoded_pem([leaf], safe="")}"')
        elif detail is XfccDetail.CHAIN:
            pairs.append(f'Chain="{url_encoded_pem(client.chain, safe="")}"')
        elif detail is XfccDetail.SUBJECT:
            subject = rfc2253(leaf.subject)
            if subject:
                pairs.append(f"Subject={_quote(subject)}")
        elif detail is XfccDetail.URI:
            pairs.extend(f"URI={_bare_or_quoted(uri)}" for uri in uris)
        else:
            pairs.extend(f"DNS={_bare_or_quoted(name)}" for name in dns)
    return ";".join(pairs)


def xfcc_headers(
    client: ForwardedClient, config: XfccConfig = XfccConfig()
) -> list[tuple[bytes, bytes]]:
    value = xfcc_value(client, config)
    return [] if value is None else [header(XFCC, value)]


# --- parsing ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class XfccElement:
    """One proxy's element, decoded; ``chain`` is leaf first (from ``Chain``, else ``Cert``)."""

    by: tuple[str, ...] = ()
    hash: Fingerprint | None = None
    cert: x509.Certificate | None = None
    chain: tuple[x509.Certificate, ...] = ()
    subject: str | None = None
    uris: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()
    unknown: tuple[tuple[str, str], ...] = field(default=())


def _split(value: str) -> list[list[tuple[str, str]]]:
    """Elements of ``(key, value)`` pairs; quotes and escapes resolved, nothing else judged."""
    elements: list[list[tuple[str, str]]] = []
    pairs: list[tuple[str, str]] = []
    key: str | None = None
    buf: list[str] = []
    quoted = in_quotes = False

    def end_pair() -> None:
        nonlocal key, buf, quoted
        text = "".join(buf) if quoted else "".join(buf).strip(" \t")
        if key is None:
            if text or quoted:
                raise InputError(f"pair without '=': {text[:40]!r}", source=_SOURCE)
            raise InputError("empty pair (stray ';' or ',')", source=_SOURCE)
        if not key:
            raise InputError("pair with an empty key", source=_SOURCE)
        pairs.append((key, text))
        key, buf, quoted = None, [], False

    i, n = 0, len(value)
    while i < n:
        char = value[i]
        if in_quotes:
            if char == "\\" and i + 1 < n and value[i + 1] in '"\\':
                buf.append(value[i + 1])
                i += 2
                continue
            if char == '"':
                in_quotes = False
            else:
                buf.append(char)
        elif char == '"':
            if key is None or "".join(buf).strip(" \t") or quoted:
                raise InputError(
                    "unexpected '\"' (quotes must enclose a whole value)", source=_SOURCE
                )
            buf, in_quotes, quoted = [], True, True
        elif char == "=" and key is None:
            key = "".join(buf).strip(" \t").lower()
            buf = []
        elif char in ";,":
            end_pair()
            if char == ",":
                elements.append(pairs)
                pairs = []
        elif quoted and char not in " \t":
            raise InputError("text after a closing quote", source=_SOURCE)
        else:
            buf.append(char)
        i += 1
    if in_quotes:
        raise InputError("unterminated quoted value", source=_SOURCE)
    end_pair()
    elements.append(pairs)
    return elements


def _element(pairs: list[tuple[str, str]]) -> XfccElement:
    by: list[str] = []
    uris: list[str] = []
    dns: list[str] = []
    unknown: list[tuple[str, str]] = []
    single: dict[str, str] = {}
    for key, text in pairs:
        if key == "by":
            by.append(text)
        elif key == "uri":
            if text:
                uris.append(text)
        elif key == "dns":
            dns.append(text)
        elif key in {"hash", "cert", "chain", "subject"}:
            if key in single:
                raise InputError(f"key {key!r} appears twice in one element", source=_SOURCE)
            single[key] = text
        else:
            unknown.append((key, text))
    digest: Fingerprint | None = None
    if "hash" in single:
        if not _HEX64.fullmatch(single["hash"]):
            raise InputError("Hash is not 64 hex digits (SHA-256)", source=_SOURCE)
        digest = Fingerprint(bytes.fromhex(single["hash"]))
    cert: x509.Certificate | None = None
    if "cert" in single:
        certs = certificates_from_url_encoded_pem(single["cert"], source=f"{_SOURCE} Cert")
        if len(certs) != 1:
            raise InputError(f"Cert holds {len(certs)} certificates, expected 1", source=_SOURCE)
        cert = certs[0]
    chain: tuple[x509.Certificate, ...] = ()
    if "chain" in single:
        chain = tuple(certificates_from_url_encoded_pem(single["chain"], source=f"{_SOURCE} Chain"))
    elif cert is not None:
        chain = (cert,)
    if cert is not None and chain[0] != cert:
        raise InputError("Chain does not start with the certificate in Cert", source=_SOURCE)
    if digest is not None and chain and Fingerprint.of(chain[0]) != digest:
        raise InputError("Hash does not match the forwarded certificate", source=_SOURCE)
    return XfccElement(
        by=tuple(by),
        hash=digest,
        cert=cert,
        chain=chain,
        subject=single.get("subject"),
        uris=tuple(uris),
        dns=tuple(dns),
        unknown=tuple(unknown),
    )


def parse_xfcc(value: str) -> tuple[XfccElement, ...]:
    """Every element of an XFCC value, first proxy first; ``InputError`` if malformed."""
    if not value.strip(" \t"):
        raise InputError("is empty", source=_SOURCE)
    return tuple(_element(pairs) for pairs in _split(value))


def read_xfcc(headers: Headers) -> ForwardedClient | None:
    """The client as the nearest proxy (the last element) describes it; ``None`` if no XFCC.

    Several header lines are one comma-joined list (RFC 9110 §5.3). ``verified`` is
    true because a proxy sets XFCC for a certificate it accepted — trust that only
    from allow-listed proxy addresses. Without ``Cert``/``Chain`` the identity comes
    from the ``URI``/``DNS`` values, by the same precedence as a certificate's.
    """
    values = header_values(headers, XFCC)
    if not values:
        return None
    element = parse_xfcc(",".join(values))[-1]
    if element.chain:
        try:
            identity: ClientIdentity | None = ClientIdentity.from_certificate(element.chain[0])
        except IdentityError:
            identity = None
    else:
        identity = identity_from_sans(element.uris, element.dns)
    if not element.chain and element.hash is None and identity is None:
        raise InputError("element names no certificate (no Hash, Cert, URI or DNS)", source=_SOURCE)
    return ForwardedClient(
        present=True,
        verified=True,
        chain=element.chain,
        identity=identity,
        fingerprint=element.hash,
    )
