"""Certificates made by other tools lint as expected: trustme and the openssl CLI."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import pytest
import trustme
from cryptography import x509

from conftest import require_program
from mtlskit.certs import load_certificates
from mtlskit.lint import Severity, lint_chain


def now() -> dt.datetime:
    """Read after the certificate is made: openssl stamps notBefore with the current second."""
    return dt.datetime.now(dt.UTC)


def codes(chain, profiles=("client-auth",)) -> list[set[str]]:
    return [report.codes for report in lint_chain(chain, profiles, at=now())]


def test_trustme_client_certificate() -> None:
    """trustme issues dual-use leaves valid until 3000 with codeSigning and keyEncipherment on
    an EC key: fit for clients, with four remarks (issue 28 item 4 added the last two)."""
    ca = trustme.CA()
    issued = ca.issue_cert("client.example.org")  # trustme takes DNS/IP/email, no URIs
    chain = load_certificates(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    chain.append(load_certificates(ca.cert_pem.bytes())[0])
    reports = lint_chain(chain, ["client-auth"], at=now())
    assert not any(report.has_errors for report in reports)
    assert reports[0].codes == {
        "validity_over_398_days",
        "eku_server_auth_present",
        "eku_code_signing_present",
        "key_usage_ec_encipherment",
    }
    assert [r.codes for r in reports[1:]] == [set()]


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(
        [require_program("openssl"), *args], cwd=cwd, check=True, capture_output=True, timeout=60
    )


def openssl_cert(tmp_path: Path, *extra: str, key: str = "ec", name: str = "cert.pem") -> list:
    key_args = (
        ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
        if key == "ec"
        else ["-newkey", key]
    )
    openssl(
        "req",
        "-x509",
        *key_args,
        "-nodes",
        "-keyout",
        "key.pem",
        "-days",
        "30",
        "-out",
        name,
        *extra,
        cwd=tmp_path,
    )
    return load_certificates((tmp_path / name).read_bytes())


@pytest.mark.integration
def test_openssl_client_certificate_is_clean(tmp_path: Path) -> None:
    chain = openssl_cert(
        tmp_path,
        "-subj", "/CN=payments",
        "-addext", "subjectAltName=URI:spiffe://acme.com/billing/payments",
        "-addext", "basicConstraints=critical,CA:FALSE",
        "-addext", "keyUsage=critical,digitalSignature",
        "-addext", "extendedKeyUsage=clientAuth",
    )  # fmt: skip
    reports = lint_chain(chain, ["client-auth", "spiffe"], at=now())
    assert reports[0].at_least(Severity.WARNING) == ()
    assert reports[0].codes == {"spiffe_eku_missing_server_auth"}


@pytest.mark.integration
def test_openssl_defaults_make_a_ca_not_a_client(tmp_path: Path) -> None:
    """`openssl req -x509` with no extensions given uses v3_ca: CA:TRUE, no EKU, no SAN."""
    chain = openssl_cert(tmp_path, "-subj", "/CN=payments")
    assert {"leaf_is_ca", "eku_missing", "san_missing", "identity_cn_only"} <= codes(chain)[0]


@pytest.mark.integration
def test_openssl_sha1_and_server_auth(tmp_path: Path) -> None:
    chain = openssl_cert(
        tmp_path,
        "-sha1",
        "-subj", "/CN=legacy",
        "-addext", "subjectAltName=DNS:legacy.example",
        "-addext", "basicConstraints=critical,CA:FALSE",
        "-addext", "extendedKeyUsage=serverAuth",
        key="rsa:2048",
    )  # fmt: skip
    found = codes(chain, ("client-auth", "gcp-lb", "aws-alb"))[0]
    assert {
        "signature_algorithm_weak",
        "gcp_signature_algorithm_unsupported",
        "aws_signature_algorithm_unsupported",
        "eku_missing_client_auth",
    } <= found


@pytest.mark.integration
def test_openssl_v1_certificate(tmp_path: Path) -> None:
    """`openssl x509 -req` without extensions still writes X.509 v1, which AWS ALB refuses."""
    csr_args = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    openssl(
        "req",
        "-new",
        *csr_args,
        "-keyout",
        "key.pem",
        "-subj",
        "/CN=v1",
        "-out",
        "r.csr",
        cwd=tmp_path,
    )
    sign_args = ["-signkey", "key.pem", "-days", "30", "-out", "v1.pem"]
    openssl("x509", "-req", "-in", "r.csr", *sign_args, cwd=tmp_path)
    chain = load_certificates((tmp_path / "v1.pem").read_bytes())
    assert "x509_version_unsupported" in codes(chain, ("aws-alb",))[0]
    assert {"eku_missing", "san_missing"} <= codes(chain)[0]


@pytest.mark.integration
@pytest.mark.parametrize(
    ("defect", "code"),
    [("server_eku_intermediate", "ca_eku_excludes_client_auth"), ("any_eku_leaf", "eku_any_only")],
)
def test_openssl_refuses_what_lint_says_it_refuses(tmp_path: Path, defect: str, code: str) -> None:
    """The advice of these rules cites OpenSSL; `openssl verify -purpose sslclient` agrees."""
    from mtlskit.certs import chain_pem
    from mtlskit.testca import SERVER_AUTH, TestCA
    from test_lint import CLEAN, ca_spec, issue_under

    ca = TestCA(name="acme", intermediate=False)
    if defect == "server_eku_intermediate":
        issuer = issue_under(ca.root, ca_spec("server-only", eku=(SERVER_AUTH,)))
        chain = list(issue_under(issuer, CLEAN).chain)
    else:
        any_eku = (x509.ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,)
        chain = list(issue_under(ca.root, CLEAN.replace(eku=any_eku)).chain)
    assert code in set().union(*codes(chain))
    (tmp_path / "leaf.pem").write_bytes(chain_pem(chain[:1]))
    (tmp_path / "untrusted.pem").write_bytes(chain_pem(chain[1:-1]) or chain_pem(chain[-1:]))
    (tmp_path / "root.pem").write_bytes(chain_pem(chain[-1:]))
    verify = subprocess.run(
        [require_program("openssl"), "verify", "-purpose", "sslclient", "-CAfile", "root.pem",
         "-untrusted", "untrusted.pem", "leaf.pem"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert (
        verify.returncode != 0 and "unsuitable certificate purpose" in verify.stdout + verify.stderr
    )
    # Negative control: the clean chain passes the same check.
    clean = list(issue_under(ca.root, CLEAN).chain)
    (tmp_path / "leaf.pem").write_bytes(chain_pem(clean[:1]))
    (tmp_path / "untrusted.pem").write_bytes(chain_pem(clean[-1:]))
    ok = subprocess.run(
        [require_program("openssl"), "verify", "-purpose", "sslclient", "-CAfile", "root.pem",
         "-untrusted", "untrusted.pem", "leaf.pem"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stdout + ok.stderr
