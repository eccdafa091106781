"""``[listen] workers = N``: N gateway processes on one listening socket, and their master.

As nginx's master and worker processes. The master reads the config and every file
it names (a config that cannot load is refused before any worker starts), binds the
socket, and forks the workers: each is a whole ``Gateway`` on its own event loop, and
so on its own CPU core; the kernel hands each new connection to a worker that accepts
it. The master forwards SIGHUP (reload) and SIGTERM/SIGINT (drain) to every worker,
starts a worker again when one dies, and serves ``/metrics``: the workers' counters,
summed from the snapshot each writes every second (an exited worker's stay counted).

The master runs no event loop and no thread, so forking a new worker is safe at any
time; it waits in ``select`` on the metrics socket and a signal wake-up pipe.
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

from mtlskit.gateway._asgi import load_app
from mtlskit.gateway._config import GatewayConfig, parse_address
from mtlskit.gateway._generation import load_generation
from mtlskit.gateway._log import JsonLog
from mtlskit.gateway._metrics import Metrics, metrics_response
from mtlskit.gateway._server import Gateway

__all__ = ["Master", "run_workers"]

_RESPAWN_SECONDS: Final = 1.0  # a worker slot restarts at most once a second (crash loops)
_STOP_GRACE: Final = 5.0  # beyond drain_timeout, before a worker that will not stop is killed
_SIGNALS: Final = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGCHLD)


def _listen(address: str) -> socket.socket:
    host, port = parse_address(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=1024)
    sock.setblocking(False)
    return sock


def _serve_worker(config: GatewayConfig, sock: socket.socket, stats: Path) -> None:
    """A worker's life, in the forked child: one ``Gateway`` until SIGTERM."""
    gateway = Gateway(config)
    try:
        import uvloop
    except ImportError:
        import asyncio

        asyncio.run(gateway.serve(sock=sock, stats=stats))
    else:
        uvloop.run(gateway.serve(sock=sock, stats=stats))


class Master:
    """Forks ``count`` workers for ``config`` and looks after them until told to stop."""

    def __init__(self, config: GatewayConfig, count: int) -> None:
        self.config = config
        self.count = count
        self.workers: dict[int, int] = {}  # pid -> slot
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
            self.sock = _listen(self.config.listen.address)
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
        if self.config.metrics.address is not None:
            self._metrics_sock = _listen(self.config.metrics.address)
            self._selector.register(self._metrics_sock, selectors.EVENT_READ)
        assert self.sock is not None
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
        signal.set_wakeup_fd(-1)
        for number in _SIGNALS:
            signal.signal(number, signal.SIG_DFL)
        self._selector.close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        for sock in (self.sock, self._metrics_sock):
            if sock is not None:
                sock.close()
        shutil.rmtree(self.stats, ignore_errors=True)

    # --- the loop --------------------------------------------------------------------

    def _step(self) -> None:
        now = time.monotonic()
        waits = [due - now for due in self._due.values()]
        for key, _ in self._selector.select(timeout=max(0.0, min([1.0, *waits]))):
            if key.fileobj == self._wake_r:
                self._signals()
            else:
                self._answer_metrics()
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
                    self._tell(signal.SIGHUP)
                elif number in (signal.SIGTERM, signal.SIGINT) and self._stopping_since is None:
                    self._stopping_since = time.monotonic()
                    self._due.clear()
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

    # --- workers ---------------------------------------------------------------------

    def _spawn(self, slot: int) -> None:
        assert self.sock is not None
        pid = os.fork()
        if pid:
            self.workers[pid] = slot
            return
        code = 1
        try:  # the child: none of the master's signal handling, pipe or sockets
            signal.set_wakeup_fd(-1)
            for number in _SIGNALS:
                signal.signal(number, signal.SIG_DFL)
            self._selector.close()
            os.close(self._wake_r)
            os.close(self._wake_w)
            if self._metrics_sock is not None:
                self._metrics_sock.close()
            _serve_worker(self.config, self.sock, self.stats / f"{os.getpid()}.json")
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

    def _answer_metrics(self) -> None:
        assert self._metrics_sock is not None
        try:
            conn, _ = self._metrics_sock.accept()
        except BlockingIOError:
            return
        with conn, contextlib.suppress(OSError):
            conn.settimeout(2.0)  # one scrape at a time, none holds the master long
            request = b""
            while b"\r\n\r\n" not in request and len(request) < 8192:
                data = conn.recv(4096)
                if not data:
                    break
                request += data
            conn.sendall(metrics_response(request, self.metrics))


def _noted(number: int, frame: Any) -> None:
    """Python's part of a signal: nothing (the wake-up pipe tells the master which)."""


def run_workers(config: GatewayConfig, count: int) -> int:
    """The CLI's entry for ``workers`` > 1: the master's life; exit 0 after a drain."""
    return Master(config, count).run()
