"""What the gateway says about the client is its own (issue 27 item 9).

A real gateway and echo backend: ``Connection: host`` never takes the Host field away
from the upstream request, and client-sent client-address headers (X-Real-IP,
X-Forwarded-*, Forwarded, True-Client-IP, underscore spellings) never reach the backend;
the backend sees the gateway's X-Forwarded-For and X-Forwarded-Proto only.
"""

from __future__ import annotations

import json
import socket
import ssl
import time
from pathlib import Path

import pytest
import trustme

from _gateway_support import EchoBackend, GatewayThread, Site, write_config
from mtlskit.testca import SERVER_AUTH, LeafSpec

FORGED = [
    (b"X-Real-IP", b"10.6.6.6"),
    (b"X-Forwarded-For", b"10.6.6.6"),
    (b"X_Forwarded_For", b"10.6.6.6"),  # WSGI/CGI read it as X-Forwarded-For
    (b"x-real_ip", b"10.6.6.6"),
    (b"Forwarded", b"for=10.6.6.6;proto=https"),
    (b"X-Forwarded-Proto", b"gopher"),
    (b"X-Forwarded-Host", b"evil.example"),
    (b"X-Forwarded-Port", b"6666"),
    (b"X-Forwarded-Server", b"evil.example"),
    (b"X-Forwarded-Prefix", b"/evil"),
    (b"True-Client-IP", b"10.6.6.6"),
    (b"X-Client-IP", b"10.6.6.6"),
    (b"X-Cluster-Client-IP", b"10.6.6.6"),
    (b"CF-Connecting-IP", b"10.6.6.6"),
    (b"Fastly-Client-IP", b"10.6.6.6"),
    (b"X-Original-Forwarded-For", b"10.6.6.6"),
    (b"X-Originating-IP", b"10.6.6.6"),
]


pytestmark = pytest.mark.attack("hop-by-hop-headers")  # issue 27; reliability/redteam.py


@pytest.fixture(scope="module")
def server_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def gateway(tmp_path: Path, server_ca, ca):
    backend = EchoBackend()
    site = Site(dir=tmp_path, server_ca=server_ca, backend=backend)
    running = GatewayThread(
        write_config(site, ca.bundle_pem, '[client_auth]\ntrust = ["trust.pem"]\n')
    )
    yield site, running
    running.stop()
    backend.stop()


def _response(tls: ssl.SSLSocket) -> tuple[int, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        piece = tls.recv(65536)
        assert piece, data
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += tls.recv(65536)
    return int(head.split(b" ", 2)[1]), body


def _echoed(site: Site, port: int, client, request: bytes, via: str) -> list[list[str]]:
    """The header fields the backend received for ``request``: as a connection's first
    request (its task), or on a kept-alive connection parked after one (the fast path)."""
    context = site.client_context(client)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
        context.wrap_socket(sock, server_hostname="localhost") as tls,
    ):
        if via == "parked":
            tls.sendall(b"GET /warm HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert _response(tls)[0] == 200
            time.sleep(0.1)
        tls.sendall(request)
        status, body = _response(tls)
    assert status == 200
    return json.loads(body)["headers"]


def _request(*fields: tuple[bytes, bytes]) -> bytes:
    lines = b"".join(name + b": " + value + b"\r\n" for name, value in fields)
    return b"GET /who HTTP/1.1\r\n" + lines + b"\r\n"


@pytest.mark.parametrize("via", ["first", "parked"])
@pytest.mark.parametrize("connection", [b"host", b"Host, keep-alive", b"keep-alive, HOST"])
def test_connection_naming_host_never_drops_host(gateway, clean_leaf, connection, via):
    site, running = gateway
    request = _request((b"Host", b"app.example"), (b"Connection", connection))
    headers = _echoed(site, running.port, clean_leaf, request, via)
    assert [value for name, value in headers if name.lower() == "host"] == ["app.example"]


@pytest.mark.parametrize("via", ["first", "parked"])
def test_client_address_headers_are_the_gateways_own(gateway, clean_leaf, via):
    site, running = gateway
    request = _request((b"Host", b"localhost"), *FORGED)
    headers = _echoed(site, running.port, clean_leaf, request, via)
    assert "10.6.6.6" not in json.dumps(headers) and "evil" not in json.dumps(headers)
    assert "gopher" not in json.dumps(headers) and "6666" not in json.dumps(headers)
    owned = {
        name.lower(): value
        for name, value in headers
        if name.lower().startswith("x-forwarded-") and "client-cert" not in name.lower()
    }
    assert owned == {"x-forwarded-for": "127.0.0.1", "x-forwarded-proto": "https"}


def test_connection_naming_the_forwarding_fields_keeps_the_gateways(gateway, clean_leaf):
    site, running = gateway
    request = _request(
        (b"Host", b"localhost"),
        (b"Connection", b"x-forwarded-for, x-forwarded-proto, x-request-id"),
        (b"X-Forwarded-For", b"10.6.6.6"),
    )
    headers = _echoed(site, running.port, clean_leaf, request, "first")
    names = [name.lower() for name, _ in headers]
    assert names.count("x-forwarded-for") == 1 and names.count("x-request-id") == 1
    assert ["x-forwarded-for", "127.0.0.1"] in [[n.lower(), v] for n, v in headers]


def test_xfcc_carries_by_and_no_empty_uri(tmp_path: Path, server_ca, ca):
    """Issue 28 item 3: a gateway whose server certificate has a URI SAN writes Envoy's
    ``By=`` first; a DNS-named client gets no empty ``URI=`` element."""
    backend = EchoBackend()
    site = Site(dir=tmp_path, server_ca=server_ca, backend=backend)
    config = write_config(site, ca.bundle_pem, '[client_auth]\ntrust = ["trust.pem"]\n')
    server = ca.issue(
        LeafSpec(uris=("spiffe://acme.com/gateway",), dns=("localhost",), eku=(SERVER_AUTH,))
    )
    (tmp_path / "server.pem").write_bytes(server.chain_pem)
    (tmp_path / "server.key").write_bytes(server.key_pem)
    running = GatewayThread(config)
    try:
        client = ca.issue(LeafSpec(dns=("client.acme.com",)))
        context = ssl.create_default_context(cadata=ca.root.cert_pem.decode())
        pem = tmp_path / "client.pem"
        pem.write_bytes(client.chain_pem + client.key_pem)
        context.load_cert_chain(pem)
        with (
            socket.create_connection(("127.0.0.1", running.port), timeout=5) as sock,
            context.wrap_socket(sock, server_hostname="localhost") as tls,
        ):
            tls.sendall(_request((b"Host", b"localhost")))
            status, body = _response(tls)
        assert status == 200
        headers = json.loads(body)["headers"]
        xfcc = [v for n, v in headers if n.lower() == "x-forwarded-client-cert"]
        assert len(xfcc) == 1, headers
        pairs = xfcc[0].split(";")
        assert pairs[0] == "By=spiffe://acme.com/gateway"
        assert pairs[1].startswith("Hash=")
        assert [p for p in pairs if p.startswith("URI")] == []
        assert pairs[-1] == "DNS=client.acme.com"
    finally:
        running.stop()
        backend.stop()
