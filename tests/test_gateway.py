"""The gateway end to end: real TLS handshakes on 127.0.0.1, an echo backend, real logs."""

from __future__ import annotations

import json
import ssl
from pathlib import Path

import pytest
import trustme

from _gateway_support import EchoBackend, GatewayThread, Site, https_request, write_config
from conftest import SPIFFE_ID
from mtlskit.testca import TestCA

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
