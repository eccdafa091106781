"""Which certificate an ASGI request came with, from the one source its peer may speak for; no IO.

The source is chosen by the TCP peer (``scope["client"]``), never by what the request carries:

- a peer listed as a proxy: exactly the one header format configured for it
  (``ProxyHeaders``: nginx's escaped PEM under configured names, Envoy XFCC, RFC 9440
  ``Client-Cert``, GCP-style ``X-Client-Cert-*``, AWS ALB-style
  ``X-Amzn-Mtls-Clientcert-*``, or mtlskit's verdict headers). Identity headers of
  every other family are never read and are removed before the app sees the request
  (``Observed.ignored`` names them, for the operator's log): a proxy overwrites the
  headers it sets and passes the client's others on, so any other family in a
  proxied request is the client's own writing. The server's TLS extension describes
  the proxy's connection, not the client's, and is not read either.
- any other peer: headers are never believed (all identity headers are removed); the
  ASGI TLS extension, which only the server that terminated this peer's TLS can
  fill (``mtlskit serve``; a client cannot write it), is the source — with
  ``scope["extensions"]["mtlskit"]`` beside it, its ``Decision`` gives the verdict.

There is no "first format present wins": which headers are read is configuration.
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
    HeaderFormat,
    is_spoofable,
    read_aws,
    read_gcp,
    read_nginx,
    read_rfc9440,
    read_verdict,
    read_xfcc,
)
from mtlskit.forward._headers import header_values
from mtlskit.forward.names import written_by

__all__ = [
    "PROXY_FORMATS",
    "Network",
    "Observed",
    "ProxyHeaders",
    "observe",
    "parse_networks",
    "parse_proxies",
]

ProxyFormat = Literal["nginx", "xfcc", "rfc9440", "gcp", "aws", "verdict"]
PROXY_FORMATS: Final[tuple[ProxyFormat, ...]] = (
    "nginx",
    "xfcc",
    "rfc9440",
    "gcp",
    "aws",
    "verdict",
)
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Header = tuple[bytes, bytes]
Proxies = tuple[tuple[Network, "ProxyHeaders"], ...]

INVALID_HEADER: Final = "forwarded_header_invalid"  # a trusted proxy's header did not parse


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyHeaders:
    """The one header format a proxy writes, and the names of the configurable ones.

    ``format``: ``"nginx"`` (``$ssl_client_escaped_cert`` and ``$ssl_client_verify``
    under ``nginx_cert``/``nginx_verify``; nginx has no standard names, the defaults
    are the ones most configurations use), ``"xfcc"`` (Envoy, Istio), ``"rfc9440"``,
    ``"gcp"`` (under ``gcp_names``, the operator's choice on the load balancer),
    ``"aws"`` (ALB verify or passthrough mode) or ``"verdict"`` (mtlskit's
    ``X-Mtlskit-Client-*``, from ``mtlskit gateway`` or ``authz-server``). A plain
    string in ``ClientCertMiddleware(proxies=)`` means these defaults.
    """

    format: ProxyFormat
    nginx_cert: str = "X-SSL-Client-Cert"
    nginx_verify: str = "X-SSL-Client-Verify"
    gcp_names: GcpHeaderNames = field(default_factory=GcpHeaderNames)

    def __post_init__(self) -> None:
        if self.format not in PROXY_FORMATS:
            raise ValueError(
                f"unknown proxy header format {self.format!r}: one of {', '.join(PROXY_FORMATS)}"
            )

    @property
    def names(self) -> tuple[str, ...]:
        """The header names this format is read from; every other identity header is foreign."""
        if self.format == "nginx":
            return (self.nginx_cert, self.nginx_verify)
        if self.format == "gcp":
            return self.gcp_names.names()
        return written_by((HeaderFormat(self.format),))

    def read(self, headers: Sequence[Header]) -> ForwardedClient | None:
        """The client as this format describes it; ``None`` when none of its headers is there."""
        if self.format == "xfcc":
            return read_xfcc(headers)
        if self.format == "rfc9440":
            return read_rfc9440(headers)
        if self.format == "gcp":
            return read_gcp(headers, self.gcp_names)
        if self.format == "aws":
            return read_aws(headers)
        if self.format == "verdict":
            return read_verdict(headers)
        cert = header_values(headers, self.nginx_cert)
        verify = header_values(headers, self.nginx_verify)
        if not cert and not verify:
            return None
        if len(cert) > 1 or len(verify) > 1:
            raise InputError("appears more than once", source=self.nginx_cert)
        return read_nginx(cert[0] if cert else None, verify[0] if verify else None)


@dataclass(frozen=True, slots=True, kw_only=True)
class Observed:
    """What a request says about its client certificate, and where that came from.

    ``source`` is ``"tls"``, the proxy's format name, ``"header"`` (the proxy's header
    did not parse) or ``None`` (no certificate). ``proxy`` is the peer's configuration
    when the peer is a listed proxy. ``headers`` is what the app may see: identity
    headers removed, except the listed proxy's own format. ``ignored``: identity
    header names of other families that a listed proxy passed on — never read, and a
    sign that the proxy does not clear them (the middleware logs them).
    """

    client: ForwardedClient
    source: str | None
    proxy: ProxyHeaders | None
    headers: list[Header]
    ignored: tuple[str, ...] = ()


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


def parse_proxies(proxies: Mapping[str | Network, str | ProxyHeaders]) -> Proxies:
    """``{"127.0.0.1": "nginx", "10.0.0.0/8": ProxyHeaders(format="gcp", ...)}`` → pairs.

    ``ValueError`` for a bad address or format, and for overlapping networks with
    different formats (which one a peer in both speaks would be a guess).
    """
    if not isinstance(proxies, Mapping):
        raise TypeError("proxies must map proxy addresses or networks to a header format")
    out: list[tuple[Network, ProxyHeaders]] = []
    for where, what in proxies.items():
        headers = what if isinstance(what, ProxyHeaders) else ProxyHeaders(format=what)  # type: ignore[arg-type]
        (network,) = parse_networks([where])
        for other, other_headers in out:
            if network.overlaps(other) and headers != other_headers:  # type: ignore[arg-type]
                raise ValueError(
                    f"proxy networks {network} and {other} overlap with different formats"
                )
        out.append((network, headers))
    return tuple(out)


def _proxy_of(client: Sequence[Any] | None, proxies: Proxies) -> ProxyHeaders | None:
    if not client or not proxies:
        return None
    try:
        address = ipaddress.ip_address(str(client[0]))
    except ValueError:  # a unix socket path or a name: not a listed address
        return None
    for network, headers in proxies:
        if address in network:
            return headers
    return None


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


def _split(
    headers: Sequence[Header], own: frozenset[str], also: frozenset[str]
) -> tuple[list[Header], tuple[str, ...]]:
    """(the headers the app may see, the identity header names removed)."""
    visible: list[Header] = []
    removed: dict[str, None] = {}
    for name, value in headers:
        lower = name.decode("latin-1").lower()
        if lower in own:
            visible.append((name, value))
        elif is_spoofable(name, also):
            removed[lower] = None
        else:
            visible.append((name, value))
    return visible, tuple(removed)


def observe(scope: Mapping[str, Any], *, proxies: Proxies) -> Observed:
    """The client certificate as this request presents it (see the module docstring)."""
    headers = list(scope.get("headers") or ())
    proxy = _proxy_of(scope.get("client"), proxies)
    configured = frozenset(name for _, other in proxies for name in other.names)
    if proxy is None:
        visible, _ = _split(headers, frozenset(), configured)
        extensions = scope.get("extensions") or {}
        try:
            client = _from_tls(extensions.get("tls") or {}, extensions.get("mtlskit") or {})
        except InputError:
            client = None
        if client is not None:
            return Observed(client=client, source="tls", proxy=None, headers=visible)
        return Observed(client=ForwardedClient.missing(), source=None, proxy=None, headers=visible)
    own = frozenset(name.lower() for name in proxy.names)
    visible, ignored = _split(headers, own, configured)
    try:
        found = proxy.read(headers)
    except (InputError, ValueError):
        bad = ForwardedClient(present=True, verified=False, error=INVALID_HEADER)
        return Observed(client=bad, source="header", proxy=proxy, headers=visible, ignored=ignored)
    client = found if found is not None else ForwardedClient.missing()
    source = proxy.format if found is not None else None
    return Observed(client=client, source=source, proxy=proxy, headers=visible, ignored=ignored)
