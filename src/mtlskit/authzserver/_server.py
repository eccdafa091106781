"""The HTTP shell: uvicorn serving a bare ASGI callable around ``DecisionPoint``.

Why uvicorn and no framework: the check endpoint sits on the path of every proxied
request, so its cost is the product's added latency. uvicorn's httptools protocol
(llhttp, the parser DESIGN §3 picks for the gateway) on uvloop does the HTTP/1.1
work — keep-alive, pipelining, limits — correctly; a bare ASGI callable adds one
dict lookup per request where Starlette's routing and Request objects would add
several allocations. Five paths need no router.

Paths: ``/nginx`` (``?names=short``: identity headers under ``nginx_answer_name``'s
names), ``/haproxy``, ``/envoy/<original path>``, ``/metrics``,
``/healthz``. SIGHUP re-reads trust, CRLs and policy and swaps the decision point
whole (a new trust generation, so no cached verdict survives the reload).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final, TextIO

from mtlskit.authzserver._config import AuthzServerConfig, ClientAuthMode, parse_address
from mtlskit.authzserver._decide import (
    NGINX_SHORT_NAMES,
    CheckRequest,
    DecisionPoint,
    Proxy,
    short_answer_headers,
)
from mtlskit.authzserver._metrics import Metrics
from mtlskit.errors import InputError
from mtlskit.forward import ForwardConfig
from mtlskit.gateway._config import cannot_listen
from mtlskit.trustfiles import TrustFiles, read_certificate_files, read_policy
from mtlskit.verify import VerificationCache, Verifier

__all__ = ["AuthzServer", "build_decision_point", "serve"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_PLAIN = [(b"content-type", b"text/plain; charset=utf-8")]


def build_decision_point(config: AuthzServerConfig) -> DecisionPoint:
    """Read every file the config names and assemble the pure decision point."""
    auth = config.client_auth
    trust = TrustFiles(
        trust=auth.trust,
        pins=auth.pins,
        crls=auth.crls,
        spiffe_bundles={domain: (path,) for domain, path in auth.spiffe_bundles.items()},
        allow_stale_crls=auth.allow_stale_crls,
    ).load()
    cache = None
    if config.cache.enabled:
        cache = VerificationCache(
            max_entries=config.cache.max_entries,
            ttl=dt.timedelta(seconds=config.cache.ttl),
            reject_ttl=dt.timedelta(seconds=config.cache.reject_ttl),
        )
    return DecisionPoint(
        verifier=Verifier(
            trust=trust,
            allow_missing_eku=auth.allow_missing_eku,
            max_chain_depth=auth.max_chain_depth,
        ),
        policy=read_policy(auth.policy) if auth.policy else None,
        forward=ForwardConfig(formats=tuple(config.forward.formats)),  # type: ignore[arg-type]
        intermediates=tuple(read_certificate_files(auth.intermediates, what="certificate file")),
        cache=cache,
        allow_invalid=auth.mode is ClientAuthMode.ALLOW_INVALID_OR_MISSING,
    )


class AuthzServer:
    """The ASGI application: routes a check to the decision point, logs it, counts it."""

    def __init__(self, config: AuthzServerConfig, *, log: TextIO | None = None) -> None:
        self.config = config
        self.point = build_decision_point(config)
        self.metrics = Metrics()
        if log is not None:
            self._log = log
        elif config.log.decisions == "-":
            self._log = sys.stderr
        else:
            self._log = open(config.log.decisions, "a", buffering=1, encoding="utf-8")  # noqa: SIM115

    def reload(self) -> None:
        """Rebuild from the files; on error keep serving with the old trust and say why."""
        try:
            self.point = build_decision_point(self.config)
        except InputError as exc:
            self._write({"event": "reload_failed", "error": str(exc)})
        else:
            self._write(
                {"event": "reloaded", "trust_generation": self.point.verifier.trust.generation}
            )

    def _write(self, record: dict[str, Any]) -> None:
        record = {"time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"), **record}
        self._log.write(json.dumps(record, separators=(",", ":")) + "\n")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        if path == "/nginx":
            proxy = Proxy.NGINX
        elif path == "/haproxy":
            proxy = Proxy.HAPROXY
        elif path == "/envoy" or path.startswith("/envoy/"):
            proxy = Proxy.ENVOY
        elif path == "/metrics":
            body = self.metrics.render(trust_generation=self.point.verifier.trust.generation)
            await _respond(send, 200, _PLAIN, body.encode())
            return
        elif path == "/healthz":
            await _respond(send, 200, _PLAIN, b"ok\n")
            return
        else:
            await _respond(send, 404, _PLAIN, b"not found\n")
            return
        started = time.perf_counter()
        raw = scope.get("raw_path") or path.encode()
        query = scope.get("query_string") or b""
        full = raw.decode("latin-1") + (f"?{query.decode('latin-1')}" if query else "")
        request = CheckRequest(
            proxy=proxy, method=scope["method"], path=full, headers=scope["headers"]
        )
        answer = self.point.check(request, at=dt.datetime.now(dt.UTC))
        elapsed = time.perf_counter() - started
        self.metrics.count(proxy, answer, elapsed)
        self._write({"proxy": proxy.value, **answer.record(), "ms": round(elapsed * 1000, 3)})
        headers = answer.headers
        if proxy is Proxy.NGINX and _SHORT_NAMES in query.split(b"&"):
            headers = short_answer_headers(headers)
        await _respond(send, answer.status, headers, b"")


async def _respond(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


# Idle proxy connections are kept longer than the proxies keep them (nginx's upstream
# keepalive_timeout defaults to 60 s), so the proxy is the one that closes: when authz-server
# closed first (uvicorn's default is 5 s), a check sent on a connection at the moment it was
# being closed met a reset (seen in nginx's error log under load; nginx retries such a check,
# other clients may not).
_KEEP_ALIVE_SECONDS: Final = 75
_SHORT_NAMES: Final = NGINX_SHORT_NAMES.encode()  # the query part, as the ASGI scope has it


def serve(config: AuthzServerConfig) -> None:
    """Run until SIGINT/SIGTERM; SIGHUP reloads trust, CRLs and policy."""
    import uvicorn

    app = AuthzServer(config)
    host, port = parse_address(config.listen.address)
    # Bound here, before "listening" is said: uvicorn reports a failed bind with two log
    # lines and exit 3 (after that line); a port in use is the operator's input (exit 2).
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with cannot_listen(config.listen.address, source="listen.address"):
        sock = socket.create_server((host, port), family=family, backlog=1024)
    try:
        import uvloop

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            loop=loop,
            http="httptools",
            lifespan="off",
            access_log=False,
            log_level="warning",
            server_header=False,
            date_header=False,
            backlog=1024,
            timeout_keep_alive=_KEEP_ALIVE_SECONDS,
        )
    )

    async def main() -> None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, app.reload)
        print(f"mtlskit authz-server: listening on http://{host}:{port}", file=sys.stderr)
        await server.serve(sockets=[sock])

    if loop == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())
