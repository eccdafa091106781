"""Serving the CA over HTTPS: its own server certificate, optional client certificates,
and the presented certificate handed to the app as the ASGI TLS extension.

uvicorn does not fill ``scope["extensions"]["tls"]`` (DESIGN.md §4), so a one-method
subclass of its httptools protocol does: after the handshake it reads the peer's leaf and
wraps the app for that connection. OpenSSL has already verified the chain against
the CA's own certificates (``CERT_OPTIONAL``: enrollment needs none, renewal one).

uvicorn's TLS is asyncio's (or uvloop's), which drops a refused client without its alert
(curl: "Empty reply from server"). So uvicorn listens without TLS and each connection's
protocol is asyncio's TLS protocol stepping its handshake through ``mtlskit.handshake``,
as the gateway does: ``unknown_ca``, ``certificate_required`` reach the client.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import datetime as dt
import socket
import ssl
import tempfile
import threading
from pathlib import Path
from typing import Any, Final

import uvicorn
from cryptography import x509
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from mtlskit.certs import (
    Fingerprint,
    chain_pem,
    generate_private_key,
    load_certificates,
    private_key_pem,
)
from mtlskit.errors import InputError
from mtlskit.files import read_bytes, write_secret
from mtlskit.handshake import TLS12_CIPHERS, step
from mtlskit.issue import BACKDATE, Issuer, build_server_certificate

__all__ = ["ServerHandle", "bind", "server_context", "start_in_thread", "uvicorn_server"]

SERVER_CERT_LIFETIME: Final = dt.timedelta(days=30)


class _TlsExtensionProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol (C parser; h11 cost a tenth of the server's time under
    enrollment load) plus the ASGI TLS extension (v0.2 field names)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is None:
            return
        der = ssl_object.getpeercert(binary_form=True)
        tls = {
            "spec_version": "0.2",
            "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
            "client_cert_error": None,
            "tls_version": ssl_object.version(),
        }
        inner = self.app

        async def app(scope: Any, receive: Any, send: Any) -> None:
            extensions = dict(scope.get("extensions") or {})
            extensions["tls"] = tls
            scope["extensions"] = extensions
            await inner(scope, receive, send)

        self.app = app


class _AlertingTls(asyncio.sslproto.SSLProtocol):
    """asyncio's TLS protocol with the handshake stepped by ``mtlskit.handshake.step``: the
    alert of a refused handshake is sent before asyncio closes the connection."""

    def _do_handshake(self) -> None:
        try:
            done = step(self._sslobj, self._process_outgoing)  # type: ignore[attr-defined]
        except ssl.SSLSyscallError:
            return  # asyncio reads this as "again", as its own _do_handshake does
        except ssl.SSLError as exc:
            self._on_handshake_complete(exc)  # type: ignore[attr-defined]
        else:
            if done:
                self._on_handshake_complete(None)  # type: ignore[attr-defined]


def _alerting(context: ssl.SSLContext) -> Any:
    """uvicorn's ``http`` protocol factory: ours, under ``_AlertingTls`` for ``context``."""

    def protocol(**options: Any) -> asyncio.BaseProtocol:
        loop = asyncio.get_running_loop()
        http = _TlsExtensionProtocol(**{**options, "_loop": loop})
        return _AlertingTls(loop, http, context, None, server_side=True)

    return protocol


def server_context(
    issuer: Issuer,
    *,
    hosts: tuple[str, ...],
    now: dt.datetime,
    required_clients: str | None = None,
    cert_files: tuple[Path, Path] | None = None,
) -> tuple[ssl.SSLContext, x509.Certificate]:
    """A TLS server context with a fresh key and a certificate from ``issuer`` itself.

    The key never touches the CA directory: it is loaded from a private temporary
    directory that is gone before this returns. Client certificates are requested,
    not required, and verified against the CA's own chain; with ``required_clients``
    (PEM trust anchors: the console's) one chaining to those is required instead, and
    any other fails the handshake. ``cert_files`` (chain PEM, key PEM): serve that
    certificate instead of minting one.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)  # AEAD only, as the gateway (testssl.sh: no CBC)
    if cert_files is not None:
        chain_path, key_file = cert_files
        try:
            context.load_cert_chain(chain_path, key_file)
        except (OSError, ssl.SSLError) as exc:
            raise InputError(
                f"cannot serve this certificate and key: {exc}", source=str(chain_path)
            ) from None
        cert = load_certificates(read_bytes(chain_path), source=str(chain_path))[0]
        return _client_verification(context, issuer, required_clients), cert
    key = generate_private_key()
    not_after = min(now + SERVER_CERT_LIFETIME, issuer.cert.not_valid_after_utc)
    cert = build_server_certificate(
        issuer=issuer,
        public_key=key.public_key(),
        hosts=hosts,
        not_before=now - BACKDATE,
        not_after=not_after,
    )
    with tempfile.TemporaryDirectory(prefix="mtlskit-ca-serve-") as temp:
        cert_path = Path(temp, "server.pem")
        cert_path.write_bytes(chain_pem([cert, *issuer.chain[:-1]]))
        key_path = write_secret(Path(temp, "server.key"), private_key_pem(key))
        context.load_cert_chain(cert_path, key_path)
    return _client_verification(context, issuer, required_clients), cert


def _client_verification(
    context: ssl.SSLContext, issuer: Issuer, required_clients: str | None
) -> ssl.SSLContext:
    if required_clients is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cadata=required_clients)
        return context
    context.verify_mode = ssl.CERT_OPTIONAL
    context.load_verify_locations(cadata=chain_pem(list(issuer.chain)).decode())
    return context


def bind(listen: str) -> socket.socket:
    """A listening socket for ``HOST:PORT`` (port 0: any free one; see ``getsockname``)."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, int(port)))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def uvicorn_server(
    app: Any, context: ssl.SSLContext, *, trusted_proxies: tuple[str, ...] = ()
) -> uvicorn.Server:
    """uvicorn configured for the CA: our TLS context, our protocol, quiet access log, no
    ``server`` header.

    X-Forwarded-For/-Proto are read only from ``trusted_proxies`` (addresses or networks);
    with none, never: uvicorn's default trusts them from 127.0.0.1, so any local client
    chose the address the failed-token limit counts and the audit log records."""
    config = uvicorn.Config(
        app,
        http=_alerting(context),  # TLS in the protocol, not uvicorn's: see the module doc
        proxy_headers=bool(trusted_proxies),
        forwarded_allow_ips=list(trusted_proxies) or None,
        lifespan="off",
        server_header=False,  # "server: uvicorn" tells a prober what to try; Date stays
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=3,
    )
    return uvicorn.Server(config)


class ServerHandle:
    """A CA server running in a background thread (tests, benchmarks, embedding)."""

    def __init__(self, server: uvicorn.Server, sock: socket.socket, cert: x509.Certificate) -> None:
        self._server = server
        self._sock = sock
        self.cert = cert
        host, port = sock.getsockname()[:2]
        self.url = f"https://{host}:{port}"
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="mtlskit-ca-serve", daemon=True
        )

    def start(self) -> ServerHandle:
        self._thread.start()
        for _ in range(500):
            if self._server.started:
                return self
            if not self._thread.is_alive():
                raise RuntimeError("the CA server thread stopped while starting")
            threading.Event().wait(0.01)
        raise RuntimeError("the CA server did not start within 5 s")

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()

    @property
    def fingerprint(self) -> Fingerprint:
        return Fingerprint.of(self.cert)


def start_in_thread(
    app: Any, issuer: Issuer, *, listen: str = "127.0.0.1:0", hosts: tuple[str, ...] = ()
) -> ServerHandle:
    """Serve ``app`` over HTTPS in a thread; ``handle.url`` says where."""
    sock = bind(listen)
    host = sock.getsockname()[0]
    context, cert = server_context(
        issuer, hosts=hosts or (host, "localhost"), now=dt.datetime.now(dt.UTC)
    )
    return ServerHandle(uvicorn_server(app, context), sock, cert).start()
