"""Which certificate an ASGI request came with, from every shape in circulation; no IO.

Sources, in the order they are believed:

1. the ASGI TLS extension, filled by the server that terminated TLS itself
   (``mtlskit serve``; a client cannot write it) — with ``scope["extensions"]["mtlskit"]``
   beside it, its ``Decision`` gives the verdict;
2. identity headers — Envoy XFCC, RFC 9440 ``Client-Cert``, GCP-style
   ``X-Client-Cert-*``, AWS ALB-style ``X-Amzn-Mtls-Clientcert-*``, nginx's
   ``$ssl_client_escaped_cert``/``$ssl_client_verify`` under configured names,
   mtlskit's verdict headers — **only** when the peer (``scope["client"]``) is an
   allow-listed proxy. From anyone else they are removed before the app sees them.

The first header format present wins (``HeaderSources.formats`` order); mtlskit's
verdict headers, when also present, can only lower a verdict, never raise it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from mtlskit.certs import load_certificates
from mtlskit.errors import InputError
from mtlskit.forward import (
    ForwardedClient,
    GcpHeaderNames,
    read_aws,
    read_gcp,
    read_nginx,
    read_rfc9440,
    read_verdict,
    read_xfcc,
    sanitize_headers,
)
from mtlskit.forward._headers import header_values

__all__ = [
    "HEADER_FORMATS",
    "HeaderSources",
    "Network",
    "Observed",
    "observe",
    "parse_networks",
]

HeaderFormat = Literal["xfcc", "rfc9440", "gcp", "aws", "nginx", "verdict"]
HEADER_FORMATS: Final[tuple[HeaderFormat, ...]] = (
    "xfcc",
    "rfc9440",
    "gcp",
    "aws",
    "nginx",
    "verdict",
)
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Header = tuple[bytes, bytes]

INVALID_HEADER: Final = "forwarded_header_invalid"  # a trusted proxy's header did not parse


@dataclass(frozen=True, slots=True, kw_only=True)
class HeaderSources:
    """Which proxy headers to read, and under which names the configurable ones arrive.

    nginx has no standard header names: the defaults are the ones most nginx
    configurations use (``proxy_set_header X-SSL-Client-Cert $ssl_client_escaped_cert``).
    """

    formats: tuple[HeaderFormat, ...] = HEADER_FORMATS
    nginx_cert: str = "X-SSL-Client-Cert"
    nginx_verify: str = "X-SSL-Client-Verify"
    gcp_names: GcpHeaderNames = field(default_factory=GcpHeaderNames)

    def __post_init__(self) -> None:
        unknown = set(self.formats) - set(HEADER_FORMATS)
        if unknown:
            raise ValueError(f"unknown header formats: {', '.join(sorted(unknown))}")

    @property
    def extra_names(self) -> tuple[str, ...]:
        """Configured names the sanitizer does not know by itself."""
        return (self.nginx_cert, self.nginx_verify, *self.gcp_names.names())


@dataclass(frozen=True, slots=True, kw_only=True)
class Observed:
    """What a request says about its client certificate, and where that came from.

    ``source`` is ``"tls"``, a header format name, or ``None`` (nothing: no
    certificate). ``trusted_peer`` records whether headers were believed;
    ``headers`` is what the app may see (identity headers stripped when not).
    """

    client: ForwardedClient
    source: str | None
    trusted_peer: bool
    headers: list[Header]


def parse_networks(items: Iterable[str | Network]) -> tuple[Network, ...]:
    """``"10.0.0.0/8"``, ``"127.0.0.1"``, ``"::1"`` → networks; ``ValueError`` names a bad one."""
    out: list[Network] = []
    for item in items:
        if isinstance(item, ipaddress.IPv4Network | ipaddress.IPv6Network):
            out.append(item)
            continue
        try:
            out.append(ipaddress.ip_network(str(item).strip(), strict=False))
        except ValueError:
            raise ValueError(f"not an IP address or network: {item!r}") from None
    return tuple(out)


def _peer_trusted(client: Sequence[Any] | None, networks: tuple[Network, ...]) -> bool:
    if not client or not networks:
        return False
    try:
        address = ipaddress.ip_address(str(client[0]))
    except ValueError:  # a unix socket path or a name: not an allow-listed address
        return False
    return any(address in network for network in networks)


def _from_tls(tls: Mapping[str, Any], mtlskit: Mapping[str, Any]) -> ForwardedClient | None:
    pems = tls.get("client_cert_chain") or []
    if not pems:
        return None
    chain = [
        cert
        for pem in pems
        for cert in load_certificates(str(pem).encode(), source="tls.client_cert_chain")
    ]
    decision = mtlskit.get("decision")
    if decision is not None:
        verified = bool(decision.accepted)
        error = None if verified else decision.reasons[0].code.value
    else:
        error = tls.get("client_cert_error")
        verified = error is None
    return ForwardedClient.from_chain(chain, verified=verified, error=error)


def _read(
    kind: HeaderFormat, headers: Sequence[Header], sources: HeaderSources
) -> ForwardedClient | None:
    if kind == "xfcc":
        return read_xfcc(headers)
    if kind == "rfc9440":
        return read_rfc9440(headers)
    if kind == "gcp":
        return read_gcp(headers, sources.gcp_names)
    if kind == "aws":
        return read_aws(headers)
    if kind == "nginx":
        cert = header_values(headers, sources.nginx_cert)
        verify = header_values(headers, sources.nginx_verify)
        if not cert and not verify:
            return None
        if len(cert) > 1 or len(verify) > 1:
            raise InputError("appears more than once", source=sources.nginx_cert)
        return read_nginx(cert[0] if cert else None, verify[0] if verify else None)
    return read_verdict(headers)


def _merge_verdict(client: ForwardedClient, verdict: ForwardedClient) -> ForwardedClient:
    """mtlskit's verdict headers beside a certificate format: they may only say no."""
    if verdict.verified or not client.verified:
        return client
    return ForwardedClient(
        present=client.present,
        verified=False,
        error=verdict.error or "unverified",
        chain=client.chain,
        identity=client.identity,
        fingerprint=client.fingerprint,
    )


def _from_headers(
    headers: Sequence[Header], sources: HeaderSources
) -> tuple[ForwardedClient, str] | None:
    found: tuple[ForwardedClient, str] | None = None
    for kind in sources.formats:
        if kind == "verdict":
            continue
        client = _read(kind, headers, sources)
        if client is not None:
            found = (client, kind)
            break
    verdict = read_verdict(headers) if "verdict" in sources.formats else None
    if found is None:
        return (verdict, "verdict") if verdict is not None else None
    if verdict is not None:
        return _merge_verdict(found[0], verdict), found[1]
    return found


def observe(
    scope: Mapping[str, Any], *, trusted: tuple[Network, ...], sources: HeaderSources
) -> Observed:
    """The client certificate as this request presents it (see the module docstring)."""
    headers = list(scope.get("headers") or ())
    extensions = scope.get("extensions") or {}
    trusted_peer = _peer_trusted(scope.get("client"), trusted)
    visible = headers if trusted_peer else sanitize_headers(headers, also=sources.extra_names)
    try:
        client = _from_tls(extensions.get("tls") or {}, extensions.get("mtlskit") or {})
    except InputError:
        client = None
    if client is not None:
        return Observed(client=client, source="tls", trusted_peer=trusted_peer, headers=visible)
    if trusted_peer:
        try:
            found = _from_headers(headers, sources)
        except (InputError, ValueError):
            bad = ForwardedClient(present=True, verified=False, error=INVALID_HEADER)
            return Observed(client=bad, source="header", trusted_peer=True, headers=visible)
        if found is not None:
            return Observed(client=found[0], source=found[1], trusted_peer=True, headers=visible)
    missing = ForwardedClient.missing()
    return Observed(client=missing, source=None, trusted_peer=trusted_peer, headers=visible)
