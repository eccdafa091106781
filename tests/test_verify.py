"""``mtlskit verify`` and the verifier: one real certificate per stable rejection code.

Every defect is built by the shared ``TestCA`` (or openssl, for SHA-1, which
cryptography refuses to sign) and judged through the CLI with ``--json``; the
few codes that need a library-level setup say why next to the test.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtensionOID

from conftest import CLEAN, SPIFFE_ID, write
from mtlskit.certs import Fingerprint
from mtlskit.errors import ConfigError
from mtlskit.testca import SERVER_AUTH, IssuedCert, LeafSpec, TestCA
from mtlskit.verify import (
    AWS_TLS_VERIFY_STATUS,
    GCP_ERRORS,
    Code,
    Decision,
    TrustStore,
    Verdict,
    VerificationCache,
    Verifier,
)

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def iso(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def files(tmp_path: Path, ca: TestCA):
    """Write an issued certificate's presented chain (and the CA root) and return the paths."""

    def put(leaf: IssuedCert, name: str = "client.pem") -> tuple[Path, Path]:
        return write(tmp_path / name, leaf.chain_pem), write(tmp_path / "root.pem", ca.bundle_pem)

    return put


def verify_json(run_cli, *args: str | Path) -> tuple[int, dict]:
    result = run_cli("verify", *args, "--json")
    assert result.code in {0, 1}, result.err
    return result.code, json.loads(result.out)


def codes(document: dict) -> list[str]:
    return [reason["code"] for reason in document["reasons"]]


# --- accept ----------------------------------------------------------------------------


def test_clean_private_ca_chain_accepted_with_identity(run_cli, files, clean_leaf, ca):
    client, root = files(clean_leaf)
    code, out = verify_json(run_cli, client, "--trust", root)
    assert code == 0
    assert out == {
        "verdict": "accept",
        "identity": {"kind": "spiffe", "value": SPIFFE_ID},
        "reasons": [],
        "chain": [str(Fingerprint.of(cert)) for cert in clean_leaf.chain],
    }


def test_human_output_explains_each_reason(run_cli, files, ca):
    client, root = files(ca.issue(CLEAN.replace(ca=True, eku=(SERVER_AUTH,))))
    result = run_cli("verify", client, "--trust", root)
    assert result.code == 1
    assert "REJECT" in result.out
    assert "leaf_is_ca (depth 0)" in result.out
    assert "extendedKeyUsage lists serverAuth but not clientAuth" in result.out
    assert "client_cert_chain_invalid_eku" in result.out
    assert "Failed:ClientCertPurposeInvalid" in result.out


# --- one test per code, through the CLI ------------------------------------------------

LEAF_DEFECTS = [
    ("leaf_is_ca", CLEAN.replace(ca=True), "basicConstraints CA:TRUE"),
    ("eku_missing_client_auth", CLEAN.replace(eku=(SERVER_AUTH,)), "serverAuth but not clientAuth"),
    ("eku_missing_client_auth", CLEAN.replace(eku=None), "no extendedKeyUsage"),
    ("san_missing", LeafSpec(common_name="payments", include_san=False), "no subjectAltName"),
    ("spiffe_id_invalid", LeafSpec(uris=("spiffe://acme.com/billing/",)), "trailing slash"),
    (
        "spiffe_multiple_uri_sans",
        LeafSpec(uris=(SPIFFE_ID, "spiffe://acme.com/other")),
        "exactly one URI SAN",
    ),
    ("key_too_weak", CLEAN.replace(key_type="rsa-1024"), "RSA 1024"),
    (
        "key_usage_invalid",
        CLEAN.replace(key_usage=frozenset({"digital_signature", "key_cert_sign"})),
        "keyCertSign",
    ),
]


@pytest.mark.parametrize(
    ("code", "spec", "words"),
    LEAF_DEFECTS,
    ids=[f"{c}-{i}" for i, (c, _, _) in enumerate(LEAF_DEFECTS)],
)
def test_leaf_defect_rejected_with_its_code(run_cli, files, ca, code, spec, words):
    client, root = files(ca.issue(spec))
    exit_code, out = verify_json(run_cli, client, "--trust", root)
    assert exit_code == 1
    assert out["verdict"] == "reject"
    assert codes(out) == [code]
    assert words in out["reasons"][0]["message"]
    assert out["reasons"][0]["depth"] == 0


def test_cert_expired(run_cli, files, clean_leaf):
    client, root = files(clean_leaf)
    _, out = verify_json(run_cli, client, "--trust", root, "--at", iso(NOW + dt.timedelta(days=3)))
    assert codes(out) == ["cert_expired"]


def test_cert_not_yet_valid(run_cli, files, clean_leaf):
    client, root = files(clean_leaf)
    _, out = verify_json(run_cli, client, "--trust", root, "--at", iso(NOW - dt.timedelta(hours=3)))
    assert codes(out) == ["cert_not_yet_valid"]


def test_chain_untrusted_and_expired_are_both_reported(run_cli, tmp_path, ca):
    stranger = TestCA(name="stranger").issue(
        CLEAN.replace(
            not_before=NOW - dt.timedelta(hours=12), not_after=NOW - dt.timedelta(hours=1)
        )
    )
    client = write(tmp_path / "c.pem", stranger.chain_pem)
    root = write(tmp_path / "root.pem", ca.bundle_pem)
    _, out = verify_json(run_cli, client, "--trust", root)
    assert codes(out) == ["cert_expired", "chain_untrusted"]
    assert out["reasons"][1]["depth"] == 1


def test_no_common_validity_window_reports_each_expiry(ca):
    """Leaf valid only before its CA existed: pyca cannot judge the path, the dates say why."""
    leaf = TestCA(name="early").issue(
        CLEAN.replace(not_before=NOW - dt.timedelta(days=3), not_after=NOW - dt.timedelta(days=2))
    )
    trust = TrustStore.build(anchors=[leaf.chain[-1]])
    decision = Verifier(trust=trust).verify(leaf.chain[:-1], at=NOW)
    assert decision.codes == (Code.CERT_EXPIRED,)


def test_chain_untrusted(run_cli, tmp_path, ca):
    client = write(tmp_path / "c.pem", TestCA(name="stranger").issue(CLEAN).chain_pem)
    root = write(tmp_path / "root.pem", ca.bundle_pem)
    _, out = verify_json(run_cli, client, "--trust", root)
    assert codes(out) == ["chain_untrusted"]
    assert "no path from this certificate to a trusted anchor" in out["reasons"][0]["message"]


def test_leaf_without_intermediate_names_the_cause(run_cli, tmp_path, ca, clean_leaf):
    """Issue 28 item 5: the leaf alone, its issuer an intermediate that is not an anchor."""
    client = write(tmp_path / "leaf.pem", clean_leaf.cert_pem)
    root = write(tmp_path / "root.pem", ca.bundle_pem)
    _, out = verify_json(run_cli, client, "--trust", root)
    assert out["reasons"] == [
        {
            "code": "chain_untrusted",
            "message": "the client sent no intermediate; its issuer is not a trust anchor",
            "depth": 0,
        }
    ]
    # negative control: the same leaf with its intermediate is accepted
    chain = write(tmp_path / "chain.pem", clean_leaf.chain_pem)
    assert verify_json(run_cli, chain, "--trust", root)[0] == 0


def test_chain_too_deep(run_cli, files, clean_leaf):
    client, root = files(clean_leaf)
    _, out = verify_json(run_cli, client, "--trust", root, "--max-chain-depth", "0")
    assert codes(out) == ["chain_too_deep"]


def test_cert_revoked(run_cli, files, tmp_path, ca):
    leaf = ca.issue(CLEAN)
    client, root = files(leaf)
    crl = write(tmp_path / "ca.crl", ca.crl((leaf.cert.serial_number,)).public_bytes(_PEM))
    _, out = verify_json(run_cli, client, "--trust", root, "--crl", crl)
    assert codes(out) == ["cert_revoked"]
    other_client, _ = files(ca.issue(CLEAN), "other.pem")
    code, out = verify_json(run_cli, other_client, "--trust", root, "--crl", crl)
    assert (code, codes(out)) == (0, [])


def test_crl_stale_fails_closed_unless_allowed(run_cli, files, tmp_path, clean_leaf, ca):
    client, root = files(clean_leaf)
    stale = ca.crl(last_update=NOW - dt.timedelta(days=3), next_update=NOW - dt.timedelta(days=1))
    crl = write(tmp_path / "stale.crl", stale.public_bytes(_DER))
    _, out = verify_json(run_cli, client, "--trust", root, "--crl", crl)
    assert codes(out) == ["crl_stale"]
    code, _ = verify_json(run_cli, client, "--trust", root, "--crl", crl, "--allow-stale-crl")
    assert code == 0


def test_crl_signed_by_an_impostor_issuer(run_cli, files, tmp_path, clean_leaf):
    """Same issuer name, another key: the CRL must not be believed (new code ``crl_invalid``)."""
    client, root = files(clean_leaf)
    forged = TestCA(name="acme").crl((clean_leaf.cert.serial_number,))
    crl = write(tmp_path / "forged.crl", forged.public_bytes(_PEM))
    _, out = verify_json(run_cli, client, "--trust", root, "--crl", crl)
    assert codes(out) == ["crl_invalid"]


def test_trust_domain_mismatch_no_bundle_for_domain(run_cli, tmp_path, ca):
    """A CA bound to acme.com issues spiffe://evil.com/...: its bundle cannot vouch for it."""
    evil = write(tmp_path / "evil.pem", ca.issue(LeafSpec(uris=("spiffe://evil.com/x",))).chain_pem)
    bundle = write(tmp_path / "acme.pem", ca.bundle_pem)
    _, out = verify_json(run_cli, evil, "--spiffe-bundle", f"acme.com={bundle}")
    assert codes(out) == ["trust_domain_mismatch"]
    # ... even when the same root is also given as a general --trust anchor
    _, out = verify_json(run_cli, evil, "--spiffe-bundle", f"acme.com={bundle}", "--trust", bundle)
    assert codes(out) == ["trust_domain_mismatch"]


def test_trust_domain_mismatch_signed_by_other_domains_bundle(run_cli, tmp_path, ca):
    evil_ca = TestCA(name="evil")
    evil = write(tmp_path / "evil.pem", ca.issue(LeafSpec(uris=("spiffe://evil.com/x",))).chain_pem)
    acme = write(tmp_path / "acme.pem", ca.bundle_pem)
    evil_bundle = write(tmp_path / "evil-bundle.pem", evil_ca.bundle_pem)
    _, out = verify_json(
        run_cli,
        evil,
        "--spiffe-bundle",
        f"acme.com={acme}",
        "--spiffe-bundle",
        f"evil.com={evil_bundle}",
    )
    assert codes(out) == ["trust_domain_mismatch"]
    assert (
        "bundle for trust domain acme.com, which cannot vouch for evil.com"
        in out["reasons"][0]["message"]
    )


def test_spiffe_bundle_json_accepted(run_cli, tmp_path, ca, clean_leaf):
    import base64

    from cryptography.hazmat.primitives.serialization import Encoding

    der = ca.root.cert.public_bytes(Encoding.DER)
    document = {
        "spiffe_sequence": 1,
        "keys": [
            {
                "use": "x509-svid",
                "kty": "EC",
                "crv": "P-256",
                "x5c": [base64.b64encode(der).decode()],
            },
            {"use": "jwt-svid", "kty": "EC", "kid": "ignored"},
        ],
    }
    bundle = tmp_path / "bundle.json"
    bundle.write_text(json.dumps(document))
    client = write(tmp_path / "c.pem", clean_leaf.chain_pem)
    code, out = verify_json(run_cli, client, "--spiffe-bundle", f"acme.com={bundle}")
    assert (code, out["identity"]["value"]) == (0, SPIFFE_ID)


def test_name_constrained_ca_outside_its_constraint(run_cli, tmp_path):
    constrained = TestCA(name="constrained", permitted_dns=("acme.com",))
    root = write(tmp_path / "root.pem", constrained.bundle_pem)
    inside = write(
        tmp_path / "in.pem", constrained.issue(LeafSpec(dns=("api.acme.com",))).chain_pem
    )
    outside = write(tmp_path / "out.pem", constrained.issue(LeafSpec(dns=("evil.com",))).chain_pem)
    assert verify_json(run_cli, inside, "--trust", root)[0] == 0
    _, out = verify_json(run_cli, outside, "--trust", root)
    assert codes(out) == ["chain_untrusted"]
    assert "name constraints do not permit" in out["reasons"][0]["message"]


def test_uri_name_constraint_explained(run_cli, tmp_path):
    """pyca rejects any URI name constraint; mtlskit says so instead of a bare failure."""
    constrained = TestCA(name="uri-nc", permitted_uri_hosts=("acme.com",))
    root = write(tmp_path / "root.pem", constrained.bundle_pem)
    client = write(tmp_path / "c.pem", constrained.issue(CLEAN).chain_pem)
    _, out = verify_json(run_cli, client, "--trust", root)
    assert codes(out) == ["chain_untrusted"]
    assert "URI name constraint" in out["reasons"][0]["message"]


def test_pinned_self_signed_accepted_and_impostor_rejected(run_cli, tmp_path, ca):
    spec = CLEAN.replace(common_name="payments", self_signed=True)
    pinned, impostor = ca.issue(spec), ca.issue(spec)
    assert pinned.cert.subject == impostor.cert.subject
    pin = str(Fingerprint.of(pinned.cert))
    good = write(tmp_path / "pinned.pem", pinned.cert_pem)
    bad = write(tmp_path / "impostor.pem", impostor.cert_pem)
    code, out = verify_json(run_cli, good, "--pin", pin)
    assert (code, out["identity"]["value"], out["chain"]) == (0, SPIFFE_ID, [pin])
    _, out = verify_json(run_cli, bad, "--pin", pin)
    assert codes(out) == ["pin_mismatch"]
    # a CA-issued certificate is not accepted by a pin-only trust store either
    client = write(tmp_path / "ca-issued.pem", ca.issue(CLEAN).chain_pem)
    _, out = verify_json(run_cli, client, "--pin", pin)
    assert codes(out) == ["pin_mismatch"]


def test_public_root_refused_without_allow(run_cli, tmp_path, clean_leaf):
    from mtlskit.publicca import public_roots

    public = next(iter(public_roots().values()))[0]  # a real Mozilla root from certifi
    root = write(tmp_path / "public-root.pem", x509_pem(public))
    client = write(tmp_path / "c.pem", clean_leaf.chain_pem)
    _, out = verify_json(run_cli, client, "--trust", root)
    assert codes(out) == ["public_ca_not_allowed"]
    assert out["reasons"][0]["depth"] is None
    result = run_cli("verify", client, "--trust", root, "--allow-public-roots")
    assert result.code == 2
    assert "allow_public_roots needs an identity policy" in result.err


def test_chain_ending_at_public_root_rejected(run_cli, tmp_path, monkeypatch, ca, clean_leaf):
    """Declare the test root public (MTLSKIT_EXTRA_PUBLIC_ROOTS) to build a real chain to it."""
    root = write(tmp_path / "root.pem", ca.bundle_pem)
    monkeypatch.setenv("MTLSKIT_EXTRA_PUBLIC_ROOTS", str(root))
    client = write(tmp_path / "c.pem", clean_leaf.chain_pem)
    _, out = verify_json(run_cli, client, "--trust", root)
    assert codes(out) == ["public_ca_not_allowed"]
    assert "publicly trusted root CN=acme root CA" in out["reasons"][0]["message"]
    policy = tmp_path / "policy.toml"
    policy.write_text(f'[[allow]]\nid = "{SPIFFE_ID}"\n')
    allowed = ("--trust", root, "--allow-public-roots", "--policy", policy)
    assert verify_json(run_cli, client, *allowed)[0] == 0
    trust = TrustStore.build(anchors=[ca.root.cert], allow_public_roots=True)
    with pytest.raises(ConfigError, match="identity policy"):
        Verifier(trust=trust)


def test_identity_not_authorized(run_cli, files, tmp_path, clean_leaf):
    client, root = files(clean_leaf)
    policy = tmp_path / "policy.toml"
    policy.write_text('[[allow]]\nid = "spiffe://acme.com/frontend"\n')
    _, out = verify_json(run_cli, client, "--trust", root, "--policy", policy)
    assert codes(out) == ["identity_not_authorized"]
    policy.write_text('[[allow]]\nid = "spiffe://acme.com/billing/*"\n')
    assert verify_json(run_cli, client, "--trust", root, "--policy", policy)[0] == 0


def test_cert_not_provided():
    """An empty chain is a handshake without a certificate: only reachable through the library."""
    decision = Verifier(trust=TrustStore.build(pins=["sha256:" + "00" * 32])).verify([], at=NOW)
    assert decision.codes == (Code.CERT_NOT_PROVIDED,)
    assert decision.reasons[0].gcp_error == "client_cert_not_provided"


def test_every_code_maps_to_gcp_and_aws():
    """``proof_of_possession_failed`` comes from the handshake (gateway, probe), not from here."""
    assert set(GCP_ERRORS) == set(AWS_TLS_VERIFY_STATUS) == set(Code)
    assert AWS_TLS_VERIFY_STATUS[Code.CERT_REVOKED] == "ClientCertCrlHit"


# --- library-level: cache, configuration ----------------------------------


def test_cache_hits_and_expires_with_the_certificate(ca):
    leaf = ca.issue(
        CLEAN.replace(not_before=NOW - dt.timedelta(hours=1), lifetime=dt.timedelta(hours=2))
    )
    verifier = Verifier(trust=TrustStore.build(anchors=[ca.root.cert]))
    cache = VerificationCache(ttl=dt.timedelta(days=1))
    ders = [cert.public_bytes(_DER) for cert in leaf.chain[:-1]]
    first = cache.verify(verifier, ders, at=NOW)
    assert first.accepted and first.valid_until == leaf.cert.not_valid_after_utc
    assert cache.verify(verifier, ders, at=NOW + dt.timedelta(minutes=30)) is first
    assert (cache.hits, cache.misses) == (1, 1)
    late = cache.verify(verifier, ders, at=NOW + dt.timedelta(hours=2))
    assert late.codes == (Code.CERT_EXPIRED,)
    # a reload (new generation) never sees the old entries
    reloaded = Verifier(trust=TrustStore.build(anchors=[ca.root.cert]))
    assert reloaded.trust.generation != verifier.trust.generation
    cache.verify(reloaded, ders, at=NOW)
    assert cache.misses == 3


def test_cache_expires_at_crl_next_update(ca):
    leaf = ca.issue(CLEAN)
    crl = ca.crl(next_update=NOW + dt.timedelta(minutes=10))
    verifier = Verifier(trust=TrustStore.build(anchors=[ca.root.cert], crls=[crl]))
    decision = VerificationCache().verify(verifier, leaf.chain[:-1], at=NOW)
    assert decision.valid_until == crl.next_update_utc


def test_decision_does_not_depend_on_which_objects_carry_the_chain(ca):
    """Facts of pyca's path reuse those of the presented certificates (pyca returns the same
    objects): shared, freshly parsed, and a path shorter than presented must agree."""
    leaf = ca.issue(CLEAN)
    presented = list(leaf.chain[:-1])
    verifier = Verifier(trust=TrustStore.build(anchors=[ca.root.cert]))
    shared = verifier.verify(presented, at=NOW)
    assert shared == Decision(
        verdict=Verdict.ACCEPT,
        identity=shared.identity,
        chain=tuple(Fingerprint.of(cert) for cert in leaf.chain),
        valid_until=leaf.cert.not_valid_after_utc,
    )
    fresh = [x509.load_der_x509_certificate(cert.public_bytes(_DER)) for cert in presented]
    assert verifier.verify(fresh, at=NOW) == shared
    # anchored at the intermediate, with the root presented too: pyca's path stops early
    shorter = Verifier(trust=TrustStore.build(anchors=[ca.issuer.cert]))
    decision = shorter.verify(list(leaf.chain), at=NOW)
    assert decision.accepted
    assert decision.chain == (Fingerprint.of(leaf.cert), Fingerprint.of(ca.issuer.cert))


def test_trust_store_is_immutable(ca):
    trust = TrustStore.build(anchors=[ca.root.cert])
    with pytest.raises(AttributeError):
        trust.anchors = ()  # type: ignore[misc]


def test_unreadable_inputs_exit_2(run_cli, tmp_path, clean_leaf):
    client = write(tmp_path / "c.pem", clean_leaf.chain_pem)
    assert run_cli("verify", client).code == 2  # no trust at all
    result = run_cli("verify", client, "--trust", tmp_path / "missing.pem")
    assert result.code == 2 and "missing.pem: no such certificate file" in result.err
    result = run_cli("verify", client, "--pin", "sha256:abc")
    assert result.code == 2 and "not a SHA-256 fingerprint" in result.err
    result = run_cli("verify", client, "--pin", "sha256:" + "00" * 32, "--at", "yesterday")
    assert result.code == 2 and "ISO 8601" in result.err
    result = run_cli("verify", client, "--spiffe-bundle", "acme.com")
    assert result.code == 2 and "TRUST_DOMAIN=FILE" in result.err


def x509_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(_PEM)


from cryptography.hazmat.primitives.serialization import Encoding  # noqa: E402

_PEM = Encoding.PEM
_DER = Encoding.DER


def _with_malformed_san(ca: TestCA, leaf: IssuedCert) -> x509.Certificate:
    """``leaf`` re-signed by ``ca`` with a SAN whose DER does not parse."""
    cert = leaf.cert
    builder = (
        x509.CertificateBuilder()
        .subject_name(cert.subject)
        .issuer_name(cert.issuer)
        .public_key(cert.public_key())
        .serial_number(cert.serial_number + 1)
        .not_valid_before(cert.not_valid_before_utc)
        .not_valid_after(cert.not_valid_after_utc)
    )
    for extension in cert.extensions:
        value = extension.value
        if extension.oid == ExtensionOID.SUBJECT_ALTERNATIVE_NAME:
            value = x509.UnrecognizedExtension(extension.oid, b"\x30\x05\x86\x03\xff\xfe")
        builder = builder.add_extension(value, critical=extension.critical)
    return builder.sign(ca.issuer.key, hashes.SHA256())  # type: ignore[arg-type]


def test_a_malformed_extension_is_a_rejection_not_an_exception(ca, clean_leaf):
    """A hostile client's certificate with an unparsable SAN: rejected with a reason."""
    bad = _with_malformed_san(ca, clean_leaf)
    trust = TrustStore.build(anchors=[ca.root.cert])
    decision = Verifier(trust=trust).verify([bad, *clean_leaf.chain[1:-1]], at=NOW)
    assert not decision.accepted
    assert decision.codes == (Code.CHAIN_UNTRUSTED,)
    assert "cannot be parsed" in decision.reasons[0].message
