"""``ClientCertMiddleware``: one client identity for an ASGI app, whatever is in front of it.

The reading is ``_normalize.observe`` (pure); this module is the ASGI plumbing and
the optional integrity check: with a trust store, the chain a proxy forwarded is
verified again by mtlskit's ``Verifier`` — which can only take a proxy's "verified"
away, never give it (a chain in a header proves nothing about the key).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding

from mtlskit.asgi._normalize import Network, Observed, ProxyHeaders, observe, parse_proxies
from mtlskit.forward import ForwardedClient, asgi_tls_extension
from mtlskit.verify import Decision, TrustStore, VerificationCache, Verifier

__all__ = ["ClientCertMiddleware"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

NOT_FORWARDED = "cert_not_forwarded"  # re-verification asked for, but only fields were forwarded
_log = logging.getLogger("mtlskit.asgi")


class ClientCertMiddleware:
    """The client certificate as ``request.state.client_identity`` and the TLS extension.

    ``proxies`` (required, no default: which proxy is in front, and what it writes, is
    the deployment's fact, not mtlskit's guess) maps each proxy's address or network
    to the one header format it writes: ``{"127.0.0.1": "nginx"}``, or a
    ``ProxyHeaders`` for configured names. From a listed proxy only that format is
    read; identity headers of any other family are removed unread and logged (the
    proxy passed on headers its client wrote: clear them in the proxy). From any other
    peer every identity header is removed, and only the server's own ASGI TLS
    extension (``mtlskit serve``) is read. ``{}`` means no proxy at all.

    The identity is believed because the listed proxy verified the TLS handshake, in
    which the client proved it holds the key. ``trust``: a ``TrustStore`` (or a ready
    ``Verifier``) for an integrity check on top — the chain the proxy forwarded must
    also verify against *your* anchors (a proxy configured with a broader CA file, an
    expired or revoked certificate). It can only turn "verified" into "not verified",
    never the reverse: a certificate chain in a header is public data and proves
    nothing about possession of the key, so a chain the proxy did not vouch for is
    never accepted because it verifies. A header without a certificate (XFCC without
    ``Cert``) then counts as unverified (``cert_not_forwarded``). nginx forwards the
    leaf only: anchor the trust store at the issuing CA.

    Each HTTP/WebSocket scope the app gets carries ``state["client_identity"]``
    (the verified ``ClientIdentity`` or ``None``), ``state["client_cert"]`` (the
    whole ``ForwardedClient``), ``extensions["tls"]`` (ASGI TLS extension v0.2,
    rebuilt from what was found) and ``extensions["mtlskit"]`` with ``client``,
    ``source`` and ``decision`` (the re-verification's, or the in-process
    gateway's, else ``None``).
    """

    def __init__(
        self,
        app: App,
        *,
        proxies: Mapping[str | Network, str | ProxyHeaders],
        trust: TrustStore | Verifier | None = None,
    ) -> None:
        self.app = app
        self.proxies = parse_proxies(proxies)
        self.verifier = Verifier(trust=trust) if isinstance(trust, TrustStore) else trust
        self.cache = VerificationCache()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        observed = observe(scope, proxies=self.proxies)
        if observed.ignored and observed.proxy is not None:
            _log.warning(
                "proxy %s passed on identity headers that are not its %r format (ignored, "
                "removed; clear them in the proxy): %s",
                (scope.get("client") or ("?",))[0],
                observed.proxy.format,
                ", ".join(observed.ignored[:16]),
            )
        mtlskit = dict((scope.get("extensions") or {}).get("mtlskit") or {})
        client, decision = self._second_gate(observed, mtlskit.get("decision"))
        await self.app(self._scope(scope, observed, client, decision, mtlskit), receive, send)

    def _second_gate(
        self, observed: Observed, decision: Decision | None
    ) -> tuple[ForwardedClient, Decision | None]:
        """The integrity check: may lower the verdict, never raise it."""
        client = observed.client
        if self.verifier is None or not client.present or (observed.source == "tls" and decision):
            return client, decision
        if not client.verified:  # the proxy did not vouch for it: a chain cannot make up for that
            return client, None
        if not client.chain:
            return ForwardedClient(
                present=True,
                verified=False,
                error=NOT_FORWARDED,
                identity=client.identity,
                fingerprint=client.fingerprint,
            ), None
        ders = tuple(cert.public_bytes(Encoding.DER) for cert in client.chain)
        decision = self.cache.verify(self.verifier, ders, at=dt.datetime.now(dt.UTC))
        if decision.accepted:
            return client, decision
        _log.info("forwarded client certificate rejected: %s", decision.reasons[0])
        refused = ForwardedClient(
            present=True,
            verified=False,
            error=decision.reasons[0].code.value,
            chain=client.chain,
            identity=client.identity,
            fingerprint=client.fingerprint,
        )
        return refused, decision

    @staticmethod
    def _scope(
        scope: Scope,
        observed: Observed,
        client: ForwardedClient,
        decision: Decision | None,
        mtlskit: dict[str, Any],
    ) -> Scope:
        """A new scope (the server's is never mutated): headers, extensions, state."""
        extensions = dict(scope.get("extensions") or {})
        server_tls = extensions.get("tls") or {}
        tls = asgi_tls_extension(client)
        for name in ("server_cert", "tls_version", "cipher_suite"):
            if server_tls.get(name) is not None:
                tls[name] = server_tls[name]
        extensions["tls"] = tls
        extensions["mtlskit"] = {
            **mtlskit,
            "client": client,
            "source": observed.source,
            "decision": decision,
        }
        identity = client.identity if client.verified else None
        state = {**(scope.get("state") or {}), "client_identity": identity, "client_cert": client}
        return {**scope, "headers": observed.headers, "extensions": extensions, "state": state}
