"""The field encodings peers put in headers, each written once and parsed once.

URL-encoded PEM (Envoy ``Cert``/``Chain``, AWS ``-Leaf``, nginx
``$ssl_client_escaped_cert``), RFC 9440 / RFC 8941 byte sequences (``Client-Cert``,
GCP ``_leaf``/``_chain``), RFC 2253 names as OpenSSL prints them (Envoy ``Subject``,
AWS ``-Subject``/``-Issuer``) and the two serial-number spellings. Every writer
here returns printable ASCII only, so no certificate field can smuggle CR, LF or
NUL into a header (a client chooses its own subject and SAN bytes).
"""

from __future__ import annotations

import base64
import binascii
import re
import urllib.parse
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from mtlskit.certs import certificate_pem, load_certificates
from mtlskit.errors import InputError

__all__ = [
    "byte_sequence",
    "byte_sequence_list",
    "certificate_der",
    "certificate_from_der",
    "certificates_from_url_encoded_pem",
    "der_serial",
    "hex_serial",
    "name_der",
    "parse_byte_sequence",
    "parse_byte_sequence_list",
    "printable",
    "rfc2253",
    "unprintable",
    "url_encoded_pem",
]

# OpenSSL's short names for attributes pyca would print as dotted OIDs; with them the
# string matches ``X509_NAME_print_ex(..., XN_FLAG_RFC2253)``, which Envoy uses.
_OPENSSL_NAMES: Final = {
    NameOID.EMAIL_ADDRESS: "emailAddress",
    NameOID.SERIAL_NUMBER: "serialNumber",
    NameOID.SURNAME: "SN",
    NameOID.GIVEN_NAME: "GN",
    NameOID.TITLE: "title",
    NameOID.INITIALS: "initials",
    NameOID.PSEUDONYM: "pseudonym",
    NameOID.GENERATION_QUALIFIER: "generationQualifier",
    NameOID.DN_QUALIFIER: "dnQualifier",
    NameOID.POSTAL_CODE: "postalCode",
    NameOID.BUSINESS_CATEGORY: "businessCategory",
    NameOID.ORGANIZATION_IDENTIFIER: "organizationIdentifier",
}
_BASE64: Final = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def printable(text: str, *, escape: str = "%") -> str:
    """``text`` with every byte outside printable ASCII written as ``<escape>XX``.

    ``%`` suits URIs and DNS names (it is their own escape); ``\\`` suits DNs (an
    RFC 4514 hexpair, what OpenSSL's ``ESC_CTRL``/``ESC_MSB`` flags produce). In
    ``%`` mode a literal ``%`` is written ``%25`` too, so a SAN ``a%00.evil`` and a
    SAN ``a\\x00.evil`` cannot give one header value; :func:`unprintable` inverts
    it. (RFC 4514 output already writes a literal backslash as ``\\\\``.)
    """
    if escape == "%":
        text = text.replace("%", "%25")
    if all(" " <= char <= "~" for char in text):
        return text
    out: list[str] = []
    for char in text:
        if " " <= char <= "~":
            out.append(char)
        else:
            out.extend(f"{escape}{byte:02X}" for byte in char.encode("utf-8", "surrogatepass"))
    return "".join(out)


def unprintable(text: str) -> str:
    """The text :func:`printable` (``%`` mode) was given."""
    return urllib.parse.unquote(text, errors="surrogatepass")


def rfc2253(name: x509.Name) -> str:
    """A DN as OpenSSL's ``XN_FLAG_RFC2253`` prints it: last RDN first, ``,``-separated,
    ``,+"\\<>;`` escaped, control and non-ASCII bytes as ``\\XX``.

    pyca's ``rfc4514_string`` does the ordering and special-character escaping;
    the byte escaping is added here because header values must stay ASCII.
    """
    return printable(name.rfc4514_string(_OPENSSL_NAMES), escape="\\")


def url_encoded_pem(
    certs: tuple[x509.Certificate, ...] | list[x509.Certificate], *, safe: str
) -> str:
    """PEM blocks, concatenated and percent-encoded; ``safe`` names what stays literal.

    Envoy encodes ``\\n``, space, ``+``, ``/`` and ``=`` (``safe=""`` gives exactly
    that for PEM text); AWS ALB keeps ``+=/`` literal (``safe="+=/"``).
    """
    pem = b"".join(certificate_pem(cert) for cert in certs).decode("ascii")
    return urllib.parse.quote(pem, safe=safe)


def certificates_from_url_encoded_pem(value: str, *, source: str) -> list[x509.Certificate]:
    """Every certificate in a percent-encoded PEM value (any peer's spelling of it).

    ``+`` is taken literally, never as a space: AWS leaves it unencoded in base64.
    """
    if not value.strip():
        raise InputError("is empty", source=source)
    raw = urllib.parse.unquote_to_bytes(value.strip())
    if b"-----BEGIN" not in raw:
        raise InputError("is not URL-encoded PEM (no BEGIN line)", source=source)
    return load_certificates(raw, source=source)


def byte_sequence(data: bytes) -> str:
    """An RFC 8941 §3.3.5 Byte Sequence: ``:`` + base64 with padding + ``:``."""
    return ":" + base64.b64encode(data).decode("ascii") + ":"


def byte_sequence_list(items: list[bytes] | tuple[bytes, ...]) -> str:
    """An RFC 8941 List of Byte Sequences, serialized with ``", "`` as §4.1.1 says."""
    return ", ".join(byte_sequence(item) for item in items)


def parse_byte_sequence(text: str, *, source: str) -> bytes:
    """One Byte Sequence (RFC 8941 §4.2.7); padding may be omitted, other base64 may not."""
    value = text.strip(" \t")
    if len(value) < 2 or value[0] != ":" or value[-1] != ":":
        raise InputError(f"not a byte sequence (:base64:): {_excerpt(value)}", source=source)
    body = value[1:-1]
    if not _BASE64.fullmatch(body):
        raise InputError("byte sequence contains characters outside base64", source=source)
    try:
        return base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InputError("byte sequence has corrupt base64", source=source) from None


def parse_byte_sequence_list(text: str, *, source: str) -> list[bytes]:
    """A List of Byte Sequences; members without parameters, as RFC 9440 §2.3 sends them."""
    if not text.strip(" \t"):
        return []
    items: list[bytes] = []
    for member in text.split(","):
        if not member.strip(" \t"):
            raise InputError("empty member in a byte-sequence list", source=source)
        if ";" in member:
            raise InputError("byte-sequence list members take no parameters", source=source)
        items.append(parse_byte_sequence(member, source=source))
    return items


def certificate_from_der(data: bytes, *, source: str) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(data)
    except ValueError:
        raise InputError("is not a DER certificate", source=source) from None


def der_serial(cert: x509.Certificate) -> bytes:
    """The serial's DER INTEGER content octets (two's complement, minimal, sign byte kept)."""
    number = cert.serial_number
    length = 1
    while True:
        try:
            return number.to_bytes(length, "big", signed=True)
        except OverflowError:
            length += 1


def hex_serial(cert: x509.Certificate) -> str:
    """Upper-case hex, two digits per byte, ``-`` for a negative serial: OpenSSL's
    ``BN_bn2hex``, the form AWS shows (``03A5B1``)."""
    number = cert.serial_number
    if number == 0:
        return "0"
    magnitude = abs(number)
    digits = magnitude.to_bytes((magnitude.bit_length() + 7) // 8, "big").hex().upper()
    return ("-" if number < 0 else "") + digits


def name_der(name: x509.Name) -> bytes:
    return name.public_bytes()


def certificate_der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _excerpt(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:37] + "...")
