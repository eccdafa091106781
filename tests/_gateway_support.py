"""Test harness for the gateway: an echo backend, the gateway on its own loop thread, files.

Everything listens on 127.0.0.1 with ephemeral ports and is stopped in teardown.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import trustme

from mtlskit.certs import chain_pem, private_key_pem
from mtlskit.gateway import Gateway, load_config
from mtlskit.testca import IssuedCert


class _Echo(BaseHTTPRequestHandler):
    """Answers every request with the headers (and body size) it received, as JSON."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _answer(self) -> None:
        self.server.seen.append(self.path)  # type: ignore[attr-defined]
        body = self._body()
        if self.path.startswith("/slow"):
            time.sleep(float(self.path.split("=")[-1]))
        if self.path.startswith("/drop"):  # the connection closes with no response at all
            self.close_connection = True
            return
        if self.path.startswith("/big"):  # /big?n=BYTES: a body larger than one read
            size = int(self.path.split("=")[-1])
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            self.wfile.write(bytes(range(256)) * (size // 256) + b"x" * (size % 256))
            return
        if self.path.startswith("/early"):  # an interim 103 before the final response
            self.wfile.write(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n")
        payload = json.dumps(
            {
                "method": self.command,
                "path": self.path,
                "headers": [[k, v] for k, v in self.headers.items()],
                "body_bytes": len(body),
                "port": self.client_address[1],  # which upstream connection carried it
                "body_sha": __import__("hashlib").sha256(body).hexdigest(),
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if self.path.startswith("/chunked"):
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for start in range(0, len(payload), 100):
                piece = payload[start : start + 100]
                self.wfile.write(b"%x\r\n" % len(piece) + piece + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
            return
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.path.startswith("/double"):  # an upstream speaking out of turn: a 2nd answer
            payload += b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nextra"
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = _answer


class EchoBackend:
    def __init__(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
        self.server.daemon_threads = True
        self.server.seen = []  # type: ignore[attr-defined]  # every request target received
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    @property
    def seen(self) -> list[str]:
        """Every request target the backend received, in order."""
        return self.server.seen  # type: ignore[attr-defined,no-any-return]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class GatewayThread:
    """A ``Gateway`` on its own event loop in a daemon thread."""

    def __init__(self, config_path: Path, *, source: Path | None = None) -> None:
        self.gateway = Gateway(load_config(config_path), source=source)
        if os.environ.get("MTLSKIT_GATEWAY_LOOP") == "uvloop":  # the CLI's loop, when installed
            import uvloop

            self.loop = uvloop.new_event_loop()
        else:
            self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.call(self.gateway.start())
        assert self.gateway.address is not None
        self.port = self.gateway.address[1]

    def call(self, coro: Any, timeout: float = 10) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def reload(self) -> bool:
        async def go() -> bool:
            return self.gateway.reload()

        return bool(self.call(go()))

    def stop(self) -> None:
        try:
            self.call(self.gateway.drain(timeout=1))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            self.loop.close()
            self.gateway.close_logs()


@dataclass
class Site:
    """Files for one gateway: server cert (trustme), client trust, config; logs to read."""

    dir: Path
    server_ca: trustme.CA
    backend: EchoBackend
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def connection_log(self) -> Path:
        return self.dir / "connection.log"

    @property
    def access_log(self) -> Path:
        return self.dir / "access.log"

    def log_records(self, which: str = "connection") -> list[dict[str, Any]]:
        path = self.connection_log if which == "connection" else self.access_log
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def flushed_records(self, which: str = "connection") -> list[dict[str, Any]]:
        """Every record so far: the gateway writes its logs at most 0.1 s late (buffered)."""
        time.sleep(0.3)
        return self.log_records(which)

    def wait_for_record(
        self, predicate: Callable[[dict[str, Any]], bool], which: str = "connection"
    ) -> dict[str, Any]:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            for record in self.log_records(which):
                if predicate(record):
                    return record
            time.sleep(0.02)
        raise AssertionError(f"no matching {which} log record in {self.log_records(which)}")

    def client_context(
        self, client: IssuedCert | None = None, *, version: ssl.TLSVersion | None = None
    ) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.server_ca.configure_trust(context)
        if version is not None:
            context.minimum_version = version
            context.maximum_version = version
        if client is not None:
            cert = self.dir / f"client-{id(client)}.pem"
            cert.write_bytes(client.chain_pem + client.key_pem)
            context.load_cert_chain(cert)
        return context

    def write_client(self, client: IssuedCert, name: str) -> tuple[Path, Path]:
        cert, key = self.dir / f"{name}.pem", self.dir / f"{name}.key"
        cert.write_bytes(client.chain_pem)
        key.write_bytes(private_key_pem(client.key))
        return cert, key


def write_config(site: Site, trust_pem: bytes, body: str, *, upstream: str | None = None) -> Path:
    server = site.server_ca.issue_cert("127.0.0.1", "localhost")
    server.cert_chain_pems[0].write_to_path(str(site.dir / "server.pem"))
    for blob in server.cert_chain_pems[1:]:
        blob.write_to_path(str(site.dir / "server.pem"), append=True)
    server.private_key_pem.write_to_path(str(site.dir / "server.key"))
    (site.dir / "server.key").chmod(0o600)  # the gateway refuses a key others may read
    (site.dir / "trust.pem").write_bytes(trust_pem)
    config = site.dir / "gateway.toml"
    config.write_text(
        f"""
[listen]
address = "127.0.0.1:0"
cert = "server.pem"
key = "server.key"

[upstream]
urls = ["{upstream or site.backend.url}"]
connect_timeout = 1.0
read_timeout = 2.0
health_interval = 0.5

[log]
access = "access.log"
connection = "connection.log"

"""
        + body
        + ("" if "[reload]" in body else "\n[reload]\npoll_interval = 0\n")
    )
    return config


def https_request(
    port: int,
    context: ssl.SSLContext,
    raw: bytes,
    *,
    timeout: float = 5,
) -> bytes:
    """Send ``raw`` over a fresh TLS connection and read until the server closes."""
    return https_exchange(port, context, raw, timeout=timeout)[0]


def https_exchange(
    port: int,
    context: ssl.SSLContext,
    raw: bytes,
    *,
    session: ssl.SSLSession | None = None,
    timeout: float = 5,
) -> tuple[bytes, ssl.SSLSession | None, bool]:
    """``https_request`` offering ``session``: (what came back, the session, resumed?)."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock,
        context.wrap_socket(sock, server_hostname="localhost", session=session) as tls,
    ):
        tls.sendall(raw)
        out = b""
        while True:
            try:
                data = tls.recv(65536)
            except (ssl.SSLError, ConnectionError):
                break
            if not data:
                break
            out += data
        return out, tls.session, tls.session_reused


def chain_and_root(client: IssuedCert) -> bytes:
    return chain_pem([client.chain[-1]])


@contextlib.contextmanager
def gateway_process(site: Site, argv: list[str]) -> Iterator[subprocess.Popen]:
    """A real gateway/serve process, yielded once each of its ``site.extra["workers"]``
    workers has logged its start; terminated on exit."""
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for number in range(site.extra["workers"]):
            site.wait_for_record(
                lambda r, n=number: (
                    sum(
                        x.get("event") == "start" and x.get("role") != "master"
                        for x in site.log_records()
                    )
                    > n
                )
            )
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(10)


def reload_records(site: Site) -> list[dict]:
    return [r for r in site.log_records() if r.get("event") == "reload"]


def sighup_reloads(site: Site, process: subprocess.Popen) -> list[dict]:
    """SIGHUP, then the new reload records once every worker has written one."""
    before, workers = len(reload_records(site)), site.extra["workers"]
    process.send_signal(signal.SIGHUP)
    site.wait_for_record(lambda r: len(reload_records(site)) >= before + workers)
    return reload_records(site)[before:]
