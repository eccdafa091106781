"""Loading certificates and keys: every format in, one clear line out for every bad input."""

from __future__ import annotations

import base64
import contextlib
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import require_program, write
from mtlskit.certs import (
    Fingerprint,
    KeyType,
    generate_private_key,
    key_info,
    load_certificates,
    load_private_key,
    private_key_pem,
)
from mtlskit.errors import InputError
from mtlskit.files import read_bytes, write_secret


def _csr(leaf) -> x509.CertificateSigningRequest:
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("a.example")]), critical=False)
        .sign(leaf.key, hashes.SHA256())
    )


def _p12(leaf, ca, password: bytes | None) -> bytes:
    encryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return pkcs12.serialize_key_and_certificates(
        b"client", leaf.key, leaf.cert, [ca.issuer.cert], encryption
    )


def test_pem_with_several_blocks_and_text_around_them(ca, clean_leaf):
    data = (
        b"subject=whatever\nissuer=whatever\n"
        + clean_leaf.cert_pem
        + b"\n# the issuing CA follows\n"
        + ca.issuer.cert_pem
        + b"trailing words"
    )
    certs = load_certificates(data)
    assert certs == [clean_leaf.cert, ca.issuer.cert]


def test_pem_with_crlf_line_endings(clean_leaf):
    data = clean_leaf.cert_pem.replace(b"\n", b"\r\n")
    assert load_certificates(data) == [clean_leaf.cert]


def test_der(clean_leaf):
    der = clean_leaf.cert.public_bytes(serialization.Encoding.DER)
    assert load_certificates(der) == [clean_leaf.cert]


def test_pkcs12_with_password_gives_leaf_then_extra_certs(ca, clean_leaf):
    certs = load_certificates(_p12(clean_leaf, ca, b"s3cret"), password=b"s3cret")
    assert certs == [clean_leaf.cert, ca.issuer.cert]
    key = load_private_key(_p12(clean_leaf, ca, b"s3cret"), password=b"s3cret")
    assert key.public_key() == clean_leaf.key.public_key()


def test_pkcs12_without_password(ca, clean_leaf):
    assert load_certificates(_p12(clean_leaf, ca, None))[0] == clean_leaf.cert


@pytest.mark.parametrize(
    ("password", "message"),
    [
        (None, "PKCS#12 file is password-protected"),
        (b"wrong", "wrong password for PKCS#12 file"),
    ],
)
def test_pkcs12_password_errors(ca, clean_leaf, password, message):
    with pytest.raises(InputError, match=message):
        load_certificates(_p12(clean_leaf, ca, b"s3cret"), source="client.p12", password=password)


BAD_INPUTS = {
    "empty": (b"", "is empty"),
    "whitespace": (b"\n\n  \n", "is empty"),
    "random": (bytes(range(7, 200)), "is not a certificate: neither PEM, DER nor PKCS#12"),
    "truncated-pem": (None, "truncated PEM: BEGIN CERTIFICATE without a matching END"),
    "truncated-der": (None, "is not a valid DER certificate (truncated or corrupt)"),
    "corrupt-base64": (
        b"-----BEGIN CERTIFICATE-----\nMII$$$\n-----END CERTIFICATE-----\n",
        "PEM block 1 (CERTIFICATE) has corrupt base64",
    ),
    "garbage-in-pem": (
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        "PEM block 1 (CERTIFICATE) is not a valid X.509 certificate",
    ),
    "csr-pem": (None, "contains no certificate: it holds a certificate signing request (CSR)"),
    "csr-der": (None, "contains a certificate signing request (CSR), not a certificate"),
    "crl-pem": (None, "contains no certificate: it holds a certificate revocation list (CRL)"),
    "key-pem": (None, "contains no certificate: it holds a PEM block labelled PRIVATE KEY"),
}


@pytest.fixture
def bad_input(request, ca, clean_leaf):
    name = request.param
    data, message = BAD_INPUTS[name]
    if name == "truncated-pem":
        data = clean_leaf.cert_pem[: len(clean_leaf.cert_pem) // 2]
    elif name == "truncated-der":
        data = clean_leaf.cert.public_bytes(serialization.Encoding.DER)[:-20]
    elif name == "csr-pem":
        data = _csr(clean_leaf).public_bytes(serialization.Encoding.PEM)
    elif name == "csr-der":
        data = _csr(clean_leaf).public_bytes(serialization.Encoding.DER)
    elif name == "crl-pem":
        data = ca.crl().public_bytes(serialization.Encoding.PEM)
    elif name == "key-pem":
        data = clean_leaf.key_pem
    return data, message


@pytest.mark.parametrize("bad_input", sorted(BAD_INPUTS), indirect=True)
def test_bad_certificate_input_gives_one_clear_line(bad_input):
    data, message = bad_input
    with pytest.raises(InputError) as caught:
        load_certificates(data, source="in.pem")
    assert str(caught.value) == f"in.pem: {message}"
    assert "\n" not in str(caught.value)


def test_keys_pem_der_encrypted(clean_leaf):
    public = clean_leaf.key.public_key()
    assert load_private_key(clean_leaf.key_pem).public_key() == public
    der = clean_leaf.key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    assert load_private_key(der).public_key() == public
    encrypted = private_key_pem(clean_leaf.key, b"pw")
    assert b"ENCRYPTED PRIVATE KEY" in encrypted
    assert load_private_key(encrypted, password=b"pw").public_key() == public
    with pytest.raises(InputError, match=r"k\.pem: wrong password for the private key"):
        load_private_key(encrypted, source="k.pem", password=b"nope")
    with pytest.raises(InputError, match=r"k\.pem: private key is encrypted; a password is needed"):
        load_private_key(encrypted, source="k.pem")
    with pytest.raises(InputError, match=r"k.pem: contains no private key \(found CERTIFICATE\)"):
        load_private_key(clean_leaf.cert_pem, source="k.pem")


def test_traditional_openssl_key_formats(tmp_path):
    openssl = require_program("openssl")
    key_path = tmp_path / "rsa.pem"
    subprocess.run(
        [openssl, "genrsa", "-traditional", "-out", str(key_path), "2048"],
        check=True,
        capture_output=True,
    )
    assert b"BEGIN RSA PRIVATE KEY" in key_path.read_bytes()
    assert key_info(load_private_key(key_path.read_bytes())).size == 2048


def test_fingerprint_forms_match_openssl(tmp_path, clean_leaf):
    openssl = require_program("openssl")
    path = write(tmp_path / "c.pem", clean_leaf.cert_pem)
    out = subprocess.run(
        [openssl, "x509", "-in", str(path), "-noout", "-fingerprint", "-sha256"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    fingerprint = Fingerprint.of(clean_leaf.cert)
    assert out.strip() == f"sha256 Fingerprint={fingerprint.colon_hex}"
    assert base64.b64decode(fingerprint.base64) == fingerprint.digest
    assert Fingerprint.parse(str(fingerprint)) == fingerprint
    assert Fingerprint.parse(fingerprint.colon_hex) == fingerprint
    assert Fingerprint.parse(fingerprint.hex.upper()) == fingerprint


@pytest.mark.parametrize("text", ["sha256:abcd", "sha1:" + "00" * 20, "sha256:" + "zz" * 32, ""])
def test_bad_fingerprints(text):
    with pytest.raises(InputError, match="not a SHA-256 fingerprint"):
        Fingerprint.parse(text)


@pytest.mark.parametrize(
    ("kind", "described"),
    [
        (KeyType.EC_P256, "EC P-256"),
        (KeyType.EC_P384, "EC P-384"),
        (KeyType.RSA_2048, "RSA 2048"),
        (KeyType.ED25519, "Ed25519"),
    ],
)
def test_generated_key_types(kind, described):
    key = generate_private_key(kind)
    assert str(key_info(key.public_key())) == described


def test_secret_files_are_0600_and_errors_name_the_file(tmp_path, clean_leaf):
    path = write_secret(tmp_path / "sub" / "client.key", clean_leaf.key_pem)
    assert path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(InputError, match=r"/nope: no such file$"):
        read_bytes(tmp_path / "nope")
    with pytest.raises(InputError, match="is a directory"):
        read_bytes(tmp_path)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_give_only_input_errors(data):
    for loader in (load_certificates, load_private_key):
        try:
            loader(data, source="fuzz")
        except InputError as exc:
            assert str(exc).startswith("fuzz: ")


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mangled_real_pem_gives_only_input_errors(clean_leaf, data):
    pem = bytearray(clean_leaf.chain_pem)
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(pem) - 1))
        pem[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(pem)))
    with contextlib.suppress(InputError):
        load_certificates(bytes(pem[:cut]), source="fuzz")
