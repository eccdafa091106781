"""CSRs as common tools make them (OpenSSL, Java keytool, cfssl), enrolled at a real
`mtlskit ca serve` and signed by `mtlskit ca sign`: one rule for both paths.

Every tool puts a subject CN in its CSR (keytool and cfssl insist on a subject). The CA
decides every name, so by default a CN or SAN that is not the identity is dropped and
reported (the enroll response's ``dropped``, ca sign's output); with ``csr_names =
"must_match"`` in ca.toml both paths refuse the same CSR.
"""

from __future__ import annotations

import json
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ca_server import RunningCa, init_ca, serve
from conftest import require_program
from mtlskit.certs import load_certificates
from mtlskit.identity import ClientIdentity

pytestmark = pytest.mark.integration

WEB = "spiffe://acme.com/web"
OTHER_URI = "spiffe://acme.com/admin"


def _run(*args: str | Path, stdin: str | None = None) -> str:
    done = subprocess.run(
        [str(arg) for arg in args], input=stdin, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _openssl(directory: Path) -> Path:
    """`openssl req -new -subj /CN=whatever`: the CSR of most how-tos."""
    openssl = require_program("openssl")
    csr = directory / "openssl.csr"
    _run(openssl, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", directory / "openssl.key", "-out", csr, "-subj", "/CN=whatever")  # fmt: skip  # noqa: E501
    return csr


def _openssl_san(directory: Path) -> Path:
    """The same with -addext subjectAltName naming a DNS name and another SPIFFE ID."""
    openssl = require_program("openssl")
    csr = directory / "openssl-san.csr"
    _run(openssl, "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", directory / "openssl-san.key", "-out", csr, "-subj", "/CN=whatever",
         "-addext", f"subjectAltName=DNS:other.example,URI:{OTHER_URI}")  # fmt: skip
    return csr


def _keytool(directory: Path) -> Path:
    """`keytool -genkeypair` + `-certreq`: a full DN and a requested SubjectKeyIdentifier."""
    keytool = require_program("keytool")
    store = directory / "keytool.p12"
    common = ("-alias", "c", "-keystore", store, "-storetype", "PKCS12", "-storepass", "changeit")
    _run(keytool, "-genkeypair", *common, "-keyalg", "EC", "-groupname", "secp256r1",
         "-dname", "CN=whatever, OU=eng, O=Acme", "-keypass", "changeit")  # fmt: skip
    csr = directory / "keytool.csr"
    _run(keytool, "-certreq", *common, "-file", csr)
    return csr


def _cfssl(directory: Path) -> Path:
    """`cfssl genkey`: CN plus its `hosts` as DNS SANs."""
    cfssl = require_program("cfssl")
    request = {"CN": "whatever", "hosts": ["other.example"], "key": {"algo": "ecdsa", "size": 256}}
    out = _run(cfssl, "genkey", "-", stdin=json.dumps(request))
    csr = directory / "cfssl.csr"
    csr.write_text(json.loads(out)["csr"])
    return csr


# tool -> (CSR maker, what the CA must report as dropped from it)
MAKERS: dict[str, tuple[Callable[[Path], Path], tuple[str, ...]]] = {
    "openssl-cn": (_openssl, ("subject CN=whatever",)),
    "openssl-cn-san": (
        _openssl_san,
        (
            "subject CN=whatever",
            "subjectAltName DNS:other.example",
            f"subjectAltName URI:{OTHER_URI}",
        ),
    ),
    "keytool": (_keytool, ("subject CN=whatever,OU=eng,O=Acme",)),
    "cfssl": (_cfssl, ("subject CN=whatever", "subjectAltName DNS:other.example")),
}


@pytest.fixture(scope="module")
def default_ca(tmp_path_factory) -> RunningCa:
    running = serve(init_ca(tmp_path_factory.mktemp("csr-default") / "ca"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def strict_ca(tmp_path_factory) -> RunningCa:
    directory = init_ca(tmp_path_factory.mktemp("csr-strict") / "ca")
    toml = directory / "ca.toml"
    toml.write_text(toml.read_text().replace('csr_names = "ignore"', 'csr_names = "must_match"'))
    running = serve(directory, "--max-token-failures", "1000")
    yield running
    running.stop()


def _post(ca: RunningCa, token: str, csr: Path) -> httpx.Response:
    return httpx.post(
        f"{ca.url}/v1/enroll",
        json={"token": token, "csr": csr.read_text()},
        verify=ssl.create_default_context(cafile=ca.root),
    )


def _assert_issued_for_web(pem: bytes, csr: Path) -> None:
    """The certificate names exactly WEB (SAN), no subject from the CSR, the CSR's key."""
    cert = load_certificates(pem)[0]
    request = x509.load_pem_x509_csr(csr.read_bytes())
    assert ClientIdentity.from_certificate(cert).value == WEB
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [name.value for name in san] == [WEB]
    assert "whatever" not in cert.subject.rfc4514_string()
    raw = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    assert cert.public_key().public_bytes(der, raw) == request.public_key().public_bytes(der, raw)


@pytest.mark.parametrize("tool", list(MAKERS))
def test_enroll_drops_and_reports_names_the_ca_will_not_use(default_ca, tmp_path, tool):
    make, expected = MAKERS[tool]
    csr = make(tmp_path)
    response = _post(default_ca, default_ca.token(WEB), csr)
    assert response.status_code == 201, response.text
    document = response.json()
    assert document["identity"] == WEB
    _assert_issued_for_web(document["certificate"].encode(), csr)
    for item in expected:
        assert any(line.startswith(item) for line in document["dropped"]), document["dropped"]


@pytest.mark.parametrize("tool", list(MAKERS))
def test_ca_sign_drops_and_reports_the_same(default_ca, tmp_path, tool, run_cli):
    make, expected = MAKERS[tool]
    csr = make(tmp_path)
    out = tmp_path / "cert.pem"
    passphrase = default_ca.directory.parent / "ca.pass"
    result = run_cli(
        "ca", "sign", default_ca.directory, csr, "--id", WEB, "--out", out,
        "--passphrase-file", passphrase, "--json",
    )  # fmt: skip
    assert result.code == 0, result.err
    _assert_issued_for_web(out.read_bytes(), csr)
    dropped = json.loads(result.out)["dropped"]
    for item in expected:
        assert any(line.startswith(item) for line in dropped), dropped


@pytest.mark.parametrize("tool", list(MAKERS))
def test_must_match_refuses_on_both_paths_and_burns_no_token(strict_ca, tmp_path, tool, run_cli):
    make, _ = MAKERS[tool]
    csr = make(tmp_path)
    token = strict_ca.token(WEB)
    response = _post(strict_ca, token, csr)
    assert (response.status_code, response.json()["code"]) == (403, "identity_mismatch")
    assert "whatever" in response.json()["message"]
    passphrase = strict_ca.directory.parent / "ca.pass"
    refused = run_cli(
        "ca", "sign", strict_ca.directory, csr, "--id", WEB, "--out", tmp_path / "c.pem",
        "--passphrase-file", passphrase,
    )  # fmt: skip
    assert refused.code == 1
    assert "csr_names" in refused.err
    assert not (tmp_path / "c.pem").exists()
    # the token survived: a CSR that names only WEB (or nothing) enrolls with it
    named = tmp_path / "named.csr"
    _run(require_program("openssl"), "req", "-new", "-newkey", "ec", "-pkeyopt",
         "ec_paramgen_curve:P-256", "-nodes", "-keyout", tmp_path / "named.key", "-out", named,
         "-subj", "/CN=" + WEB.replace("/", "\\/"), "-addext", f"subjectAltName=URI:{WEB}")  # fmt: skip  # noqa: E501
    response = _post(strict_ca, token, named)
    assert response.status_code == 201, response.text
    assert response.json()["dropped"] == []
