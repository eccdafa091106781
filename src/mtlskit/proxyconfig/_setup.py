"""What every generated proxy configuration needs, in one value; and the header names it handles.

Pure: paths are only written into the text, never opened. The CLI checks that the
files exist and reads nothing else; a generator is a function ``ProxySetup -> str``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from mtlskit.authzserver import cleared_by_proxy
from mtlskit.authzserver._decide import (
    HAPROXY_CERT,
    HAPROXY_VERIFY,
    NGINX_CERT,
    NGINX_VERIFY,
    ORIGINAL_METHOD,
    ORIGINAL_URI,
)
from mtlskit.errors import InputError
from mtlskit.forward import HeaderFormat
from mtlskit.forward.names import (
    SPOOFABLE_NAMES,
    SPOOFABLE_PREFIXES,
    written_by,
)

__all__ = ["Endpoint", "ProxySetup", "forwarded_names", "spoofable_regex"]


def forwarded_names(formats: tuple[HeaderFormat, ...]) -> tuple[str, ...]:
    """Header names authz-server may return for these formats, in writing order."""
    return written_by(formats)


def spoofable_regex() -> str:
    """One anchored, case-insensitive regex for every name ``forward.is_spoofable`` removes.

    ``-`` and ``_`` are interchangeable, as in the sanitizer's folding.
    """

    def spell(text: str) -> str:
        return "[-_]".join(re.escape(part) for part in text.split("-"))

    whole = [spell(name) for name in sorted(SPOOFABLE_NAMES)]
    prefixes = [spell(prefix) + ".*" for prefix in SPOOFABLE_PREFIXES]
    return "(?i)^(" + "|".join(whole + prefixes) + ")$"


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    """``http://host:port`` split once; only plain HTTP on a private network is generated."""

    host: str
    port: int

    @classmethod
    def parse(cls, url: str, *, what: str) -> Endpoint:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname or parts.path not in {"", "/"}:
            raise InputError(f"{url!r} must be http://HOST:PORT", source=what)
        return cls(host=parts.hostname, port=parts.port or 80)

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxySetup:
    """Everything a generator writes into a proxy configuration.

    - ``trust``/``crl``: one file each, as nginx and HAProxy take them (the CLI
      concatenates several).
    - ``proxy_crl``: the proxy checks ``crl`` in the handshake itself. Off by
      default: authz-server checks the CRL of each CA it has one for (as the
      gateway does), while OpenSSL in the proxy fails every chain with a CA whose
      CRL is missing from the file — one CA without a CRL would lose its clients.
    - ``verify_depth``: certificates above the leaf nginx may walk; nginx's
      default of 1 rejects every leaf issued by an intermediate.
    - ``forward``: the formats authz-server returns, whose headers the proxy copies.
    - ``cache_dir``: where nginx keeps authz-server's answers for up to a second.
    """

    listen: str = "127.0.0.1:8443"
    server_name: str = "_"
    server_cert: Path
    server_key: Path
    trust: Path
    crl: Path | None = None
    proxy_crl: bool = False
    verify_depth: int = 2
    upstream: Endpoint
    authz: Endpoint
    forward: tuple[HeaderFormat, ...] = (HeaderFormat.XFCC, HeaderFormat.VERDICT)
    cache_dir: Path = Path("mtlskit-authz-cache")
    generated_by: str = "mtlskit config"

    @property
    def forwarded(self) -> tuple[str, ...]:
        return forwarded_names(self.forward)

    @property
    def cleared(self) -> tuple[str, ...]:
        """Names cleared by exact name on the way to the backend.

        Every identity header name mtlskit knows (``authzserver.cleared_by_proxy``,
        i.e. ``forward.names.identity_header_names``) and the names the proxy sends
        authz-server, which only the check request may carry; the forwarded ones are
        overwritten with authz-server's values instead.
        """
        forwarded = {name.lower() for name in self.forwarded}
        internal = (NGINX_CERT, NGINX_VERIFY, HAPROXY_CERT, HAPROXY_VERIFY)
        names = (*cleared_by_proxy(), *internal, ORIGINAL_METHOD, ORIGINAL_URI)
        return tuple(name for name in names if name.lower() not in forwarded)

    @property
    def listen_host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host or "0.0.0.0", int(port)
