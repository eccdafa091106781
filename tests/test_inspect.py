"""`mtlskit inspect` and the CLI's input-error contract, run in-process and as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import certifi
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from conftest import SPIFFE_ID, write
from mtlskit.certs import Fingerprint, load_certificates
from mtlskit.testca import LeafSpec


def test_table_shows_identity_and_fields(tmp_path, run_cli, ca, clean_leaf):
    path = write(tmp_path / "chain.pem", clean_leaf.chain_pem)
    result = run_cli("inspect", path)
    assert result.code == 0, result.err
    assert f"spiffe: {SPIFFE_ID}" in result.out
    assert "clientAuth (1.3.6.1.5.5.7.3.2)" in result.out
    assert "CA:FALSE (critical)" in result.out
    assert "issuing CA" in result.out  # the second certificate in the file is shown too


def test_json_fields(tmp_path, run_cli, ca, clean_leaf):
    path = write(tmp_path / "chain.pem", clean_leaf.chain_pem + ca.root.cert_pem)
    result = run_cli("inspect", "--json", path)
    assert result.code == 0
    leaf, intermediate, root = json.loads(result.out)["results"]
    assert leaf["identity"] == {"kind": "spiffe", "value": SPIFFE_ID, "legacy": False}
    assert leaf["fingerprint_sha256"] == Fingerprint.of(clean_leaf.cert).hex
    assert leaf["extended_key_usage"] == [{"name": "clientAuth", "oid": "1.3.6.1.5.5.7.3.2"}]
    assert leaf["key_usage"] == ["digital_signature"]
    assert leaf["subject_alt_names"] == [f"URI:{SPIFFE_ID}"]
    assert leaf["key"] == "EC P-256"
    assert 0 < leaf["seconds_left"] <= 25 * 3600
    assert leaf["issuer_class"] == "private"
    assert intermediate["basic_constraints"] == "CA:TRUE, pathlen:0 (critical)"
    assert root["issuer_class"] == "private"


def test_issuer_classes(tmp_path, run_cli, ca):
    selfsigned = ca.issue(LeafSpec(dns=("solo.example",), self_signed=True))
    public_root = load_certificates(Path(certifi.where()).read_bytes())[0]
    alone = ca.issue(LeafSpec(dns=("alone.example",)))
    for cert, expected in (
        (selfsigned.cert, "self-signed"),
        (public_root, "public"),
        (alone.cert, "unknown"),  # issuer not in the file: mtlskit does not guess
    ):
        path = write(tmp_path / "c.pem", cert.public_bytes(serialization.Encoding.PEM))
        result = run_cli("inspect", "--json", path)
        assert json.loads(result.out)["results"][0]["issuer_class"] == expected


def test_cn_only_identity_is_shown_as_legacy(tmp_path, run_cli, ca):
    cert = ca.issue(LeafSpec(common_name="payments", include_san=False))
    path = write(tmp_path / "cn.pem", cert.cert_pem)
    result = run_cli("inspect", path)
    assert "cn: payments" in result.out
    assert "legacy" in result.out


def test_pkcs12_password_from_file_and_environment(tmp_path, run_cli, ca, clean_leaf, monkeypatch):
    p12 = pkcs12.serialize_key_and_certificates(
        b"c", clean_leaf.key, clean_leaf.cert, None, serialization.BestAvailableEncryption(b"pw")
    )
    path = write(tmp_path / "c.p12", p12)
    write(tmp_path / "pass", b"pw\n")
    assert run_cli("inspect", path, "--password-file", tmp_path / "pass").code == 0
    monkeypatch.setenv("MTLSKIT_PKCS12_PASSWORD", "pw")
    assert run_cli("inspect", path).code == 0
    monkeypatch.setenv("MTLSKIT_PKCS12_PASSWORD", "wrong")
    result = run_cli("inspect", path)
    assert result.code == 2
    assert (
        result.err
        == f"mtlskit: error: {path}: wrong password for PKCS#12 file (or the file is corrupt)\n"
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (os.urandom(512).replace(b"-", b"+"), "is not a certificate: neither PEM, DER nor PKCS#12"),
        (
            b"-----BEGIN CERTIFICATE-----\nMIIB",
            "truncated PEM: BEGIN CERTIFICATE without a matching END",
        ),
    ],
)
def test_bad_files_exit_2_with_one_line(tmp_path, run_cli, content, message):
    path = write(tmp_path / "bad.pem", content)
    result = run_cli("inspect", path)
    assert result.code == 2
    assert result.err == f"mtlskit: error: {path}: {message}\n"
    assert result.out == ""


def test_missing_file_and_usage_errors(tmp_path, run_cli):
    result = run_cli("inspect", tmp_path / "absent.pem")
    assert (result.code, result.err) == (
        2,
        f"mtlskit: error: {tmp_path / 'absent.pem'}: no such certificate file\n",
    )
    assert run_cli("inspect").code == 2
    assert run_cli("no-such-command").code == 2


def test_as_a_real_process(tmp_path, clean_leaf):
    path = write(tmp_path / "c.pem", clean_leaf.cert_pem)
    done = subprocess.run(
        [sys.executable, "-m", "mtlskit", "inspect", "--json", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["results"][0]["identity"]["value"] == SPIFFE_ID
    bad = write(tmp_path / "bad.pem", b"\x00\x01garbage")
    done = subprocess.run(
        [sys.executable, "-m", "mtlskit", "inspect", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1
