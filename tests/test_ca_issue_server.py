"""``mtlskit ca issue --server`` (issue 26): the TLS server certificate for a gateway or nginx
from the same private CA, instead of openssl.

Judged by real handshakes: a stdlib ``ssl`` server presents the issued chain and key, and
a client that trusts only the CA's root and checks the host name connects to ``localhost``
and to ``127.0.0.1`` (the ``--ip``), and refuses any other name. The certificate is
serverAuth-only (no client can log in with it), and the CA records it like every other:
``ca list`` shows it, ``ca revoke`` puts it on the CRL.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from ca_server import init_ca


def _run(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mtlskit", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def issued(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(CA directory, --out directory of a server certificate for localhost + 127.0.0.1)."""
    base = tmp_path_factory.mktemp("server-cert")
    ca = init_ca(base / "ca")
    out = base / "server"
    done = _run(
        "ca", "issue", ca, "--server", "--dns", "localhost", "--ip", "127.0.0.1",
        "--out", out, "--passphrase-file", base / "ca.pass",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return ca, out


def _serve(context: ssl.SSLContext) -> Iterator[int]:
    """A TLS server on a loopback port, handshaking every connection it accepts."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                try:
                    with context.wrap_socket(conn, server_side=True) as tls:
                        tls.sendall(b"ok")
                except (ssl.SSLError, OSError):
                    pass  # the client refused us, or we refused the client: its side asserts

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        listener.close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def server_port(issued: tuple[Path, Path]) -> Iterator[int]:
    _, out = issued
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(out / "chain.pem", out / "key.pem")
    yield from _serve(context)


def _connect(port: int, server_hostname: str, cafile: Path) -> bytes:
    context = ssl.create_default_context(cafile=str(cafile))  # check_hostname, CERT_REQUIRED
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as sock,
        context.wrap_socket(sock, server_hostname=server_hostname) as tls,
    ):
        return tls.recv(2)


@pytest.mark.parametrize("name", ["localhost", "127.0.0.1"])
def test_a_client_trusting_the_root_verifies_the_server(issued, server_port, name):
    ca, out = issued
    assert (out / "ca.pem").read_bytes() == (ca / "root.pem").read_bytes()
    assert _connect(server_port, name, ca / "root.pem") == b"ok"


@pytest.mark.parametrize("name", ["other.example", "127.0.0.2"])
def test_a_name_it_was_not_issued_for_is_refused(issued, server_port, name):
    ca, _ = issued
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        _connect(server_port, name, ca / "root.pem")


def test_the_files_are_written_like_a_client_certificate(issued):
    _, out = issued
    assert (out / "key.pem").stat().st_mode & 0o777 == 0o600
    cert = x509.load_pem_x509_certificate((out / "cert.pem").read_bytes())
    chain = x509.load_pem_x509_certificates((out / "chain.pem").read_bytes())
    assert chain[0] == cert and len(chain) == 2  # leaf + issuing CA, what a server sends
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_it_fails_the_client_auth_lint(issued):
    _, out = issued
    done = _run("lint", out / "chain.pem", "--profile", "client-auth")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "eku_missing_client_auth" in done.stdout


def test_it_cannot_log_in_as_a_client(issued, server_port, tmp_path):
    """A server that requires client certificates from this CA refuses the server one."""
    ca, out = issued
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(out / "chain.pem", out / "key.pem")
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(ca / "root.pem")
    client = ssl.create_default_context(cafile=str(ca / "root.pem"))
    client.load_cert_chain(out / "chain.pem", out / "key.pem")
    for port in _serve(context):
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as sock,
            client.wrap_socket(sock, server_hostname="localhost") as tls,
            pytest.raises(ssl.SSLError, match=r"UNSUPPORTED_CERTIFICATE|unsupported certificate"),
        ):
            tls.recv(2)  # TLS 1.3: the server's verdict on the client arrives after the handshake


def test_it_is_recorded_listed_and_revocable(issued, tmp_path):
    ca, out = issued
    serial = x509.load_pem_x509_certificate((out / "cert.pem").read_bytes()).serial_number
    listed = _run("ca", "list", ca, "--json")
    assert listed.returncode == 0, listed.stderr
    records = {
        int(entry["serial"], 16): entry for entry in json.loads(listed.stdout)["certificates"]
    }
    assert records[serial]["identity"] == "localhost,127.0.0.1"
    assert records[serial]["profile"] == "server-auth"
    assert records[serial]["status"] == "valid"
    pass_file = ca.parent / "ca.pass"
    revoked = _run("ca", "revoke", ca, "--cert", out / "cert.pem", "--reason", "superseded")
    assert revoked.returncode == 0, revoked.stderr
    crl_path = tmp_path / "crl.pem"
    done = _run("ca", "crl", ca, "--out", crl_path, "--passphrase-file", pass_file)
    assert done.returncode == 0, done.stderr
    end = b"-----END X509 CRL-----\n"
    issuing_crl = crl_path.read_bytes().split(end)[0] + end  # the issuing CA's, then the root's
    crl = x509.load_pem_x509_crl(issuing_crl)
    assert crl.get_revoked_certificate_by_serial_number(serial) is not None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--server", "--id", "spiffe://acme.com/billing/x"], "--server: a server certificate"),
        (["--server"], "--server: a server certificate needs at least one --dns or --ip"),
        (["--server", "--dns", "127.0.0.1"], "--dns: '127.0.0.1' is an IP address"),
        (["--server", "--dns", "Web.Example"], "--dns: not a DNS name"),
        (["--server", "--ip", "localhost"], "--ip: not an IP address"),
        (["--dns", "localhost"], "add --server"),
    ],
)
def test_bad_server_options_are_one_line(issued, tmp_path, args, message):
    ca, _ = issued
    done = _run("ca", "issue", ca, *args, "--out", tmp_path / "out")
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("mtlskit: error: "), done.stderr
    assert message in lines[0]
    assert not (tmp_path / "out").exists()


def test_the_ca_refuses_what_a_client_would_refuse_and_what_its_policy_forbids(tmp_path):
    """A DNS name constraint on the CA (``--name-constraints``: acme.com) excludes
    ``localhost``: refused at issuance (exit 1, rule server_verify), nothing written; a name
    inside it is issued; max_ttl applies to server certificates too."""
    ca = init_ca(tmp_path / "ca", "--name-constraints")
    passphrase = ("--passphrase-file", tmp_path / "ca.pass")
    outside = _run(
        "ca", "issue", ca, "--server", "--dns", "localhost", "--out", tmp_path / "a", *passphrase
    )
    assert outside.returncode == 1, outside.stdout + outside.stderr
    assert "refused by rule server_verify" in outside.stderr
    assert "for localhost" in outside.stderr
    assert not (tmp_path / "a").exists()
    inside = _run(
        "ca", "issue", ca, "--server", "--dns", "api.acme.com", "--out", tmp_path / "b", *passphrase
    )
    assert inside.returncode == 0, inside.stderr
    too_long = _run(
        "ca", "issue", ca, "--server", "--dns", "api.acme.com", "--ttl", "30d",
        "--out", tmp_path / "c", *passphrase,
    )  # fmt: skip
    assert too_long.returncode == 1
    assert "refused by rule max_ttl" in too_long.stderr
