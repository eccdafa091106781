"""The CA's trust anchor as a SPIFFE bundle: a JWK Set with one ``x509-svid`` key per root.

Pure. ``spiffe_sequence`` comes from the root's notBefore, so it only grows if the
CA is ever re-rooted; the refresh hint tells consumers how often to look again.
"""

from __future__ import annotations

import base64
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

__all__ = ["spiffe_bundle"]

_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _int(value: int, size: int | None = None) -> str:
    length = size if size is not None else max(1, (value.bit_length() + 7) // 8)
    return _b64url(value.to_bytes(length, "big"))


def _jwk(cert: x509.Certificate) -> dict[str, Any]:
    key = cert.public_key()
    der = cert.public_bytes(serialization.Encoding.DER)
    entry: dict[str, Any] = {"use": "x509-svid", "x5c": [base64.b64encode(der).decode("ascii")]}
    if isinstance(key, ec.EllipticCurvePublicKey):
        numbers = key.public_numbers()
        size = (key.curve.key_size + 7) // 8
        entry |= {
            "kty": "EC",
            "crv": _CURVES.get(key.curve.name, key.curve.name),
            "x": _int(numbers.x, size),
            "y": _int(numbers.y, size),
        }
    elif isinstance(key, rsa.RSAPublicKey):
        numbers = key.public_numbers()
        entry |= {"kty": "RSA", "n": _int(numbers.n), "e": _int(numbers.e)}
    elif isinstance(key, ed25519.Ed25519PublicKey):
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        entry |= {"kty": "OKP", "crv": "Ed25519", "x": _b64url(raw)}
    return entry


def spiffe_bundle(roots: tuple[x509.Certificate, ...], *, refresh_hint: int) -> dict[str, Any]:
    """The JWK Set document (SPIFFE Trust Domain and Bundle spec §4)."""
    sequence = max(int(root.not_valid_before_utc.timestamp()) for root in roots)
    return {
        "keys": [_jwk(root) for root in roots],
        "spiffe_sequence": sequence,
        "spiffe_refresh_hint": refresh_hint,
    }
