"""The header names each format writes, for code that configures proxies to clear or copy them.

Public so that ``proxyconfig`` and the authz server need not reach into the
writers' private modules; the writers themselves remain the only place each
name is defined.
"""

from collections.abc import Iterable
from typing import Final

from mtlskit.forward._aws import (
    AWS_CHAIN,
    AWS_ISSUER,
    AWS_LEAF,
    AWS_SERIAL,
    AWS_SUBJECT,
    AWS_VALIDITY,
)
from mtlskit.forward._forward import ForwardConfig, HeaderFormat
from mtlskit.forward._rfc9440 import CLIENT_CERT, CLIENT_CERT_CHAIN
from mtlskit.forward._sanitize import SPOOFABLE_NAMES, SPOOFABLE_PREFIXES
from mtlskit.forward._verdict import (
    VERDICT_ERROR,
    VERDICT_FINGERPRINT,
    VERDICT_IDENTITY,
    VERDICT_IDENTITY_KIND,
    VERDICT_PRESENT,
    VERDICT_VERIFIED,
)
from mtlskit.forward._xfcc import XFCC

__all__ = [
    "AWS_CHAIN",
    "AWS_ISSUER",
    "AWS_LEAF",
    "AWS_SERIAL",
    "AWS_SUBJECT",
    "AWS_VALIDITY",
    "CLIENT_CERT",
    "CLIENT_CERT_CHAIN",
    "SPOOFABLE_NAMES",
    "SPOOFABLE_PREFIXES",
    "VERDICT_ERROR",
    "VERDICT_FINGERPRINT",
    "VERDICT_IDENTITY",
    "VERDICT_IDENTITY_KIND",
    "VERDICT_PRESENT",
    "VERDICT_VERIFIED",
    "XFCC",
    "X_SSL_NAMES",
    "identity_header_names",
    "written_by",
]

# nginx has no standard names for its ``$ssl_client_*`` variables: these are the ones
# nginx configurations in circulation forward them under (``X-SSL-*`` is a sanitizer
# prefix; a proxy that clears by exact name needs the names themselves).
X_SSL_NAMES: Final = (
    "X-SSL-Client-Cert",
    "X-SSL-Client-Escaped-Cert",
    "X-SSL-Client-Verify",
    "X-SSL-Client-DN",
    "X-SSL-Client-S-DN",
    "X-SSL-Client-I-DN",
    "X-SSL-Client-Serial",
    "X-SSL-Client-Fingerprint",
    "X-SSL-Client-V-Start",
    "X-SSL-Client-V-End",
    "X-SSL-Cert",
    "X-SSL-Verify",
)


def written_by(formats: Iterable[HeaderFormat]) -> tuple[str, ...]:
    """The header names the writers of these formats produce (GCP: the default names)."""
    names: list[str] = []
    for kind in formats:
        if kind is HeaderFormat.XFCC:
            names.append(XFCC)
        elif kind is HeaderFormat.GCP:
            names += ForwardConfig().gcp.names()
        elif kind is HeaderFormat.AWS:
            names += [AWS_CHAIN, AWS_LEAF, AWS_SERIAL, AWS_ISSUER, AWS_SUBJECT, AWS_VALIDITY]
        elif kind is HeaderFormat.RFC9440:
            names += [CLIENT_CERT, CLIENT_CERT_CHAIN]
        else:
            names += [
                VERDICT_PRESENT,
                VERDICT_VERIFIED,
                VERDICT_ERROR,
                VERDICT_FINGERPRINT,
                VERDICT_IDENTITY,
                VERDICT_IDENTITY_KIND,
            ]
    return tuple(names)


def identity_header_names(also: Iterable[str] = ()) -> tuple[str, ...]:
    """Every identity header name mtlskit knows, each once (case-insensitively).

    What a proxy that cannot delete by prefix (nginx) clears by exact name: every
    name mtlskit's writers produce, nginx's ``X-SSL-*`` names in circulation, the
    sanitizer's whole names, then ``also`` (configured names, e.g. other GCP names).
    """
    names: dict[str, str] = {}
    for name in (*written_by(HeaderFormat), *X_SSL_NAMES, *sorted(SPOOFABLE_NAMES), *also):
        names.setdefault(name.lower(), name)
    return tuple(names.values())
