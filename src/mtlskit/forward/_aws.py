"""AWS Application Load Balancer style ``X-Amzn-Mtls-Clientcert*`` headers.

Formats as the ALB guide "Mutual authentication with TLS in Application Load
Balancer" (docs.aws.amazon.com/elasticloadbalancing/latest/application/
mutual-authentication.html, "HTTP headers") gives them, with its examples:

* verify mode: ``-Serial-Number: 03A5B1`` (hex), ``-Issuer`` and ``-Subject`` as
  RFC 2253 strings, ``-Validity: NotBefore=2023-09-21T01:50:17Z;NotAfter=...``
  (ISO 8601), ``-Leaf``: the leaf as PEM, URL-encoded "with ``+=/`` as safe
  characters" (``-----BEGIN%20CERTIFICATE-----%0AMIIG...``);
* passthrough mode: ``X-Amzn-Mtls-Clientcert``: the whole chain the client sent,
  URL-encoded PEM the same way, unverified by definition.

In verify mode the ALB refuses a bad certificate, so it never forwards one: this
writer sends the verify-mode headers only for a verified client (the verdict
headers say why the others failed). The serial is written as OpenSSL's
``BN_bn2hex`` does, which matches the documented example.
"""

from __future__ import annotations

import datetime as dt
import re
from enum import StrEnum
from typing import Final

from cryptography import x509

from mtlskit.errors import InputError
from mtlskit.forward._client import ForwardedClient
from mtlskit.forward._encoding import (
    certificates_from_url_encoded_pem,
    hex_serial,
    rfc2253,
    url_encoded_pem,
)
from mtlskit.forward._headers import Headers, header, header_values
from mtlskit.identity import ClientIdentity, IdentityError

__all__ = [
    "AWS_CHAIN",
    "AWS_ISSUER",
    "AWS_LEAF",
    "AWS_SERIAL",
    "AWS_SUBJECT",
    "AWS_VALIDITY",
    "AwsMode",
    "aws_headers",
    "read_aws",
]

AWS_SERIAL: Final = "X-Amzn-Mtls-Clientcert-Serial-Number"
AWS_ISSUER: Final = "X-Amzn-Mtls-Clientcert-Issuer"
AWS_SUBJECT: Final = "X-Amzn-Mtls-Clientcert-Subject"
AWS_VALIDITY: Final = "X-Amzn-Mtls-Clientcert-Validity"
AWS_LEAF: Final = "X-Amzn-Mtls-Clientcert-Leaf"
AWS_CHAIN: Final = "X-Amzn-Mtls-Clientcert"
_SAFE: Final = "+=/"
_VALIDITY: Final = re.compile(
    r"NotBefore=(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ);NotAfter=(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)"
)


class AwsMode(StrEnum):
    """ALB's mutual-authentication modes that forward anything (``off`` forwards nothing)."""

    VERIFY = "verify"
    PASSTHROUGH = "passthrough"


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def aws_headers(
    client: ForwardedClient, mode: AwsMode = AwsMode.VERIFY
) -> list[tuple[bytes, bytes]]:
    """The headers an ALB in ``mode`` would add for this client."""
    if not client.chain:
        return []
    if AwsMode(mode) is AwsMode.PASSTHROUGH:
        return [header(AWS_CHAIN, url_encoded_pem(client.chain, safe=_SAFE))]
    if not client.verified:
        return []
    leaf = client.chain[0]
    validity = (
        f"NotBefore={_iso(leaf.not_valid_before_utc)};NotAfter={_iso(leaf.not_valid_after_utc)}"
    )
    return [
        header(AWS_SERIAL, hex_serial(leaf)),
        header(AWS_ISSUER, rfc2253(leaf.issuer)),
        header(AWS_SUBJECT, rfc2253(leaf.subject)),
        header(AWS_VALIDITY, validity),
        header(AWS_LEAF, url_encoded_pem([leaf], safe=_SAFE)),
    ]


def _one(headers: Headers, name: str) -> str | None:
    values = header_values(headers, name)
    if len(values) > 1:
        raise InputError("appears more than once", source=name)
    return values[0].strip(" \t") if values else None


def read_aws(headers: Headers) -> ForwardedClient | None:
    """The client as ALB-style headers describe it; ``None`` when neither form is there.

    ``-Leaf`` (verify mode) means the ALB verified the leaf; ``-Serial-Number`` and
    ``-Validity``, when present, must agree with it (the DN strings are not compared:
    two RFC 2253 printers may differ in spelling, not in meaning). ``X-Amzn-Mtls-Clientcert``
    (passthrough) is the unverified chain: ``verified`` is false and the backend
    must verify it itself.
    """
    leaf_text = _one(headers, AWS_LEAF)
    chain_text = _one(headers, AWS_CHAIN)
    if leaf_text is None and chain_text is None:
        return None
    if leaf_text is not None:
        certs = certificates_from_url_encoded_pem(leaf_text, source=AWS_LEAF)
        if len(certs) != 1:
            raise InputError(f"holds {len(certs)} certificates, expected 1", source=AWS_LEAF)
        leaf = certs[0]
        _check(headers, leaf)
        return ForwardedClient(present=True, verified=True, chain=(leaf,), identity=_identity(leaf))
    chain = tuple(certificates_from_url_encoded_pem(chain_text or "", source=AWS_CHAIN))
    return ForwardedClient(present=True, verified=False, chain=chain, identity=_identity(chain[0]))


def _identity(leaf: x509.Certificate) -> ClientIdentity | None:
    try:
        return ClientIdentity.from_certificate(leaf)
    except IdentityError:
        return None


def _check(headers: Headers, leaf: x509.Certificate) -> None:
    serial = _one(headers, AWS_SERIAL)
    if serial is not None and serial.upper().lstrip("0") != hex_serial(leaf).lstrip("0"):
        raise InputError("does not match the forwarded leaf", source=AWS_SERIAL)
    validity = _one(headers, AWS_VALIDITY)
    if validity is not None:
        match = _VALIDITY.fullmatch(validity)
        if match is None:
            raise InputError("is not NotBefore=...Z;NotAfter=...Z", source=AWS_VALIDITY)
        if match.groups() != (_iso(leaf.not_valid_before_utc), _iso(leaf.not_valid_after_utc)):
            raise InputError("does not match the forwarded leaf", source=AWS_VALIDITY)
