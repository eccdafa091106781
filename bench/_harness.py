"""Per-request cost of the gateway's request path, in-process and deterministic (a dev tool).

Not part of ``make bench`` (the runner skips ``_`` modules). Rates on this 2-core VM move
by ±15% between runs; instruction counts do not. This drives one server connection with
a client ``SSLObject`` over in-memory transports, no kernel in between:

- ``serve``: ``mtlskit serve``'s path (the trivial app of bench/serve.py, access log off);
- ``relay``: the gateway relaying to an in-process upstream (its socket is real);
- ``uvicorn``: uvicorn's httptools protocol under uvloop's ``SSLProtocol``, the same app;
- ``null``: a TLS endpoint answering canned bytes — the harness and TLS floor.

``python -m bench._harness serve`` prints CPU µs per request; with ``--callgrind`` it runs
valgrind twice (300 and 1,300 requests) and prints the difference per request, stable to
~0.1% between runs: subtract ``null``'s figure for the server's own work. ``--log`` writes
the gateway's access and connection logs to files, as bench/gateway runs it (the logs are
off otherwise): ``relay --log --callgrind`` is the number to compare gateway changes by.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvloop

from bench import serve
from mtlskit.gateway import Gateway, load_config
from mtlskit.gateway._connection import ClientConnection

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n"
CANNED = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Fri, 27 Nov 2026 12:00:00 GMT\r\n"
    b"Content-Type: application/octet-stream\r\nContent-Length: 3\r\nConnection: keep-alive"
    b"\r\n\r\nok\n"
)


class _Transport:
    """What a protocol writes, kept for the client; enough of a transport for both servers."""

    def __init__(self, sink: list[bytes]) -> None:
        self.sink = sink
        self.closing = False
        self.protocol: Any = None

    def write(self, data: bytes) -> None:
        self.sink.append(bytes(data))

    def writelines(self, data: list[bytes]) -> None:
        self.sink.append(b"".join(data))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5555), "sockname": ("127.0.0.1", 8443)}.get(name, default)

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def is_reading(self) -> bool:
        return True

    def get_write_buffer_size(self) -> int:
        return 0

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def get_protocol(self) -> Any:
        return self.protocol


class _Canned(asyncio.Protocol):
    """The upstream for ``relay``, and its TLS twin for ``null``: canned bytes per request."""

    def __init__(self, tls: ssl.SSLObject | None = None) -> None:
        self.tls = tls
        self.ready = False  # handshake done
        self.transport: Any = None
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.tls is None:
            for _ in range(data.count(b"\r\n\r\n")):
                self.transport.write(CANNED)
            return
        self.incoming.write(data)
        try:
            if not self.ready:
                self.tls.do_handshake()
                self.ready = True
            if self.incoming.pending:
                self.tls.read(65536)
                self.tls.write(CANNED)
        except ssl.SSLWantReadError:
            pass
        if out := self.outgoing.read():
            self.transport.write(out)


async def _server(
    kind: str, d: Path, sink: list[bytes], *, log: bool = False
) -> Callable[[bytes], None]:
    """Start one server connection; the function that feeds it the client's bytes."""
    transport = _Transport(sink)
    if kind == "uvicorn":
        # only this mode needs uvicorn
        from uvicorn.config import Config
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
        from uvicorn.server import ServerState
        from uvloop.loop import SSLProtocol

        config = Config(app="bench_app:app", access_log=False, lifespan="off", log_level="error")
        config.load()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(d / "server.pem", d / "server.key")
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(d / "trust.pem")
        app = HttpToolsProtocol(config=config, server_state=ServerState(), app_state={})
        protocol = SSLProtocol(asyncio.get_running_loop(), app, context, None, True)
        protocol.connection_made(transport)

        def feed(data: bytes) -> None:
            while data:
                buffer = protocol.get_buffer(len(data))
                size = min(len(buffer), len(data))
                buffer[:size] = data[:size]
                protocol.buffer_updated(size)
                data = data[size:]

        return feed
    config_text = (
        '[listen]\naddress = "127.0.0.1:0"\ncert = "server.pem"\nkey = "server.key"\n'
        '[client_auth]\ntrust = ["trust.pem"]\n'
    )
    # As bench/gateway runs it (``--log``), or with the logs off.
    where = ("access.log", "connection.log") if log else ("off", "off")
    config_text += f'[log]\naccess = "{where[0]}"\nconnection = "{where[1]}"\n'
    if kind == "relay":
        upstream = await asyncio.get_running_loop().create_server(_Canned, "127.0.0.1", 0)
        port = upstream.sockets[0].getsockname()[1]
        config_text += f'[upstream]\nurls = ["http://127.0.0.1:{port}"]\n'
        config_text += '[forward]\nformats = ["xfcc", "verdict"]\n'
    (d / "gateway.toml").write_text(config_text)
    gateway = Gateway(
        load_config(d / "gateway.toml", asgi=None if kind == "relay" else "bench_app:app")
    )
    await gateway.start()
    if kind == "null":
        canned = _Canned()
        canned.tls = gateway.generation.context.wrap_bio(
            canned.incoming, canned.outgoing, server_side=True
        )
        canned.connection_made(transport)
        return canned.data_received
    connection = ClientConnection(gateway)
    connection.connection_made(transport)
    return connection.data_received


async def _client(kind: str, d: Path, *, log: bool = False) -> Callable[[], Awaitable[bytes]]:
    """One request/response round over the in-memory transports, as a coroutine function."""
    sink: list[bytes] = []
    feed = await _server(kind, d, sink, log=log)
    context = ssl.create_default_context(cafile=str(d / "server-ca.pem"))
    context.load_cert_chain(d / "client-full.pem")
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = context.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")

    def deliver() -> None:
        while sink:
            incoming.write(sink.pop(0))

    while True:
        try:
            client.do_handshake()
            break
        except ssl.SSLWantReadError:
            if data := outgoing.read():
                feed(data)
            for _ in range(5):
                await asyncio.sleep(0)
            deliver()

    async def one() -> bytes:
        client.write(REQUEST)
        feed(outgoing.read())
        got = b""
        while True:
            await asyncio.sleep(0)
            deliver()
            if data := outgoing.read():  # session tickets, key updates
                feed(data)
            try:
                while True:
                    got += client.read(65536)
                    if got.endswith(b"ok\n"):
                        return got
            except ssl.SSLWantReadError:
                pass

    return one


async def _measure(kind: str, count: int, rounds: int, *, log: bool) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        serve._site(d)
        sys.path.insert(0, str(d))
        one = await _client(kind, d, log=log)
        first = await asyncio.wait_for(one(), 5)
        if not first.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"{kind}: unexpected response {first[:80]!r}")
        costs = []
        for _ in range(rounds):
            began = time.process_time()
            for _ in range(count):
                await one()
            costs.append((time.process_time() - began) / count * 1e6)
        return costs


def _callgrind(kind: str, *, log: bool) -> float:
    """Instructions per request: valgrind at 1,300 requests minus at 300, over 1,000."""
    totals = []
    for count in (300, 1300):
        done = subprocess.run(
            [
                "valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                sys.executable, "-m", "bench._harness", kind,
                "--count", str(count), "--rounds", "1", *(["--log"] if log else []),
            ],
            capture_output=True, text=True, check=True,
            env={**os.environ, "PYTHONHASHSEED": "0"},
        )  # fmt: skip
        match = re.search(r"Collected : (\d+)", done.stderr)
        if match is None:
            raise RuntimeError(f"valgrind printed no total: {done.stderr[-300:]}")
        totals.append(int(match.group(1)))
    return (totals[1] - totals[0]) / 1000


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench._harness", description=__doc__)
    parser.add_argument("kind", choices=["serve", "relay", "uvicorn", "null"])
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--callgrind", action="store_true")
    parser.add_argument("--log", action="store_true", help="access and connection logs to files")
    args = parser.parse_args()
    if args.callgrind:
        print(f"{args.kind}: {_callgrind(args.kind, log=args.log):,.0f} instructions per request")
        return
    costs = uvloop.run(_measure(args.kind, args.count, args.rounds, log=args.log))
    print(f"{args.kind}: " + ", ".join(f"{cost:.1f}" for cost in costs) + " µs CPU per request")


if __name__ == "__main__":
    main()
