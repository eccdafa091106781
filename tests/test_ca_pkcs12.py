"""`mtlskit export pkcs12`: AES-256 + PBKDF2 default, --legacy if asked; read by OpenSSL, Java."""

from __future__ import annotations

import stat
import subprocess

import pytest
from cryptography.hazmat.primitives.serialization import pkcs12

from conftest import require_program, write

ID = "spiffe://acme.com/billing/payments"


@pytest.fixture
def issued(tmp_path, run_cli):
    passphrase = write(tmp_path / "pass", b"ca passphrase\n")
    ca = tmp_path / "ca"
    assert (
        run_cli(
            "ca", "init", ca, "--trust-domain", "acme.com", "--passphrase-file", passphrase
        ).code
        == 0
    )
    out = tmp_path / "client"
    assert (
        run_cli("ca", "issue", ca, "--id", ID, "--out", out, "--passphrase-file", passphrase).code
        == 0
    )
    return out


def _export(run_cli, issued, out, password_file, *extra):
    return run_cli(
        "export",
        "pkcs12",
        "--cert",
        issued / "chain.pem",
        "--key",
        issued / "key.pem",
        "--out",
        out,
        "--password-file",
        password_file,
        *extra,
    )


@pytest.mark.parametrize("legacy", [False, True])
def test_pkcs12_read_by_openssl_and_cryptography(tmp_path, run_cli, issued, legacy):
    openssl = require_program("openssl")
    password = write(tmp_path / "p12.pass", b"export pw\n")
    out = tmp_path / "client.p12"
    result = _export(run_cli, issued, out, password, *(["--legacy"] if legacy else []))
    assert result.code == 0, result.err
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    bundle = pkcs12.load_pkcs12(out.read_bytes(), b"export pw")
    assert bundle.cert is not None and bundle.cert.friendly_name == ID.encode()
    assert len(bundle.additional_certs) == 1  # the intermediate
    info = subprocess.run(
        [openssl, "pkcs12", "-info", "-nokeys", "-in", out, "-passin", f"file:{password}"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert info.returncode == 0, info.stderr
    assert info.stdout.count("BEGIN CERTIFICATE") == 2
    if legacy:
        assert "pbeWithSHA1And3-KeyTripleDES-CBC" in info.stderr
    else:
        assert "PBES2, PBKDF2, AES-256-CBC" in info.stderr and "MAC: sha256" in info.stderr


def test_pkcs12_read_by_java_keytool(tmp_path, run_cli, issued):
    keytool = require_program("keytool")
    password = write(tmp_path / "p12.pass", b"export pw\n")
    out = tmp_path / "client.p12"
    assert _export(run_cli, issued, out, password).code == 0
    listed = subprocess.run(
        [keytool, "-list", "-storetype", "PKCS12", "-keystore", out, "-storepass:file", password],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert "PrivateKeyEntry" in listed.stdout and ID in listed.stdout


def test_pkcs12_needs_a_password_and_the_matching_key(tmp_path, run_cli, issued, monkeypatch):
    monkeypatch.delenv("MTLSKIT_PKCS12_PASSWORD", raising=False)
    result = run_cli(
        "export",
        "pkcs12",
        "--cert",
        issued / "cert.pem",
        "--key",
        issued / "key.pem",
        "--out",
        tmp_path / "x.p12",
    )
    assert result.code == 2 and "never writes a PKCS#12 with a default" in result.err
    empty = write(tmp_path / "empty", b"\n")
    assert _export(run_cli, issued, tmp_path / "x.p12", empty).code == 2
    other = tmp_path / "other"
    assert run_cli("selfsigned", "--id", "other.acme.com", "--out", other).code == 0
    result = run_cli(
        "export",
        "pkcs12",
        "--cert",
        issued / "cert.pem",
        "--key",
        other / "key.pem",
        "--out",
        tmp_path / "x.p12",
        "--password-file",
        write(tmp_path / "pw", b"pw\n"),
    )
    assert result.code == 2 and "does not belong" in result.err
    assert not (tmp_path / "x.p12").exists()
