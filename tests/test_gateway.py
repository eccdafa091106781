"""The gateway end to end: real TLS handshakes on 127.0.0.1, an echo backend, real logs."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import socket
import ssl
import subprocess
import time
import tomllib
from pathlib import Path

import httpx
import pytest
import trustme
from cryptography.hazmat.primitives.serialization import Encoding

from _gateway_support import (
    EchoBackend,
    GatewayThread,
    Site,
    https_exchange,
    https_request,
    write_config,
)
from conftest import SPIFFE_ID, require_program
from mtlskit.certs import chain_pem
from mtlskit.gateway._config import GatewayConfig, LimitsConfig
from mtlskit.testca import LeafSpec, TestCA
from mtlskit.verify import NO_INTERMEDIATE

GET = b"GET /hello HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


@pytest.fixture(scope="module")
def server_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def backend():
    server = EchoBackend()
    yield server
    server.stop()


@pytest.fixture
def site(tmp_path: Path, server_ca: trustme.CA, backend: EchoBackend) -> Site:
    return Site(dir=tmp_path, server_ca=server_ca, backend=backend)


@pytest.fixture
def start(site: Site, ca: TestCA):
    """Start a gateway for ``site`` with extra TOML; stopped at teardown."""
    running: list[GatewayThread] = []

    def go(body: str = "", *, trust: bytes | None = None, upstream: str | None = None):
        config = write_config(
            site,
            trust if trust is not None else ca.bundle_pem,
            body or '[client_auth]\ntrust = ["trust.pem"]\n',
            upstream=upstream,
        )
        gateway = GatewayThread(config)
        running.append(gateway)
        return gateway

    yield go
    for gateway in running:
        gateway.stop()


def _echo(response: bytes) -> tuple[int, dict[str, list[str]]]:
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if status != 200:
        return status, {}
    if b"transfer-encoding: chunked" in head.lower():
        out, rest = b"", body
        while True:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line, 16)
            if size == 0:
                break
            out, rest = out + rest[:size], rest[size + 2 :]
        body = out
    headers: dict[str, list[str]] = {}
    for key, value in json.loads(body)["headers"]:
        headers.setdefault(key.lower(), []).append(value)
    return status, headers


def test_good_client_reaches_backend_with_identity_headers(site, start, clean_leaf):
    gateway = start(
        '[client_auth]\ntrust = ["trust.pem"]\n[forward]\nformats = ["xfcc", "gcp", "aws", '
        '"rfc9440", "verdict"]\n'
    )
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        status, headers = _echo(
            https_request(gateway.port, site.client_context(clean_leaf, version=version), GET)
        )
        assert status == 200
        assert f"URI={SPIFFE_ID}" in headers["x-forwarded-client-cert"][0]
        assert headers["x-mtlskit-client-verified"] == ["true"]
        assert headers["x-mtlskit-client-identity"] == [SPIFFE_ID]
        assert headers["x-client-cert-present"] == ["true"]
        assert "x-amzn-mtls-clientcert-leaf" in headers
        assert headers["client-cert"][0].startswith(":")
        assert headers["x-forwarded-proto"] == ["https"]
        assert headers["x-forwarded-for"] == ["127.0.0.1"]
        assert "x-request-id" in headers
    record = site.wait_for_record(lambda r: r.get("verify") == "SUCCESS")
    assert record["identity"] == {"kind": "spiffe", "value": SPIFFE_ID}
    assert record["leaf"]["serial"] == f"{clean_leaf.cert.serial_number:x}"
    assert record["tls_version"] in ("TLSv1.2", "TLSv1.3")
    assert record["cipher"] and record["handshake_ms"] >= 0


def _read_response(tls: ssl.SSLSocket) -> bytes:
    """One Content-Length-framed response from a keep-alive connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += tls.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += tls.recv(65536)
    return head + b"\r\n\r\n" + body


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_no_client_certificate_gets_an_alert_in_reject_mode(site, start, version):
    gateway = start()
    message = _alert_raw(site, gateway.port, None, version)
    assert "CERTIFICATE_REQUIRED" in message or "HANDSHAKE_FAILURE" in message
    record = site.wait_for_record(lambda r: r.get("outcome") == "handshake_failed")
    assert record["code"] == "cert_not_provided"


def _alert_raw(site: Site, port: int, client, version) -> str:
    context = site.client_context(client, version=version)
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
            context.wrap_socket(sock, server_hostname="localhost") as tls,
        ):
            tls.sendall(GET)
            data = tls.recv(100)
            return f"no alert; got {data!r}"
    except (ssl.SSLError, ConnectionError) as exc:
        return str(exc)


def test_no_client_certificate_passes_with_verdict_in_allow_mode(site, start):
    gateway = start(
        '[client_auth]\nmode = "allow_invalid_or_missing"\ntrust = ["trust.pem"]\n'
        '[forward]\nformats = ["xfcc", "gcp", "verdict"]\n'
    )
    status, headers = _echo(https_request(gateway.port, site.client_context(None), GET))
    assert status == 200
    assert headers["x-mtlskit-client-present"] == ["false"]
    assert headers["x-mtlskit-client-verified"] == ["false"]
    assert headers["x-mtlskit-client-error"] == ["cert_not_provided"]
    assert "x-forwarded-client-cert" not in headers
    record = site.wait_for_record(lambda r: r.get("verify") == "NONE")
    assert record["code"] == "cert_not_provided"


def test_unknown_ca_gets_alert_unknown_ca(site, start):
    gateway = start()
    stranger = TestCA(name="stranger").issue(LeafSpec(uris=(SPIFFE_ID,)))
    message = _alert_raw(site, gateway.port, stranger, ssl.TLSVersion.TLSv1_3)
    assert "UNKNOWN_CA" in message
    record = site.wait_for_record(lambda r: r.get("outcome") == "handshake_failed")
    assert record["code"] == "chain_untrusted"
    assert record["openssl_verify_code"] in (20, 21, 2)


def _s_client(site: Site, port: int, *extra: str) -> subprocess.CompletedProcess[str]:
    ca_file = site.dir / "server-ca.pem"
    site.server_ca.cert_pem.write_to_path(str(ca_file))
    return subprocess.run(
        [
            require_program("openssl"), "s_client", "-connect", f"127.0.0.1:{port}",
            "-servername", "localhost", "-CAfile", str(ca_file), "-tls1_2", "-ign_eof", *extra,
        ],
        input="GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        capture_output=True, text=True, timeout=20, check=False,
    )  # fmt: skip


def test_leaf_without_intermediate_names_the_cause(site, start, clean_leaf):
    """Issue 28 item 5: ``s_client -cert`` without ``-cert_chain`` sends the leaf alone;
    the handshake still fails unknown_ca, and the connection log says why. (TLS 1.2: the
    alert is part of the handshake, so s_client reports it before it reads stdin's end.)"""
    gateway = start()
    _, key = site.write_client(clean_leaf, "leaf-only")
    leaf = site.dir / "leaf.pem"
    leaf.write_bytes(chain_pem([clean_leaf.cert]))
    refused = _s_client(site, gateway.port, "-cert", str(leaf), "-key", str(key))
    assert "unknown ca" in (refused.stdout + refused.stderr).lower()
    record = site.wait_for_record(lambda r: r.get("outcome") == "handshake_failed")
    assert record["code"] == "chain_untrusted"
    assert NO_INTERMEDIATE in record["detail"]
    assert "unable to get local issuer certificate" in record["detail"]
    # negative control: the same client with -cert_chain is let in
    chain = site.dir / "chain.pem"
    chain.write_bytes(chain_pem(clean_leaf.chain[:-1]))  # as `ca issue` writes chain.pem
    sent = _s_client(
        site, gateway.port, "-cert", str(leaf), "-key", str(key), "-cert_chain", str(chain)
    )
    assert "HTTP/1.1 200" in sent.stdout, sent.stderr


def test_expired_certificate_is_refused_with_its_code(site, start, ca):
    gateway = start()
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=10)
    expired = ca.issue(LeafSpec(uris=(SPIFFE_ID,), not_before=old, lifetime=dt.timedelta(days=1)))
    message = _alert_raw(site, gateway.port, expired, ssl.TLSVersion.TLSv1_2)
    assert "EXPIRED" in message
    record = site.wait_for_record(lambda r: r.get("outcome") == "handshake_failed")
    assert record["code"] == "cert_expired"


@pytest.mark.parametrize(
    ("spec", "code"),
    [
        (LeafSpec(uris=(SPIFFE_ID,), ca=True), "leaf_is_ca"),
        (LeafSpec(common_name="no-san", include_san=False), "san_missing"),
        (LeafSpec(uris=(SPIFFE_ID,), eku=None), "eku_missing_client_auth"),
    ],
    ids=["ca-true-leaf", "no-san", "no-eku"],
)
def test_second_gate_rejects_what_openssl_accepts(site, start, ca, spec, code):
    gateway = start()
    leaf = ca.issue(spec)
    response = https_request(gateway.port, site.client_context(leaf), GET)
    assert response.startswith(b"HTTP/1.1 403 ")
    assert code.encode() not in response  # the reason is for the operator only
    assert b"request id:" in response
    record = site.wait_for_record(lambda r: r.get("outcome") == "rejected")
    assert record["verify"] == f"FAILED:{code}"
    assert code in [reason["code"] for reason in record["reasons"]]
    access = site.wait_for_record(lambda r: r.get("status") == 403, which="access")
    assert access["code"] == code


def test_second_gate_failure_passes_with_verdict_in_allow_mode(site, start, ca):
    gateway = start('[client_auth]\nmode = "allow_invalid_or_missing"\ntrust = ["trust.pem"]\n')
    leaf = ca.issue(LeafSpec(uris=(SPIFFE_ID,), ca=True))
    status, headers = _echo(https_request(gateway.port, site.client_context(leaf), GET))
    assert status == 200
    assert headers["x-mtlskit-client-present"] == ["true"]
    assert headers["x-mtlskit-client-verified"] == ["false"]
    assert headers["x-mtlskit-client-error"] == ["leaf_is_ca"]
    assert "x-mtlskit-client-identity" not in headers


SPOOFED = (
    b"X-Forwarded-Client-Cert: By=evil;URI=spiffe://acme.com/admin\r\n"
    b"X-Client-Cert-Present: true\r\n"
    b"X-Client-Cert-Spiffe-Id: spiffe://acme.com/admin\r\n"
    b"X-Amzn-Mtls-Clientcert-Subject: CN=admin\r\n"
    b"Client-Cert: :AAAA:\r\n"
    b"X_SSL_Client_Cert: forged\r\n"
    b"X-Mtlskit-Client-Identity: spiffe://acme.com/admin\r\n"
    b"X-Mtlskit-Client-Verified: true\r\n"
    b"X-Forwarded-For: 10.9.9.9\r\n"
    b"X-Request-Id: chosen-by-client\r\n"
)


@pytest.mark.parametrize(
    ("mode", "with_cert"),
    [
        ("reject_invalid", True),
        ("allow_invalid_or_missing", True),
        ("allow_invalid_or_missing", False),  # reject mode refuses this one in the handshake
    ],
)
def test_spoofed_identity_headers_never_reach_the_backend(site, start, clean_leaf, mode, with_cert):
    gateway = start(
        f'[client_auth]\nmode = "{mode}"\ntrust = ["trust.pem"]\n[forward]\nformats = ["verdict"]\n'
    )
    request = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n" + SPOOFED + b"\r\n"
    client = clean_leaf if with_cert else None
    status, headers = _echo(https_request(gateway.port, site.client_context(client), request))
    assert status == 200
    text = json.dumps(headers).lower()
    assert "admin" not in text and "forged" not in text and "by=evil" not in text
    assert "x-forwarded-client-cert" not in headers  # not a configured format
    assert "client-cert" not in headers and "x_ssl_client_cert" not in headers
    assert headers["x-forwarded-for"] == ["127.0.0.1"]
    assert headers["x-request-id"] != ["chosen-by-client"]
    assert headers["x-mtlskit-client-verified"] == ["true" if with_cert else "false"]


def test_crl_reload_revokes_open_and_next_connections(site, start, ca):
    leaf = ca.issue(LeafSpec(uris=(SPIFFE_ID,)))
    crl = site.dir / "issuing.crl"
    crl.write_bytes(ca.crl().public_bytes(Encoding.PEM))
    gateway = start('[client_auth]\ntrust = ["trust.pem"]\ncrls = ["issuing.crl"]\n')
    keep = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
    context = site.client_context(leaf)
    with (
        socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock,
        context.wrap_socket(sock, server_hostname="localhost") as established,
    ):
        established.sendall(keep)
        assert _read_response(established).startswith(b"HTTP/1.1 200 ")
        crl.write_bytes(ca.crl((leaf.cert.serial_number,)).public_bytes(Encoding.PEM))
        assert gateway.reload()
        # the established connection's next request is decided again: refused, closed
        # (issue 27; tests/test_gateway_stale.py has the policy and age cases)...
        established.sendall(keep)
        assert _read_response(established).startswith(b"HTTP/1.1 403 ")
    # ...and the next connection (full handshake or resumption) is refused.
    response = https_request(gateway.port, context, GET)
    assert response.startswith(b"HTTP/1.1 403 ")
    record = site.wait_for_record(lambda r: r.get("verify") == "FAILED:cert_revoked")
    assert record["leaf"]["serial"] == f"{leaf.cert.serial_number:x}"


def test_policy_denies_per_route_with_a_generic_403(site, start, clean_leaf):
    (site.dir / "policy.toml").write_text(
        f'[[allow]]\nid = "{SPIFFE_ID}"\nroutes = ["GET /invoices"]\n'
    )
    gateway = start('[client_auth]\ntrust = ["trust.pem"]\npolicy = "policy.toml"\n')
    context = site.client_context(clean_leaf)
    ok = https_request(
        gateway.port, context, b"GET /invoices/7 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert ok.startswith(b"HTTP/1.1 200 ")
    denied = https_request(
        gateway.port, context, b"GET /admin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert denied.startswith(b"HTTP/1.1 403 ")
    assert b"identity_not_authorized" not in denied and b"request id:" in denied
    access = site.wait_for_record(lambda r: r.get("status") == 403, which="access")
    assert access["code"] == "identity_not_authorized"
    assert access["identity"] == SPIFFE_ID


def test_upstream_down_gives_502(site, start, clean_leaf):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    gateway = start(upstream=f"http://127.0.0.1:{dead}")
    response = https_request(gateway.port, site.client_context(clean_leaf), GET)
    assert response.startswith(b"HTTP/1.1 502 ")
    again = https_request(gateway.port, site.client_context(clean_leaf), GET)
    assert again.startswith((b"HTTP/1.1 502 ", b"HTTP/1.1 503 "))


def test_upstream_too_slow_gives_504(site, start, clean_leaf):
    gateway = start()
    request = b"GET /slow?s=3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    response = https_request(gateway.port, site.client_context(clean_leaf), request)
    assert response.startswith(b"HTTP/1.1 504 ")


def test_slow_client_times_out(site, start):
    gateway = start('[client_auth]\ntrust = ["trust.pem"]\n[limits]\nhandshake_timeout = 0.5\n')
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        began = time.monotonic()
        assert sock.recv(10) == b""  # closed by the gateway, no bytes sent
        assert time.monotonic() - began < 3
    record = site.wait_for_record(lambda r: r.get("outcome") == "handshake_timeout")
    assert record["verify"] == "NONE"


def test_idle_keep_alive_connection_times_out(site, start, clean_leaf):
    gateway = start('[client_auth]\ntrust = ["trust.pem"]\n[limits]\nidle_timeout = 0.5\n')
    context = site.client_context(clean_leaf)
    with (
        socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock,
        context.wrap_socket(sock, server_hostname="localhost") as tls,
    ):
        tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Partial: ")  # never finished
        assert tls.recv(65536).startswith(b"HTTP/1.1 408 ")


def _recv_all(tls: ssl.SSLSocket) -> bytes:
    """Everything until the gateway closes (EOF or reset)."""
    out = b""
    try:
        while chunk := tls.recv(65536):
            out += chunk
    except (ssl.SSLError, ConnectionError):
        pass
    return out


def _read_response(tls: ssl.SSLSocket) -> bytes:
    """One Content-Length response (head and body may come in separate TLS records)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += tls.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += tls.recv(65536)
    return data


def test_a_silent_idle_connection_is_closed_by_the_shared_sweep(site, start, clean_leaf):
    """Idle without a byte, a connection has no task (issue 6); the sweep still closes it."""
    gateway = start('[client_auth]\ntrust = ["trust.pem"]\n[limits]\nidle_timeout = 0.5\n')
    context = site.client_context(clean_leaf)
    with (
        socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock,
        context.wrap_socket(sock, server_hostname="localhost") as tls,
    ):
        assert _recv_all(tls) == b""  # closed with no response: nothing was asked


def test_a_parked_connection_serves_its_next_requests(site, start, clean_leaf):
    """Keep-alive across idle gaps: each request wakes the parked connection again."""
    gateway = start('[client_auth]\ntrust = ["trust.pem"]\n[limits]\nidle_timeout = 5.0\n')
    context = site.client_context(clean_leaf)
    keep = b"GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n"
    with (
        socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock,
        context.wrap_socket(sock, server_hostname="localhost") as tls,
    ):
        for _ in range(3):
            time.sleep(0.2)  # parked by now
            tls.sendall(keep)
            assert _read_response(tls).startswith(b"HTTP/1.1 200 ")
        tls.sendall(GET)
        assert _recv_all(tls).startswith(b"HTTP/1.1 200 ")


def test_drain_closes_parked_idle_connections(site, ca, clean_leaf):
    """Drain resumes each parked connection, which then closes (issue 6's parking)."""
    config = write_config(site, ca.bundle_pem, '[client_auth]\ntrust = ["trust.pem"]\n')
    running = GatewayThread(config)
    context = site.client_context(clean_leaf)
    try:
        with (
            socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock,
            context.wrap_socket(sock, server_hostname="localhost") as tls,
        ):
            site.wait_for_record(lambda r: r.get("outcome") == "accepted")
            running.call(running.gateway.drain(timeout=5))
            assert _recv_all(tls) == b""
            assert not running.gateway.connections
    finally:
        running.stop()


@pytest.mark.parametrize(
    ("extra", "status"),
    [
        (b"X-Big: " + b"a" * 20000 + b"\r\n", 431),
        (b"".join(b"X-H%d: v\r\n" % i for i in range(150)), 431),
    ],
    ids=["header-bytes", "header-count"],
)
def test_oversized_headers_are_refused(site, start, clean_leaf, extra, status):
    gateway = start()
    request = b"GET / HTTP/1.1\r\nHost: x\r\n" + extra + b"\r\n"
    response = https_request(gateway.port, site.client_context(clean_leaf), request)
    assert response.startswith(b"HTTP/1.1 %d " % status)


def test_a_head_over_the_field_limit_in_pieces_is_refused(site, start, clean_leaf):
    """The field limits are checked per read as well as per head: 150 fields sent in
    three writes, none of which completes the head, are refused before it ends."""
    gateway = start()
    fields = [b"X-H%d: v\r\n" % i for i in range(150)]
    with (
        socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock,
        site.client_context(clean_leaf).wrap_socket(sock, server_hostname="localhost") as tls,
    ):
        tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(fields[:50]))
        time.sleep(0.05)
        tls.sendall(b"".join(fields[50:100]))
        time.sleep(0.05)
        tls.sendall(b"".join(fields[100:]))  # the head is still open: no blank line
        assert _recv_all(tls).startswith(b"HTTP/1.1 431 ")


@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        b"Content-Length: 5\r\nContent-Length: 5\r\n",
        b"Content-Length: 5, 5\r\n",
        b"Transfer-Encoding: gzip, chunked\r\n",
    ],
    ids=["cl-and-te", "duplicate-cl", "cl-list", "te-not-chunked"],
)
def test_request_smuggling_guards(site, start, clean_leaf, framing):
    gateway = start()
    request = (
        b"POST / HTTP/1.1\r\nHost: x\r\n" + framing + b"\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n"
    )
    response = https_request(gateway.port, site.client_context(clean_leaf), request)
    assert response.startswith(b"HTTP/1.1 400 ")
    assert b"smuggled" not in response
    assert response.count(b"HTTP/1.1") == 1  # closed after the 400


def test_body_too_large_is_413(site, start, clean_leaf):
    gateway = start('[client_auth]\ntrust = ["trust.pem"]\n[limits]\nmax_body_bytes = 1000\n')
    request = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000
    response = https_request(gateway.port, site.client_context(clean_leaf), request)
    assert response.startswith(b"HTTP/1.1 413 ")


def test_keep_alive_chunked_bodies_and_streaming(site, start, clean_leaf):
    gateway = start()
    context = site.client_context(clean_leaf)
    body = b"z" * 300_000
    chunked = b"".join(b"%x\r\n" % len(p) + p + b"\r\n" for p in (body[:100_000], body[100_000:]))
    with httpx.Client(verify=context, base_url=f"https://localhost:{gateway.port}") as client:
        for _ in range(3):
            response = client.get("/chunked")  # upstream answers chunked
            assert response.status_code == 200
            assert response.json()["path"] == "/chunked"
        response = client.post("/upload", content=body)
        assert response.json()["body_bytes"] == len(body)
    request = (
        b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        + chunked
        + b"0\r\n\r\n"
    )
    status, _ = _echo(https_request(gateway.port, context, request))
    assert status == 200
    echoed = https_request(gateway.port, context, request)
    payload = json.loads(echoed.partition(b"\r\n\r\n")[2])
    assert payload["body_bytes"] == len(body)
    assert payload["body_sha"] == hashlib.sha256(body).hexdigest()
    accepted = [r for r in site.flushed_records() if r.get("verify") == "SUCCESS"]
    assert len(accepted) == 3  # httpx: one connection for four requests, then two more


def test_curl_reaches_the_backend(site, start, clean_leaf):
    curl = require_program("curl")
    gateway = start()
    cert, key = site.write_client(clean_leaf, "curl-client")
    ca_file = site.dir / "server-ca.pem"
    site.server_ca.cert_pem.write_to_path(str(ca_file))
    result = subprocess.run(
        [
            curl, "-sS", "--cacert", str(ca_file), "--cert", str(cert), "--key", str(key),
            "--resolve", f"localhost:{gateway.port}:127.0.0.1",
            "-H", "X-Forwarded-Client-Cert: By=evil",
            f"https://localhost:{gateway.port}/curl",
        ],
        capture_output=True, text=True, timeout=20, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    headers = {k.lower(): v for k, v in json.loads(result.stdout)["headers"]}
    assert headers["x-mtlskit-client-identity"] == SPIFFE_ID
    assert "by=evil" not in headers["x-forwarded-client-cert"].lower()
    # negative control: the same curl without a certificate is refused in the handshake
    refused = subprocess.run(
        [
            curl, "-sS", "--cacert", str(ca_file),
            "--resolve", f"localhost:{gateway.port}:127.0.0.1",
            f"https://localhost:{gateway.port}/curl",
        ],
        capture_output=True, text=True, timeout=20, check=False,
    )  # fmt: skip
    assert refused.returncode != 0


@pytest.mark.parametrize(
    "version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls1.2", "tls1.3"]
)
def test_resumed_session_keeps_the_identity(site, start, clean_leaf, version):
    """TLS 1.3 too: the gateway issues one ticket per handshake (``num_tickets = 1``)."""
    gateway = start('[client_auth]\ntrust = ["trust.pem"]\n[forward]\nformats = ["verdict"]\n')
    context = site.client_context(clean_leaf, version=version)
    session = None
    for _ in range(2):
        out, session, resumed = https_exchange(gateway.port, context, GET, session=session)
        status, headers = _echo(out)
        assert status == 200
        assert headers["x-mtlskit-client-identity"] == [SPIFFE_ID]
    assert resumed
    record = site.wait_for_record(lambda r: r.get("resumed") is True)
    assert record["verify"] == "SUCCESS" and record["leaf"]["serial"]


def test_metrics_endpoint(site, start, clean_leaf):
    gateway = start('[client_auth]\ntrust = ["trust.pem"]\n[metrics]\naddress = "127.0.0.1:0"\n')
    https_request(gateway.port, site.client_context(clean_leaf), GET)
    _alert_raw(site, gateway.port, None, ssl.TLSVersion.TLSv1_3)
    host, port = gateway.gateway.metrics_address
    text = httpx.get(f"http://{host}:{port}/metrics").text
    assert 'mtlskit_gateway_handshakes_total{outcome="ok",code=""} 1' in text
    assert 'outcome="failed",code="cert_not_provided"' in text
    assert 'mtlskit_gateway_requests_total{status="200"} 1' in text
    assert "mtlskit_gateway_upstream_latency_seconds_count 1" in text
    assert "mtlskit_gateway_open_connections" in text


def test_bad_config_is_exit_2_naming_the_key(run_cli, tmp_path):
    config = tmp_path / "gateway.toml"
    config.write_text(
        '[listen]\ncert = "s.pem"\nkey = "s.key"\ncolour = "blue"\n[upstream]\nurls = ["http://127.0.0.1:1"]\n'
    )
    result = run_cli("gateway", "--config", config)
    assert result.code == 2
    assert "unknown key 'listen.colour'" in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_the_readmes_gateway_toml_is_a_valid_config():
    """The README's annotated gateway.toml names only keys and values the gateway takes."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    block = next(
        part.split("```", 1)[0]
        for part in readme.split("```toml\n")[1:]
        if part.startswith("# gateway.toml")
    )
    config = GatewayConfig.model_validate(tomllib.loads(block))
    assert config.upstream.pool_size == 256 and config.limits == LimitsConfig()
    assert config.listen.workers == "auto" and config.reload.poll_interval == 2.0


def test_missing_file_in_config_is_exit_2(run_cli, tmp_path):
    config = tmp_path / "gateway.toml"
    config.write_text(
        '[listen]\ncert = "s.pem"\nkey = "s.key"\n[client_auth]\ntrust = ["nope.pem"]\n'
        '[upstream]\nurls = ["http://127.0.0.1:1"]\n'
    )
    result = run_cli("gateway", "--config", config, "--check")
    assert result.code == 2
    assert str(tmp_path / "nope.pem") in result.err


@pytest.mark.parametrize("version", [(3, 3), (3, 4)], ids=["tls1.2", "tls1.3"])
def test_copied_certificate_with_a_foreign_key_gets_decrypt_error(site, start, clean_leaf, version):
    """Proof of possession: tlslite-ng presents the real chain but signs with another key."""
    tlslite = pytest.importorskip("tlslite")
    from tlslite.constants import AlertDescription
    from tlslite.errors import TLSRemoteAlert

    from mtlskit.certs import generate_private_key, private_key_pem

    gateway = start()
    chain = tlslite.X509CertChain()
    chain.parsePemList(clean_leaf.chain_pem.decode())
    foreign = tlslite.parsePEMKey(
        private_key_pem(generate_private_key("ec-p256")).decode(), private=True
    )
    settings = tlslite.HandshakeSettings()
    settings.minVersion = settings.maxVersion = version
    settings.certificate_compression_send = []  # else OpenSSL 3.0 fails TLS 1.3 client certs
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        connection = tlslite.TLSConnection(sock)
        with pytest.raises(TLSRemoteAlert) as info:  # the alert may come on read
            connection.handshakeClientCert(
                chain, foreign, settings=settings, serverName="localhost"
            )
            connection.write(GET)
            connection.read()
    assert info.value.description == AlertDescription.decrypt_error
    record = site.wait_for_record(lambda r: r.get("outcome") == "handshake_failed")
    assert record["code"] == "proof_of_possession_failed"
    # negative control: the same tlslite client with the real key gets through
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        connection = tlslite.TLSConnection(sock)
        real = tlslite.parsePEMKey(clean_leaf.key_pem.decode(), private=True)
        connection.handshakeClientCert(chain, real, settings=settings, serverName="localhost")
        connection.write(GET)
        assert connection.read().startswith(b"HTTP/1.1 200 ")


def test_subprocess_sighup_reloads_and_sigterm_drains(site, ca):
    """The real command: SIGHUP re-reads the CRL, SIGTERM exits 0 after draining."""
    import os
    import signal
    import sys

    leaf = ca.issue(LeafSpec(uris=(SPIFFE_ID,)))
    crl = site.dir / "issuing.crl"
    crl.write_bytes(ca.crl().public_bytes(Encoding.PEM))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = write_config(
        site, ca.bundle_pem, '[client_auth]\ntrust = ["trust.pem"]\ncrls = ["issuing.crl"]\n'
    )
    config.write_text(config.read_text().replace("127.0.0.1:0", f"127.0.0.1:{port}"))
    process = subprocess.Popen(
        [sys.executable, "-m", "mtlskit", "gateway", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        site.wait_for_record(lambda r: r.get("event") == "start")
        context = site.client_context(leaf)
        assert https_request(port, context, GET).startswith(b"HTTP/1.1 200 ")
        crl.write_bytes(ca.crl((leaf.cert.serial_number,)).public_bytes(Encoding.PEM))
        os.kill(process.pid, signal.SIGHUP)
        site.wait_for_record(lambda r: r.get("event") == "reload" and r["ok"])
        assert https_request(port, context, GET).startswith(b"HTTP/1.1 403 ")
        os.kill(process.pid, signal.SIGTERM)
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
        process.stdout.close()
        process.stderr.close()


def test_file_change_polling_reloads_the_policy(site, start, clean_leaf):
    (site.dir / "policy.toml").write_text('[[allow]]\nid = "spiffe://acme.com/nobody"\n')
    gateway = start(
        '[client_auth]\ntrust = ["trust.pem"]\npolicy = "policy.toml"\n'
        "[reload]\npoll_interval = 0.1\n"
    )
    context = site.client_context(clean_leaf)
    assert https_request(gateway.port, context, GET).startswith(b"HTTP/1.1 403 ")
    (site.dir / "policy.toml").write_text(f'[[allow]]\nid = "{SPIFFE_ID}"\n# changed\n')
    site.wait_for_record(lambda r: r.get("event") == "reload" and r["ok"])
    assert https_request(gateway.port, context, GET).startswith(b"HTTP/1.1 200 ")


def test_a_broken_reload_keeps_the_old_generation(site, start, clean_leaf):
    gateway = start(
        '[client_auth]\ntrust = ["trust.pem"]\ncrls = ["issuing.crl"]\n'.replace(
            'crls = ["issuing.crl"]\n', ""
        )
    )
    (site.dir / "trust.pem").write_text("not a certificate")
    assert not gateway.reload()
    assert https_request(gateway.port, site.client_context(clean_leaf), GET).startswith(
        b"HTTP/1.1 200 "
    )
    record = site.wait_for_record(lambda r: r.get("event") == "reload")
    assert record["ok"] is False and "trust.pem" in record["error"]
