"""Enrollment rules without sockets: tokens, approvals, CSR identities, renewal timing,
the failure limiter, and the store's atomic redemption under real thread concurrency."""

from __future__ import annotations

import datetime as dt
import random
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from mtlskit.caserver import FailureLimiter
from mtlskit.certs import generate_private_key
from mtlskit.client import backoff, build_csr, renewal_time
from mtlskit.issue import (
    Approval,
    ApprovalRule,
    EnrollmentRefused,
    IdentityPattern,
    TokenRecord,
    approvals_counted,
    check_csr_identity,
    new_token,
    parse_identity,
    required_approvals,
    token_hash,
    unredeemable,
)
from mtlskit.store import SqlStore

NOW = dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)
WEB = parse_identity("spiffe://acme.com/web")


def test_token_is_256_random_bits_and_only_its_hash_is_stored():
    token, record = new_token(WEB, now=NOW, ttl=dt.timedelta(minutes=15), secret=bytes(32))
    assert token == "mtk1_" + "A" * 43
    assert record.hash == token_hash(token) and token not in repr(record)
    assert record.expires_at == NOW + dt.timedelta(minutes=15)
    other, _ = new_token(WEB, now=NOW, ttl=dt.timedelta(minutes=1))
    assert other != token and len(other) == 48


@pytest.mark.parametrize("text", ["", "mtk1_", "mtk1_" + "A" * 42, "mtk1_" + "A" * 43 + "\n", "x"])
def test_malformed_tokens_are_token_invalid(text):
    with pytest.raises(EnrollmentRefused) as refused:
        token_hash(text)
    assert refused.value.code == "token_invalid"


@pytest.mark.parametrize(
    ("used", "expires", "code"),
    [
        (None, NOW + dt.timedelta(minutes=1), "token_invalid"),  # only with no record at all
        (NOW, NOW + dt.timedelta(minutes=1), "token_used"),
        (None, NOW, "token_expired"),
        (NOW, NOW - dt.timedelta(minutes=1), "token_used"),  # used wins over expired
    ],
)
def test_why_a_token_is_unredeemable(used, expires, code):
    record = TokenRecord(
        hash="0" * 64, identity=WEB.value, created_at=NOW, expires_at=expires, used_at=used
    )
    found = None if code == "token_invalid" else record
    assert unredeemable(found, NOW).code == code


def _csr(*names: x509.GeneralName, cn: str | None = None) -> x509.CertificateSigningRequest:
    subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, cn)] if cn else [])
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
    return builder.sign(generate_private_key(), hashes.SHA256())


@pytest.mark.parametrize(
    ("csr", "ok"),
    [
        (_csr, True),
        (lambda: _csr(x509.UniformResourceIdentifier(WEB.value)), True),
        (lambda: _csr(cn=WEB.value), True),
        (lambda: _csr(x509.UniformResourceIdentifier("spiffe://acme.com/admin")), False),
        (lambda: _csr(x509.UniformResourceIdentifier(WEB.value), x509.DNSName("a.com")), False),
        (lambda: _csr(cn="admin"), False),
    ],
)
def test_a_csr_names_nothing_or_only_the_bound_identity(csr, ok):
    if ok:
        check_csr_identity(csr(), WEB.value)
        return
    with pytest.raises(EnrollmentRefused) as refused:
        check_csr_identity(csr(), WEB.value)
    assert refused.value.code == "identity_mismatch"


def test_approvals_count_distinct_approvers_of_this_csr_only():
    rules = (
        ApprovalRule(ids=(IdentityPattern.parse("spiffe://acme.com/prod/**"),), approvers=2),
        ApprovalRule(ids=(IdentityPattern.parse("spiffe://acme.com/prod/db"),), approvers=3),
    )
    assert required_approvals(rules, "spiffe://acme.com/prod/db") == 3  # the strictest
    assert required_approvals(rules, "spiffe://acme.com/prod/web") == 2
    assert required_approvals(rules, WEB.value) == 0
    given = [
        Approval(approver="alice", csr_sha256="aa", at=NOW, fingerprint="k1", signature=b"s"),
        Approval(approver="Alice", csr_sha256="aa", at=NOW, fingerprint="k2", signature=b"s"),
        Approval(approver="bob", csr_sha256="bb", at=NOW, fingerprint="k3", signature=b"s"),
        Approval(approver="carol", csr_sha256="aa", at=NOW),  # unsigned, from before schema 4
    ]
    assert approvals_counted(given, "aa") == ("alice",)  # bob approved another CSR


def test_renewal_time_ignores_the_backdate():
    key = generate_private_key()
    issued = NOW
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "x")]))
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(issued - dt.timedelta(minutes=5))
        .not_valid_after(issued + dt.timedelta(seconds=6))
        .sign(key, hashes.SHA256())
    )
    assert renewal_time(cert, received=issued) == issued + dt.timedelta(seconds=4)
    assert renewal_time(cert, received=issued, jitter=1 / 12) == issued + dt.timedelta(seconds=4.5)
    # received unknown (far in the past): fall back to notBefore
    old = renewal_time(cert, received=issued - dt.timedelta(days=1))
    assert old == issued - dt.timedelta(minutes=5) + (dt.timedelta(seconds=306) * 2 / 3)


def test_backoff_doubles_with_jitter_and_respects_the_remaining_life():
    rng = random.Random(1)
    long = dt.timedelta(days=1)
    ceilings = [backoff(n, remaining=long, rng=rng) for n in range(12)]
    assert all(2**n / 2 <= c <= 2**n for n, c in enumerate(ceilings[:8]))
    assert max(ceilings) <= 300
    assert backoff(10, remaining=dt.timedelta(seconds=8), rng=rng) <= 2


def test_failure_limiter_slides():
    limiter = FailureLimiter(limit=2, window=10)
    for t in (0, 1):
        assert limiter.retry_after("a", t) is None
        limiter.failed("a", t)
    assert limiter.retry_after("a", 2) == pytest.approx(8)
    assert limiter.retry_after("b", 2) is None
    assert limiter.retry_after("a", 10.5) is None


def test_build_csr_names_the_identity_only_when_asked():
    key = generate_private_key()
    assert len(build_csr(key).extensions) == 0
    san = build_csr(key, WEB.value).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == [WEB.value]


def test_store_redeems_once_under_twenty_threads(tmp_path):
    url = f"sqlite:///{tmp_path / 'ca.db'}"
    SqlStore.open(url, create=True).close()
    token, record = new_token(WEB, now=NOW, ttl=dt.timedelta(minutes=15))
    store = SqlStore.open(url)
    store.add_token(record)
    store.close()
    barrier = threading.Barrier(20)
    outcomes: list[str] = []

    def redeem() -> None:
        mine = SqlStore.open(url)  # one store (and connection) per thread, as in production
        try:
            barrier.wait()
            mine.redeem_token(token_hash(token), at=NOW, detail={})
            outcomes.append("ok")
        except EnrollmentRefused as refused:
            outcomes.append(refused.code)
        finally:
            mine.close()

    threads = [threading.Thread(target=redeem) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["ok"] + ["token_used"] * 19
    store = SqlStore.open(url)
    events = [entry.event for entry in store.audit_entries()]
    store.close()
    assert events.count("redeem") == 1 and events.count("redeem_refused") == 19


def test_version_1_store_gains_the_enrollment_tables(tmp_path):
    import sqlite3

    url = f"sqlite:///{tmp_path / 'ca.db'}"
    SqlStore.open(url, create=True).close()
    with sqlite3.connect(tmp_path / "ca.db") as db:
        # A store from before Alembic: no alembic_version, only counters.schema_version.
        for table in (
            "approvers",
            "approvals",
            "enrollment_requests",
            "tokens",
            "token_ids",
            "alembic_version",
        ):
            db.execute(f"DROP TABLE {table}")
        db.execute("UPDATE counters SET value = 1 WHERE name = 'schema_version'")
    store = SqlStore.open(url)
    try:
        assert store.find_token("0" * 64) is None
        assert store.requests() == []
    finally:
        store.close()
