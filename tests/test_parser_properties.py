"""Property tests for parsers of untrusted input: CSR handling, policy TOML, gateway TOML.

Each parser either returns a value or raises its documented ``MtlskitError`` subtype;
anything else (``ValueError`` from deep in cryptography, ``KeyError``, ...) reaches a
user as a traceback or a 500. The named regressions are inputs the atheris harness
(``python -m reliability.fuzz``) found.
"""

from __future__ import annotations

import base64
import contextlib
import tomllib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from mtlskit.authz import Policy
from mtlskit.certs import generate_private_key, load_certificates
from mtlskit.client._enroll import build_csr
from mtlskit.errors import ConfigError, InputError
from mtlskit.gateway._config import config_from_mapping
from mtlskit.identity import ClientIdentity, IdentityError, SpiffeId, SpiffeIdError
from mtlskit.issue import CLIENT_AUTH, load_csr, parse_identity, review_csr
from mtlskit.testca import LeafSpec, TestCA

IDENTITY = parse_identity("spiffe://acme.com/billing/payments")
KEY = generate_private_key()
CSR_DER = build_csr(KEY, IDENTITY.value).public_bytes(serialization.Encoding.DER)
LEAF = TestCA(name="props").issue(LeafSpec(uris=("spiffe://acme.com/x",)))
CERT_DER = LEAF.cert.public_bytes(serialization.Encoding.DER)
EC_PUBLIC_KEY_OID = bytes.fromhex("06072a8648ce3d0201")  # 1.2.840.10045.2.1


def _csr_through_review(data: bytes) -> None:
    csr = load_csr(data, source="prop")
    review_csr(csr, identity=IDENTITY, profile=CLIENT_AUTH, source="prop")


def _mutated(der: bytes) -> st.SearchStrategy[bytes]:
    """``der`` with 1-4 bytes replaced: still mostly well-formed, so it goes deep."""
    edits = st.lists(
        st.tuples(st.integers(0, len(der) - 1), st.integers(0, 255)), min_size=1, max_size=4
    )

    def apply(changes: list[tuple[int, int]]) -> bytes:
        out = bytearray(der)
        for index, value in changes:
            out[index] = value
        return bytes(out)

    return edits.map(apply)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048) | _mutated(CSR_DER))
def test_csr_input_is_a_csr_or_an_input_error(data):
    with contextlib.suppress(InputError):
        _csr_through_review(data)


@settings(max_examples=300)
@given(_mutated(CERT_DER))
def test_mutated_certificate_der_is_a_certificate_or_an_input_error(data):
    with contextlib.suppress(InputError):
        load_certificates(data, source="prop")


def test_csr_with_a_bad_version_is_an_input_error():
    bad = CSR_DER.replace(b"\x02\x01\x00", b"\x02\x01\x36", 1)  # version 54 (fuzzing found it)
    with pytest.raises(InputError, match="not a valid certificate signing request"):
        load_csr(bad)


def test_csr_with_an_unknown_key_algorithm_is_an_input_error():
    bad = CSR_DER.replace(EC_PUBLIC_KEY_OID, bytes.fromhex("06072a8648ca3d0201"), 1)
    with pytest.raises(InputError, match="unsupported key or signature algorithm"):
        _csr_through_review(bad)


def test_certificate_with_a_bad_version_is_an_input_error():
    bad = CERT_DER.replace(b"\xa0\x03\x02\x01\x02", b"\xa0\x03\x02\x01\x0a", 1)  # version 10
    pem = b"-----BEGIN CERTIFICATE-----\n" + base64.encodebytes(bad)
    pem += b"-----END CERTIFICATE-----\n"
    for data in (bad, pem):
        with pytest.raises(InputError):
            load_certificates(data)


def test_malformed_san_is_an_identity_error_not_a_value_error():
    uri = b"spiffe://acme.com/x"
    bad = CERT_DER.replace(b"\x86" + bytes([len(uri)]) + uri, b"\x99" + bytes([len(uri)]) + uri)
    cert = x509.load_der_x509_certificate(bad)
    with pytest.raises(IdentityError):
        ClientIdentity.from_certificate(cert)


def test_lone_surrogate_is_not_a_spiffe_id():
    with pytest.raises(SpiffeIdError):
        SpiffeId.parse("spiffe://a\udcae/b")


# --- policy TOML ---------------------------------------------------------------------

_keys = st.sampled_from(["id", "trust_domain", "dns", "email", "fingerprint", "routes", "bogus"])
_values = st.one_of(
    st.sampled_from(
        [
            "spiffe://acme.com/billing/*",
            "spiffe://acme.com/**",
            "spiffe://acme.com/a/**/b",
            "acme.com",
            "client.acme.com",
            "sha256:" + "ab" * 32,
            "",
            "*",
        ]
    ),
    st.text(max_size=40),
    st.lists(st.sampled_from(["GET /a", "POST /b/", "/c", "GET", ""]), max_size=3),
    st.integers(),
    st.booleans(),
)
_policies = st.fixed_dictionaries(
    {},
    optional={
        "mode": st.sampled_from(["enforce", "shadow", "other"]),
        "allow": st.lists(st.dictionaries(_keys, _values, max_size=3), max_size=4),
        "extra": st.integers(),
    },
)


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    return "{" + ", ".join(f"{key} = {_toml(item)}" for key, item in value.items()) + "}"


def _document(data: dict[str, object]) -> str:
    return "\n".join(f"{key} = {_toml(value)}" for key, value in data.items())


@settings(max_examples=300)
@given(_policies)
def test_policy_toml_is_a_policy_or_a_config_error(data):
    text = _document(data)
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        assume(False)  # the generator made text TOML itself rejects: not this property
    try:
        policy = Policy.from_toml(text, source="prop")
    except ConfigError as exc:
        assert str(exc).startswith("prop")  # names the file
        return
    assert policy is not None


@settings(max_examples=300)
@given(st.text(max_size=300))
def test_any_text_as_policy_is_a_policy_or_a_config_error(text):
    with contextlib.suppress(ConfigError):
        Policy.from_toml(text, source="prop")


# --- gateway TOML --------------------------------------------------------------------

_sections = {
    "listen": st.fixed_dictionaries(
        {"cert": st.just("s.pem"), "key": st.just("s.key")},
        optional={
            "address": st.sampled_from(["127.0.0.1:0", "[::1]:8443", "nohost", "1.2.3.4:99999"]),
            "tls_versions": st.lists(st.sampled_from(["1.2", "1.3", "1.1"]), max_size=2),
        },
    ),
    "client_auth": st.fixed_dictionaries(
        {},
        optional={
            "mode": st.sampled_from(["reject_invalid", "allow_invalid_or_missing", "x"]),
            "trust": st.lists(st.just("t.pem"), max_size=1),
            "pins": st.lists(st.sampled_from(["sha256:" + "00" * 32, "x"]), max_size=1),
            "max_chain_depth": st.integers(-2, 20),
        },
    ),
    "upstream": st.fixed_dictionaries(
        {},
        optional={
            "urls": st.lists(
                st.sampled_from(["http://127.0.0.1:9000", "https://a:1", "http://x"]), max_size=2
            ),
            "read_timeout": st.floats(-1, 100, allow_nan=False),
        },
    ),
    "limits": st.fixed_dictionaries(
        {},
        optional={
            "max_header_bytes": st.integers(0, 2**20),
            "idle_timeout": st.floats(-1, 100, allow_nan=False),
            "unknown_limit": st.integers(),
        },
    ),
}


@settings(max_examples=300)
@given(st.fixed_dictionaries({}, optional=_sections))
def test_gateway_config_is_a_config_or_a_config_error(data):
    try:
        config = config_from_mapping(data, source="gw.toml", base=Path("/etc/mtlskit"))
    except ConfigError as exc:
        assert str(exc).startswith("gw.toml")
        return
    assert config.listen.cert.is_absolute()  # relative paths resolved against the file


def test_gateway_unknown_key_is_named():
    data = {"listen": {"cert": "a", "key": "b", "port": 1}, "upstream": {"urls": []}}
    with pytest.raises(ConfigError, match=r"listen\.port"):
        config_from_mapping(data, source="gw.toml", base=Path("/"))
