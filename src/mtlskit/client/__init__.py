"""``client``: enroll with a one-time token, keep the certificate renewed, and use it.

The library behind ``mtlskit enroll`` and ``mtlskit renew``; the CA side is
``mtlskit ca serve``. The private key is made here and never sent. The
``SSLContext`` builders (``ssl_context``, ``pkcs12_ssl_context``,
``watching_ssl_context``, which follows ``renew --daemon`` without a restart) are
for httpx (``verify=context``) and, through ``SSLContextAdapter``, requests.

>>> from mtlskit.client import enroll, renew                             # doctest: +SKIP
>>> enroll("https://ca.internal:8444", token, "svc/", ca_fingerprint="sha256:…")
>>> renew("https://ca.internal:8444", "svc/cert.pem", "svc/key.pem")
"""

from typing import Any

from mtlskit.client._context import (
    WatchingSSLContext,
    pkcs12_ssl_context,
    ssl_context,
    watching_ssl_context,
)
from mtlskit.client._enroll import Enrolled, build_csr, enroll
from mtlskit.client._http import CaRateLimited, CaRefused, CaUnavailable
from mtlskit.client._renew import Renewed, backoff, renew, renew_forever, renewal_time

__all__ = [
    "CaRateLimited",
    "CaRefused",
    "CaUnavailable",
    "Enrolled",
    "Renewed",
    "SSLContextAdapter",
    "WatchingSSLContext",
    "backoff",
    "build_csr",
    "enroll",
    "pkcs12_ssl_context",
    "renew",
    "renew_forever",
    "renewal_time",
    "ssl_context",
    "watching_ssl_context",
]


def __getattr__(name: str) -> Any:
    """``SSLContextAdapter`` imports requests, which only its users need installed."""
    if name == "SSLContextAdapter":
        from mtlskit.client._requests import SSLContextAdapter

        return SSLContextAdapter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
