"""Two SANs never give one header value (issue 27 item 8).

A client picks its SAN bytes. Before the fix ``a.example\\x00.evil`` and the literal
``a.example%00.evil`` were both forwarded as ``a.example%00.evil`` in XFCC ``DNS=``/``URI=``
and in ``X-Mtlskit-Client-Identity``: a backend rule for one admitted the other. Now a
literal ``%`` is written ``%25``, and the verdict reader (ASGI middleware) gets back the
SAN exactly. A real gateway with real TLS and an echo backend.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trustme

from _gateway_support import EchoBackend, GatewayThread, Site, https_request, write_config
from mtlskit.forward import read_verdict
from mtlskit.testca import LeafSpec, TestCA

pytestmark = pytest.mark.attack("lossy-escaping")  # issue 27; reliability/redteam.py

# (the SAN with a raw control byte, the SAN spelling that control byte's escape)
PAIRS = {
    "uri": ("https://partner.example/a\x00b", "https://partner.example/a%00b"),
    "dns": ("a.example\x00.evil", "a.example%00.evil"),
}


@pytest.fixture(scope="module")
def partner() -> TestCA:
    return TestCA(name="partner")


@pytest.fixture
def gateway(tmp_path: Path, partner: TestCA):
    backend = EchoBackend()
    site = Site(dir=tmp_path, server_ca=trustme.CA(), backend=backend)
    config = write_config(
        site,
        partner.bundle_pem,
        '[client_auth]\ntrust = ["trust.pem"]\n[forward]\nformats = ["xfcc", "verdict"]\n',
    )
    running = GatewayThread(config)
    yield site, running
    running.stop()
    backend.stop()


def _forwarded(site: Site, gateway: GatewayThread, leaf) -> list[tuple[str, str]]:
    request = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    answer = https_request(gateway.port, site.client_context(leaf), request)
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    body = json.loads(answer.partition(b"\r\n\r\n")[2])
    return [(name.lower(), value) for name, value in body["headers"]]


def _values(headers: list[tuple[str, str]], name: str) -> list[str]:
    return [value for key, value in headers if key == name]


@pytest.mark.parametrize("kind", sorted(PAIRS))
def test_a_control_byte_and_its_escape_are_told_apart(gateway, partner, kind):
    site, running = gateway
    seen = []
    for san in PAIRS[kind]:
        spec = LeafSpec(uris=(san,)) if kind == "uri" else LeafSpec(dns=(san,))
        headers = _forwarded(site, running, partner.issue(spec))
        seen.append(headers)
        identity = _values(headers, "x-mtlskit-client-identity")
        assert len(identity) == 1 and identity[0].isprintable(), identity
        client = read_verdict([(k.encode(), v.encode()) for k, v in headers])
        assert client is not None and client.identity is not None
        assert client.identity.value == san  # the middleware gets the SAN back exactly
    raw, literal = seen
    for name in ("x-mtlskit-client-identity", "x-forwarded-client-cert"):
        assert _values(raw, name) != _values(literal, name), name
    key = "URI=" if kind == "uri" else "DNS="
    written = PAIRS[kind][1].replace("%", "%25")
    assert f"{key}{written}" in _values(literal, "x-forwarded-client-cert")[0]
