"""lint: every rule proven by a real certificate that breaks it, and the clean one that breaks none.

Fixtures are named by their defect; each builds a real chain with the test CA. The
table says which profile should report which code on which certificate of the chain.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID

from conftest import CLEAN, SPIFFE_ID
from mtlskit.certs import chain_pem
from mtlskit.lint import PROFILES, Severity, lint_chain
from mtlskit.testca import CLIENT_AUTH, SERVER_AUTH, IssuedCert, LeafSpec, TestCA, build_leaf

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
CA_SPEC = LeafSpec(ca=True, key_usage=frozenset({"key_cert_sign", "crl_sign"}), eku=None)
Chain = list[x509.Certificate]


def issue_under(parent: IssuedCert, spec: LeafSpec) -> IssuedCert:
    """A certificate signed by ``parent`` (a CA or not: defects need both), with its chain."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = build_leaf(spec, key, signer=parent.key, issuer=parent.cert)
    return IssuedCert(cert, key, (cert, *parent.chain))


def sub_cas(parent: IssuedCert, depth: int) -> IssuedCert:
    """``depth`` CA certificates stacked under ``parent``, without pathLen limits."""
    for level in range(depth):
        parent = issue_under(parent, ca_spec(f"level {level}"))
    return parent


def ca_spec(name: str, **changes: object) -> LeafSpec:
    """A CA certificate's spec with its own subject name, so issuer names chain as in life."""
    return CA_SPEC.replace(common_name=f"acme {name} CA", **changes)


def leaf_spec(**changes: object) -> LeafSpec:
    return CLEAN.replace(**changes)


def leaf(test_ca: TestCA, /, **changes: object) -> Chain:
    return list(test_ca.issue(leaf_spec(**changes)).chain)


def with_san(*names: x509.GeneralName) -> tuple[tuple[x509.ExtensionType, bool], ...]:
    """An empty SAN is DER-encoded by hand: cryptography 51 refuses to build (or parse) one."""
    if not names:
        empty = x509.UnrecognizedExtension(ExtensionOID.SUBJECT_ALTERNATIVE_NAME, b"\x30\x00")
        return ((empty, False),)
    return ((x509.SubjectAlternativeName(list(names)), False),)


def _empty_san_code() -> str:
    """RFC 5280 requires one name at least: cryptography 51 refuses to parse an empty SAN
    (so lint calls the extensions malformed), 46-50 parse it as no names at all."""
    try:
        x509.SubjectAlternativeName([])
    except ValueError:
        return "extensions_malformed"
    return "san_missing"


_EMPTY_SAN_CODE = _empty_san_code()


# --- the defects, one builder each ---------------------------------------------------


def wrong_eku_intermediate(ca: TestCA) -> Chain:
    server_only = issue_under(ca.root, ca_spec("server-only", eku=(SERVER_AUTH,)))
    return list(issue_under(server_only, CLEAN).chain)


def non_ca_intermediate(ca: TestCA) -> Chain:
    not_a_ca = issue_under(ca.root, LeafSpec(dns=("not-a-ca.acme.com",), common_name="not a CA"))
    return list(issue_under(not_a_ca, CLEAN).chain)


def intermediate_without_cert_sign(ca: TestCA) -> Chain:
    weak = issue_under(ca.root, ca_spec("no-cert-sign", key_usage=frozenset({"digital_signature"})))
    return list(issue_under(weak, CLEAN).chain)


def spiffe_ca_with_path(ca: TestCA) -> Chain:
    signing = issue_under(ca.root, ca_spec("spiffe", uris=("spiffe://acme.com/ca",)))
    return list(issue_under(signing, CLEAN).chain)


def chain_out_of_order(ca: TestCA) -> Chain:
    leaf_cert, intermediate, root = ca.issue(CLEAN).chain
    return [leaf_cert, root, intermediate]


def chain_foreign_intermediate(ca: TestCA) -> Chain:
    other = TestCA(name="other")
    return [ca.issue(CLEAN).cert, other.issuer.cert, other.root.cert]


def chain_same_name_impostor(ca: TestCA) -> Chain:
    impostor = TestCA(name="acme")  # same names as the session CA, different keys
    return [ca.issue(CLEAN).cert, impostor.issuer.cert, impostor.root.cert]


def chain_wrong_aki(ca: TestCA) -> Chain:
    bogus = x509.AuthorityKeyIdentifier(
        key_identifier=b"\x00" * 20, authority_cert_issuer=None, authority_cert_serial_number=None
    )
    return leaf(ca, key_identifiers=False, extra_extensions=((bogus, False),))


def chain_past_path_length(ca: TestCA) -> Chain:
    # ca.issuer has pathLenConstraint 0; one more CA under it breaks that.
    return list(issue_under(issue_under(ca.issuer, ca_spec("too deep")), CLEAN).chain)


def chain_depth(certificates: int) -> Callable[[TestCA], Chain]:
    def build(ca: TestCA) -> Chain:
        return list(issue_under(sub_cas(ca.root, certificates - 2), CLEAN).chain)

    build.__name__ = f"chain_of_{certificates}"
    return build


def malformed_san_extension(ca: TestCA) -> Chain:
    garbage = x509.UnrecognizedExtension(ExtensionOID.SUBJECT_ALTERNATIVE_NAME, b"\x04\x01x")
    return leaf(ca, include_san=False, extra_extensions=((garbage, False),))


def secp256k1_key(ca: TestCA) -> Chain:
    return list(ca.issue(CLEAN, key=ec.generate_private_key(ec.SECP256K1())).chain)


def p521_key(ca: TestCA) -> Chain:
    return list(ca.issue(CLEAN, key=ec.generate_private_key(ec.SECP521R1())).chain)


@dataclass(frozen=True)
class Case:
    defect: str
    build: Callable[[TestCA], Chain]
    code: str
    profile: str = "client-auth"
    index: int = 0

    @property
    def id(self) -> str:
        return f"{self.profile}:{self.code}:{self.defect}"


def simple(**changes: object) -> Callable[[TestCA], Chain]:
    return lambda ca: leaf(ca, **changes)


_IP = x509.IPAddress(ipaddress.ip_address("192.0.2.10"))
_URI = x509.UniformResourceIdentifier(SPIFFE_ID)

CASES = [
    # client-auth, leaf
    Case("ca-true-leaf", simple(ca=True), "leaf_is_ca"),
    Case("no-key-usage", simple(key_usage=None), "key_usage_missing"),
    Case(
        "key-encipherment-only",
        simple(key_usage=frozenset({"key_encipherment"})),
        "key_usage_missing_digital_signature",
    ),
    Case(
        "leaf-key-cert-sign",
        simple(key_usage=frozenset({"digital_signature", "key_cert_sign"})),
        "leaf_key_usage_ca_bits",
    ),
    Case(
        "leaf-crl-sign",
        simple(key_usage=frozenset({"digital_signature", "crl_sign"})),
        "leaf_key_usage_ca_bits",
    ),
    Case("no-eku", simple(eku=None), "eku_missing"),
    Case("server-auth-only", simple(eku=(SERVER_AUTH,)), "eku_missing_client_auth"),
    Case("any-eku-only", simple(eku=(ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,)), "eku_any_only"),
    Case("dual-use-eku", simple(eku=(CLIENT_AUTH, SERVER_AUTH)), "eku_server_auth_present"),
    # issue 28 item 4: what trustme puts in every leaf
    Case(
        "code-signing-eku",
        simple(eku=(CLIENT_AUTH, ExtendedKeyUsageOID.CODE_SIGNING)),
        "eku_code_signing_present",
    ),
    Case(
        "ec-key-encipherment",
        simple(key_usage=frozenset({"digital_signature", "key_encipherment"})),
        "key_usage_ec_encipherment",
    ),
    Case("no-san", simple(include_san=False), "san_missing"),
    Case("empty-san", simple(include_san=False, extra_extensions=with_san()), _EMPTY_SAN_CODE),
    Case(
        "ip-only-san", simple(include_san=False, extra_extensions=with_san(_IP)), "identity_missing"
    ),
    Case("bad-spiffe-id", simple(uris=("spiffe://ACME.com/billing",)), "spiffe_id_invalid"),
    Case(
        "two-uri-sans",
        simple(uris=(SPIFFE_ID, "spiffe://acme.com/admin")),
        "spiffe_multiple_uri_sans",
    ),
    # issue 27 item 2: a DNS or email SAN reading as a SPIFFE ID poses as one to text rules
    Case("dns-san-spiffe-text", simple(uris=(), dns=("spiffe://acme.com/admin",)), "san_malformed"),
    Case(
        "email-san-spiffe-host",
        simple(uris=(), emails=("admin@spiffe://acme.com/admin",)),
        "san_malformed",
    ),
    Case("dns-san-nul", simple(dns=("a.example\x00.evil",)), "san_malformed"),
    Case("email-san-no-at", simple(emails=("spiffe://acme.com/x",)), "san_malformed", "spiffe"),
    Case("cn-only", simple(include_san=False, common_name="payments"), "identity_cn_only"),
    Case(
        "ip-san",
        simple(include_san=False, extra_extensions=with_san(_URI, _IP)),
        "san_unusual_type",
    ),
    Case(
        "expired",
        simple(not_before=NOW - dt.timedelta(days=10), lifetime=dt.timedelta(days=1)),
        "cert_expired",
    ),
    Case("not-yet-valid", simple(not_before=NOW + dt.timedelta(days=1)), "cert_not_yet_valid"),
    Case("valid-400-days", simple(lifetime=dt.timedelta(days=400)), "validity_over_398_days"),
    Case("valid-120-days", simple(lifetime=dt.timedelta(days=120)), "validity_over_90_days"),
    Case("rsa-1024", simple(key_type="rsa-1024"), "key_too_weak"),
    Case("secp256k1", secp256k1_key, "key_type_unsupported"),
    Case("sha224-signature", simple(signature_hash="sha224"), "signature_algorithm_weak"),
    Case("malformed-san", malformed_san_extension, "extensions_malformed"),
    # client-auth, CA certificates and chain
    Case("non-ca-intermediate", non_ca_intermediate, "issuer_not_ca", index=1),
    Case(
        "no-cert-sign-intermediate",
        intermediate_without_cert_sign,
        "ca_key_usage_missing_cert_sign",
        index=1,
    ),
    Case("server-eku-intermediate", wrong_eku_intermediate, "ca_eku_excludes_client_auth", index=1),
    Case("out-of-order", chain_out_of_order, "chain_order"),
    Case("foreign-intermediate", chain_foreign_intermediate, "chain_issuer_mismatch"),
    Case("same-name-impostor", chain_same_name_impostor, "chain_signature_invalid"),
    Case("same-name-impostor", chain_same_name_impostor, "chain_key_id_mismatch"),
    Case("wrong-aki", chain_wrong_aki, "chain_key_id_mismatch"),
    Case("past-path-length", chain_past_path_length, "chain_path_length_exceeded", index=2),
    # spiffe
    Case("dns-only", simple(uris=(), dns=("payments.acme.com",)), "spiffe_id_missing", "spiffe"),
    Case("trust-domain-id", simple(uris=("spiffe://acme.com",)), "spiffe_leaf_root_path", "spiffe"),
    Case("no-key-usage", simple(key_usage=None), "spiffe_key_usage_missing", "spiffe"),
    Case(
        "key-usage-not-critical",
        simple(key_usage_critical=False),
        "spiffe_key_usage_not_critical",
        "spiffe",
    ),
    Case(
        "key-encipherment-only",
        simple(key_usage=frozenset({"key_encipherment"})),
        "key_usage_missing_digital_signature",
        "spiffe",
    ),
    Case("ca-true-leaf", simple(ca=True), "leaf_is_ca", "spiffe"),
    Case("server-auth-only", simple(eku=(SERVER_AUTH,)), "eku_missing_client_auth", "spiffe"),
    Case("client-auth-only", simple(), "spiffe_eku_missing_server_auth", "spiffe"),
    Case(
        "two-uri-sans",
        simple(uris=(SPIFFE_ID, "https://acme.com/")),
        "spiffe_multiple_uri_sans",
        "spiffe",
    ),
    Case("bad-spiffe-id", simple(uris=("spiffe://acme.com/a//b",)), "spiffe_id_invalid", "spiffe"),
    Case("spiffe-ca-with-path", spiffe_ca_with_path, "spiffe_ca_id_has_path", "spiffe", index=1),
    Case("non-ca-intermediate", non_ca_intermediate, "issuer_not_ca", "spiffe", index=1),
    # gcp-lb
    Case("ed25519-key", simple(key_type="ed25519"), "gcp_key_type_unsupported", "gcp-lb"),
    Case("p521-key", p521_key, "gcp_key_type_unsupported", "gcp-lb"),
    Case(
        "sha224-signature",
        simple(signature_hash="sha224"),
        "gcp_signature_algorithm_unsupported",
        "gcp-lb",
    ),
    Case("chain-of-11", chain_depth(11), "chain_too_deep", "gcp-lb"),
    Case("no-eku", simple(eku=None), "eku_missing", "gcp-lb"),
    Case("ca-true-leaf", simple(ca=True), "leaf_is_ca", "gcp-lb"),
    Case(
        "server-eku-intermediate",
        wrong_eku_intermediate,
        "ca_eku_excludes_client_auth",
        "gcp-lb",
        1,
    ),
    # aws-alb
    Case("ed25519-key", simple(key_type="ed25519"), "aws_key_type_unsupported", "aws-alb"),
    Case(
        "sha224-signature",
        simple(signature_hash="sha224"),
        "aws_signature_algorithm_unsupported",
        "aws-alb",
    ),
    Case("chain-of-5", chain_depth(5), "chain_too_deep", "aws-alb"),
    Case("server-auth-only", simple(eku=(SERVER_AUTH,)), "eku_missing_client_auth", "aws-alb"),
    Case(
        "expired",
        simple(not_before=NOW - dt.timedelta(days=3), lifetime=dt.timedelta(days=1)),
        "cert_expired",
        "aws-alb",
    ),
]

# Codes proven elsewhere, each with the test that proves it.
PROVEN_ELSEWHERE = {
    "x509_version_unsupported": "test_lint_interop.py::test_openssl_v1_certificate",
    "public_ca_issuer": "test_public_ca_rules",
    "public_ca_client_auth_no_longer_issued": "test_public_ca_rules",
    "public_ca_client_auth_phasing_out": "test_public_ca_rules",
    "public_ca_client_auth_ending": "test_public_ca_rules",
    "public_ca_intermediate_client_auth": "test_public_ca_rules",
}


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_rule_fires(case: Case, ca: TestCA) -> None:
    chain = case.build(ca)
    reports = lint_chain(chain, [case.profile], at=NOW)
    assert case.code in reports[case.index].codes, [r.codes for r in reports]
    finding = next(f for f in reports[case.index].findings if f.code == case.code)
    found, _, advice = finding.message.partition(". ")
    assert finding.reference and found and advice  # what was found, then what to do


def test_every_rule_is_proven() -> None:
    codes = {rule.code for p in PROFILES.values() for rule in (*p.leaf, *p.ca, *p.chain)}
    proven = {case.code for case in CASES} | set(PROVEN_ELSEWHERE)
    assert codes <= proven, sorted(codes - proven)


@pytest.mark.parametrize("profile", ["client-auth", "spiffe", "gcp-lb", "aws-alb", "public-ca"])
def test_clean_certificate_has_no_error_or_warning(profile: str, clean_leaf: IssuedCert) -> None:
    reports = lint_chain(list(clean_leaf.chain), [profile], at=NOW)
    assert [r.at_least(Severity.WARNING) for r in reports] == [(), (), ()]


def test_clean_certificate_is_silent_under_client_auth(clean_leaf: IssuedCert) -> None:
    assert [r.findings for r in lint_chain(list(clean_leaf.chain), at=NOW)] == [(), (), ()]


def test_vouched_leaf_signature_skips_only_the_leaf_link(ca: TestCA) -> None:
    """``leaf_signature_vouched`` is the caller's word for link 0 and nothing else: the
    same-name impostor is still caught without it, and with it a forged link above the
    leaf (and every non-signature rule) still is."""
    forged = chain_same_name_impostor(ca)  # the leaf's real issuer is not forged[1]
    assert "chain_signature_invalid" in lint_chain(forged, at=NOW)[0].codes
    vouched = lint_chain(forged, at=NOW, leaf_signature_vouched=True)
    assert "chain_signature_invalid" not in vouched[0].codes
    assert "chain_key_id_mismatch" in vouched[0].codes
    impostor = TestCA(name="acme")
    above = [ca.issue(CLEAN).cert, ca.issuer.cert, impostor.root.cert]
    reports = lint_chain(above, at=NOW, leaf_signature_vouched=True)
    assert "chain_signature_invalid" in reports[1].codes


def test_spiffe_and_client_auth_disagree_on_eku_only_as_notices(ca: TestCA) -> None:
    """DESIGN §4: clientAuth-only is a spiffe notice, serverAuth+clientAuth a client-auth notice."""
    only_client = lint_chain(leaf(ca), ["client-auth", "spiffe"], at=NOW)[0]
    dual = lint_chain(leaf(ca, eku=(CLIENT_AUTH, SERVER_AUTH)), ["client-auth", "spiffe"], at=NOW)[
        0
    ]
    assert {(f.code, f.severity) for f in only_client.findings} == {
        ("spiffe_eku_missing_server_auth", Severity.NOTICE)
    }
    assert {(f.code, f.severity) for f in dual.findings} == {
        ("eku_server_auth_present", Severity.NOTICE)
    }


def test_shared_rules_report_once_across_profiles(ca: TestCA) -> None:
    report = lint_chain(leaf(ca, ca=True), ["client-auth", "spiffe", "gcp-lb"], at=NOW)[0]
    assert [f.code for f in report.findings].count("leaf_is_ca") == 1


def test_findings_are_sorted_most_severe_first(ca: TestCA) -> None:
    report = lint_chain(leaf(ca, include_san=False, common_name="x", key_usage=None), at=NOW)[0]
    ranks = [f.severity.rank for f in report.findings]
    assert ranks == sorted(ranks) and report.has_errors


def test_time_is_a_parameter(clean_leaf: IssuedCert) -> None:
    chain = list(clean_leaf.chain)
    assert not lint_chain(chain, at=NOW)[0].has_errors
    later = lint_chain(chain, at=NOW + dt.timedelta(days=2))[0]
    before = lint_chain(chain, at=NOW - dt.timedelta(days=2))[0]
    assert "cert_expired" in later.codes and "cert_not_yet_valid" in before.codes
    with pytest.raises(ValueError, match="timezone-aware"):
        lint_chain(chain, at=dt.datetime(2026, 1, 1))


def test_unknown_profile_is_named(clean_leaf: IssuedCert) -> None:
    with pytest.raises(ValueError, match="unknown lint profile 'webpki'"):
        lint_chain([clean_leaf.cert], ["webpki"], at=NOW)


def test_chain_rules_silent_on_a_correct_chain_of_eleven(ca: TestCA) -> None:
    chain = chain_depth(11)(ca)
    reports = lint_chain(chain, ["client-auth"], at=NOW)
    assert all(not r.findings for r in reports), [r.codes for r in reports]
    assert "chain_too_deep" not in lint_chain(chain_depth(10)(ca), ["gcp-lb"], at=NOW)[0].codes
    assert "chain_too_deep" not in lint_chain(chain_depth(4)(ca), ["aws-alb"], at=NOW)[0].codes


def test_leaf_without_root_counts_the_root_toward_depth(ca: TestCA) -> None:
    """A file without its root: the load balancer still builds the path up to one."""
    chain = chain_depth(4)(ca)[:-1]  # leaf + 2 intermediates; the root is the 4th
    assert "chain_too_deep" not in lint_chain(chain, ["aws-alb"], at=NOW)[0].codes
    chain = chain_depth(5)(ca)[:-1]
    assert "chain_too_deep" in lint_chain(chain, ["aws-alb"], at=NOW)[0].codes


def test_self_signed_roots_sha_is_not_judged(ca: TestCA) -> None:
    """Nobody verifies a root's self-signature, so its hash is not a finding."""
    reports = lint_chain(list(ca.issue(CLEAN).chain), at=NOW)
    assert "signature_algorithm_weak" not in reports[2].codes


# --- public-ca: a test root stands in for a certifi root ------------------------------


@pytest.fixture
def public_like(tmp_path: Path) -> tuple[TestCA, str]:
    """A CA whose root is passed as an extra public root bundle (certifi's own can't sign here)."""
    public = TestCA(name="public-like")
    bundle = tmp_path / "public-roots.pem"
    bundle.write_bytes(public.bundle_pem)
    return public, str(bundle)


def test_public_ca_rules(public_like: tuple[TestCA, str], clean_leaf: IssuedCert) -> None:
    public, bundle = public_like

    def lint_issued(not_before: dt.datetime) -> dict[int, set[str]]:
        chain = list(public.issue(CLEAN.replace(not_before=not_before)).chain)
        at = not_before + dt.timedelta(hours=1)
        return {
            r.index: r.codes for r in lint_chain(chain, ["public-ca"], at=at, public_bundle=bundle)
        }

    after_final = lint_issued(dt.datetime(2027, 4, 1, tzinfo=dt.UTC))
    assert {"public_ca_issuer", "public_ca_client_auth_no_longer_issued"} <= after_final[0]
    between = lint_issued(dt.datetime(2026, 6, 20, tzinfo=dt.UTC))
    assert "public_ca_client_auth_phasing_out" in between[0]
    before_any = lint_issued(dt.datetime(2026, 1, 5, tzinfo=dt.UTC))
    assert "public_ca_client_auth_ending" in before_any[0]
    # The test intermediate has no EKU (any purpose) and was made after 2026-06-15.
    if public.issuer.cert.not_valid_before_utc.date() >= dt.date(2026, 6, 15):
        assert "public_ca_intermediate_client_auth" in after_final[1]
    # Negative control: the private CA's chain gets nothing from this profile.
    private = lint_chain(list(clean_leaf.chain), ["public-ca"], at=NOW, public_bundle=bundle)
    assert [r.codes for r in private] == [set(), set(), set()]


def test_public_leaf_without_client_auth_is_only_flagged_as_public(
    public_like: tuple[TestCA, str],
) -> None:
    public, bundle = public_like
    chain = list(public.issue(CLEAN.replace(eku=(SERVER_AUTH,))).chain)
    assert lint_chain(chain, ["public-ca"], at=NOW, public_bundle=bundle)[0].codes == {
        "public_ca_issuer"
    }


def test_chain_pem_roundtrip_lints_the_same(ca: TestCA) -> None:
    """What the CLI reads from a file is what the library lints."""
    from mtlskit.certs import load_certificates

    chain = wrong_eku_intermediate(ca)
    again = load_certificates(chain_pem(chain))
    assert [r.codes for r in lint_chain(again, at=NOW)] == [
        r.codes for r in lint_chain(chain, at=NOW)
    ]


def test_unparseable_extensions_report_once_not_as_absent(ca: TestCA) -> None:
    """An empty EKU SEQUENCE does not parse: say so, instead of 'EKU, SAN, keyUsage absent'."""
    chain = leaf(ca, eku=(), lifetime=dt.timedelta(days=400))
    codes = lint_chain(chain, list(PROFILES), at=NOW)[0].codes
    assert codes == {"extensions_malformed", "validity_over_398_days"}


def test_profiles_of_one_name_keep_their_own_rules(ca: TestCA) -> None:
    """Rule sets are kept per combination of profile objects, not per name: two
    profiles called alike, one without the serverAuth rule, lint as written."""
    from mtlskit.lint import Profile

    chain = leaf(ca, eku=(ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH))
    full = PROFILES["client-auth"]
    lax = Profile(
        name=full.name,
        summary=full.summary,
        leaf=tuple(rule for rule in full.leaf if rule.code != "eku_server_auth_present"),
        ca=full.ca,
        chain=full.chain,
    )
    for _ in range(2):
        assert "eku_server_auth_present" in lint_chain(chain, [full], at=NOW)[0].codes
        assert "eku_server_auth_present" not in lint_chain(chain, [lax], at=NOW)[0].codes
        assert "eku_server_auth_present" in lint_chain(chain, [lax, full], at=NOW)[0].codes
