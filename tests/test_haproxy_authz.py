"""Real HAProxy configured by `mtlskit config haproxy` in front of a real `mtlskit authz-server`.

Three client CAs, as an operator with CRLs for only some of them has: CA "crl" has a
CRL (one of its clients revoked), CA "nocrl" has none, CA "nc" is a name-constrained
intermediate (DNS ``acme.com``) without CRL. By default the generated config leaves
revocation to authz-server, which checks the CRL of each CA it has one for, as the
gateway does: HAProxy's ``crl-file`` would refuse every chain with a CA that has none.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives.serialization import Encoding

from _gateway_support import EchoBackend, GatewayThread, Site, https_request, write_config
from _servers import free_port, stop, wait_for
from conftest import require_program, write
from mtlskit.testca import SERVER_AUTH, LeafSpec, TestCA
from test_authz_proxies import _Echo, _get

pytestmark = pytest.mark.integration

ALLOWED = "spiffe://acme.com/billing/payments"
CLIENTS = {
    # name: (CA, SAN DNS names)
    "good": ("crl", ()),
    "gone": ("crl", ()),
    "nocrl": ("nocrl", ()),
    "nc-inside": ("nc", ("api.acme.com",)),
    "nc-outside": ("nc", ("api.evil.com",)),
}


@contextlib.contextmanager
def _running(tmp: Path, *, proxy_crl: bool = False) -> Iterator[dict]:
    """CAs, clients, echo backend, authz-server and HAProxy from `mtlskit config`."""
    from mtlskit.cli import main

    cas = {
        "crl": TestCA(name="with crl"),
        "nocrl": TestCA(name="without crl"),
        "nc": TestCA(name="constrained", permitted_dns=("acme.com",)),
    }
    for name, ca in cas.items():
        write(tmp / f"{name}-root.pem", ca.root.cert_pem)
        write(tmp / f"{name}-issuing.pem", ca.issuer.cert_pem)
    issued = {}
    for name, (ca, dns) in CLIENTS.items():
        issued[name] = cas[ca].issue(LeafSpec(uris=(ALLOWED,), dns=dns))
        (tmp / name).mkdir()
        write(tmp / name / "chain.pem", issued[name].chain_pem)
        write(tmp / name / "key.pem", issued[name].key_pem)
    crl = cas["crl"].crl((issued["gone"].cert.serial_number,))
    write(tmp / "crl.pem", crl.public_bytes(Encoding.PEM))
    write(tmp / "policy.toml", b'[[allow]]\nid = "spiffe://acme.com/billing/*"\n')
    server_ca = TestCA(name="proxy server")
    server = server_ca.issue(LeafSpec(dns=("localhost",), eku=(SERVER_AUTH,)))
    write(tmp / "server.pem", server.chain_pem)
    write(tmp / "server.key", server.key_pem)
    write(tmp / "server-ca.pem", server_ca.bundle_pem)

    backend = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    authz_port, port = free_port(), free_port()
    args = ["config", "haproxy"]
    for name in cas:
        args += ["--trust", tmp / f"{name}-root.pem", "--intermediate", tmp / f"{name}-issuing.pem"]
    args += [
        "--crl", tmp / "crl.pem", "--policy", tmp / "policy.toml",
        "--server-cert", tmp / "server.pem", "--server-key", tmp / "server.key",
        "--upstream", f"http://127.0.0.1:{backend.server_address[1]}",
        "--authz", f"http://127.0.0.1:{authz_port}", "--listen", f"127.0.0.1:{port}",
        "--out", tmp / "haproxy.cfg", "--authz-config", tmp / "authz.toml",
    ]  # fmt: skip
    if proxy_crl:
        args.append("--proxy-crl")
    assert main([os.fspath(a) for a in args]) == 0
    authz = subprocess.Popen(
        [sys.executable, "-m", "mtlskit", "authz-server", "--config", tmp / "authz.toml"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(authz_port, authz, "authz-server")
        with run_haproxy(tmp / "haproxy.cfg") as running_port:
            assert running_port == port
            yield {
                "tmp": tmp,
                "port": port,
                "authz": authz,
                "authz_port": authz_port,
                "cas": cas,
                "issued": issued,
            }
    finally:
        stop(authz)
        backend.shutdown()
        backend.server_close()


@contextlib.contextmanager
def run_haproxy(config: Path) -> Iterator[int]:
    """Real HAProxy (foreground) on a `mtlskit config haproxy` file; yields its bind port.

    ``haproxy -c`` first, so a config HAProxy refuses fails with HAProxy's own words.
    HAProxy's stderr (its Lua warnings among it) goes to ``CONFIG.log``.
    """
    haproxy = require_program("haproxy")
    check = subprocess.run(
        [haproxy, "-c", "-f", config], check=False, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    port = int(re.search(r"^\s*bind [^ ]+:(\d+) ", config.read_text(), re.MULTILINE).group(1))
    with config.with_suffix(".log").open("wb") as log:
        process = subprocess.Popen(
            [haproxy, "-db", "-f", config], stdout=subprocess.DEVNULL, stderr=log
        )
        try:
            wait_for(port, process, "haproxy")
            yield port
        finally:
            stop(process)


@pytest.fixture(scope="module")
def haproxy_stack(tmp_path_factory):
    with _running(tmp_path_factory.mktemp("haproxy")) as running:
        yield running


def _status(stack: dict, client: str, headers: dict[str, str] | None = None) -> int | None:
    """The HTTP status, or None when the handshake was refused."""
    try:
        return _get(stack["port"], stack["tmp"], client, headers)[0]
    except OSError:  # ssl.SSLError and ConnectionError are OSErrors
        return None


def test_revocation_left_to_authz_server(haproxy_stack):
    config = (haproxy_stack["tmp"] / "haproxy.cfg").read_text().splitlines()
    (bind,) = [line for line in config if line.strip().startswith("bind ")]
    assert "crl-file" not in bind
    assert _status(haproxy_stack, "good") == 200
    assert _status(haproxy_stack, "gone") == 403  # revoked: authz-server's CRL check
    assert _status(haproxy_stack, "nocrl") == 200  # a CA without CRL loses no client


def test_name_constrained_pair_as_with_the_gateway(haproxy_stack, tmp_path):
    """Accepted or refused through HAProxy exactly as through `mtlskit gateway`, same trust."""
    trust = b"".join(
        (haproxy_stack["tmp"] / f"{name}-root.pem").read_bytes() for name in ("crl", "nocrl", "nc")
    )
    site = Site(dir=tmp_path, server_ca=trustme.CA(), backend=EchoBackend())
    gateway = GatewayThread(write_config(site, trust, '[client_auth]\ntrust = ["trust.pem"]\n'))
    request = b"GET /invoices HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    try:
        through_gateway = {}
        for name in ("nc-inside", "nc-outside"):
            context = site.client_context(haproxy_stack["issued"][name])
            try:
                answer = https_request(gateway.port, context, request)
                through_gateway[name] = answer.startswith(b"HTTP/1.1 200")
            except OSError:
                through_gateway[name] = False
    finally:
        gateway.stop()
        site.backend.stop()
    assert through_gateway == {"nc-inside": True, "nc-outside": False}
    assert _status(haproxy_stack, "nc-inside") == 200
    assert _status(haproxy_stack, "nc-outside") is None  # OpenSSL: name constraint violation


def test_proxy_crl_makes_haproxy_check_in_the_handshake(tmp_path):
    """``--proxy-crl``: HAProxy's crl-file, all or nothing (OpenSSL wants every CA's CRL)."""
    with _running(tmp_path, proxy_crl=True) as stack:
        assert _status(stack, "gone") is None
        assert _status(stack, "nocrl") is None  # its CA has no CRL in the file


# Client-sent identity headers, per family, in the spellings a client may use: HAProxy
# deletes them all (one del-header regex) and the request goes on with authz-server's.
SPOOF_FAMILIES = {
    "xfcc": ("X-Forwarded-Client-Cert", "x_forwarded_client_cert", "X-FORWARDED-CLIENT-CERT-X"),
    "gcp": (
        "X-Client-Cert-Present",
        "x-client-cert-chain-verified",
        "X_CLIENT_CERT_SPIFFE",
        "x-Client-Cert-Uri-Sans",
    ),
    "aws": (
        "X-Amzn-Mtls-Clientcert",
        "x-amzn-mtls-clientcert-leaf",
        "X_AMZN_MTLS_CLIENTCERT_SUBJECT",
    ),
    "rfc9440": ("Client-Cert", "Client-Cert-Chain", "client_cert", "CLIENT_CERT_CHAIN"),
    "x-ssl": ("X-SSL-Client-Cert", "x-ssl-client-verify", "X_SSL_CLIENT_S_DN", "X-Ssl-Anything"),
    "mtlskit": ("X-Mtlskit-Client-Identity", "x_mtlskit_client_verified", "X-MTLSKIT-HAPROXY-CERT"),
}


@pytest.mark.parametrize("family", sorted(SPOOF_FAMILIES))
def test_spoofed_identity_headers_never_reach_the_backend(haproxy_stack, family):
    sent = {name: "spiffe://acme.com/admin forged" for name in SPOOF_FAMILIES[family]}
    status, body = _get(haproxy_stack["port"], haproxy_stack["tmp"], "good", sent)
    assert status == 200, body
    seen = json.loads(body)
    assert not any("forged" in value for values in seen.values() for value in values), seen
    folded = {name.replace("_", "-") for name in seen}
    spoofed = {name.lower().replace("_", "-") for name in sent}
    # Only the headers authz-server returns come back under those names, with its values.
    assert folded & spoofed <= {"x-forwarded-client-cert", "x-mtlskit-client-identity",
                                "x-mtlskit-client-verified"}  # fmt: skip
    assert seen["x-mtlskit-client-identity"] == [ALLOWED]
    assert seen["x-mtlskit-client-verified"] == ["true"]


def test_reload_takes_effect_within_a_second_despite_the_cache(tmp_path):
    """The Lua keeps decisions for at most 1 s: a revocation or policy edit, then SIGHUP."""
    with _running(tmp_path) as stack:
        ctx = ssl.create_default_context(cafile=tmp_path / "server-ca.pem")
        ctx.load_cert_chain(tmp_path / "good" / "chain.pem", tmp_path / "good" / "key.pem")
        kept = http.client.HTTPSConnection("localhost", stack["port"], context=ctx, timeout=10)

        def on_kept_connection() -> int:
            kept.request("GET", "/invoices?x=1")
            response = kept.getresponse()
            response.read()
            return response.status

        try:
            assert [on_kept_connection() for _ in range(3)] == [200, 200, 200]
            assert _status(stack, "nocrl") == 200
            revoked = (stack["issued"]["gone"], stack["issued"]["good"])
            crl = stack["cas"]["crl"].crl(tuple(c.cert.serial_number for c in revoked))
            write(tmp_path / "crl.pem", crl.public_bytes(Encoding.PEM))
            write(tmp_path / "policy.toml", b'[[allow]]\nid = "spiffe://acme.com/other/*"\n')
            stack["authz"].send_signal(signal.SIGHUP)
            time.sleep(1.5)
            assert on_kept_connection() == 403  # revoked: same connection
            assert _status(stack, "good") == 403  # and a new one
            assert _status(stack, "nocrl") == 403  # the policy no longer allows it
        finally:
            kept.close()


def test_no_answer_from_authz_server_is_503_with_the_reason_in_the_log(tmp_path):
    """Fail closed, but as 503: a denial's 403 would tell client and operator the wrong thing."""
    with _running(tmp_path) as stack:
        assert _status(stack, "good") == 200
        stop(stack["authz"])
        # A client the Lua has no decision for: it has to ask, and nobody answers.
        assert _status(stack, "nocrl") == 503
        assert _status(stack, "gone") == 503  # not 403: nobody said it was revoked
        log = (tmp_path / "haproxy.log").read_text()
    assert f"no decision from authz-server http://127.0.0.1:{stack['authz_port']}/haproxy" in log
    assert "status 503" in log  # what HAProxy's HTTP client got: no server to connect to


def _checks(stack: dict) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", stack["authz_port"], timeout=5)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("mtlskit_authz_checks_total{")
    )


def test_keep_alive_requests_do_not_each_ask_authz_server(haproxy_stack):
    before = _checks(haproxy_stack)
    ctx = ssl.create_default_context(cafile=haproxy_stack["tmp"] / "server-ca.pem")
    client = haproxy_stack["tmp"] / "nocrl"
    ctx.load_cert_chain(client / "chain.pem", client / "key.pem")
    conn = http.client.HTTPSConnection("localhost", haproxy_stack["port"], context=ctx)
    try:
        for _ in range(20):
            conn.request("GET", "/cached")
            response = conn.getresponse()
            assert response.status == 200
            response.read()
    finally:
        conn.close()
    assert _checks(haproxy_stack) - before < 20  # one per second at most, not one per request
