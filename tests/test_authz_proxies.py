"""nginx and HAProxy in front of `mtlskit authz-server`, with configs from `mtlskit config`.

Real programs on loopback, ephemeral ports, everything in a temp dir, certificates from
`mtlskit ca`: an allowed identity reaches the echo backend with its identity header, a
denied one gets 403, a revoked one is refused in the handshake, and spoofed identity
headers never reach the backend. Each process is stopped by its own handle.
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from _servers import free_port as _free_port
from _servers import stop as _stop
from _servers import wait_for as _wait_for
from conftest import require_program, write
from mtlskit.testca import SERVER_AUTH, LeafSpec, TestCA

pytestmark = pytest.mark.integration

ALLOWED = "spiffe://acme.com/billing/payments"
DENIED = "spiffe://acme.com/marketing/newsletter"


class _Echo(BaseHTTPRequestHandler):
    """Returns the request headers it received as JSON (lowercased name → list of values)."""

    def do_GET(self) -> None:
        seen: dict[str, list[str]] = {}
        for name, value in self.headers.items():
            seen.setdefault(name.lower(), []).append(value)
        body = json.dumps(seen).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """CA, clients, policy, echo backend and a running authz-server; shared by both proxies."""
    from mtlskit.cli import main

    tmp = tmp_path_factory.mktemp("authz")
    passphrase = write(tmp / "pass", b"authz test passphrase\n")
    ca = tmp / "ca"

    def cli(*args) -> None:
        assert main([os.fspath(a) for a in args]) == 0, args

    cli("ca", "init", ca, "--trust-domain", "acme.com", "--passphrase-file", passphrase)
    for name, identity in (("good", ALLOWED), ("denied", DENIED), ("gone", ALLOWED)):
        cli(
            "ca",
            "issue",
            ca,
            "--id",
            identity,
            "--out",
            tmp / name,
            "--passphrase-file",
            passphrase,
        )
    cli("ca", "revoke", ca, "--cert", tmp / "gone" / "cert.pem", "--reason", "keyCompromise")
    cli("ca", "crl", ca, "--out", tmp / "crl.pem", "--passphrase-file", passphrase)
    write(tmp / "policy.toml", b'[[allow]]\nid = "spiffe://acme.com/billing/*"\n')
    server_ca = TestCA(name="proxy server")
    server = server_ca.issue(LeafSpec(dns=("localhost",), eku=(SERVER_AUTH,)))
    write(tmp / "server.pem", server.chain_pem)
    write(tmp / "server.key", server.key_pem)
    write(tmp / "server-ca.pem", server_ca.bundle_pem)

    backend = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    authz_port = _free_port()
    common = [
        "--trust", ca / "root.pem", "--intermediate", ca / "issuing.pem",
        "--crl", tmp / "crl.pem", "--policy", tmp / "policy.toml",
        "--server-cert", tmp / "server.pem", "--server-key", tmp / "server.key",
        "--upstream", f"http://127.0.0.1:{backend.server_address[1]}",
        "--authz", f"http://127.0.0.1:{authz_port}",
    ]  # fmt: skip
    cli(
        "config",
        "nginx",
        *common,
        "--out",
        tmp / "authz-nginx.conf",
        "--authz-config",
        tmp / "authz.toml",
    )
    config = (
        (tmp / "authz.toml").read_text().replace('decisions = "-"', 'decisions = "decisions.log"')
    )
    write(tmp / "authz.toml", config.encode())
    authz = subprocess.Popen(
        [sys.executable, "-m", "mtlskit", "authz-server", "--config", str(tmp / "authz.toml")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for(authz_port, authz, "authz-server")
        yield {"tmp": tmp, "common": common, "cli": cli, "authz_port": authz_port}
    finally:
        _stop(authz)
        backend.shutdown()
        backend.server_close()


def _get(port: int, tmp: Path, client: str | None, headers: dict[str, str] | None = None):
    ctx = ssl.create_default_context(cafile=tmp / "server-ca.pem")
    if client is not None:
        ctx.load_cert_chain(tmp / client / "chain.pem", tmp / client / "key.pem")
    conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=10)
    try:
        conn.request("GET", "/invoices?x=1", headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


SPOOFED = {
    "X-Forwarded-Client-Cert": "By=evil;URI=spiffe://acme.com/admin",
    "X-Mtlskit-Client-Identity": "spiffe://acme.com/admin",
    "X-Client-Cert-Hash": "forged",
    "Client-Cert": ":Zm9yZ2Vk:",
}


def _check_common(port: int, tmp: Path) -> dict[str, list[str]]:
    status, body = _get(port, tmp, "good", SPOOFED)
    assert status == 200, body
    seen = json.loads(body)
    assert seen["x-mtlskit-client-identity"] == [ALLOWED]
    assert seen["x-mtlskit-client-verified"] == ["true"]
    (xfcc,) = seen["x-forwarded-client-cert"]
    assert "URI=spiffe://acme.com/billing/payments" in xfcc and "evil" not in xfcc
    assert "x-client-cert-hash" not in seen and "client-cert" not in seen
    assert not any(name.startswith("x-mtlskit-nginx") for name in seen)

    status, body = _get(port, tmp, "denied")
    assert status == 403
    assert "identity_not_authorized" not in body  # the reason goes to the log only

    # The revoked client: refused in the handshake (HAProxy) or with a 400 page (nginx).
    try:
        status, body = _get(port, tmp, "gone")
    except (ssl.SSLError, ConnectionError):
        return seen
    assert status == 400, body
    return seen


def _decisions(tmp: Path) -> list[dict]:
    return [json.loads(line) for line in (tmp / "decisions.log").read_text().splitlines()]


def test_nginx_with_authz_server(stack):
    nginx = require_program("nginx")
    tmp = stack["tmp"]
    port = _free_port()
    work = tmp / "nginx"
    work.mkdir()
    snippet = (
        (tmp / "authz-nginx.conf")
        .read_text()
        .replace("listen 127.0.0.1:8443", f"listen 127.0.0.1:{port}")
    )
    temp_paths = " ".join(
        f"{kind}_temp_path {work};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    config = write(
        work / "nginx.conf",
        f"""daemon off;
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/error.log info;
events {{ worker_connections 64; }}
http {{
  access_log off;
  {temp_paths}
{snippet}
}}
""".encode(),
    )
    process = subprocess.Popen(
        [nginx, "-c", str(config), "-p", str(work), "-e", str(work / "error.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for(port, process, "nginx")
        _check_common(port, tmp)
        # nginx cannot strip by prefix: a name outside the cleared list is denied instead.
        status, _ = _get(port, tmp, "good", {"X-SSL-Client-Whatever": "forged"})
        assert status == 403
        assert "certificate revoked" in (work / "error.log").read_text()
    finally:
        _stop(process)
    records = [r for r in _decisions(tmp) if r.get("proxy") == "nginx"]
    denied = [r for r in records if r["status"] == 403]
    assert any(
        r["identity"]["value"] == DENIED and r["codes"] == ["identity_not_authorized"]
        for r in denied
    )
    assert any(
        "x-ssl-client-whatever" in reason["message"] for r in denied for reason in r["reasons"]
    )
    assert any(r["status"] == 200 and r["rule"] and r["path"] == "/invoices?x=1" for r in records)


def test_haproxy_with_authz_server(stack):
    haproxy = require_program("haproxy")
    tmp = stack["tmp"]
    port = _free_port()
    work = tmp / "haproxy"
    work.mkdir()
    stack["cli"](
        "config",
        "haproxy",
        *stack["common"],
        "--listen",
        f"127.0.0.1:{port}",
        "--out",
        work / "haproxy.cfg",
    )
    check = subprocess.run(
        [haproxy, "-c", "-f", str(work / "haproxy.cfg")],
        check=False,
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    process = subprocess.Popen(
        [haproxy, "-db", "-f", str(work / "haproxy.cfg")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for(port, process, "haproxy")
        _check_common(port, tmp)
        # HAProxy deletes every spoofable name by regex: the request goes through, without it.
        status, body = _get(
            port, tmp, "good", {"X-SSL-Client-Whatever": "forged", "X_Client_Cert": "x"}
        )
        assert status == 200
        seen = json.loads(body)
        assert "x-ssl-client-whatever" not in seen and "x_client_cert" not in seen
    finally:
        _stop(process)
    records = [r for r in _decisions(tmp) if r.get("proxy") == "haproxy"]
    assert any(r["status"] == 200 and r["identity"]["value"] == ALLOWED for r in records)
    assert any(r["status"] == 403 and r["identity"]["value"] == DENIED for r in records)


def test_metrics_endpoint(stack):
    conn = http.client.HTTPConnection("127.0.0.1", stack["authz_port"], timeout=5)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    assert "# TYPE mtlskit_authz_checks_total counter" in text
    assert "mtlskit_authz_cache_hits_total" in text
