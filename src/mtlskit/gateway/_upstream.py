"""Upstreams: round robin over the healthy ones, a keep-alive pool each, simple health checks.

Passive checks mark an upstream down when a connection to it fails; an active
loop probes the down ones with a TCP connect every ``health_interval`` and puts
them back. When every upstream is down the answer is 503 without trying.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from mtlskit.gateway._config import parse_address
from mtlskit.gateway._http import UpstreamError

__all__ = ["ResponseSink", "SinkProtocol", "Upstream", "UpstreamConnection", "UpstreamPool"]

_STREAM_LIMIT = 2**16  # asyncio.open_connection's default


class ResponseSink(Protocol):
    """Who takes an upstream's bytes directly while a request is relayed without a task."""

    def feed(self, data: bytes) -> None: ...

    def eof(self) -> None: ...


class SinkProtocol(asyncio.StreamReaderProtocol):
    """An upstream connection's protocol: its bytes go to a ``sink`` while one is set,
    to the ``StreamReader`` otherwise.

    The keep-alive fast path (``_connection``) relays a simple request in callbacks
    alone; a coroutine reading here would cost a future, a task wake-up and a timeout
    context per response. When the fast path hands a response over to the streaming
    code, it feeds the reader what it received and clears ``sink``. A connection lost
    while a sink is set is its EOF: the streaming code then meets the reader's error.
    """

    sink: ResponseSink | None = None
    live = True  # no EOF, not lost, not closed by the pool: an attribute, read per request

    def data_received(self, data: bytes) -> None:
        sink = self.sink
        if sink is None:
            super().data_received(data)
        else:
            sink.feed(data)

    def eof_received(self) -> bool:
        self.live = False
        sink = self.sink
        if sink is None:
            return bool(super().eof_received())
        sink.eof()
        return True  # as StreamReaderProtocol without TLS: the transport stays for writing

    def connection_lost(self, exc: Exception | None) -> None:
        self.live = False
        sink = self.sink
        if sink is not None:
            sink.eof()
        super().connection_lost(exc)


@dataclass(slots=True, kw_only=True)
class Upstream:
    url: str
    host: str
    port: int
    idle: deque[UpstreamConnection] = field(default_factory=deque)
    down_since: float | None = None
    authority: str = field(init=False)  # "host:port", the Host of a request that has none

    def __post_init__(self) -> None:
        self.authority = f"{self.host}:{self.port}"

    @property
    def healthy(self) -> bool:
        return self.down_since is None


@dataclass(slots=True, kw_only=True)
class UpstreamConnection:
    upstream: Upstream
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    protocol: SinkProtocol
    reused: bool = False
    # The fast path's response parser, kept between responses on this connection (a
    # parser and its bound callbacks per request were ~2 µs); dropped at a handover.
    parsing: Any = None

    def send(self, data: bytes) -> None:
        """Write ``data`` now if the connection is still up (a held write, ``WriteBatch``).

        Gone, or failing here: the relay waiting on it hears EOF, as from the upstream.
        """
        protocol = self.protocol
        if not protocol.live:
            return  # its EOF or loss already reached the relay
        try:
            self.writer.transport.write(data)
        except (ConnectionError, OSError, RuntimeError):
            protocol.live = False
            if protocol.sink is not None:
                protocol.sink.eof()

    def close(self) -> None:
        self.protocol.live = False
        with contextlib.suppress(Exception):
            self.writer.close()


class UpstreamPool:
    def __init__(
        self,
        urls: list[str],
        *,
        connect_timeout: float,
        pool_size: int,
        health_interval: float,
    ) -> None:
        self.upstreams = []
        for url in urls:
            host, port = parse_address(url.removeprefix("http://").rstrip("/"))
            self.upstreams.append(Upstream(url=url, host=host, port=port))
        self.connect_timeout = connect_timeout
        self.pool_size = pool_size
        self.health_interval = health_interval
        self._next = 0

    def _pick(self) -> list[Upstream]:
        """Healthy upstreams in round-robin order starting at the next one."""
        count = len(self.upstreams)
        start = self._next
        self._next = (self._next + 1) % count
        ordered = [self.upstreams[(start + i) % count] for i in range(count)]
        return [u for u in ordered if u.healthy]

    async def acquire(self) -> UpstreamConnection:
        """A pooled or new connection; ``UpstreamError`` 503 (none healthy), 502, or 504."""
        candidates = self._pick()
        if not candidates:
            raise UpstreamError("no healthy upstream", status_hint=503)
        last: UpstreamError | None = None
        for upstream in candidates[:2]:  # one retry on the next upstream
            pooled = _pop_live(upstream)
            if pooled is not None:
                return pooled
            try:
                reader, writer, protocol = await asyncio.wait_for(
                    _open(upstream.host, upstream.port), self.connect_timeout
                )
            except TimeoutError:
                upstream.down_since = time.monotonic()
                last = UpstreamError(f"connect to {upstream.url} timed out", status_hint=504)
                continue
            except OSError as exc:
                upstream.down_since = time.monotonic()
                last = UpstreamError(f"connect to {upstream.url} failed: {exc}", status_hint=502)
                continue
            return UpstreamConnection(
                upstream=upstream,
                reader=reader,
                writer=writer,
                protocol=protocol,
            )
        assert last is not None
        raise last

    def take_idle(self) -> UpstreamConnection | None:
        """A pooled connection to the next upstream without waiting, or ``None``."""
        upstreams = self.upstreams
        upstream = upstreams[self._next]
        if upstream.down_since is not None:
            return None
        conn = _pop_live(upstream)
        if conn is not None and len(upstreams) > 1:
            self._next = (self._next + 1) % len(upstreams)
        return conn

    def release(self, conn: UpstreamConnection, *, reusable: bool) -> None:
        idle = conn.upstream.idle
        if reusable and len(idle) < self.pool_size and conn.protocol.live:
            idle.append(conn)
        else:
            conn.close()

    async def health_loop(self) -> None:
        """Probe down upstreams with a TCP connect; runs until cancelled."""
        while True:
            await asyncio.sleep(self.health_interval)
            for upstream in self.upstreams:
                if upstream.healthy:
                    continue
                try:
                    _, writer = await asyncio.wait_for(
                        asyncio.open_connection(upstream.host, upstream.port),
                        self.connect_timeout,
                    )
                except (OSError, TimeoutError):
                    continue
                writer.close()
                upstream.down_since = None

    def close(self) -> None:
        for upstream in self.upstreams:
            while upstream.idle:
                upstream.idle.pop().close()


def _pop_live(upstream: Upstream) -> UpstreamConnection | None:
    """The most recently pooled connection still open (closed ones are dropped), or ``None``."""
    idle = upstream.idle
    while idle:
        conn = idle.pop()
        if conn.protocol.live:
            conn.reused = True
            return conn
        conn.close()
    return None


async def _open(
    host: str, port: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, SinkProtocol]:
    """``asyncio.open_connection`` with a ``SinkProtocol``."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=_STREAM_LIMIT, loop=loop)
    protocol = SinkProtocol(reader, loop=loop)
    transport, _ = await loop.create_connection(lambda: protocol, host, port)
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop), protocol
