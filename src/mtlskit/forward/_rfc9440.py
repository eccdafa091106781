"""RFC 9440 ``Client-Cert`` and ``Client-Cert-Chain``: writer and reader.

RFC 9440 §2.1: each certificate is its DER in an RFC 8941 Byte Sequence
(``:base64:``). §2.2: ``Client-Cert`` holds the end-entity certificate. §2.3:
``Client-Cert-Chain`` is a List of such Byte Sequences in TLS order, **without**
the end-entity certificate, never sent without ``Client-Cert``, and it may be
split over several field lines. §4: a proxy must remove any client-sent
instance — the sanitizer always does.
"""

from __future__ import annotations

from typing import Final

from cryptography import x509

from mtlskit.errors import InputError
from mtlskit.forward._client import ForwardedClient
from mtlskit.forward._encoding import (
    byte_sequence,
    byte_sequence_list,
    certificate_der,
    certificate_from_der,
    parse_byte_sequence,
    parse_byte_sequence_list,
)
from mtlskit.forward._headers import Headers, header, header_values
from mtlskit.identity import ClientIdentity, IdentityError

__all__ = ["CLIENT_CERT", "CLIENT_CERT_CHAIN", "read_rfc9440", "rfc9440_headers"]

CLIENT_CERT: Final = "Client-Cert"
CLIENT_CERT_CHAIN: Final = "Client-Cert-Chain"


def rfc9440_headers(client: ForwardedClient) -> list[tuple[bytes, bytes]]:
    """``Client-Cert`` (and ``Client-Cert-Chain`` when there are certificates above the
    leaf) for a verified client; nothing otherwise, since the fields carry no verdict."""
    if not client.verified or not client.chain:
        return []
    out = [header(CLIENT_CERT, byte_sequence(certificate_der(client.chain[0])))]
    if len(client.chain) > 1:
        rest = [certificate_der(cert) for cert in client.chain[1:]]
        out.append(header(CLIENT_CERT_CHAIN, byte_sequence_list(rest)))
    return out


def read_rfc9440(headers: Headers) -> ForwardedClient | None:
    """The client from ``Client-Cert``/``Client-Cert-Chain``; ``None`` without ``Client-Cert``.

    ``verified`` is true: a proxy sends these for the certificate of an mTLS
    connection it accepted; trust them only from allow-listed proxy addresses.
    """
    leaf_values = header_values(headers, CLIENT_CERT)
    chain_values = header_values(headers, CLIENT_CERT_CHAIN)
    if not leaf_values:
        if chain_values:
            raise InputError(
                "present without Client-Cert (RFC 9440 §2.3)", source=CLIENT_CERT_CHAIN
            )
        return None
    if len(leaf_values) > 1:
        raise InputError("appears more than once", source=CLIENT_CERT)
    leaf = certificate_from_der(
        parse_byte_sequence(leaf_values[0], source=CLIENT_CERT), source=CLIENT_CERT
    )
    rest = parse_byte_sequence_list(",".join(chain_values), source=CLIENT_CERT_CHAIN)
    chain: tuple[x509.Certificate, ...] = (
        leaf,
        *(certificate_from_der(der, source=CLIENT_CERT_CHAIN) for der in rest),
    )
    try:
        identity: ClientIdentity | None = ClientIdentity.from_certificate(leaf)
    except IdentityError:
        identity = None
    return ForwardedClient(present=True, verified=True, chain=chain, identity=identity)
