"""The probe's attack battery through a proxy configured only by `mtlskit config`, against
the same battery through `mtlskit gateway` (issue 25, done-when).

A proxy is a fixture parameter: each parameter starts, from one CA directory and one
policy, the proxy with `mtlskit authz-server` behind it and returns a ``Front`` (port and
how to make it re-read the CRL). The gateway's verdicts (from test_probe's fixture) are
the reference; every case must get the same verdict and the same outcome. Real processes
on loopback, ephemeral ports, each stopped by its own handle.
"""

from __future__ import annotations

import http.client
import json
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from _gateway_support import EchoBackend
from _servers import free_port, stop, wait_for
from conftest import SPIFFE_ID, write
from mtlskit.probe import ProbeReport, run_probe
from mtlskit.testca import SERVER_AUTH, LeafSpec, TestCA
from test_authz_proxies import run_nginx
from test_haproxy_authz import run_haproxy
from test_probe import PASSPHRASE, _client, ca_dir, gateway  # noqa: F401  (fixtures)

pytestmark = pytest.mark.integration

FORMATS = ("xfcc", "gcp", "aws", "rfc9440", "verdict")  # as test_probe's gateway forwards


@dataclass(frozen=True, slots=True, kw_only=True)
class Front:
    """A running proxy + authz-server: where to connect, how to apply a new CRL."""

    port: int
    reload: Callable[[], None]
    work: Path  # policy.toml, authz.toml, authz.log


def _probe(tmp_path: Path, ca: Path, port: int, reload: Callable[[], object]) -> ProbeReport:
    chain, key = _client(tmp_path)
    return run_probe(
        f"127.0.0.1:{port}",
        chain=chain,
        key=key,
        ca_dir=ca,
        passphrase=PASSPHRASE,
        crl_out=ca / "crl.pem",
        after_crl=reload,
        server_name="localhost",
        echo=True,
    )


def _authz_server(work: Path, ca: Path, echo: EchoBackend, proxy: str, *extra: str) -> Iterator:
    """`mtlskit config PROXY` + its authz.toml, authz-server running; yields (authz, config)."""
    from mtlskit.cli import main

    server_ca = TestCA(name="battery server")
    server = server_ca.issue(LeafSpec(dns=("localhost",), eku=(SERVER_AUTH,)))
    write(work / "server.pem", server.chain_pem)
    write(work / "server.key", server.key_pem)
    write(work / "server-ca.pem", server_ca.bundle_pem)
    write(work / "policy.toml", b'[[allow]]\ntrust_domain = "acme.com"\n')
    authz_port = free_port()
    argv = [
        "config", proxy, "--trust", ca / "root.pem", "--intermediate", ca / "issuing.pem",
        "--crl", ca / "crl.pem", "--policy", work / "policy.toml",
        "--server-cert", work / "server.pem", "--server-key", work / "server.key",
        "--upstream", echo.url, "--authz", f"http://127.0.0.1:{authz_port}",
        *(arg for fmt in FORMATS for arg in ("--forward", fmt)), *extra,
        "--out", work / f"{proxy}.conf", "--authz-config", work / "authz.toml",
    ]  # fmt: skip
    assert main([str(a) for a in argv]) == 0
    toml = (work / "authz.toml").read_text().replace('decisions = "-"', 'decisions = "authz.log"')
    write(work / "authz.toml", toml.encode())
    authz = subprocess.Popen(
        [sys.executable, "-m", "mtlskit", "authz-server", "--config", str(work / "authz.toml")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(authz_port, authz, "authz-server")
        yield authz, work / f"{proxy}.conf"
    finally:
        stop(authz)


def _reloader(authz: subprocess.Popen, log: Path) -> Callable[[], None]:
    """SIGHUP authz-server and wait for its 'reloaded' line (it re-reads the CRL)."""

    def reload() -> None:
        before = log.read_text().count('"event":"reloaded"')
        authz.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while log.read_text().count('"event":"reloaded"') == before:
            assert time.monotonic() < deadline, "authz-server did not reload"
            time.sleep(0.05)

    return reload


@pytest.fixture(params=["nginx", "haproxy"])
def front(request, tmp_path: Path, ca_dir: Path) -> Iterator[Front]:  # noqa: F811
    """One proxy, configured only by `mtlskit config`, with authz-server behind it."""
    echo = EchoBackend()
    work = tmp_path / request.param
    work.mkdir()
    listen = ("--listen", f"127.0.0.1:{free_port()}") if request.param == "haproxy" else ()
    stack = _authz_server(work, ca_dir, echo, request.param, *listen)
    try:
        authz, config = next(stack)
        if request.param == "haproxy":
            running = run_haproxy(config)
        else:
            running = run_nginx(config, work / "nginx")
        with running as port:
            yield Front(port=port, reload=_reloader(authz, work / "authz.log"), work=work)
    finally:
        stack.close()
        echo.stop()


def test_battery_through_the_proxy_as_through_the_gateway(tmp_path, ca_dir, gateway, front):  # noqa: F811
    running, _ = gateway
    reference = _probe(tmp_path, ca_dir, running.port, running.reload)
    # the battery's CA cases issue and revoke again: the second run gets its own CRL entries
    report = _probe(tmp_path, ca_dir, front.port, front.reload)
    expected = {r.case.id: (r.verdict, r.observation.outcome) for r in reference.results}
    observed = {r.case.id: (r.verdict, r.observation.outcome) for r in report.results}
    details = {r.case.id: r.observation.summary() for r in report.results}
    assert observed == expected, details
    assert report.exit_code == reference.exit_code == 0


def _checks(front: Front) -> int:
    return front.work.joinpath("authz.log").read_text().count('"proxy":')


@pytest.mark.parametrize("change", ["policy", "revocation"])
def test_kept_alive_client_is_refused_one_second_after_reload(tmp_path, ca_dir, front, change):  # noqa: F811
    """The proxy's answer cache saves the check per request, yet a SIGHUP (policy) or a new
    CRL applies on an open keep-alive connection once a second has passed."""
    from mtlskit.cli import main

    context = ssl.create_default_context(cafile=front.work / "server-ca.pem")
    context.load_cert_chain(tmp_path / "client" / "chain.pem", tmp_path / "client" / "key.pem")
    conn = http.client.HTTPSConnection("localhost", front.port, context=context, timeout=10)

    def get() -> tuple[int, dict]:
        conn.request("GET", "/invoices")
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            return response.status, {}
        return 200, {k.lower(): v for k, v in json.loads(body)["headers"]}

    try:
        before = _checks(front)
        for _ in range(20):
            status, seen = get()
            assert status == 200
            assert seen["x-mtlskit-client-identity"] == SPIFFE_ID  # cached answers too
        assert _checks(front) - before < 20  # answered from nginx's cache, not each by authz
        if change == "policy":
            write(front.work / "policy.toml", b'[[allow]]\ntrust_domain = "other.org"\n')
        else:
            passphrase = write(tmp_path / "battery-pass", PASSPHRASE + b"\n")
            for argv in (
                ["ca", "revoke", ca_dir, "--cert", tmp_path / "client" / "cert.pem"],
                ["ca", "crl", ca_dir, "--out", ca_dir / "crl.pem", "--passphrase-file", passphrase],
            ):
                assert main([str(a) for a in argv]) == 0
        front.reload()
        time.sleep(1.0)
        assert get()[0] == 403
    finally:
        conn.close()
