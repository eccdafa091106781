"""Certificates and CSRs that carry the same extension twice, validly signed.

No builder writes one (cryptography refuses a duplicate), so each is built with a
placeholder extension under an unused OID of the same encoded length, whose OID bytes
are then swapped for the SAN's in the signed bytes, which are signed again. Ed25519
keeps the signature's length fixed, so nothing else in the DER moves.
"""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

_PLACEHOLDER = x509.ObjectIdentifier("2.5.29.99")  # encodes as 06 03 55 1d 63
_SAN_OID = b"\x06\x03\x55\x1d\x11"  # 2.5.29.17, the same length


def _swap(der: bytes, signed: bytes, signature: bytes, key: ed25519.Ed25519PrivateKey) -> bytes:
    patched = signed.replace(b"\x06\x03\x55\x1d\x63", _SAN_OID)
    assert patched != signed
    return der.replace(signed, patched).replace(signature, key.sign(patched))


def certificate_with_two_sans(uri: str) -> x509.Certificate:
    """A self-issued Ed25519 certificate whose SAN (``uri``) appears twice."""
    key = ed25519.Ed25519PrivateKey.generate()
    san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)])
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "duplicated")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(san, critical=False)
        .add_extension(x509.UnrecognizedExtension(_PLACEHOLDER, san.public_bytes()), critical=False)
        .sign(key, None)
    )
    der = _swap(cert.public_bytes(Encoding.DER), cert.tbs_certificate_bytes, cert.signature, key)
    return x509.load_der_x509_certificate(der)


def csr_with_two_sans(uri: str) -> x509.CertificateSigningRequest:
    """An Ed25519 CSR, validly signed, whose SAN (``uri``) is requested twice."""
    key = ed25519.Ed25519PrivateKey.generate()
    san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)])
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(san, critical=False)
        .add_extension(x509.UnrecognizedExtension(_PLACEHOLDER, san.public_bytes()), critical=False)
        .sign(key, None)
    )
    der = _swap(csr.public_bytes(Encoding.DER), csr.tbs_certrequest_bytes, csr.signature, key)
    return x509.load_der_x509_csr(der)
