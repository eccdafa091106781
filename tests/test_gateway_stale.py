"""Open connections follow reloads, and keep-alive has an age limit (issue 27 item 4).

A real gateway and echo backend: a keep-alive connection that got 200 is denied on its
next request once its certificate is revoked (CRL rewritten, reload) or its allow rule is
removed (policy rewritten, reload); ``max_connection_age`` closes an old connection after
the request that finds it too old.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives.serialization import Encoding

from _gateway_support import EchoBackend, GatewayThread, Site, write_config
from conftest import SPIFFE_ID
from mtlskit.gateway._config import LimitsConfig
from mtlskit.testca import LeafSpec

GET = b"GET /invoices/1 HTTP/1.1\r\nHost: localhost\r\n\r\n"
POST = b"POST /invoices/1 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\nhi"
REQUESTS = {"get": GET, "post": POST}  # a GET parked is the callbacks'; a body, the task's


pytestmark = pytest.mark.attack("stale-connections")  # issue 27; reliability/redteam.py


@pytest.fixture(scope="module")
def server_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def site(tmp_path: Path, server_ca):
    backend = EchoBackend()
    yield Site(dir=tmp_path, server_ca=server_ca, backend=backend)
    backend.stop()


@pytest.fixture
def start(site, ca):
    running: list[GatewayThread] = []

    def go(body: str) -> GatewayThread:
        gateway = GatewayThread(write_config(site, ca.bundle_pem, body))
        running.append(gateway)
        return gateway

    yield go
    for gateway in running:
        gateway.stop()


def _response(tls: ssl.SSLSocket) -> tuple[int, bytes, bool]:
    """(status, head, whether the connection then closed) of one Content-Length response."""
    data = b""
    while b"\r\n\r\n" not in data:
        piece = tls.recv(65536)
        if not piece:
            return 0, b"", True  # closed without a response
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += tls.recv(65536)
    closed = b"connection: close" in head.lower()
    if closed:
        with contextlib.suppress(ssl.SSLError, ConnectionError):
            assert tls.recv(65536) == b""
    return int(head.split(b" ", 2)[1]), head, closed


def _keep_alive(site: Site, port: int, client):
    context = site.client_context(client)
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    return context.wrap_socket(sock, server_hostname="localhost")


@pytest.mark.parametrize("kind", ["get", "post"])
def test_a_revoked_certificate_is_refused_on_its_open_connection(site, start, ca, kind):
    leaf = ca.issue(LeafSpec(uris=(SPIFFE_ID,)))
    crl = site.dir / "issuing.crl"
    crl.write_bytes(ca.crl().public_bytes(Encoding.PEM))
    gateway = start('[client_auth]\ntrust = ["trust.pem"]\ncrls = ["issuing.crl"]\n')
    with _keep_alive(site, gateway.port, leaf) as tls:
        tls.sendall(GET)
        assert _response(tls)[:1] == (200,)
        time.sleep(0.1)  # parked between requests
        crl.write_bytes(ca.crl((leaf.cert.serial_number,)).public_bytes(Encoding.PEM))
        assert gateway.reload()
        seen = len(site.backend.seen)
        tls.sendall(REQUESTS[kind])
        status, _, closed = _response(tls)
        assert status == 403 and closed
    assert len(site.backend.seen) == seen  # the request never reached the backend
    record = site.wait_for_record(lambda r: r.get("status") == 403, which="access")
    assert record["code"] == "cert_revoked"


@pytest.mark.parametrize("kind", ["get", "post"])
def test_a_removed_allow_rule_denies_the_open_connection(site, start, clean_leaf, kind):
    policy = site.dir / "policy.toml"
    policy.write_text(f'[[allow]]\nid = "{SPIFFE_ID}"\n')
    gateway = start('[client_auth]\ntrust = ["trust.pem"]\npolicy = "policy.toml"\n')
    with _keep_alive(site, gateway.port, clean_leaf) as tls:
        tls.sendall(GET)
        assert _response(tls)[:1] == (200,)
        time.sleep(0.1)
        policy.write_text('[[allow]]\nid = "spiffe://acme.com/someone/else"\n')
        assert gateway.reload()
        seen = len(site.backend.seen)
        tls.sendall(REQUESTS[kind])
        assert _response(tls)[0] == 403
    assert len(site.backend.seen) == seen


def test_a_failed_reload_changes_nothing_for_open_connections(site, start, clean_leaf):
    policy = site.dir / "policy.toml"
    policy.write_text(f'[[allow]]\nid = "{SPIFFE_ID}"\n')
    gateway = start('[client_auth]\ntrust = ["trust.pem"]\npolicy = "policy.toml"\n')
    with _keep_alive(site, gateway.port, clean_leaf) as tls:
        tls.sendall(GET)
        assert _response(tls)[:1] == (200,)
        policy.write_text("[[allow]\nbroken")
        assert not gateway.reload()
        for _ in range(2):
            tls.sendall(GET)
            assert _response(tls)[:1] == (200,)


@pytest.mark.parametrize("kind", ["get", "post"])
def test_max_connection_age_closes_an_old_connection_after_its_request(
    site, start, clean_leaf, kind
):
    gateway = start('[client_auth]\ntrust = ["trust.pem"]\n[limits]\nmax_connection_age = 0.5\n')
    with _keep_alive(site, gateway.port, clean_leaf) as tls:
        tls.sendall(GET)
        status, _, closed = _response(tls)
        assert status == 200 and not closed
        time.sleep(0.7)
        tls.sendall(REQUESTS[kind])
        status, _, closed = _response(tls)
        assert status == 200 and closed  # served, then closed: the client reconnects


def test_max_connection_age_is_validated():
    assert LimitsConfig().max_connection_age == 600.0
    with pytest.raises(ValueError, match="max_connection_age"):
        LimitsConfig(max_connection_age=0)
