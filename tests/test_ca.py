"""`mtlskit ca` end to end, in-process: records, refusals, tampering, and a real OpenSSL server."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import socket
import sqlite3
import ssl
import stat
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from conftest import write
from mtlskit.certs import generate_private_key, load_certificates
from mtlskit.lint import lint_chain
from mtlskit.testca import SERVER_AUTH, LeafSpec, TestCA

ID = "spiffe://acme.com/billing/payments"


@pytest.fixture
def passphrase(tmp_path):
    return write(tmp_path / "pass", b"correct horse battery staple\n")


@pytest.fixture
def ca_dir(tmp_path, run_cli, passphrase):
    directory = tmp_path / "ca"
    result = run_cli(
        "ca", "init", directory, "--trust-domain", "acme.com", "--passphrase-file", passphrase
    )
    assert result.code == 0, result.err
    return directory


def _issue(run_cli, ca_dir, passphrase, out, identity=ID, *extra):
    return run_cli(
        "ca",
        "issue",
        ca_dir,
        "--id",
        identity,
        "--out",
        out,
        "--passphrase-file",
        passphrase,
        *extra,
    )


def _snapshot(ca_dir) -> str:
    """Everything the CA keeps, hashed: "lose nothing" means this does not change."""
    with sqlite3.connect(ca_dir / "ca.db") as db:
        rows = [
            db.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall()
            for t in ("certificates", "revocations", "audit_log", "counters")
        ]
    return hashlib.sha256(repr(rows).encode()).hexdigest()


def _csr_file(tmp_path, *, sans, ca=True, eku=(ExtendedKeyUsageOID.SERVER_AUTH,)):
    key = generate_private_key()
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "root")]))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    )
    csr = builder.sign(key, hashes.SHA256())
    return write(tmp_path / "req.csr", csr.public_bytes(serialization.Encoding.PEM)), key


def test_init_writes_encrypted_keys_config_and_chain(ca_dir):
    for name in ("root.key", "issuing.key"):
        assert stat.S_IMODE((ca_dir / name).stat().st_mode) == 0o600
        assert b"ENCRYPTED PRIVATE KEY" in (ca_dir / name).read_bytes()
    config = (ca_dir / "ca.toml").read_text()
    assert 'allowed_ids = ["spiffe://acme.com/**"]' in config
    assert 'default_ttl = "24h"' in config
    issuing, root = load_certificates((ca_dir / "chain.pem").read_bytes())
    assert issuing.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 1
    with pytest.raises(x509.ExtensionNotFound):
        issuing.extensions.get_extension_for_class(x509.NameConstraints)


def test_init_refuses_without_a_passphrase_source(tmp_path, run_cli, monkeypatch):
    monkeypatch.delenv("MTLSKIT_CA_PASSPHRASE", raising=False)
    result = run_cli("ca", "init", tmp_path / "ca")
    assert result.code == 2
    assert "--insecure-no-passphrase" in result.err and len(result.err.splitlines()) == 1
    assert not (tmp_path / "ca").exists()
    result = run_cli(
        "ca", "init", tmp_path / "ca", "--insecure-no-passphrase", "--allow", "*.acme.com"
    )
    assert result.code == 0
    assert b"BEGIN PRIVATE KEY" in (tmp_path / "ca" / "issuing.key").read_bytes()


def test_passphrase_from_environment(tmp_path, run_cli, monkeypatch):
    monkeypatch.setenv("MTLSKIT_CA_PASSPHRASE", "from the environment")
    assert run_cli("ca", "init", tmp_path / "ca", "--trust-domain", "acme.com").code == 0
    assert run_cli("ca", "issue", tmp_path / "ca", "--id", ID, "--out", tmp_path / "c").code == 0


def test_issue_writes_files_with_exact_extensions(tmp_path, ca_dir, run_cli, passphrase):
    out = tmp_path / "client"
    result = _issue(run_cli, ca_dir, passphrase, out, ID, "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert stat.S_IMODE((out / "key.pem").stat().st_mode) == 0o600
    leaf, issuing = load_certificates((out / "chain.pem").read_bytes())
    (root,) = load_certificates((out / "ca.pem").read_bytes())
    assert f"{leaf.serial_number:x}" == report["serial"]
    assert {type(e.value).__name__ for e in leaf.extensions} == {
        "BasicConstraints",
        "KeyUsage",
        "ExtendedKeyUsage",
        "SubjectAlternativeName",
        "SubjectKeyIdentifier",
        "AuthorityKeyIdentifier",
    }
    assert list(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    now = dt.datetime.now(dt.UTC)
    reports = lint_chain([leaf, issuing, root], ["client-auth"], at=now)
    assert [r.findings for r in reports] == [(), (), ()]
    verifier = (
        verification.PolicyBuilder().store(verification.Store([root])).build_client_verifier()
    )
    verified = verifier.verify(leaf, [issuing])
    assert verified.subjects == [x509.UniformResourceIdentifier(ID)]


def test_sign_drops_ca_serverauth_and_other_san_and_reports_them(
    tmp_path, ca_dir, run_cli, passphrase
):
    csr, key = _csr_file(
        tmp_path,
        sans=[
            x509.UniformResourceIdentifier("spiffe://acme.com/admin"),
            x509.DNSName("evil.example"),
        ],
    )
    out = tmp_path / "signed.pem"
    result = run_cli(
        "ca", "sign", ca_dir, csr, "--id", ID, "--out", out, "--passphrase-file", passphrase
    )
    assert result.code == 0, result.err
    assert "dropped from the CSR: basicConstraints CA:TRUE" in result.out
    assert "dropped from the CSR: extendedKeyUsage serverAuth" in result.out
    assert "dropped from the CSR: subjectAltName URI:spiffe://acme.com/admin" in result.out
    assert "dropped from the CSR: subjectAltName DNS:evil.example" in result.out
    leaf = load_certificates(out.read_bytes())[0]
    assert leaf.public_key() == key.public_key()
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert list(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    assert list(leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value) == [
        x509.UniformResourceIdentifier(ID)
    ]


def test_sign_dry_run_prints_the_certificate_and_records_nothing(
    tmp_path, ca_dir, run_cli, passphrase
):
    csr, _ = _csr_file(
        tmp_path,
        sans=[x509.UniformResourceIdentifier(ID)],
        ca=False,
        eku=(ExtendedKeyUsageOID.CLIENT_AUTH,),
    )
    before = _snapshot(ca_dir)
    result = run_cli(
        "ca", "sign", ca_dir, csr, "--id", ID, "--dry-run", "--passphrase-file", passphrase
    )
    assert result.code == 0, result.err
    assert "-----BEGIN CERTIFICATE-----" in result.out
    assert '"basic_constraints": "CA:FALSE (critical)"' in result.out
    assert _snapshot(ca_dir) == before


@pytest.mark.parametrize(
    ("identity", "extra", "rule"),
    [
        ("spiffe://evil.com/x", (), "allowed_ids"),
        (ID, ("--ttl", "30d"), "max_ttl"),
        (ID, ("--key-type", "rsa-2048", "--ttl", "1h"), None),  # accepted: control
    ],
)
def test_policy_refusals_exit_1_naming_the_rule(
    tmp_path, ca_dir, run_cli, passphrase, identity, extra, rule
):
    result = _issue(run_cli, ca_dir, passphrase, tmp_path / "c", identity, *extra)
    if rule is None:
        assert result.code == 0, result.err
        return
    assert result.code == 1
    assert result.err.startswith(f"mtlskit: refused by rule {rule}: ")
    assert len(result.err.splitlines()) == 1
    assert not (tmp_path / "c").exists()


def test_key_type_policy_from_config(tmp_path, ca_dir, run_cli, passphrase):
    config = ca_dir / "ca.toml"
    config.write_text(config.read_text().replace("key_types = [", 'key_types = ["ec-p384"] #['))
    result = _issue(run_cli, ca_dir, passphrase, tmp_path / "c")
    assert result.code == 1 and "rule key_types" in result.err
    assert (
        _issue(run_cli, ca_dir, passphrase, tmp_path / "d", ID, "--key-type", "ec-p384").code == 0
    )


def test_wrong_passphrase_exits_2_and_loses_nothing(tmp_path, ca_dir, run_cli, passphrase):
    assert _issue(run_cli, ca_dir, passphrase, tmp_path / "a").code == 0
    before = _snapshot(ca_dir)
    wrong = write(tmp_path / "wrong", b"not it\n")
    for args in (
        ("issue", ca_dir, "--id", ID, "--out", tmp_path / "b", "--passphrase-file", wrong),
        ("crl", ca_dir, "--out", tmp_path / "crl.pem", "--passphrase-file", wrong),
    ):
        result = run_cli("ca", *args)
        assert result.code == 2
        assert (
            result.err
            == f"mtlskit: error: {ca_dir / 'issuing.key'}: wrong passphrase for the CA key\n"
        )
    assert _snapshot(ca_dir) == before
    assert not (tmp_path / "b").exists() and not (tmp_path / "crl.pem").exists()


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage",
        b"-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n",
    ],
)
def test_malformed_csr_exits_2_and_loses_nothing(tmp_path, ca_dir, run_cli, passphrase, data):
    before = _snapshot(ca_dir)
    csr = write(tmp_path / "bad.csr", data)
    result = run_cli(
        "ca",
        "sign",
        ca_dir,
        csr,
        "--id",
        ID,
        "--out",
        tmp_path / "x.pem",
        "--passphrase-file",
        passphrase,
    )
    assert result.code == 2
    assert len(result.err.splitlines()) == 1 and str(csr) in result.err
    assert _snapshot(ca_dir) == before


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t + "\nsurprise = 1\n", "unknown key 'surprise'"),
        (lambda t: t.replace('max_ttl = "7d"', 'max_ttl = "7 days"'), "invalid duration '7 days'"),
        (lambda t: t.replace("name = ", "name = = "), "is not valid TOML"),
        (
            lambda t: t.replace('"spiffe://acme.com/**"', '"spiffe://acme.com/bill*"'),
            "whole segment",
        ),
    ],
)
def test_bad_config_exits_2_naming_the_problem(
    tmp_path, ca_dir, run_cli, passphrase, edit, message
):
    config = ca_dir / "ca.toml"
    config.write_text(edit(config.read_text()))
    before = _snapshot(ca_dir)
    result = _issue(run_cli, ca_dir, passphrase, tmp_path / "c")
    assert result.code == 2
    assert message in result.err and str(config) in result.err
    assert len(result.err.splitlines()) == 1
    assert _snapshot(ca_dir) == before


def test_editing_an_audit_row_is_found_and_named(tmp_path, ca_dir, run_cli, passphrase):
    for name in "abc":
        assert _issue(run_cli, ca_dir, passphrase, tmp_path / name).code == 0
    result = run_cli("ca", "audit", "verify", ca_dir)
    assert result.code == 0 and "audit log intact: 4 entries" in result.out
    with sqlite3.connect(ca_dir / "ca.db") as db:
        db.execute(
            "UPDATE audit_log SET detail = replace(detail, 'payments', 'admin') WHERE seq = 3"
        )
    result = run_cli("ca", "audit", "verify", ca_dir)
    assert result.code == 1
    assert "audit entry 3: contents do not match the stored hash" in result.out
    exported = json.loads(run_cli("ca", "audit", "export", ca_dir, "--json").out)
    assert exported["intact"] is False
    assert [e["event"] for e in exported["entries"]] == ["init", "issue", "issue", "issue"]


def test_revoke_crl_and_list(tmp_path, ca_dir, run_cli, passphrase):
    for name in "ab":
        assert _issue(run_cli, ca_dir, passphrase, tmp_path / name).code == 0
    gone = load_certificates((tmp_path / "b" / "cert.pem").read_bytes())[0]
    result = run_cli(
        "ca", "revoke", ca_dir, "--cert", tmp_path / "b" / "cert.pem", "--reason", "keyCompromise"
    )
    assert result.code == 0, result.err
    assert run_cli("ca", "revoke", ca_dir, f"{gone.serial_number:x}").code == 2  # already revoked
    stranger = TestCA(name="other").issue(LeafSpec(uris=(ID,)))
    foreign = write(tmp_path / "foreign.pem", stranger.cert_pem)
    result = run_cli("ca", "revoke", ca_dir, "--cert", foreign)
    assert result.code == 2 and "not issued by this CA" in result.err
    numbers = []
    for _ in range(2):
        result = run_cli(
            "ca", "crl", ca_dir, "--out", tmp_path / "crl.pem", "--passphrase-file", passphrase
        )
        assert result.code == 0, result.err
        data = (tmp_path / "crl.pem").read_bytes()
        issuing_crl = x509.load_pem_x509_crl(data)  # the first CRL in the file
        numbers.append(
            issuing_crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        )
    assert numbers == [1, 2]
    issuing = load_certificates((ca_dir / "issuing.pem").read_bytes())[0]
    assert issuing_crl.is_signature_valid(issuing.public_key())
    assert issuing_crl.next_update_utc - issuing_crl.last_update_utc == dt.timedelta(days=7)
    assert [e.serial_number for e in issuing_crl] == [gone.serial_number]
    assert data.count(b"BEGIN X509 CRL") == 2  # + the root's, over the intermediate
    listed = json.loads(run_cli("ca", "list", ca_dir, "--json").out)["certificates"]
    assert sorted(c["status"] for c in listed) == ["revoked", "valid"]
    revoked = json.loads(run_cli("ca", "list", ca_dir, "--status", "revoked", "--json").out)
    assert [c["serial"] for c in revoked["certificates"]] == [f"{gone.serial_number:x}"]
    assert revoked["certificates"][0]["revocation_reason"] == "keyCompromise"
    assert run_cli("ca", "audit", "verify", ca_dir).code == 0


def test_name_constraints_are_opt_in_dns_then_uri(tmp_path, run_cli, passphrase):
    run_cli(
        "ca",
        "init",
        tmp_path / "dns",
        "--trust-domain",
        "acme.com",
        "--name-constraints",
        "--passphrase-file",
        passphrase,
    )
    run_cli(
        "ca",
        "init",
        tmp_path / "uri",
        "--trust-domain",
        "acme.com",
        "--name-constraints-uri",
        "--passphrase-file",
        passphrase,
    )
    for name, expected in (
        ("dns", [x509.DNSName("acme.com")]),
        ("uri", [x509.DNSName("acme.com"), x509.UniformResourceIdentifier("acme.com")]),
    ):
        issuing, root = load_certificates((tmp_path / name / "chain.pem").read_bytes())
        constraints = issuing.extensions.get_extension_for_class(x509.NameConstraints)
        assert constraints.critical and constraints.value.permitted_subtrees == expected
        assert _issue(run_cli, tmp_path / name, passphrase, tmp_path / f"{name}-leaf").code == 0
        leaf = load_certificates((tmp_path / f"{name}-leaf" / "cert.pem").read_bytes())[0]
        verifier = (
            verification.PolicyBuilder().store(verification.Store([root])).build_client_verifier()
        )
        if name == "dns":
            verifier.verify(leaf, [issuing])
        else:  # measured: pyca rejects URI name constraints; that is why they are opt-in
            with pytest.raises(verification.VerificationError, match="unsupported name constraint"):
                verifier.verify(leaf, [issuing])


def test_spiffe_profile_ca(tmp_path, run_cli, passphrase):
    ca = tmp_path / "svid"
    assert (
        run_cli(
            "ca",
            "init",
            ca,
            "--trust-domain",
            "acme.com",
            "--profile",
            "spiffe",
            "--no-intermediate",
            "--passphrase-file",
            passphrase,
        ).code
        == 0
    )
    assert _issue(run_cli, ca, passphrase, tmp_path / "s").code == 0
    leaf, root = load_certificates(
        (tmp_path / "s" / "chain.pem").read_bytes() + (tmp_path / "s" / "ca.pem").read_bytes()
    )
    assert list(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    ]
    assert leaf.issuer == root.subject
    reports = lint_chain([leaf, root], ["spiffe"], at=dt.datetime.now(dt.UTC))
    assert [r.has_errors for r in reports] == [False, False]


# --- a real OpenSSL server ---------------------------------------------------------------


def _tls_server(cafile, workdir) -> tuple[int, threading.Thread, list[str]]:
    server_ca = TestCA(name="server")
    server = server_ca.issue(LeafSpec(dns=("localhost",), eku=(SERVER_AUTH,)))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    chain_file, key_file = workdir / "server.pem", workdir / "server.key"
    chain_file.write_bytes(server.chain_pem)
    key_file.write_bytes(server.key_pem)
    ctx.load_cert_chain(chain_file, key_file)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile=cafile)
    listener = socket.create_server(("127.0.0.1", 0))
    outcomes: list[str] = []

    def serve() -> None:
        for _ in range(2):
            conn, _ = listener.accept()
            try:
                with ctx.wrap_socket(conn, server_side=True) as tls:
                    peer = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
                    san = peer.extensions.get_extension_for_class(x509.SubjectAlternativeName)
                    outcomes.append("accepted " + san.value[0].value)
                    tls.sendall(b"ok")
            except ssl.SSLError as exc:
                outcomes.append(f"rejected {exc.reason}")
                conn.close()
        listener.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    server_ca_file = workdir / "server-ca.pem"
    server_ca_file.write_bytes(server_ca.bundle_pem)
    return listener.getsockname()[1], thread, outcomes


def test_openssl_server_accepts_issued_cert_and_rejects_no_cert(
    tmp_path, ca_dir, run_cli, passphrase
):
    out = tmp_path / "client"
    assert _issue(run_cli, ca_dir, passphrase, out).code == 0
    port, thread, outcomes = _tls_server(ca_dir / "root.pem", tmp_path)
    for present in (True, False):
        client = ssl.create_default_context(cafile=tmp_path / "server-ca.pem")
        if present:
            client.load_cert_chain(out / "chain.pem", out / "key.pem")
        try:
            with (
                socket.create_connection(("127.0.0.1", port)) as raw,
                client.wrap_socket(raw, server_hostname="localhost") as tls,
            ):
                tls.recv(2)
        except (ssl.SSLError, ConnectionError):
            pass
    thread.join(timeout=10)
    assert outcomes[0] == f"accepted {ID}"
    assert outcomes[1].startswith("rejected"), outcomes  # negative control: no certificate
