"""The gateway's and the CA server's TLS offer: 1.2/1.3, AEAD suites only (issue 11, item 5).

The full scan is testssl.sh in ``python -m reliability`` (CI runs its quick form); these
check the same promises with the stdlib client so that ``make test`` catches a regression.
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
from pathlib import Path

import pytest
import trustme

from _gateway_support import EchoBackend, GatewayThread, Site, write_config
from mtlskit.caserver import server_context as ca_server_context
from mtlskit.certs import generate_private_key
from mtlskit.issue import Issuer, build_ca_certificate


@pytest.fixture
def gateway_port(tmp_path: Path, ca):
    backend = EchoBackend()
    site = Site(dir=tmp_path, server_ca=trustme.CA(), backend=backend)
    running = GatewayThread(
        write_config(site, ca.bundle_pem, '[client_auth]\ntrust = ["trust.pem"]\n')
    )
    yield running.port
    running.stop()
    backend.stop()


@pytest.fixture
def ca_server_port():
    now = dt.datetime.now(dt.UTC)
    key = generate_private_key()
    cert = build_ca_certificate(
        common_name="tls root",
        key=key,
        signer=None,
        not_before=now - dt.timedelta(hours=1),
        not_after=now + dt.timedelta(days=1),
        path_length=0,
    )
    context, _ = ca_server_context(
        Issuer(cert=cert, key=key, chain=(cert,)), hosts=("127.0.0.1",), now=now
    )
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    import threading

    def serve() -> None:
        for _ in range(1):  # each test makes exactly one handshake
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            try:
                with context.wrap_socket(conn, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield port
    listener.close()
    thread.join(5)


def _handshake(
    port: int,
    *,
    ciphers: str | None = None,
    version: ssl.TLSVersion | None = None,
    client_pem: Path | None = None,
) -> str:
    """The cipher agreed, or "refused: ..." (the gateway also needs a client certificate)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if client_pem is not None:
        context.load_cert_chain(client_pem)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if version is not None:
        context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        context.maximum_version = version
        context.set_ciphers("ALL:@SECLEVEL=0")
    if ciphers is not None:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers(ciphers)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        try:
            with context.wrap_socket(sock) as tls:
                return str(tls.cipher()[0])
        except (ssl.SSLError, OSError) as exc:
            return f"refused: {type(exc).__name__}"


CASES = [
    ({"ciphers": "ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA384"}, False),  # CBC
    ({"ciphers": "ECDHE-ECDSA-AES128-SHA:AES128-SHA"}, False),
    ({"version": ssl.TLSVersion.TLSv1_1}, False),
    ({"ciphers": "ECDHE-ECDSA-AES128-GCM-SHA256"}, True),  # negative control: AEAD works
]


@pytest.mark.parametrize(
    ("client", "accepted"), CASES, ids=["cbc-sha2", "cbc-sha1", "tls1.1", "gcm"]
)
def test_gateway_offers_aead_on_tls12_and_nothing_older(
    gateway_port, client, accepted, clean_leaf, tmp_path
):
    pem = tmp_path / "client.pem"
    pem.write_bytes(clean_leaf.chain_pem + clean_leaf.key_pem)
    result = _handshake(gateway_port, client_pem=pem, **client)
    assert result.startswith("refused") is not accepted, result


@pytest.mark.parametrize(
    ("client", "accepted"), CASES, ids=["cbc-sha2", "cbc-sha1", "tls1.1", "gcm"]
)
def test_ca_server_offers_aead_on_tls12_and_nothing_older(ca_server_port, client, accepted):
    result = _handshake(ca_server_port, **client)
    assert result.startswith("refused") is not accepted, result
