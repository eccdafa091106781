"""Certificates from trustme and from the openssl CLI, verified like mtlskit's own.

The negative controls matter as much: the same chains fail against the wrong CA,
and a SHA-1 signature (which cryptography refuses to produce) is rejected.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import trustme

from conftest import require_program, write

EXT = """\
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth
subjectAltName=URI:spiffe://acme.com/legacy
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
"""


def verify(run_cli, *args: str | Path) -> dict:
    result = run_cli("verify", *args, "--json")
    assert result.code in {0, 1}, result.err
    return json.loads(result.out)


def test_trustme_client_certificate(run_cli, tmp_path: Path):
    ca = trustme.CA()
    leaf = ca.issue_cert("client.example.org")
    root = write(tmp_path / "root.pem", ca.cert_pem.bytes())
    client = write(tmp_path / "client.pem", b"".join(p.bytes() for p in leaf.cert_chain_pems))
    out = verify(run_cli, client, "--trust", root)
    assert out["verdict"] == "accept"
    assert out["identity"] == {"kind": "dns", "value": "client.example.org"}
    wrong = write(tmp_path / "other.pem", trustme.CA().cert_pem.bytes())
    assert [r["code"] for r in verify(run_cli, client, "--trust", wrong)["reasons"]] == [
        "chain_untrusted"
    ]


def test_trustme_intermediate_chain(run_cli, tmp_path: Path):
    root_ca = trustme.CA()
    issuing = root_ca.create_child_ca()
    leaf = issuing.issue_cert("alice@example.org")
    root = write(tmp_path / "root.pem", root_ca.cert_pem.bytes())
    client = write(tmp_path / "client.pem", b"".join(p.bytes() for p in leaf.cert_chain_pems))
    out = verify(run_cli, client, "--trust", root)
    assert (out["verdict"], out["identity"]["kind"], len(out["chain"])) == ("accept", "email", 3)


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(
        [require_program("openssl"), *args], cwd=cwd, check=True, capture_output=True, timeout=30
    )


def openssl_chain(tmp_path: Path, digest: str) -> tuple[Path, Path]:
    """An RSA root and an EC client certificate it signs with ``digest``, all by the openssl CLI."""
    (tmp_path / "ext.cnf").write_text(EXT)
    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-subj", "/CN=openssl root", "-days", "30",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=tmp_path,
    )  # fmt: skip
    openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "client.key", "-subj", "/CN=legacy", "-out", "client.csr",
        cwd=tmp_path,
    )  # fmt: skip
    openssl(
        "x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "1", f"-{digest}", "-extfile", "ext.cnf",
        "-out", "client.pem",
        cwd=tmp_path,
    )  # fmt: skip
    return tmp_path / "client.pem", tmp_path / "ca.pem"


@pytest.mark.integration
def test_openssl_issued_client_certificate(run_cli, tmp_path: Path):
    client, root = openssl_chain(tmp_path, "sha256")
    out = verify(run_cli, client, "--trust", root)
    assert out["verdict"] == "accept"
    assert out["identity"] == {"kind": "spiffe", "value": "spiffe://acme.com/legacy"}
    # and openssl itself agrees on the same files
    result = subprocess.run(
        [require_program("openssl"), "verify", "-purpose", "sslclient", "-CAfile", root, client],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.integration
def test_signature_algorithm_weak(run_cli, tmp_path: Path):
    client, root = openssl_chain(tmp_path, "sha1")
    out = verify(run_cli, client, "--trust", root)
    reasons = {r["code"]: r["message"] for r in out["reasons"]}
    assert out["verdict"] == "reject"
    assert "signed with SHA1" in reasons["signature_algorithm_weak"]
    # pyca cannot build a path through a SHA-1 signature either, so the chain is untrusted too
    assert set(reasons) == {"signature_algorithm_weak", "chain_untrusted"}
