"""The gateway process: listeners, reload, drain, metrics endpoint.

Reload builds a whole new ``Generation`` (TLS context, trust store, CRLs,
policy) and swaps it in with one assignment: the next handshake uses the new one,
and an established connection's next request is decided under it. A reload that fails keeps
the old generation and says why in the connection log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import time
from pathlib import Path
from typing import Final

from mtlskit.errors import InputError
from mtlskit.gateway._asgi import AsgiApp, AsgiHost, load_app
from mtlskit.gateway._config import (
    RESTART_KEYS,
    GatewayConfig,
    cannot_listen,
    changed_keys,
    load_config,
    parse_address,
    reloadable,
)
from mtlskit.gateway._connection import ClientConnection, ClientView
from mtlskit.gateway._generation import Generation, file_stamps, load_generation, watched_files
from mtlskit.gateway._log import JsonLog
from mtlskit.gateway._metrics import Metrics, metrics_response
from mtlskit.gateway._upstream import UpstreamPool
from mtlskit.gateway._writes import WriteBatch

__all__ = ["Gateway"]

_MEMO_LIMIT: Final = 10_000
_MEMO_SECONDS: Final = 30.0
_SWEEP_MAX: Final = 1.0  # seconds between idle sweeps at most (a parked one closes ≤ this late)
_REPORT_SECONDS: Final = 1.0  # a worker's metrics reach its master at most this late


class Gateway:
    """An mTLS-terminating HTTP/1.1 reverse proxy built from a ``GatewayConfig``.

    With ``[upstream] asgi`` (or ``app=``, which wins) the upstream is an ASGI app
    served in-process instead of HTTP upstreams (see ``_asgi_scope`` for its scope).

    ``await start()`` binds the listeners (port 0 picks a free one; see
    ``address``), ``reload()`` swaps in freshly read trust/CRLs/policy/certificate,
    ``await drain()`` stops accepting and lets in-flight requests finish.

    With ``source`` (gateway.toml's path) a reload reads that file again too; ``as_read``
    is the config as that file said it, when ``config`` differs (a worker's bound port).
    ``serve_app`` is ``mtlskit serve``'s APP, given to ``load_config`` on every re-read.
    """

    def __init__(
        self,
        config: GatewayConfig,
        *,
        app: AsgiApp | None = None,
        source: str | Path | None = None,
        as_read: GatewayConfig | None = None,
        serve_app: str | None = None,
    ) -> None:
        self.config = config
        self.source = source
        self.serve_app = serve_app
        self._as_read = as_read or config  # what a reload's diff starts from
        self._source_stamps = file_stamps([Path(source)]) if source is not None else ()
        upstream = config.upstream
        self.asgi: AsgiHost | None = None
        self.loop: asyncio.AbstractEventLoop | None = None  # set by ``start``
        self.writes: WriteBatch  # set by ``start``: held writes need the loop
        self.pid = os.getpid()  # the logs say which process spoke (a worker is made after fork)
        if app is not None or upstream.asgi is not None:  # in-process: ``app`` wins over config
            if app is None:
                assert upstream.asgi is not None
                app = load_app(upstream.asgi, app_dir=upstream.app_dir)
            name = f"asgi:{upstream.asgi or getattr(app, '__qualname__', 'app')}"
            self.asgi = AsgiHost(app, name=name, lifespan=upstream.lifespan)
        self.limits = config.limits
        self.read_timeout = config.upstream.read_timeout
        self.generation: Generation = load_generation(config)
        self.pool = UpstreamPool(
            [] if self.asgi is not None else list(config.upstream.urls),
            connect_timeout=config.upstream.connect_timeout,
            pool_size=config.upstream.pool_size,
            health_interval=config.upstream.health_interval,
        )
        self.metrics = Metrics()
        self.access_log = JsonLog(config.log.access)
        self.connection_log = (
            self.access_log
            if config.log.connection == config.log.access
            else JsonLog(config.log.connection)
        )
        self.connections: set[ClientConnection] = set()
        self.parked: set[ClientConnection] = set()  # idle, without a task (see ``park``)
        self._sweep: asyncio.TimerHandle | None = None
        self.chains: dict[bytes, tuple[bytes, ...]] = {}
        self.draining = False
        self.address: tuple[str, int] | None = None
        self.metrics_address: tuple[str, int] | None = None
        self._local_addresses: dict[tuple[str, int], tuple[str, int]] = {}
        self._views: dict[tuple[int, tuple[bytes, ...]], ClientView] = {}
        self._servers: list[asyncio.AbstractServer] = []
        self._channel: socket.socket | None = None  # a worker's, from its master
        self._adopting: set[asyncio.Task[None]] = set()  # connections from the channel
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = asyncio.Event()

    # --- shared per-client memo ---------------------------------------------------------

    def remember_chain(self, leaf_sha256: bytes, chain: tuple[bytes, ...]) -> None:
        """The chain a leaf came with, for sessions resumed without one (DESIGN.md §4)."""
        if len(self.chains) >= _MEMO_LIMIT:
            self.chains.pop(next(iter(self.chains)))
        self.chains[leaf_sha256] = chain

    def local_address(self, sockname: tuple[str, int] | None) -> tuple[str, int] | None:
        """One shared ``(host, port)`` per listening address, not a tuple per connection."""
        if not sockname:
            return None
        address = (str(sockname[0]), int(sockname[1]))
        return self._local_addresses.setdefault(address, address)

    def view(self, generation: Generation, chain: tuple[bytes, ...]) -> ClientView:
        """The verdict and identity headers for a chain, memoized for a short while.

        Never past the decision's ``valid_until`` (notAfter, CRL nextUpdate) and never
        across generations: a reload makes every old entry unreachable.
        """
        key = (generation.number, chain)
        now = time.time()
        view = self._views.get(key)
        if view is not None and view.expires > now:
            return view
        view = ClientView.of(generation, chain)
        until = view.decision.valid_until
        view.expires = min(now + _MEMO_SECONDS, until.timestamp() if until else now)
        if until is not None and view.decision.accepted:  # on the clock connections read
            view.stale_at = time.monotonic() + (until.timestamp() - now)
        if len(self._views) >= _MEMO_LIMIT:
            self._views.clear()
        self._views[key] = view
        return view

    # --- parked idle connections ---------------------------------------------------------

    def park(self, connection: ClientConnection) -> None:
        """An idle connection gives up its task; one shared timer enforces ``idle_timeout``.

        A task, its coroutine frames, a future and a ``TimerHandle`` per idle connection
        were ~2.5 KiB each (issue 6); one sweep over this set replaces them all.
        """
        self.parked.add(connection)
        if self._sweep is None:
            self._schedule_sweep()

    def unpark(self, connection: ClientConnection) -> None:
        self.parked.discard(connection)

    def _sweep_idle(self) -> None:
        """Resume every parked connection past its deadline: its task then times it out."""
        self._sweep = None
        now = time.monotonic()
        for connection in [c for c in self.parked if c.idle_expired(now)]:
            connection.expire()
        if self.parked and not self.draining:
            self._schedule_sweep()

    def _schedule_sweep(self) -> None:
        # A tenth of the timeout: a parked connection closes at most 10% (and 1 s) late.
        # The same sweep enforces the read timeout of requests relayed without a task.
        shortest = min(self.limits.idle_timeout, self.read_timeout)
        interval = min(_SWEEP_MAX, max(0.01, shortest / 10))
        self._sweep = asyncio.get_running_loop().call_later(interval, self._sweep_idle)

    # --- lifecycle -------------------------------------------------------------------

    async def start(self, *, channel: socket.socket | None = None) -> None:
        """Listen on the configured address, with the metrics listener; or, as a worker of
        ``_workers``, take the connections its master accepted from ``channel`` (the
        master serves the metrics)."""
        # Kept: asyncio.get_running_loop() checks the pid (a getpid syscall) on every call,
        # and connections asked for it per request.
        loop = self.loop = asyncio.get_running_loop()
        self.writes = WriteBatch(loop)
        if self.asgi is not None:
            await self.asgi.startup()  # before the first connection, as ASGI servers do
        if channel is not None:
            self._channel = channel
            channel.setblocking(False)
            loop.add_reader(channel.fileno(), self._adopt_connections)
            self.address = parse_address(self.config.listen.address)
        else:
            host, port = parse_address(self.config.listen.address)
            with cannot_listen(self.config.listen.address, source="listen.address"):
                server = await loop.create_server(
                    lambda: ClientConnection(self), host, port, backlog=1024, reuse_address=True
                )
            self._servers.append(server)
            self.address = server.sockets[0].getsockname()[:2]
            if self.config.metrics.address is not None:
                mhost, mport = parse_address(self.config.metrics.address)
                with cannot_listen(self.config.metrics.address, source="metrics.address"):
                    metrics_server = await asyncio.start_server(self._serve_metrics, mhost, mport)
                self._servers.append(metrics_server)
                self.metrics_address = metrics_server.sockets[0].getsockname()[:2]
        self._tasks.append(loop.create_task(self.pool.health_loop()))
        if self.config.reload.poll_interval > 0:
            self._tasks.append(loop.create_task(self._poll_files()))
        self.connection_log.write(
            {
                "event": "start",
                "address": f"{self.address[0]}:{self.address[1]}",
                "pid": self.pid,
                "mode": self.generation.mode.value,
                "generation": self.generation.number,
            }
        )

    def _adopt_connections(self) -> None:
        """Connections the master accepted and passed over the channel (SCM_RIGHTS)."""
        channel = self._channel
        assert channel is not None and self.loop is not None
        while True:
            try:
                message, fds, _, _ = socket.recv_fds(channel, 64, 64)
            except BlockingIOError:
                return
            except OSError:
                message, fds = b"", []
            if not message and not fds:  # the master has gone: accept nothing more
                self._close_channel()
                return
            for fd in fds:
                sock = socket.socket(fileno=fd)
                if self.draining:
                    sock.close()
                    continue
                task = self.loop.create_task(self._adopt(sock))
                self._adopting.add(task)  # held until done: the loop keeps only a weak one
                task.add_done_callback(self._adopting.discard)

    async def _adopt(self, sock: socket.socket) -> None:
        assert self.loop is not None
        try:
            await self.loop.connect_accepted_socket(lambda: ClientConnection(self), sock)
        except OSError:  # the client left before it was adopted
            sock.close()

    def _close_channel(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None and self.loop is not None:
            self.loop.remove_reader(channel.fileno())
            channel.close()

    def reload(self) -> bool:
        """Re-read gateway.toml and every file it names; swap atomically on success, keep
        the old generation (and config) on failure.

        Changed keys in ``RESTART_KEYS`` are listed as ``restart_needed`` and keep their
        running value; ``ok`` is false when the file did not load, or when it changed only
        in such keys (nothing of the edit was applied)."""
        config, applied, restart = self.config, [], []
        try:
            if self.source is not None:
                self._source_stamps = file_stamps([Path(self.source)])
                new = load_config(self.source, asgi=self.serve_app)
                changed = changed_keys(self._as_read, new)
                applied = [key for key in changed if key not in RESTART_KEYS]
                restart = [key for key in changed if key in RESTART_KEYS]
                config = reloadable(new, running=self.config)
            generation = load_generation(config)
        except InputError as exc:  # ConfigError included
            self.metrics.reloads["failed"] += 1
            self.connection_log.write(
                {"event": "reload", "ok": False, "error": str(exc), "applied": []}
            )
            return False
        if self.source is not None:
            self._as_read = reloadable(new, running=self._as_read)
        files_changed = generation.stamps != self.generation.stamps
        self.config, self.limits = config, config.limits
        self.read_timeout = config.upstream.read_timeout
        self.generation = generation
        self._views.clear()
        ok = bool(applied or files_changed or not restart)
        self.metrics.reloads["ok" if ok else "failed"] += 1
        event: dict[str, object] = {
            "event": "reload",
            "ok": ok,
            "generation": generation.number,
            "applied": applied,
        }
        if restart:
            event["restart_needed"] = restart
            event["message"] = f"restart needed: {', '.join(restart)} (running values kept)"
        if not ok:
            event["error"] = "nothing applied: " + str(event["message"])
        self.connection_log.write(event)
        return ok

    async def _poll_files(self) -> None:
        interval = self.config.reload.poll_interval
        while True:
            await asyncio.sleep(interval)
            stamps = file_stamps(watched_files(self.config))
            if stamps != self.generation.stamps or (
                self.source is not None and file_stamps([Path(self.source)]) != self._source_stamps
            ):
                self.reload()

    async def drain(self, timeout: float | None = None) -> None:
        """Stop accepting, close idle connections, give busy ones ``timeout`` seconds."""
        self.draining = True
        self._close_channel()
        for server in self._servers:
            server.close()
        for connection in list(self.connections):
            connection.shutdown()
        deadline = time.monotonic() + (self.limits.drain_timeout if timeout is None else timeout)
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.abort()
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for task in [*self._tasks, *self._adopting]:
            task.cancel()
        self.pool.close()
        if self.asgi is not None:
            await self.asgi.shutdown()
        self.connection_log.write({"event": "stop", "pid": self.pid})
        self._stopped.set()

    def close_logs(self) -> None:
        self.access_log.close()
        if self.connection_log is not self.access_log:
            self.connection_log.close()

    async def serve(
        self, *, channel: socket.socket | None = None, stats: Path | None = None
    ) -> None:
        """Run until SIGTERM/SIGINT (drain) with SIGHUP as reload; the CLI's main loop.

        A worker (``_workers``) takes its connections from its master's ``channel`` and
        writes its metrics to ``stats`` every second and once more when it stops; the
        master sums them.
        """
        await self.start(channel=channel)
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        if stats is not None:
            self._tasks.append(loop.create_task(self._report(stats)))
        await stop.wait()
        await self.drain()
        if stats is not None:
            self._write_stats(stats)
        self.close_logs()

    def run(self, *, channel: socket.socket | None = None, stats: Path | None = None) -> None:
        """``serve`` to the end, on uvloop when it is installed (the CLI's and a worker's)."""
        try:
            import uvloop
        except ImportError:
            asyncio.run(self.serve(channel=channel, stats=stats))
        else:
            uvloop.run(self.serve(channel=channel, stats=stats))

    async def _report(self, stats: Path) -> None:
        while True:
            self._write_stats(stats)
            await asyncio.sleep(_REPORT_SECONDS)

    def _write_stats(self, stats: Path) -> None:
        """The metrics snapshot, replaced whole (the master never reads half a file)."""
        partial = stats.with_suffix(".tmp")
        with contextlib.suppress(OSError):
            partial.write_text(json.dumps(self.metrics.snapshot()))
            partial.replace(stats)

    # --- metrics endpoint ------------------------------------------------------------

    async def _serve_metrics(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        with contextlib.suppress(Exception):
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            writer.write(metrics_response(request, lambda: self.metrics))
            await writer.drain()
        writer.close()
