"""``[listen] workers = N``: N gateway processes behind one listening socket, and their master.

As nginx's master and worker processes. The master reads the config and every file
it names (a config that cannot load is refused before any worker starts), binds the
socket, and forks the workers: each is a whole ``Gateway`` on its own event loop, and
so on its own CPU core. The master accepts every connection and hands it to the next
worker in turn, over a Unix socket (SCM_RIGHTS), as Node's cluster module does: left to
the kernel, 16 long-lived keep-alive connections split 4/12 or 6/10 between two workers
(measured), and the busier one became the bottleneck while the other idled.

The master forwards SIGHUP (reload) and SIGTERM/SIGINT (drain) to every worker, starts
a worker again when one dies, and serves ``/metrics``: the workers' counters, summed
from the snapshot each writes every second (an exited worker's stay counted). It runs
no event loop and no thread, so forking a new worker is safe at any time; it waits in
``select`` on the listening socket, the metrics socket and a signal wake-up pipe, and
never blocks on a client.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shutil
import signal
import socket
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Final

from mtlskit.errors import InputError
from mtlskit.gateway._asgi import load_app
from mtlskit.gateway._config import (
    GatewayConfig,
    cannot_listen,
    load_config,
    parse_address,
    reloadable,
)
from mtlskit.gateway._generation import load_generation
from mtlskit.gateway._log import JsonLog
from mtlskit.gateway._metrics import Metrics, metrics_response
from mtlskit.gateway._server import Gateway

__all__ = ["Master", "run_workers"]

_RESPAWN_SECONDS: Final = 1.0  # a worker slot restarts at most once a second (crash loops)
_STOP_GRACE: Final = 5.0  # beyond drain_timeout, before a worker that will not stop is killed
_SIGNALS: Final = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGCHLD)
_SCRAPE_SECONDS: Final = 5.0  # a /metrics request head must arrive within this
_ACCEPTS_PER_WAKE: Final = 64  # connections accepted per select() before anything else


def _listen(address: str, *, source: str) -> socket.socket:
    host, port = parse_address(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with cannot_listen(address, source=source):
        sock = socket.create_server((host, port), family=family, backlog=1024)
    sock.setblocking(False)
    return sock


class _Scrape:
    """One /metrics request being read without blocking the master."""

    __slots__ = ("conn", "deadline", "request")

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.request = b""
        self.deadline = time.monotonic() + _SCRAPE_SECONDS


class Master:
    """Forks ``count`` workers for ``config`` and looks after them until told to stop."""

    def __init__(
        self,
        config: GatewayConfig,
        count: int,
        *,
        source: str | Path | None = None,
        serve_app: str | None = None,
    ) -> None:
        self.config = config
        self.as_read = config  # before the bound port replaces listen.address
        self.source = source  # gateway.toml: each worker re-reads it on SIGHUP
        self.serve_app = serve_app  # mtlskit serve's APP, kept by every re-read
        self.count = count
        self.workers: dict[int, int] = {}  # pid -> slot
        self._channels: dict[int, socket.socket] = {}  # slot -> the master's end
        self._turn = 0  # the slot the next connection goes to, if it is up
        self._scrapes: dict[int, _Scrape] = {}  # fd -> a /metrics request being read
        self._due: dict[int, float] = {}  # slot -> when it may be started again
        self._stopping_since: float | None = None
        self._retired = Metrics()  # counters of workers that have exited
        self.log = JsonLog(config.log.connection)
        self.sock: socket.socket | None = None
        self.stats = Path(tempfile.mkdtemp(prefix="mtlskit-gateway-"))
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        self._metrics_sock: socket.socket | None = None

    def run(self) -> int:
        load_generation(self.config)  # every file readable and valid, or exit 2 now
        upstream = self.config.upstream
        if upstream.asgi is not None:  # ``mtlskit serve``: import errors are exit 2 here too;
            load_app(upstream.asgi, app_dir=upstream.app_dir)  # the workers inherit the module
        try:
            self.sock = _listen(self.config.listen.address, source="listen.address")
            host, port = self.sock.getsockname()[:2]  # port 0 bound: the workers log the real one
            bound = self.config.listen.model_copy(update={"address": f"{host}:{port}"})
            self.config = self.config.model_copy(update={"listen": bound})
            self._setup()
            for slot in range(self.count):
                self._spawn(slot)
            while self.workers or (self._due and self._stopping_since is None):
                self._step()
        finally:
            self._cleanup()
        self.log.write({"event": "stop", "pid": os.getpid(), "role": "master"})
        self.log.close()
        return 0

    # --- setup and teardown ----------------------------------------------------------

    def _setup(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
        signal.set_wakeup_fd(self._wake_w)
        for number in _SIGNALS:
            signal.signal(number, _noted)  # the wake-up pipe carries which one
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        assert self.sock is not None
        self._selector.register(self.sock, selectors.EVENT_READ)
        if self.config.metrics.address is not None:
            self._metrics_sock = _listen(self.config.metrics.address, source="metrics.address")
            self._selector.register(self._metrics_sock, selectors.EVENT_READ)
        address = self.sock.getsockname()
        self.log.write(
            {
                "event": "start",
                "role": "master",
                "pid": os.getpid(),
                "address": f"{address[0]}:{address[1]}",
                "workers": self.count,
            }
        )

    def _cleanup(self) -> None:
        for pid in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self._release()
        shutil.rmtree(self.stats, ignore_errors=True)

    def _release(self, *more: socket.socket) -> None:
        """Give up the master's signal handling, pipe and sockets (``more`` too): at the
        end, and in a new worker, which must hold none of them."""
        signal.set_wakeup_fd(-1)
        for number in _SIGNALS:
            signal.signal(number, signal.SIG_DFL)
        self._selector.close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        for sock in (self.sock, self._metrics_sock, *self._channels.values(), *more):
            if sock is not None:
                sock.close()
        for scrape in self._scrapes.values():
            scrape.conn.close()

    # --- the loop --------------------------------------------------------------------

    def _step(self) -> None:
        now = time.monotonic()
        waits = [due - now for due in self._due.values()]
        for key, _ in self._selector.select(timeout=max(0.0, min([1.0, *waits]))):
            if key.fileobj is self.sock:
                self._accept()
            elif key.fileobj == self._wake_r:
                self._signals()
            elif key.fileobj is self._metrics_sock:
                self._accept_scrape()
            else:
                self._read_scrape(key.data)
        for scrape in [s for s in self._scrapes.values() if s.deadline < time.monotonic()]:
            self._end_scrape(scrape)
        self._reap()
        now = time.monotonic()
        if self._stopping_since is None:
            for slot, due in list(self._due.items()):
                if due <= now:
                    del self._due[slot]
                    self._spawn(slot)
        elif now > self._stopping_since + self.config.limits.drain_timeout + _STOP_GRACE:
            for pid in self.workers:  # drained for too long: as nginx, do not wait forever
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def _signals(self) -> None:
        with contextlib.suppress(BlockingIOError):
            for number in os.read(self._wake_r, 256):
                if number == signal.SIGHUP:
                    self._reread()
                    self._tell(signal.SIGHUP)
                elif number in (signal.SIGTERM, signal.SIGINT) and self._stopping_since is None:
                    self._stopping_since = time.monotonic()
                    self._due.clear()
                    if self.sock is not None:  # no new connections from here on
                        self._selector.unregister(self.sock)
                        self.sock.close()
                        self.sock = None
                    self._tell(signal.SIGTERM)

    def _tell(self, number: int) -> None:
        for pid in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, number)

    def _reap(self) -> None:
        while self.workers:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            slot = self.workers.pop(pid, None)
            if slot is None:
                continue
            channel = self._channels.pop(slot, None)
            if channel is not None:
                channel.close()
            self._retire(pid)
            code = os.waitstatus_to_exitcode(status)
            if self._stopping_since is None:
                self.log.write(
                    {"event": "worker_exit", "pid": pid, "slot": slot, "exit_code": code}
                )
                self._due[slot] = time.monotonic() + _RESPAWN_SECONDS

    def _retire(self, pid: int) -> None:
        """An exited worker's last counters stay in the sum; its open connections do not."""
        path = self.stats / f"{pid}.json"
        with contextlib.suppress(OSError, ValueError, KeyError):
            self._retired.add(json.loads(path.read_text()), gauges=False)
        with contextlib.suppress(OSError):
            path.unlink()

    def _reread(self) -> None:
        """gateway.toml again, for workers started from here on (each worker logs the
        reload itself); restart-only keys keep their running values, a bad file changes nothing."""
        if self.source is None:
            return
        with contextlib.suppress(InputError):
            new = load_config(self.source, asgi=self.serve_app)
            self.config = reloadable(new, running=self.config)
            self.as_read = reloadable(new, running=self.as_read)

    # --- workers ---------------------------------------------------------------------

    def _spawn(self, slot: int) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid:
            theirs.close()
            ours.setblocking(False)
            self._channels[slot] = ours
            self.workers[pid] = slot
            return
        code = 1
        try:  # the child
            self._release(ours)
            gateway = Gateway(
                self.config, source=self.source, as_read=self.as_read, serve_app=self.serve_app
            )
            gateway.run(channel=theirs, stats=self.stats / f"{os.getpid()}.json")
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(code)

    # --- /metrics --------------------------------------------------------------------

    def metrics(self) -> Metrics:
        """The sum over workers: live ones from their latest snapshot, and the retired."""
        total = Metrics()
        total.add(self._retired.snapshot(), gauges=False)
        for path in self.stats.glob("*.json"):
            with contextlib.suppress(OSError, ValueError, KeyError):
                total.add(json.loads(path.read_text()))
        return total

    def _accept_scrape(self) -> None:
        assert self._metrics_sock is not None
        try:
            conn, _ = self._metrics_sock.accept()
        except OSError:  # gone already, or out of descriptors: the scraper retries
            return
        conn.setblocking(False)
        scrape = self._scrapes[conn.fileno()] = _Scrape(conn)
        self._selector.register(conn, selectors.EVENT_READ, scrape)

    def _read_scrape(self, scrape: _Scrape) -> None:
        try:
            data = scrape.conn.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        scrape.request += data
        if b"\r\n\r\n" in scrape.request or len(scrape.request) > 8192 or not data:
            if data or scrape.request:
                with contextlib.suppress(OSError):  # a few KB: the socket buffer takes them
                    scrape.conn.send(metrics_response(scrape.request, self.metrics))
            self._end_scrape(scrape)

    def _end_scrape(self, scrape: _Scrape) -> None:
        self._scrapes.pop(scrape.conn.fileno(), None)
        self._selector.unregister(scrape.conn)
        scrape.conn.close()

    # --- connections: accepted here, handed to the workers in turn ---------------------

    def _accept(self) -> None:
        assert self.sock is not None
        for _ in range(_ACCEPTS_PER_WAKE):
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return
            except OSError:  # out of descriptors, a reset before accept: try again later
                return
            with conn:
                self._hand_over(conn)

    def _hand_over(self, conn: socket.socket) -> None:
        """To the next worker that takes it; none (all down or stuck): the client is dropped."""
        slots = sorted(self._channels)
        for i in range(len(slots)):
            slot = slots[(self._turn + i) % len(slots)]
            try:
                socket.send_fds(self._channels[slot], [b"c"], [conn.fileno()])
            except OSError:  # its queue is full (stuck) or it has just died
                continue
            self._turn = (self._turn + i + 1) % len(slots)
            return


def _noted(number: int, frame: Any) -> None:
    """Python's part of a signal: nothing (the wake-up pipe tells the master which)."""


def run_workers(
    config: GatewayConfig,
    count: int,
    *,
    source: str | Path | None = None,
    serve_app: str | None = None,
) -> int:
    """The CLI's entry for ``workers`` > 1: the master's life; exit 0 after a drain."""
    return Master(config, count, source=source, serve_app=serve_app).run()
