"""``ClientCertMiddleware``: one client identity for an ASGI app, whatever is in front of it.

The reading is ``_normalize.observe`` (pure); this module is the ASGI plumbing
and the optional second gate: with a trust store, a forwarded chain is verified
again by mtlskit's ``Verifier`` (a proxy's word alone is then not enough).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding

from mtlskit.asgi._normalize import HeaderSources, Network, Observed, observe, parse_networks
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

    ``trusted_proxies``: addresses or networks (``"127.0.0.1"``, ``"10.0.0.0/8"``)
    whose identity headers are believed; from any other peer they are stripped,
    so a client cannot speak for a certificate it never presented. There is no
    default: which proxy is in front is the deployment's fact, not mtlskit's guess.

    ``trust``: a ``TrustStore`` (or a ready ``Verifier``) to verify forwarded chains
    again; a header that carries no certificate (XFCC without ``Cert``) then counts
    as unverified (``cert_not_forwarded``). Without it the proxy's verdict stands.

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
        trusted_proxies: Iterable[str | Network],
        trust: TrustStore | Verifier | None = None,
        sources: HeaderSources | None = None,
    ) -> None:
        self.app = app
        self.trusted = parse_networks(trusted_proxies)
        self.sources = sources or HeaderSources()
        self.verifier = Verifier(trust=trust) if isinstance(trust, TrustStore) else trust
        self.cache = VerificationCache()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        observed = observe(scope, trusted=self.trusted, sources=self.sources)
        mtlskit = dict((scope.get("extensions") or {}).get("mtlskit") or {})
        client, decision = self._second_gate(observed, mtlskit.get("decision"))
        await self.app(self._scope(scope, observed, client, decision, mtlskit), receive, send)

    def _second_gate(
        self, observed: Observed, decision: Decision | None
    ) -> tuple[ForwardedClient, Decision | None]:
        client = observed.client
        if self.verifier is None or not client.present or (observed.source == "tls" and decision):
            return client, decision
        if not client.chain:
            unverified = ForwardedClient(
                present=True,
                verified=False,
                error=client.error or NOT_FORWARDED,
                identity=client.identity,
                fingerprint=client.fingerprint,
            )
            return unverified, None
        ders = tuple(cert.public_bytes(Encoding.DER) for cert in client.chain)
        decision = self.cache.verify(self.verifier, ders, at=dt.datetime.now(dt.UTC))
        if client.error is not None:  # the proxy already refused it: re-verifying cannot undo that
            return client, decision
        error = None if decision.accepted else decision.reasons[0].code.value
        if not decision.accepted:
            _log.info("forwarded client certificate rejected: %s", decision.reasons[0])
        return ForwardedClient.from_chain(client.chain, verified=decision.accepted, error=error), (
            decision
        )

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
