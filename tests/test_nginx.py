"""nginx as the consumer: `ssl_verify_client on` takes a `ca issue` certificate, and with the
CRL from `ca crl` in `ssl_crl` it refuses the revoked one. nginx runs in a temp dir, in the
foreground, on an ephemeral port, and is stopped by its own pid."""

from __future__ import annotations

import http.client
import ssl

import pytest

from _servers import nginx
from conftest import require_program, write
from mtlskit.testca import SERVER_AUTH, LeafSpec, TestCA

ID = "spiffe://acme.com/billing/payments"
pytestmark = pytest.mark.integration


@pytest.fixture
def nginx_ca(tmp_path, run_cli):
    require_program("nginx")  # before the CA is made: a missing nginx skips at once
    passphrase = write(tmp_path / "pass", b"nginx test passphrase\n")
    ca = tmp_path / "ca"
    assert (
        run_cli(
            "ca", "init", ca, "--trust-domain", "acme.com", "--passphrase-file", passphrase
        ).code
        == 0
    )
    for name in ("good", "gone"):
        result = run_cli(
            "ca", "issue", ca, "--id", ID, "--out", tmp_path / name, "--passphrase-file", passphrase
        )
        assert result.code == 0, result.err
    assert (
        run_cli(
            "ca",
            "revoke",
            ca,
            "--cert",
            tmp_path / "gone" / "cert.pem",
            "--reason",
            "keyCompromise",
        ).code
        == 0
    )
    assert (
        run_cli(
            "ca", "crl", ca, "--out", tmp_path / "crl.pem", "--passphrase-file", passphrase
        ).code
        == 0
    )

    server_ca = TestCA(name="nginx server")
    server = server_ca.issue(LeafSpec(dns=("localhost",), eku=(SERVER_AUTH,)))
    write(tmp_path / "server.pem", server.chain_pem)
    write(tmp_path / "server.key", server.key_pem)
    write(tmp_path / "server-ca.pem", server_ca.bundle_pem)
    server = f"""
    ssl_certificate {tmp_path}/server.pem;
    ssl_certificate_key {tmp_path}/server.key;
    ssl_client_certificate {ca}/root.pem;
    ssl_verify_client on;
    ssl_verify_depth 2;
    ssl_crl {tmp_path}/crl.pem;
    location / {{ return 200 "$ssl_client_verify\\n"; }}
"""
    with nginx(tmp_path / "nginx", server) as port:
        yield port, tmp_path


def _get(port: int, tmp_path, client: str | None) -> tuple[int, str]:
    ctx = ssl.create_default_context(cafile=tmp_path / "server-ca.pem")
    if client is not None:
        ctx.load_cert_chain(tmp_path / client / "chain.pem", tmp_path / client / "key.pem")
    conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=10)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def test_nginx_accepts_issued_and_rejects_revoked(nginx_ca):
    port, tmp_path = nginx_ca
    assert _get(port, tmp_path, "good") == (200, "SUCCESS\n")
    status, body = _get(port, tmp_path, "gone")
    assert status == 400 and "The SSL certificate error" in body
    log = (tmp_path / "nginx" / "error.log").read_text()
    assert "certificate revoked" in log
    status, body = _get(port, tmp_path, None)  # negative control: no certificate at all
    assert status == 400 and "No required SSL certificate was sent" in body
