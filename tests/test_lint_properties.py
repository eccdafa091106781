"""Property tests: whatever mix of properties a certificate has, lint reports its defects."""

from __future__ import annotations

import datetime as dt

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtlskit.lint import PROFILES, lint_chain
from mtlskit.testca import CLIENT_AUTH, SERVER_AUTH, LeafSpec, TestCA

CA = TestCA(name="props")
KNOWN = {rule.code for p in PROFILES.values() for rule in (*p.leaf, *p.ca, *p.chain)}
USAGES = ["digital_signature", "key_encipherment", "key_agreement", "key_cert_sign", "crl_sign"]

specs = st.builds(
    LeafSpec,
    uris=st.sampled_from(
        [
            (),
            ("spiffe://acme.com/a",),
            ("spiffe://acme.com",),
            ("spiffe://Acme/x",),
            ("https://a.example/",),
        ]
    ),
    dns=st.sampled_from([(), ("a.acme.com",)]),
    common_name=st.sampled_from([None, "client"]),
    include_san=st.booleans(),
    ca=st.sampled_from([None, False, True]),
    key_usage=st.none() | st.frozensets(st.sampled_from(USAGES)),
    key_usage_critical=st.booleans(),
    eku=st.none()
    | st.lists(st.sampled_from([CLIENT_AUTH, SERVER_AUTH]), min_size=1, unique=True).map(tuple),
    lifetime=st.sampled_from(
        [dt.timedelta(hours=25), dt.timedelta(days=120), dt.timedelta(days=500)]
    ),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=specs)
def test_findings_match_the_spec(spec: LeafSpec) -> None:
    chain = list(CA.issue(spec).chain)
    reports = lint_chain(chain, list(PROFILES), at=dt.datetime.now(dt.UTC))
    leaf = reports[0].codes
    assert leaf <= KNOWN
    assert ("leaf_is_ca" in leaf) == bool(spec.ca)
    assert ("eku_missing" in leaf) == (spec.eku is None)
    assert ("eku_missing_client_auth" in leaf) == (
        spec.eku is not None and CLIENT_AUTH not in spec.eku
    )
    assert ("key_usage_missing" in leaf) == (spec.key_usage is None)
    has_san = spec.include_san and bool(spec.uris or spec.dns)
    assert ("san_missing" in leaf) == (not has_san)
    assert ("validity_over_398_days" in leaf) == (spec.lifetime.days > 398)
    # The CAs above are judged on their own, whatever the leaf: clean here.
    assert [r.findings for r in reports[1:]] == [(), ()]
