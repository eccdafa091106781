"""`mtlskit selfsigned`: the profile's extensions, a 0600 key, the printed fingerprint, pinning."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import stat
import threading

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from mtlskit.certs import Fingerprint, load_certificates
from mtlskit.lint import lint_chain
from mtlskit.testca import SERVER_AUTH, LeafSpec, TestCA

ID = "spiffe://acme.com/billing/payments"


def test_selfsigned_certificate_and_fingerprint(tmp_path, run_cli):
    result = run_cli("selfsigned", "--id", ID, "--out", tmp_path / "c")
    assert result.code == 0, result.err
    assert stat.S_IMODE((tmp_path / "c" / "key.pem").stat().st_mode) == 0o600
    (cert,) = load_certificates((tmp_path / "c" / "cert.pem").read_bytes())
    assert {type(e.value) for e in cert.extensions} == {
        x509.BasicConstraints,
        x509.KeyUsage,
        x509.ExtendedKeyUsage,
        x509.SubjectAlternativeName,
        x509.SubjectKeyIdentifier,
        x509.AuthorityKeyIdentifier,
    }
    assert cert.issuer == cert.subject
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == dt.timedelta(days=90)
    fingerprint = Fingerprint.of(cert)
    assert f"SHA-256 fingerprint: {fingerprint}" in result.out
    assert fingerprint.colon_hex in result.out
    assert "out of band" in result.out and "openssl x509" in result.out
    (report,) = lint_chain([cert], ["client-auth"], at=dt.datetime.now(dt.UTC))
    assert report.findings == ()


def test_selfsigned_refuses_to_overwrite_a_key(tmp_path, run_cli):
    assert run_cli("selfsigned", "--id", "client.acme.com", "--out", tmp_path).code == 0
    key = (tmp_path / "key.pem").read_bytes()
    result = run_cli("selfsigned", "--id", "client.acme.com", "--out", tmp_path)
    assert result.code == 2 and "already exists" in result.err
    assert (tmp_path / "key.pem").read_bytes() == key


def test_selfsigned_rejects_a_bad_identity(tmp_path, run_cli):
    result = run_cli("selfsigned", "--id", "spiffe://acme.com/a//b", "--out", tmp_path)
    assert result.code == 2 and "empty segments" in result.err
    assert not (tmp_path / "key.pem").exists()


def test_openssl_server_accepts_the_pinned_certificate(tmp_path, run_cli):
    """A service that pins the certificate (it is its own trust anchor) lets it in."""
    assert (
        run_cli("selfsigned", "--id", ID, "--out", tmp_path / "c", "--key-type", "ec-p384").code
        == 0
    )
    server_ca = TestCA(name="server")
    server = server_ca.issue(LeafSpec(dns=("localhost",), eku=(SERVER_AUTH,)))
    (tmp_path / "s.pem").write_bytes(server.chain_pem)
    (tmp_path / "s.key").write_bytes(server.key_pem)
    (tmp_path / "sca.pem").write_bytes(server_ca.bundle_pem)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "s.pem", tmp_path / "s.key")
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile=tmp_path / "c" / "cert.pem")
    listener = socket.create_server(("127.0.0.1", 0))
    seen: list[bytes] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with ctx.wrap_socket(conn, server_side=True) as tls:
            seen.append(tls.getpeercert(binary_form=True))
            tls.sendall(b"ok")
        listener.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client = ssl.create_default_context(cafile=tmp_path / "sca.pem")
    client.load_cert_chain(tmp_path / "c" / "cert.pem", tmp_path / "c" / "key.pem")
    port = listener.getsockname()[1]
    with (
        socket.create_connection(("127.0.0.1", port)) as raw,
        client.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        assert tls.recv(2) == b"ok"
    thread.join(timeout=10)
    (cert,) = load_certificates((tmp_path / "c" / "cert.pem").read_bytes())
    assert seen == [cert.public_bytes(serialization.Encoding.DER)]
