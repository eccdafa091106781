"""``[listen] workers``: the real command, a master handing connections to worker processes."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from _gateway_support import Site, https_exchange, https_request, write_config
from conftest import SPIFFE_ID
from mtlskit.testca import LeafSpec, TestCA

GET = b"GET /hello HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


@pytest.fixture
def site(echo_site: Site) -> Site:
    return echo_site


def _port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class _Running:
    """``mtlskit gateway`` with ``workers`` set, as an operator starts it."""

    def __init__(self, site: Site, ca: TestCA, workers: int, body: str = "") -> None:
        self.site = site
        self.port, self.metrics_port = _port(), _port()
        config = write_config(site, ca.bundle_pem, body or '[client_auth]\ntrust = ["trust.pem"]\n')
        text = config.read_text().replace("127.0.0.1:0", f"127.0.0.1:{self.port}")
        text = text.replace('key = "server.key"\n', f'key = "server.key"\nworkers = {workers}\n')
        config.write_text(text + f'\n[metrics]\naddress = "127.0.0.1:{self.metrics_port}"\n')
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mtlskit", "gateway", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.wait_for(lambda: len(self.worker_pids()) == workers, "workers to start")

    def starts(self) -> list[dict]:
        return [r for r in self.site.log_records() if r.get("event") == "start"]

    def worker_pids(self) -> set[int]:
        return {r["pid"] for r in self.starts() if r.get("role") != "master"} - self.exited()

    def exited(self) -> set[int]:
        return {r["pid"] for r in self.site.log_records() if r.get("event") == "worker_exit"}

    def wait_for(self, condition, what: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}: {self.site.log_records()}")
            if self.process.poll() is not None:
                raise AssertionError(f"gateway exited: {self.process.stderr.read().decode()}")
            time.sleep(0.05)

    def metric(self, name: str) -> float:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
        return float(match.group(1)) if match else 0.0

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(20)
        finally:
            self.process.stderr.close()

    def children(self) -> list[int]:
        path = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in path.read_text().split()] if path.exists() else []


@pytest.fixture
def running(site: Site, ca: TestCA):
    started: list[_Running] = []

    def go(workers: int, body: str = "") -> _Running:
        gateway = _Running(site, ca, workers, body)
        started.append(gateway)
        return gateway

    yield go
    for gateway in started:
        if gateway.process.poll() is None:
            gateway.process.kill()
            gateway.process.wait(5)


def test_workers_share_the_socket_and_the_master_sums_their_metrics(site, running, clean_leaf):
    gateway = running(2)
    assert len(gateway.children()) == 2  # two worker processes under one master
    context = site.client_context(clean_leaf)
    for _ in range(40):  # a new connection each: the master hands them out in turn
        assert https_request(gateway.port, context, GET).startswith(b"HTTP/1.1 200 ")
    handled = Counter(r["pid"] for r in site.flushed_records() if r.get("event") == "connection")
    assert set(handled) == gateway.worker_pids()
    assert sorted(handled.values()) == [20, 20]  # round robin, not the kernel's lottery
    gateway.wait_for(
        lambda: gateway.metric('mtlskit_gateway_requests_total{status="200"}') == 40,
        "the master's /metrics to count all 40 requests",
    )
    assert gateway.metric('mtlskit_gateway_handshakes_total{outcome="ok",code=""}') == 40
    assert gateway.stop() == 0
    assert not gateway.children()


def test_sighup_reloads_every_worker(site, running, ca):
    leaf = ca.issue(LeafSpec(uris=(SPIFFE_ID,)))
    crl = site.dir / "issuing.crl"
    crl.write_bytes(ca.crl().public_bytes(Encoding.PEM))
    gateway = running(2, '[client_auth]\ntrust = ["trust.pem"]\ncrls = ["issuing.crl"]\n')
    context = site.client_context(leaf)
    assert https_request(gateway.port, context, GET).startswith(b"HTTP/1.1 200 ")
    crl.write_bytes(ca.crl((leaf.cert.serial_number,)).public_bytes(Encoding.PEM))
    os.kill(gateway.process.pid, signal.SIGHUP)  # to the master only
    gateway.wait_for(
        lambda: len([r for r in site.log_records() if r.get("event") == "reload"]) == 2,
        "both workers to reload",
    )
    for _ in range(20):  # whichever worker takes it, the revoked client is refused
        assert https_request(gateway.port, context, GET).startswith(b"HTTP/1.1 403 ")
    assert gateway.stop() == 0


def test_a_killed_worker_is_replaced(site, running, clean_leaf):
    gateway = running(2)
    victim = min(gateway.worker_pids())
    os.kill(victim, signal.SIGKILL)
    gateway.wait_for(lambda: victim in gateway.exited(), "the master to notice")
    gateway.wait_for(lambda: len(gateway.worker_pids()) == 2, "a new worker")
    assert victim not in gateway.children()
    context = site.client_context(clean_leaf)
    for _ in range(10):
        assert https_request(gateway.port, context, GET).startswith(b"HTTP/1.1 200 ")
    assert gateway.stop() == 0
    assert not gateway.children()


def test_workers_out_of_range_is_exit_2_naming_the_key(run_cli, tmp_path):
    config = tmp_path / "gateway.toml"
    config.write_text(
        '[listen]\ncert = "s.pem"\nkey = "s.key"\nworkers = 0\n'
        '[client_auth]\ntrust = ["t.pem"]\n[upstream]\nurls = ["http://127.0.0.1:1"]\n'
    )
    result = run_cli("gateway", "--config", config)
    assert result.code == 2
    assert "listen.workers" in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_a_stalled_metrics_scraper_does_not_hold_up_clients(site, running, clean_leaf):
    """The master accepts every connection: a scraper that sends nothing must not stop it."""
    gateway = running(2)
    context = site.client_context(clean_leaf)
    with socket.create_connection(("127.0.0.1", gateway.metrics_port), timeout=5) as stalled:
        stalled.sendall(b"GET /metr")  # and nothing more for now
        for _ in range(6):  # each would time out if the master waited on the scraper
            assert https_request(gateway.port, context, GET, timeout=2).startswith(b"HTTP/1.1 200 ")
        stalled.sendall(b"ics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert stalled.recv(65536).startswith(b"HTTP/1.1 200 OK")
    assert gateway.stop() == 0


def test_a_session_resumes_on_its_own_worker_and_falls_back_elsewhere(site, running, ca):
    """Each worker has its own ticket keys and chain memo: a ticket from another worker is
    a full handshake (never a resumed session without the chain it was verified with)."""
    leaf = ca.issue(LeafSpec(uris=(SPIFFE_ID,)))
    gateway = running(2, '[client_auth]\ntrust = ["trust.pem"]\n[forward]\nformats = ["verdict"]\n')
    context = site.client_context(leaf)

    def request(session=None):
        out, session, resumed = https_exchange(gateway.port, context, GET, session=session)
        assert out.startswith(b"HTTP/1.1 200 ")
        echoed = json.loads(out.partition(b"\r\n\r\n")[2])["headers"]
        assert {k.lower(): v for k, v in echoed}["x-mtlskit-client-identity"] == SPIFFE_ID
        return session, resumed

    first, _ = request()  # worker A (the master hands connections out in turn)
    _, on_b = request(first)  # worker B: A's ticket means nothing there
    _, on_a = request(first)  # worker A again
    assert (on_b, on_a) == (False, True)
    assert gateway.stop() == 0
