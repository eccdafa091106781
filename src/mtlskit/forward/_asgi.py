"""The ASGI TLS extension (asgiref ``specs/tls.rst``, v0.2) built from a ``ForwardedClient``.

So an app sees ``scope["extensions"]["tls"]`` whether mtlskit serves it in-process
or a middleware rebuilt the client from a proxy's headers. Field rules from the
spec: ``client_cert_chain`` is PEM strings, client certificate first, empty when
none; ``client_cert_name`` the subject as RFC 4514, ``None`` without a
certificate; ``client_cert_error`` ``None`` when verified or absent, else a
non-empty reason; ``tls_version`` e.g. ``0x0304``; ``cipher_suite`` the 16-bit
IANA value (``0x1301`` for TLS_AES_128_GCM_SHA256).
"""

from __future__ import annotations

from typing import Any, Final

from cryptography import x509

from mtlskit.certs import certificate_pem
from mtlskit.forward._client import ForwardedClient

__all__ = ["asgi_tls_extension", "tls_version_number"]

_TLS_VERSIONS: Final = {
    "TLSv1": 0x0301,
    "TLSv1.1": 0x0302,
    "TLSv1.2": 0x0303,
    "TLSv1.3": 0x0304,
}


def tls_version_number(name: str | None) -> int | None:
    """``ssl.SSLObject.version()`` names (``"TLSv1.3"``) as the spec's integers."""
    return _TLS_VERSIONS.get(name or "")


def asgi_tls_extension(
    client: ForwardedClient,
    *,
    server_cert: x509.Certificate | None = None,
    tls_version: int | None = None,
    cipher_suite: int | None = None,
) -> dict[str, Any]:
    """The v0.2 ``tls`` extension dict; ``None`` for whatever the caller cannot know.

    With ``ssl``, the cipher suite number is the low 16 bits of the ``id`` that
    ``SSLContext.get_ciphers()`` lists for ``SSLObject.cipher()[0]``.
    """
    if client.present and not client.verified:
        error: str | None = client.error or "unverified"
    else:
        error = None
    leaf = client.leaf
    return {
        "server_cert": certificate_pem(server_cert).decode("ascii") if server_cert else None,
        "client_cert_chain": [certificate_pem(cert).decode("ascii") for cert in client.chain],
        "client_cert_name": leaf.subject.rfc4514_string() if leaf is not None else None,
        "client_cert_error": error,
        "tls_version": tls_version,
        "cipher_suite": cipher_suite,
    }
