"""Authorization policy: a table of rules × clients, TOML validation, shadow mode, scale."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest

from conftest import CLEAN, SPIFFE_ID, write
from mtlskit.authz import (
    Policy,
    Rule,
    RuleKind,
    authorize_id,
    authorize_matching,
    authorize_member_of,
    authorize_one_of,
)
from mtlskit.certs import Fingerprint
from mtlskit.errors import ConfigError
from mtlskit.identity import ClientIdentity, IdentityKind, SpiffeId
from mtlskit.testca import LeafSpec, TestCA
from mtlskit.verify import Code, Decision, Reason, Verdict

FP = Fingerprint(bytes(range(32)))


def accepted(kind: str, value: str, fingerprint: Fingerprint = FP) -> Decision:
    identity = ClientIdentity(
        kind=IdentityKind(kind),
        value=value,
        spiffe_id=SpiffeId.parse(value) if kind == "spiffe" else None,
    )
    return Decision(verdict=Verdict.ACCEPT, identity=identity, chain=(fingerprint,))


POLICY = f"""
[[allow]]
id = "spiffe://acme.com/billing/payments"

[[allow]]
id = "spiffe://acme.com/billing/*"
routes = ["GET /invoices", "POST /payments/"]

[[allow]]
id = "spiffe://acme.com/ops/**"

[[allow]]
trust_domain = "partner.example"

[[allow]]
dns = "client.acme.com"

[[allow]]
email = "alice@Example.ORG"

[[allow]]
fingerprint = "{FP}"
"""

CASES = [
    # (kind, value, method, path, rule index or None)
    ("spiffe", "spiffe://acme.com/billing/payments", None, None, 0),
    ("spiffe", "spiffe://acme.com/billing/refunds", None, None, 1),  # * with routes, no request
    ("spiffe", "spiffe://acme.com/billing/refunds", "GET", "/invoices/42", 1),
    ("spiffe", "spiffe://acme.com/billing/refunds", "get", "/invoices", 1),
    ("spiffe", "spiffe://acme.com/billing/refunds", "GET", "/invoices-old", None),
    ("spiffe", "spiffe://acme.com/billing/refunds", "DELETE", "/invoices/42", None),
    ("spiffe", "spiffe://acme.com/billing/refunds", "POST", "/payments/7", 1),
    ("spiffe", "spiffe://acme.com/billing/refunds", "GET", "/invoices/../admin", None),
    ("spiffe", "spiffe://acme.com/billing/a/b", None, None, None),  # * is one segment
    ("spiffe", "spiffe://acme.com/billing", None, None, None),
    ("spiffe", "spiffe://acme.com/ops/db", None, None, 2),
    ("spiffe", "spiffe://acme.com/ops/db/primary/0", None, None, 2),  # ** any depth
    ("spiffe", "spiffe://acme.com/ops", None, None, None),  # ** is one or more
    ("spiffe", "spiffe://partner.example/anything/at/all", None, None, 3),
    ("spiffe", "spiffe://evil.com/billing/payments", None, None, None),
    ("dns", "client.acme.com", None, None, 4),
    ("dns", "CLIENT.acme.com.", None, None, 4),
    ("dns", "other.acme.com", None, None, None),
    ("email", "alice@example.org", None, None, 5),
    ("email", "Alice@example.org", None, None, None),  # the local part is case-sensitive
    ("uri", "https://acme.com/billing/payments", None, None, None),
]


@pytest.mark.parametrize(("kind", "value", "method", "path", "rule"), CASES)
def test_rule_table(kind, value, method, path, rule):
    policy = Policy.from_toml(POLICY)
    decision = policy.authorize(
        accepted(kind, value, Fingerprint(b"\xff" * 32)), method=method, path=path
    )
    if rule is None:
        assert decision.verdict is Verdict.REJECT
        assert decision.codes == (Code.IDENTITY_NOT_AUTHORIZED,)
        assert "default deny" in decision.reasons[0].message
    else:
        assert decision.verdict is Verdict.ACCEPT
        assert decision.rule is not None and decision.rule.startswith(f"allow[{rule}] ")


def test_fingerprint_rule_is_the_most_specific():
    policy = Policy.from_toml(POLICY)
    decision = policy.authorize(accepted("spiffe", "spiffe://acme.com/billing/payments"))
    assert decision.rule == f'allow[6] fingerprint = "{FP}"'


def test_rejected_verification_is_never_rescued():
    rejected = Decision(
        verdict=Verdict.REJECT,
        reasons=(Reason(code=Code.CERT_EXPIRED, message="expired"),),
    )
    assert Policy.from_toml(POLICY).authorize(rejected) is rejected


def test_shadow_mode_reports_but_never_denies():
    policy = Policy.from_toml('mode = "shadow"\n[[allow]]\ntrust_domain = "acme.com"\n')
    decision = policy.authorize(accepted("spiffe", "spiffe://evil.com/x"))
    assert decision.verdict is Verdict.ACCEPT
    assert decision.codes == (Code.IDENTITY_NOT_AUTHORIZED,)
    assert decision.reasons[0].message.startswith("shadow mode, not enforced:")
    allowed = policy.authorize(accepted("spiffe", "spiffe://acme.com/x"))
    assert (allowed.reasons, allowed.rule) == ((), 'allow[0] trust_domain = "acme.com"')


def test_empty_policy_denies_everything():
    decision = Policy.from_toml("").authorize(accepted("spiffe", SPIFFE_ID))
    assert decision.verdict is Verdict.REJECT


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[allow]]\nidd = "x"\n', "unknown key 'allow[0].idd'"),
        ('moed = "shadow"\n', "unknown key 'moed'"),
        ('mode = "audit"\n', "mode:"),
        ('[[allow]]\nid = "a"\ndns = "b"\n', "needs exactly one of"),
        ("[[allow]]\n", "needs exactly one of"),
        ('[[allow]]\nid = "spiffe://acme.com/a/**/b"\n', "`**` may only be the last segment"),
        ('[[allow]]\nid = "spiffe://acme.com/pay*"\n', "must be `*`, `**` or a literal"),
        ('[[allow]]\nid = "spiffe://ACME.com/x"\n', "trust domain characters"),
        ('[[allow]]\ntrust_domain = "acme.com/x"\n', "trust domain characters"),
        ('[[allow]]\nfingerprint = "sha256:zz"\n', "not a SHA-256 fingerprint"),
        ('[[allow]]\nid = "spiffe://acme.com/x"\nroutes = ["/x"]\n', "METHOD /path-prefix"),
        ("[[allow]\n", "is not valid TOML"),
    ],
)
def test_invalid_policy_is_a_config_error_naming_the_problem(text, message):
    with pytest.raises(ConfigError, match=r"policy\.toml") as caught:
        Policy.from_toml(text, source="policy.toml")
    assert message in str(caught.value)


def test_unknown_key_exits_2_naming_it(run_cli, tmp_path, ca, clean_leaf):
    policy = tmp_path / "policy.toml"
    policy.write_text('[[allow]]\nid = "spiffe://acme.com/x"\nroute = ["GET /"]\n')
    client = write(tmp_path / "c.pem", clean_leaf.chain_pem)
    root = write(tmp_path / "root.pem", ca.bundle_pem)
    result = run_cli("verify", client, "--trust", root, "--policy", policy)
    assert result.code == 2
    assert result.err.strip() == f"mtlskit: error: {policy}: unknown key 'allow[0].route'"


def test_shadow_mode_through_the_cli(run_cli, tmp_path, ca, clean_leaf):
    policy = tmp_path / "policy.toml"
    policy.write_text('mode = "shadow"\n[[allow]]\ndns = "nobody.example"\n')
    client = write(tmp_path / "c.pem", clean_leaf.chain_pem)
    root = write(tmp_path / "root.pem", ca.bundle_pem)
    result = run_cli("verify", client, "--trust", root, "--policy", policy, "--json")
    out = json.loads(result.out)
    assert (result.code, out["verdict"]) == (0, "accept")
    assert [r["code"] for r in out["reasons"]] == ["identity_not_authorized"]


def test_go_spiffe_style_authorizers(ca):
    from mtlskit.verify import TrustStore, Verifier

    leaf = ca.issue(CLEAN)
    trust = TrustStore.build(anchors=[ca.root.cert])
    now = dt.datetime.now(dt.UTC)
    for authorize, verdict in [
        (authorize_id(SPIFFE_ID), Verdict.ACCEPT),
        (authorize_id("spiffe://acme.com/other"), Verdict.REJECT),
        (authorize_one_of("spiffe://acme.com/other", SPIFFE_ID), Verdict.ACCEPT),
        (authorize_member_of("acme.com"), Verdict.ACCEPT),
        (authorize_member_of("partner.example"), Verdict.REJECT),
        (authorize_matching("spiffe://acme.com/billing/*"), Verdict.ACCEPT),
        (authorize_matching("spiffe://acme.com/*"), Verdict.REJECT),
    ]:
        decision = Verifier(trust=trust, authorize=authorize).verify(leaf.chain[:-1], at=now)
        assert decision.verdict is verdict, authorize


def test_pinned_fingerprint_rule_with_a_real_certificate():
    leaf = TestCA(name="pin").issue(LeafSpec(dns=("a.example",), self_signed=True))
    from mtlskit.verify import TrustStore, Verifier

    pin = Fingerprint.of(leaf.cert)
    policy = Policy.from_toml(f'[[allow]]\nfingerprint = "{pin}"\n')
    verifier = Verifier(trust=TrustStore.build(pins=[pin]), authorize=policy.authorize)
    decision = verifier.verify([leaf.cert], at=dt.datetime.now(dt.UTC))
    assert decision.rule == f'allow[0] fingerprint = "{pin}"'


def test_100k_exact_and_10k_patterns_without_a_linear_scan():
    rules = [
        Rule(kind=RuleKind.ID, value=f"spiffe://acme.com/svc/{i}", index=i) for i in range(100_000)
    ]
    rules += [
        Rule(kind=RuleKind.ID, value=f"spiffe://acme.com/team{i}/*", index=100_000 + i)
        for i in range(10_000)
    ]
    policy = Policy(rules)
    probes = [accepted("spiffe", f"spiffe://acme.com/svc/{i}") for i in range(0, 100_000, 97)]
    probes += [accepted("spiffe", f"spiffe://acme.com/team{i}/x") for i in range(0, 10_000, 13)]
    start = time.perf_counter()
    for probe in probes:
        assert policy.authorize(probe).accepted
    per_decision = (time.perf_counter() - start) / len(probes)
    assert per_decision < 50e-6  # a linear scan over 110k rules would take milliseconds
    last = policy.authorize(accepted("spiffe", "spiffe://acme.com/svc/99999"))
    assert last.rule == 'allow[99999] id = "spiffe://acme.com/svc/99999"'
