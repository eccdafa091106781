"""Removing every client-sent header that could pose as a proxy's word about the client.

Always, in every mode, whichever formats are enabled: a backend behind another
proxy, or a later configuration change, may read a format this gateway does not
write, so what the gateway does not write it must still not pass on. Names are
compared after folding case and ``_`` to ``-`` — nginx drops underscored names by
default but Apache, WSGI and CGI map ``SSL_CLIENT_CERT`` and ``Ssl-Client-Cert``
to the same variable — and after trimming whitespace a lenient parser might drop.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from mtlskit.forward._headers import Headers

__all__ = ["SPOOFABLE_NAMES", "SPOOFABLE_PREFIXES", "is_spoofable", "sanitize_headers"]

# Whole names (after folding) that only a TLS-terminating proxy may set.
SPOOFABLE_NAMES: Final = frozenset(
    {
        "x-forwarded-client-cert",  # Envoy / Istio XFCC
        "client-cert",  # RFC 9440
        "client-cert-chain",  # RFC 9440
        "x-client-cert",  # GCP examples, Kong, many nginx configs
        "x-client-verify",
        "x-client-dn",
        "x-client-s-dn",
        "x-client-i-dn",
        "x-arr-clientcert",  # IIS ARR / Azure App Service
        "x-amzn-mtls-clientcert",  # AWS ALB passthrough
        "x-forwarded-tls-client-cert",  # Traefik
        "x-forwarded-tls-client-cert-info",
        "x-forwarded-ssl",
    }
)
# Prefixes (after folding): every name starting so is removed.
SPOOFABLE_PREFIXES: Final = (
    "x-mtlskit-",  # mtlskit's own verdict headers
    "x-forwarded-client-cert",  # and look-alikes such as -chain, -certificate
    "x-client-cert",  # X-Client-Cert-* (GCP style), X-Client-Certificate
    "x-amzn-mtls-",  # AWS ALB verify mode
    "x-amzn-tls-",  # AWS ALB TLS version / cipher
    "client-cert-",
    "x-ssl-",  # X-SSL-Client-Cert, X-SSL-Client-S-DN, X-SSL-Client-Verify, ...
    "ssl-client-",  # SSL_CLIENT_* (mod_ssl names) sent as headers
    "x-tls-client-",
    "x-forwarded-tls-client-",
    "x-forwarded-ssl-client-",
    "cloudfront-viewer-cert-",  # CloudFront viewer mTLS
    "cf-client-cert-",  # Cloudflare
)


def _fold(name: bytes | str) -> str:
    text = name.decode("latin-1") if isinstance(name, bytes) else name
    return text.strip(" \t\r\n").lower().replace("_", "-")


def is_spoofable(name: bytes | str, also: Iterable[str] = ()) -> bool:
    """Whether a request header of this name must never reach the upstream from a client."""
    folded = _fold(name)
    if folded in SPOOFABLE_NAMES or folded.startswith(SPOOFABLE_PREFIXES):
        return True
    return any(folded == _fold(extra) for extra in also)


def sanitize_headers(headers: Headers, *, also: Iterable[str] = ()) -> list[tuple[bytes, bytes]]:
    """``headers`` without any spoofable one; the rest keep their order, case and values.

    ``also`` adds configured names (GCP header names are the operator's choice).
    """
    extra = frozenset(_fold(name) for name in also)
    return [
        (name, value) for name, value in headers if not (is_spoofable(name) or _fold(name) in extra)
    ]
