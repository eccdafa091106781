"""Pinned self-signed clients (issue 26 item 3): the line ``mtlskit selfsigned`` prints works,
as printed, in the gateway (a real TLS handshake), in authz-server and in ``verify --pin``.

Before, it printed ``Pin it as: sha256:HEX``; that pin next to ``trust`` passed
``gateway --check`` and every pinned client was then refused ``unknown_ca``: OpenSSL checks
the client certificate against its verify locations before mtlskit sees a fingerprint, and
Python's ``ssl`` has no verify callback, so the gateway needs the certificate file itself.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import shutil
import socket
import ssl
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest

from _gateway_support import EchoBackend, GatewayThread, Site, write_config
from _servers import free_port, nginx, stop, wait_for
from conftest import write
from mtlskit.authzserver import CheckRequest, Proxy, build_decision_point, load_config
from mtlskit.testca import SERVER_AUTH, LeafSpec, TestCA

GET = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


def _selfsigned(run_cli, out: Path, identity: str = "spiffe://acme.com/solo/reporter") -> str:
    """Run ``mtlskit selfsigned``; return the ``pins = [...]`` line it printed."""
    result = run_cli("selfsigned", "--id", identity, "--out", out)
    assert result.code == 0, result.err
    (line,) = [x.strip() for x in result.out.splitlines() if x.strip().startswith("pins = ")]
    return line


def _fingerprint(pins_line: str) -> str:
    return json.loads(pins_line.removeprefix("pins = "))[1]


def _request(site: Site, port: int, client_dir: Path | None) -> str:
    """ "200" (or another status), or the TLS alert OpenSSL reported to the client."""
    context = ssl.create_default_context()
    site.server_ca.configure_trust(context)
    if client_dir is not None:
        context.load_cert_chain(client_dir / "cert.pem", client_dir / "key.pem")
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
            context.wrap_socket(sock, server_hostname="localhost") as tls,
        ):
            tls.sendall(GET)
            response = tls.recv(65536)
    except ssl.SSLError as exc:
        return exc.reason or str(exc)
    return response.split(b" ", 2)[1].decode() if response else "closed"


@pytest.fixture
def gateways():
    running: list[GatewayThread] = []
    yield running
    for gateway in running:
        gateway.stop()


def _gateway(site: Site, ca, body: str, gateways: list[GatewayThread]) -> GatewayThread:
    config = write_config(site, ca.bundle_pem, body)
    gateway = GatewayThread(config)
    gateways.append(gateway)
    return gateway


def test_the_printed_pin_line_lets_the_client_through_a_real_gateway(
    run_cli, echo_site, ca, clean_leaf, gateways
):
    site = echo_site
    solo, stranger = site.dir / "solo", site.dir / "stranger"
    line = _selfsigned(run_cli, solo)
    _selfsigned(run_cli, stranger)
    body = f'[client_auth]\ntrust = ["trust.pem"]\n{line}\n'
    config = write_config(site, ca.bundle_pem, body)
    check = run_cli("gateway", "--config", config, "--check")
    assert check.code == 0, check.err
    gateway = _gateway(site, ca, body, gateways)
    assert _request(site, gateway.port, solo) == "200"
    # negative controls: an unpinned self-signed client is refused, the CA's clients are not
    assert _request(site, gateway.port, stranger) == "TLSV1_ALERT_UNKNOWN_CA"
    context = site.client_context(clean_leaf)
    with (
        socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock,
        context.wrap_socket(sock, server_hostname="localhost") as tls,
    ):
        tls.sendall(GET)
        assert tls.recv(65536).startswith(b"HTTP/1.1 200")


def test_a_fingerprint_pin_without_its_certificate_is_refused_by_check(run_cli, echo_site, ca):
    """It could never let its client in: one line saying what to write instead."""
    site = echo_site
    fingerprint = _fingerprint(_selfsigned(run_cli, site.dir / "solo"))
    body = f'[client_auth]\ntrust = ["trust.pem"]\npins = ["{fingerprint}"]\n'
    result = run_cli("gateway", "--config", write_config(site, ca.bundle_pem, body), "--check")
    assert result.code == 2, result
    assert result.err == (
        f"mtlskit: error: client_auth.pins: no pinned certificate file or trust file holds "
        f"{fingerprint}: the TLS handshake needs the certificate itself, so list its file: "
        'pins = ["client/cert.pem"] (with its fingerprint beside it to refuse a swapped '
        "file), as mtlskit selfsigned prints\n"
    )


def test_a_swapped_pinned_file_is_refused_by_its_fingerprint(run_cli, echo_site, ca):
    site = echo_site
    line = _selfsigned(run_cli, site.dir / "solo")
    _selfsigned(run_cli, site.dir / "other")
    config = write_config(site, ca.bundle_pem, f"[client_auth]\n{line}\n")
    assert run_cli("gateway", "--config", config, "--check").code == 0
    shutil.copy(site.dir / "other" / "cert.pem", site.dir / "solo" / "cert.pem")
    result = run_cli("gateway", "--config", config, "--check")
    assert result.code == 2
    assert "no pinned certificate file or trust file holds sha256:" in result.err


def test_openssl_colon_hex_is_a_fingerprint_not_a_file_name(run_cli, echo_site, ca):
    """What ``openssl x509 -fingerprint -sha256`` prints (and selfsigned's second line)."""
    site = echo_site
    line = _selfsigned(run_cli, site.dir / "solo")
    cert, fingerprint = json.loads(line.removeprefix("pins = "))
    colon = ":".join(f"{b:02X}" for b in bytes.fromhex(fingerprint.removeprefix("sha256:")))
    body = f'[client_auth]\npins = ["{cert}", "{colon}"]\n'
    config = write_config(site, ca.bundle_pem, body)
    result = run_cli("gateway", "--config", config, "--check")
    assert result.code == 0, result.err


def test_a_pin_directory_takes_a_new_client_on_reload_without_restart(
    run_cli, echo_site, ca, gateways
):
    site = echo_site
    pinned = site.dir / "pinned"
    pinned.mkdir()
    first, second = site.dir / "first", site.dir / "second"
    _selfsigned(run_cli, first)
    _selfsigned(run_cli, second)
    shutil.copy(first / "cert.pem", pinned / "first.pem")
    gateway = _gateway(site, ca, '[client_auth]\npins = ["pinned"]\n', gateways)
    assert _request(site, gateway.port, first) == "200"
    assert _request(site, gateway.port, second) == "TLSV1_ALERT_UNKNOWN_CA"
    shutil.copy(second / "cert.pem", pinned / "second.pem")
    assert gateway.reload()
    assert _request(site, gateway.port, second) == "200"
    (pinned / "first.pem").unlink()
    assert gateway.reload()
    assert _request(site, gateway.port, first) == "TLSV1_ALERT_UNKNOWN_CA"


def _nginx_check(cert_pem: bytes) -> CheckRequest:
    escaped = urllib.parse.quote(cert_pem.decode(), safe="")
    return CheckRequest(
        proxy=Proxy.NGINX,
        method="GET",
        path="/nginx",
        headers=[
            (b"x-mtlskit-nginx-cert", escaped.encode()),
            (b"x-mtlskit-nginx-verify", b"SUCCESS"),
            (b"x-mtlskit-original-method", b"GET"),
            (b"x-mtlskit-original-uri", b"/"),
        ],
    )


def test_authz_server_takes_the_printed_pin_line(run_cli, tmp_path):
    line = _selfsigned(run_cli, tmp_path / "solo")
    _selfsigned(run_cli, tmp_path / "stranger")
    for pins in (line, 'pins = ["solo/cert.pem"]', f'pins = ["{_fingerprint(line)}"]'):
        config = write(tmp_path / "authz.toml", f"[client_auth]\n{pins}\n".encode())
        assert run_cli("authz-server", "--config", config, "--check").code == 0, pins
        point = build_decision_point(load_config(config))
        now = dt.datetime.now(dt.UTC)  # not import time: the certificates are minutes younger
        allowed = point.check(_nginx_check((tmp_path / "solo" / "cert.pem").read_bytes()), at=now)
        assert allowed.status == 200, (pins, allowed.record())
        refused = point.check(
            _nginx_check((tmp_path / "stranger" / "cert.pem").read_bytes()), at=now
        )
        assert refused.status == 403, pins


def test_verify_takes_the_printed_pin_and_the_file(run_cli, tmp_path):
    line = _selfsigned(run_cli, tmp_path / "solo")
    _selfsigned(run_cli, tmp_path / "stranger")
    cert, fingerprint = json.loads(line.removeprefix("pins = "))
    for pin in (fingerprint, cert):
        assert run_cli("verify", cert, "--pin", pin).code == 0, pin
        result = run_cli("verify", tmp_path / "stranger" / "cert.pem", "--pin", pin, "--json")
        assert result.code == 1
        assert [r["code"] for r in json.loads(result.out)["reasons"]] == ["pin_mismatch"]


def test_authz_server_behind_real_nginx_lets_in_only_the_pinned_client(run_cli, tmp_path):
    """nginx does the handshake (it trusts both self-signed clients); authz-server, given
    the printed pin line for one of them, answers 200 for it and 403 for the other."""
    solo_line = _selfsigned(run_cli, tmp_path / "solo")
    _selfsigned(run_cli, tmp_path / "other")
    server_ca = TestCA(name="pins server")
    server = server_ca.issue(LeafSpec(dns=("localhost",), eku=(SERVER_AUTH,)))
    write(tmp_path / "server.pem", server.chain_pem)
    write(tmp_path / "server.key", server.key_pem)
    backend = EchoBackend()
    port, authz_port = free_port(), free_port()
    result = run_cli(
        "config", "nginx",
        "--trust", tmp_path / "solo" / "cert.pem", "--trust", tmp_path / "other" / "cert.pem",
        "--server-cert", tmp_path / "server.pem", "--server-key", tmp_path / "server.key",
        "--listen", f"127.0.0.1:{port}", "--upstream", backend.url,
        "--authz", f"http://127.0.0.1:{authz_port}",
        "--out", tmp_path / "mtls.conf", "--authz-config", tmp_path / "authz.toml",
    )  # fmt: skip
    assert result.code == 0, result.err
    authz_toml = (tmp_path / "authz.toml").read_text()
    lines = [solo_line if line.startswith("trust = ") else line for line in authz_toml.splitlines()]
    write(tmp_path / "authz.toml", "\n".join(lines).encode())
    assert "pins = " in (tmp_path / "authz.toml").read_text()
    authz = subprocess.Popen(
        [sys.executable, "-m", "mtlskit", "authz-server", "--config", str(tmp_path / "authz.toml")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(authz_port, authz, "authz-server")
        with nginx(tmp_path / "nginx", http=(tmp_path / "mtls.conf").read_text(), port=port):
            statuses = {}
            for name in ("solo", "other"):
                client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                client.load_verify_locations(cadata=server_ca.bundle_pem.decode())
                client.load_cert_chain(tmp_path / name / "cert.pem", tmp_path / name / "key.pem")
                conn = http.client.HTTPSConnection("localhost", port, context=client, timeout=10)
                try:
                    conn.request("GET", "/")
                    statuses[name] = conn.getresponse().status
                finally:
                    conn.close()
        assert statuses == {"solo": 200, "other": 403}
    finally:
        stop(authz)
        backend.stop()
