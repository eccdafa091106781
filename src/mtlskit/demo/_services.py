"""The demo's moving parts on 127.0.0.1: an echo backend, mtlskit subprocesses, an HTTPS client.

Everything started here is registered with a ``Services`` object whose ``close``
stops it, so the demo leaves no process and no port behind even when a step fails.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

__all__ = ["EchoBackend", "Response", "Services", "free_port", "https_get"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class _Echo(BaseHTTPRequestHandler):
    """Answers with the request headers it received, so the demo can show what arrived."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        body = json.dumps({"headers": [[k, v] for k, v in self.headers.items()]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class EchoBackend:
    def __init__(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Services:
    """Owns every process and server the demo starts."""

    workdir: Path
    env: dict[str, str]
    processes: list[subprocess.Popen[str]] = field(default_factory=list)
    backends: list[EchoBackend] = field(default_factory=list)

    def start(self, name: str, *args: str) -> subprocess.Popen[str]:
        log = (self.workdir / f"{name}.log").open("w")
        process = subprocess.Popen(
            [sys.executable, "-m", "mtlskit", *args],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env={**os.environ, **self.env, "PYTHONUNBUFFERED": "1"},
        )
        log.close()
        self.processes.append(process)
        return process

    def echo(self) -> EchoBackend:
        backend = EchoBackend()
        self.backends.append(backend)
        return backend

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text() if path.exists() else ""

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
            if process.stdout is not None:
                process.stdout.close()
        for backend in self.backends:
            backend.close()


def wait_for_port(port: int, *, process: subprocess.Popen[str], seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the process exited with code {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listened on 127.0.0.1:{port} within {seconds:g}s")


@dataclass(frozen=True, slots=True, kw_only=True)
class Response:
    status: int | None  # None: refused during the TLS handshake
    headers: dict[str, str]  # what the backend received (lower-cased names), for 200s
    error: str | None = None


class _Loopback(http.client.HTTPSConnection):
    """HTTPS to 127.0.0.1 while checking the server certificate for ``localhost``."""

    def connect(self) -> None:
        sock = socket.create_connection(("127.0.0.1", self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname="localhost")  # type: ignore[attr-defined]


def https_get(
    port: int,
    *,
    server_ca: Path,
    cert: Path | None = None,
    key: Path | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    context = ssl.create_default_context(cafile=str(server_ca))
    if cert is not None:
        context.load_cert_chain(str(cert), str(key) if key else None)
    connection = _Loopback("localhost", port, context=context, timeout=10)
    try:
        connection.request("GET", "/", headers=headers or {})
        answer = connection.getresponse()
        body = answer.read()
    except (ssl.SSLError, ConnectionError, http.client.HTTPException) as exc:
        return Response(status=None, headers={}, error=f"{type(exc).__name__}: {exc}")
    finally:
        connection.close()
    received: dict[str, str] = {}
    if answer.status == 200:
        received = {name.lower(): value for name, value in json.loads(body)["headers"]}
    return Response(status=answer.status, headers=received)
