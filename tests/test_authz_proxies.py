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
import re
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from contextlib import AbstractContextManager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from _servers import free_port as _free_port
from _servers import nginx
from _servers import stop as _stop
from _servers import wait_for as _wait_for
from conftest import require_program, write
from mtlskit.authzserver._decide import NGINX_SHORT_NAMES, nginx_answer_name
from mtlskit.forward import HeaderFormat, is_spoofable
from mtlskit.forward.names import identity_header_names
from mtlskit.proxyconfig._setup import forwarded_names
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
    # A second CA that publishes no CRL, its issuing CA name-constrained to acme.com: the
    # pair inside and outside the constraint, as in the battery of issue 25.
    constrained = TestCA(name="constrained", permitted_dns=("acme.com",))
    write(tmp / "nc-root.pem", constrained.root.cert_pem)
    write(tmp / "nc-issuing.pem", constrained.issuer.cert_pem)
    for name, dns in (("nc-inside", "payments.acme.com"), ("nc-outside", "payments.evil.com")):
        leaf = constrained.issue(LeafSpec(uris=(ALLOWED,), dns=(dns,)))
        (tmp / name).mkdir()
        write(tmp / name / "chain.pem", leaf.chain_pem)
        write(tmp / name / "key.pem", leaf.key_pem)

    backend = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    authz_port = _free_port()
    common = [
        "--trust", ca / "root.pem", "--intermediate", ca / "issuing.pem",
        "--trust", tmp / "nc-root.pem", "--intermediate", tmp / "nc-issuing.pem",
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

    # Revocation is authz-server's (no --proxy-crl): the revoked client gets its 403, and a
    # client of the CA without a CRL is let in (a proxy CRL file would refuse it).
    assert _get(port, tmp, "gone")[0] == 403
    status, body = _get(port, tmp, "nc-inside")
    assert status == 200, body
    assert json.loads(body)["x-mtlskit-client-identity"] == [ALLOWED]
    try:  # outside its CA's name constraint: the proxy's OpenSSL or authz-server refuses it
        status, body = _get(port, tmp, "nc-outside")
    except (ssl.SSLError, ConnectionError):
        return seen
    assert status in (400, 403), body
    return seen


def _decisions(tmp: Path) -> list[dict]:
    return [json.loads(line) for line in (tmp / "decisions.log").read_text().splitlines()]


def run_nginx(snippet: Path, work: Path) -> AbstractContextManager[int]:
    """A `mtlskit config nginx` snippet in _servers.nginx, its ``listen`` moved to a fresh
    port; yields the port. SIGHUP to ``work/nginx.pid`` reloads it."""
    port = _free_port()
    text = snippet.read_text()
    listen = re.search(r"listen (\S+) ssl;", text)
    assert listen is not None
    return nginx(
        work, http=text.replace(listen.group(0), f"listen 127.0.0.1:{port} ssl;"), port=port
    )


def test_nginx_with_authz_server(stack):
    tmp = stack["tmp"]
    with run_nginx(tmp / "authz-nginx.conf", tmp / "nginx") as port:
        _check_common(port, tmp)
        # nginx cannot strip by prefix: a name no reader knows passes as any header would,
        # and the check never sees client headers (so nothing outside the cache key counts).
        status, body = _get(port, tmp, "good", {"X-SSL-Client-Whatever": "x"})
        assert status == 200, body
        assert json.loads(body)["x-ssl-client-whatever"] == ["x"]
    records = [r for r in _decisions(tmp) if r.get("proxy") == "nginx"]
    denied = [r for r in records if r["status"] == 403]
    assert any(
        r["identity"]["value"] == DENIED and r["codes"] == ["identity_not_authorized"]
        for r in denied
    )
    assert any(r["status"] == 200 and r["rule"] and r["path"] == "/invoices?x=1" for r in records)
    assert any(r["status"] == 403 and r["codes"] == ["cert_revoked"] for r in records)


def test_nginx_proxy_crl_refuses_in_the_handshake_and_every_ca_needs_one(stack):
    """--proxy-crl: nginx's ssl_crl refuses the revoked client with 400 itself, and also the
    client of the CA that has no CRL (OpenSSL: "unable to get certificate CRL")."""
    tmp = stack["tmp"]
    stack["cli"](
        "config", "nginx", *stack["common"], "--proxy-crl", "--out", tmp / "crl-nginx.conf"
    )
    with run_nginx(tmp / "crl-nginx.conf", tmp / "nginx-crl") as port:
        assert _get(port, tmp, "good")[0] == 200
        assert _get(port, tmp, "gone")[0] == 400
        assert _get(port, tmp, "nc-inside")[0] == 400
    log = (tmp / "nginx-crl" / "error.log").read_text()
    assert "certificate revoked" in log and "unable to get certificate CRL" in log


def _families() -> dict[str, tuple[str, ...]]:
    from mtlskit.forward import ForwardConfig, HeaderFormat
    from mtlskit.forward import names as n

    return {
        "xfcc": (n.XFCC,),
        "gcp": ForwardConfig().gcp.names(),
        "aws": (n.AWS_CHAIN, n.AWS_LEAF, n.AWS_SERIAL, n.AWS_ISSUER, n.AWS_SUBJECT, n.AWS_VALIDITY),
        "rfc9440": (n.CLIENT_CERT, n.CLIENT_CERT_CHAIN),
        "nginx-x-ssl": n.X_SSL_NAMES,
        "verdict": n.written_by((HeaderFormat.VERDICT,)),
    }


@pytest.fixture(scope="module")
def generated_nginx(stack):
    with run_nginx(stack["tmp"] / "authz-nginx.conf", stack["tmp"] / "nginx-families") as port:
        yield port


@pytest.mark.attack("forged-identity-headers")
@pytest.mark.parametrize("family", ["xfcc", "gcp", "aws", "rfc9440", "nginx-x-ssl", "verdict"])
def test_nginx_each_header_family_in_every_spelling(stack, generated_nginx, family):
    """What the backend sees behind the generated nginx config (forwarding xfcc + verdict)
    when a legitimate client sends a family's names forged, in lower, upper and `_`
    spellings: nothing of the client's. A name of the family's prefix that no reader knows
    passes as any other header (nginx cannot drop by prefix; nothing reads it)."""
    names = _families()[family]
    forged = {}
    for name in names:
        forged[name.lower()] = "forged-lower"
        forged[name.upper()] = "forged-upper"
        forged[name.replace("-", "_")] = "forged-underscore"
    unknown = names[0] + "-Made-Up"
    forged[unknown] = "not-an-identity"
    status, body = _get(generated_nginx, stack["tmp"], "good", forged)
    assert status == 200, body
    seen = json.loads(body)
    values = [value for received in seen.values() for value in received]
    assert not [value for value in values if value.startswith("forged")], seen
    assert not [name for name in seen if "_" in name], seen  # nginx dropped `_` spellings
    assert seen[unknown.lower()] == ["not-an-identity"]
    if family == "xfcc":  # forwarded: authz-server's value replaced the forged ones
        (xfcc,) = seen["x-forwarded-client-cert"]
        assert f"URI={ALLOWED}" in xfcc
    elif family == "verdict":  # forwarded too
        assert seen["x-mtlskit-client-identity"] == [ALLOWED]
    else:
        assert not set(seen) & {name.lower() for name in names}, seen


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


def _nginx_check(stack, query: str) -> tuple[int, list[tuple[str, str]]]:
    """One check as the generated nginx config sends it, for the allowed client."""
    pem = (stack["tmp"] / "good" / "cert.pem").read_bytes()
    escaped = urllib.parse.quote(pem.decode(), safe="")
    conn = http.client.HTTPConnection("127.0.0.1", stack["authz_port"], timeout=5)
    conn.request(
        "GET",
        "/nginx" + query,
        headers={
            "X-Mtlskit-Nginx-Cert": escaped,
            "X-Mtlskit-Nginx-Verify": "SUCCESS",
            "X-Mtlskit-Original-Method": "GET",
            "X-Mtlskit-Original-Uri": "/invoices",
        },
    )
    response = conn.getresponse()
    response.read()
    conn.close()
    return response.status, [(k.lower(), v) for k, v in response.getheaders()]


def test_nginx_answer_under_short_names_only_when_asked(stack):
    """The generated config asks for ``names=short``; a config from before still reads the
    full names. Same values either way, each under the name the config looks up."""
    status, full = _nginx_check(stack, "")
    assert status == 200
    assert ("x-mtlskit-client-identity", ALLOWED) in full
    status, short = _nginx_check(stack, "?" + NGINX_SHORT_NAMES)
    assert status == 200
    assert (nginx_answer_name("X-Mtlskit-Client-Identity"), ALLOWED) in short
    identity = [(k, v) for k, v in full if k.startswith("x-")]
    assert [(nginx_answer_name(k), v) for k, v in identity] == [
        (k, v) for k, v in short if k.startswith("m")
    ]
    assert not any(k.startswith("x-") for k, _ in short)
    config = (stack["tmp"] / "authz-nginx.conf").read_text()
    assert f"/nginx?{NGINX_SHORT_NAMES};" in config
    assert f"$upstream_http_{nginx_answer_name('X-Mtlskit-Client-Identity')};" in config


def test_short_answer_names_are_distinct_and_never_an_identity_name():
    names = {n.lower() for n in identity_header_names()} | {
        n.lower() for f in HeaderFormat for n in forwarded_names((f,))
    }
    short = {nginx_answer_name(n) for n in names}
    assert len(short) == len(names)
    assert not any(is_spoofable(s) for s in short)


def test_nginx_no_answer_from_authz_server_is_503(stack):
    """Fail closed, as the HAProxy config does: 503, not auth_request's 500 nor a denial's 403."""
    tmp = stack["tmp"]
    stack["cli"](
        "config", "nginx", *stack["common"], "--authz", f"http://127.0.0.1:{_free_port()}",
        "--authz-config", tmp / "dead.toml", "--out", tmp / "dead-nginx.conf",
    )  # fmt: skip
    with run_nginx(tmp / "dead-nginx.conf", tmp / "nginx-dead") as port:
        assert _get(port, tmp, "good")[0] == 503
        assert _get(port, tmp, "nc-inside")[0] == 503
    assert "auth request unexpected status: 502" in (tmp / "nginx-dead" / "error.log").read_text()


def test_authz_server_outlasts_the_proxies_idle_connections(stack):
    """An idle keep-alive connection from a proxy stays open past uvicorn's default 5 s, so
    the proxy (nginx: 60 s) closes it, never authz-server while a check is on its way."""
    conn = http.client.HTTPConnection("127.0.0.1", stack["authz_port"], timeout=5)
    try:
        for pause in (0, 6):
            time.sleep(pause)
            conn.request("GET", "/healthz")
            response = conn.getresponse()
            assert (response.status, response.read()) == (200, b"ok\n")
    finally:
        conn.close()
