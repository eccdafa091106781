"""The CA core without a CLI: profiles, CSR review, identity policy, lint gate, audit chain, CRL."""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
import threading
from contextlib import contextmanager

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mtlskit.caserver import CaServer, FailureLimiter
from mtlskit.certs import generate_private_key
from mtlskit.client import build_csr
from mtlskit.errors import InputError
from mtlskit.issue import (
    CLIENT_AUTH,
    SPIFFE,
    AuditEntry,
    CertificateAuthority,
    CertificateRecord,
    EnrollmentRefused,
    IdentityPattern,
    IdentityPolicy,
    IssuanceRefused,
    Issued,
    Issuer,
    RegistrationAuthority,
    SerialTaken,
    StoreUnavailable,
    build_ca_certificate,
    build_leaf,
    build_self_signed,
    lint_errors,
    load_csr,
    new_token,
    parse_duration,
    parse_identity,
    review_csr,
    verify_audit_chain,
)
from mtlskit.store import SqlStore
from mtlskit.testca import LeafSpec, TestCA

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
ID = "spiffe://acme.com/billing/payments"
# The extensions of every leaf, in the order the builder writes them.
LEAF_EXTENSION_ORDER = [
    x509.BasicConstraints,
    x509.KeyUsage,
    x509.ExtendedKeyUsage,
    x509.SubjectAlternativeName,
    x509.SubjectKeyIdentifier,
    x509.AuthorityKeyIdentifier,
]
LEAF_EXTENSIONS = set(LEAF_EXTENSION_ORDER)


def _issuers() -> tuple[Issuer, Issuer]:
    root_key, issuing_key = generate_private_key(), generate_private_key()
    year = dt.timedelta(days=365)
    root_cert = build_ca_certificate(
        common_name="t root",
        key=root_key,
        signer=None,
        not_before=NOW - year,
        not_after=NOW + 10 * year,
        path_length=1,
    )
    root = Issuer(cert=root_cert, key=root_key, chain=(root_cert,))
    issuing_cert = build_ca_certificate(
        common_name="t issuing",
        key=issuing_key,
        signer=root,
        not_before=NOW - year,
        not_after=NOW + 5 * year,
        path_length=0,
    )
    return root, Issuer(cert=issuing_cert, key=issuing_key, chain=(issuing_cert, root_cert))


ROOT, ISSUING = _issuers()


def _policy(*patterns: str, max_ttl: str = "7d") -> IdentityPolicy:
    return IdentityPolicy(
        allowed_ids=tuple(IdentityPattern.parse(p) for p in patterns),
        max_ttl=parse_duration(max_ttl),
        key_types=frozenset({"ec-p256", "ec-p384", "rsa-2048", "ed25519"}),
    )


@pytest.fixture
def store(tmp_path):
    opened = SqlStore.open(f"sqlite:///{tmp_path / 'ca.db'}", create=True)
    yield opened
    opened.close()


def _authority(store, *, issuer=ISSUING, profile=CLIENT_AUTH, policy=None) -> CertificateAuthority:
    return CertificateAuthority(
        issuer=issuer,
        profile=profile,
        policy=policy or _policy("spiffe://acme.com/**", "client.acme.com"),
        store=store,
        default_ttl=dt.timedelta(hours=24),
        crl_validity=dt.timedelta(days=7),
    )


def _leaf(issuer: Issuer, *, identity: str = ID, profile=CLIENT_AUTH, serial: int | None = None):
    """A one-hour leaf for a fresh key, signed by ``issuer``."""
    return build_leaf(
        issuer=issuer,
        identity=parse_identity(identity),
        public_key=generate_private_key().public_key(),
        profile=profile,
        not_before=NOW,
        not_after=NOW + dt.timedelta(hours=1),
        serial=serial if serial is not None else x509.random_serial_number(),
    )


def _ext(cert: x509.Certificate, kind):
    return cert.extensions.get_extension_for_class(kind)


def _pyca_accepts(leaf: x509.Certificate, chain) -> None:
    """pyca's client verifier: an independent implementation of RFC 5280 path validation."""
    verifier = (
        verification.PolicyBuilder()
        .store(verification.Store([chain[-1]]))
        .time(NOW)
        .build_client_verifier()
    )
    verifier.verify(leaf, list(chain[1:-1]))


# --- profiles and the builder -------------------------------------------------------


def test_client_auth_leaf_has_exactly_the_profile(store):
    issued = _authority(store).issue(
        parse_identity(ID), generate_private_key().public_key(), now=NOW
    )
    cert = issued.cert
    assert {type(e.value) for e in cert.extensions} == LEAF_EXTENSIONS
    assert _ext(cert, x509.BasicConstraints).value.ca is False
    assert _ext(cert, x509.BasicConstraints).critical
    usage = _ext(cert, x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature
    assert not (usage.value.key_cert_sign or usage.value.key_encipherment or usage.value.crl_sign)
    assert list(_ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert list(_ext(cert, x509.SubjectAlternativeName).value) == [
        x509.UniformResourceIdentifier(ID)
    ]
    assert cert.not_valid_after_utc - NOW == dt.timedelta(hours=24)
    assert cert.serial_number.bit_length() > 64
    assert lint_errors(issued.chain, CLIENT_AUTH, NOW) == []
    _pyca_accepts(cert, issued.chain)


def test_leaves_of_one_issuer_share_only_the_issuers_part():
    """The issuer keeps a prepared builder prefix; every leaf still gets its own subject,
    key, SAN and SKI, and the extensions keep their order (BC, KU, EKU, SAN, SKI, AKI)."""
    leaves = [
        _leaf(ISSUING, identity=identity, profile=profile, serial=serial)
        for serial, identity, profile in (
            (1, ID, CLIENT_AUTH),
            (2, "spiffe://acme.com/web", SPIFFE),
        )
    ]
    for leaf in leaves:
        assert [type(e.value) for e in leaf.extensions] == LEAF_EXTENSION_ORDER
        assert leaf.issuer == ISSUING.cert.subject
        leaf.verify_directly_issued_by(ISSUING.cert)
    first, second = leaves
    assert list(_ext(first, x509.SubjectAlternativeName).value) == [
        x509.UniformResourceIdentifier(ID)
    ]
    assert list(_ext(second, x509.SubjectAlternativeName).value) == [
        x509.UniformResourceIdentifier("spiffe://acme.com/web")
    ]
    assert list(_ext(first, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert list(_ext(second, x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    ]
    assert _ext(first, x509.SubjectKeyIdentifier) != _ext(second, x509.SubjectKeyIdentifier)
    assert _ext(first, x509.AuthorityKeyIdentifier) == _ext(second, x509.AuthorityKeyIdentifier)


def test_spiffe_profile_has_both_ekus_and_refuses_other_identities(store):
    ca = _authority(store, profile=SPIFFE)
    issued = ca.issue(parse_identity(ID), generate_private_key().public_key(), now=NOW)
    assert list(_ext(issued.cert, x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    ]
    assert lint_errors(issued.chain, SPIFFE, NOW) == []
    with pytest.raises(IssuanceRefused) as refused:
        ca.issue(parse_identity("client.acme.com"), generate_private_key().public_key(), now=NOW)
    assert refused.value.rule == "profile"


def test_long_identity_gets_empty_subject_and_critical_san(store):
    long_id = "spiffe://acme.com/" + "/".join(["segment"] * 10)
    issued = _authority(store).issue(
        parse_identity(long_id), generate_private_key().public_key(), now=NOW
    )
    assert len(issued.cert.subject) == 0
    assert _ext(issued.cert, x509.SubjectAlternativeName).critical
    assert lint_errors(issued.chain, CLIENT_AUTH, NOW) == []


def test_self_signed_has_aki_equal_to_ski_and_lints_clean():
    key = generate_private_key()
    cert = build_self_signed(
        key=key,
        identity=parse_identity("client.acme.com"),
        profile=CLIENT_AUTH,
        not_before=NOW,
        not_after=NOW + dt.timedelta(days=90),
    )
    assert {type(e.value) for e in cert.extensions} == LEAF_EXTENSIONS
    ski = _ext(cert, x509.SubjectKeyIdentifier).value.digest
    assert _ext(cert, x509.AuthorityKeyIdentifier).value.key_identifier == ski
    assert lint_errors((cert,), CLIENT_AUTH, NOW) == []


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        (ID, "spiffe"),
        ("urn:example:client:7", "uri"),
        ("ops@acme.com", "email"),
        ("client.acme.com", "dns"),
    ],
)
def test_parse_identity_kinds(text, kind):
    assert parse_identity(text).kind.value == kind


@pytest.mark.parametrize(
    "text", ["spiffe://acme.com/billing/", "spiffe://ACME.com/x", "Not A Name", "a..b", ""]
)
def test_parse_identity_rejects(text):
    with pytest.raises(InputError):
        parse_identity(text)


# --- CSRs: the CA, not the requester, decides ------------------------------------------


def _csr(*, sans, ca=True, eku=(ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH)):
    key = generate_private_key()
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "admin")])
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    builder = builder.add_extension(x509.OCSPNoCheck(), critical=False)
    return builder.sign(key, hashes.SHA256()), key


def test_csr_requests_are_dropped_and_reported(store):
    csr, key = _csr(
        sans=[
            x509.UniformResourceIdentifier("spiffe://acme.com/admin"),
            x509.UniformResourceIdentifier(ID),
            x509.DNSName("evil.example"),
        ]
    )
    issued = _authority(store).sign(csr, parse_identity(ID), now=NOW)
    cert = issued.cert
    assert cert.public_key() == key.public_key()
    assert {type(e.value) for e in cert.extensions} == LEAF_EXTENSIONS
    assert _ext(cert, x509.BasicConstraints).value.ca is False
    assert list(_ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert list(_ext(cert, x509.SubjectAlternativeName).value) == [
        x509.UniformResourceIdentifier(ID)
    ]
    assert issued.dropped == (
        "subject CN=admin (the CA sets the subject)",
        "subjectAltName URI:spiffe://acme.com/admin (not the identity being issued)",
        "subjectAltName DNS:evil.example (not the identity being issued)",
        "basicConstraints CA:TRUE (a client certificate is CA:FALSE)",
        "extendedKeyUsage serverAuth (profile client-auth does not allow it)",
        "extension OCSPNoCheck (1.3.6.1.5.5.7.48.1.5; not in profile client-auth)",
    )


def test_csr_san_equal_to_identity_is_honoured_silently():
    csr, _ = _csr(sans=[x509.UniformResourceIdentifier(ID)], ca=False, eku=())
    review = review_csr(csr, identity=parse_identity(ID), profile=CLIENT_AUTH)
    assert review.dropped == (
        "subject CN=admin (the CA sets the subject)",
        "extension OCSPNoCheck (1.3.6.1.5.5.7.48.1.5; not in profile client-auth)",
    )


def test_csr_with_broken_signature_is_refused():
    csr, _ = _csr(sans=[])
    der = bytearray(csr.public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x01  # inside the signature value
    tampered = load_csr(bytes(der))
    with pytest.raises(InputError, match="signature does not verify"):
        review_csr(tampered, identity=parse_identity(ID), profile=CLIENT_AUTH)


@pytest.mark.parametrize("key_type", ["ec-p256", "ec-p384", "rsa-2048", "ed25519"])
def test_csr_signature_is_checked_for_every_key_type(key_type):
    """EC keys are verified with the key review_csr parsed, the others by pyca: both accept
    the CSR as signed and refuse it once a byte of what was signed changes."""
    key = generate_private_key(key_type)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "payments")]))
        .sign(key, None if key_type == "ed25519" else hashes.SHA256())  # type: ignore[arg-type]
    )
    review = review_csr(csr, identity=parse_identity(ID), profile=CLIENT_AUTH)
    assert review.public_key == key.public_key()
    der = csr.public_bytes(serialization.Encoding.DER)
    tampered = load_csr(der.replace(b"payments", b"paymentz"))
    with pytest.raises(InputError, match="signature does not verify"):
        review_csr(tampered, identity=parse_identity(ID), profile=CLIENT_AUTH)


@pytest.mark.parametrize(
    "data", [b"", b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n", b"\x30\x03abc"]
)
def test_malformed_csr_is_input_error(data):
    with pytest.raises(InputError):
        load_csr(data, source="bad.csr")


# --- identity policy ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "identity", "matches"),
    [
        ("spiffe://acme.com/billing/*", "spiffe://acme.com/billing/payments", True),
        ("spiffe://acme.com/billing/*", "spiffe://acme.com/billing/a/b", False),
        ("spiffe://acme.com/billing/*", "spiffe://acme.com/billing", False),
        ("spiffe://acme.com/billing/**", "spiffe://acme.com/billing/a/b", True),
        ("spiffe://acme.com/**", "spiffe://acme.com.evil/x", False),
        ("spiffe://acme.com/**", "spiffe://evil.com/acme.com/x", False),
        ("*.svc.acme.com", "pay.svc.acme.com", True),
        ("*.svc.acme.com", "a.pay.svc.acme.com", False),
        ("*@acme.com", "ops@acme.com", True),
        ("*@acme.com", "ops@acme.com.evil", False),
        ("spiffe://acme.com/billing/payments", "spiffe://acme.com/billing/payments", True),
    ],
)
def test_identity_patterns(pattern, identity, matches):
    assert IdentityPattern.parse(pattern).matches(identity) is matches


def test_partial_wildcard_is_an_error():
    with pytest.raises(InputError, match="whole segment"):
        IdentityPattern.parse("spiffe://acme.com/bill*")


@pytest.mark.parametrize(
    ("identity", "key_type", "ttl", "rule"),
    [
        ("spiffe://acme.com/other/x", "ec-p256", "1h", "allowed_ids"),
        ("spiffe://acme.com/billing/x", "ec-p256", "8d", "max_ttl"),
        ("spiffe://acme.com/billing/x", "rsa-3072", "1h", "key_types"),
    ],
)
def test_policy_violations_name_the_rule(store, identity, key_type, ttl, rule):
    ca = _authority(store, policy=_policy("spiffe://acme.com/billing/*"))
    with pytest.raises(IssuanceRefused) as refused:
        ca.issue(
            parse_identity(identity),
            generate_private_key(key_type).public_key(),
            now=NOW,
            ttl=parse_duration(ttl),
        )
    assert refused.value.rule == rule
    assert str(refused.value).startswith(f"refused by rule {rule}: ")
    assert store.certificates(now=NOW) == []
    assert [e.event for e in store.audit_entries()] == ["refuse"]


def test_default_deny_names_no_pattern(store):
    ca = _authority(store, policy=_policy())
    with pytest.raises(IssuanceRefused, match="none configured"):
        ca.issue(parse_identity(ID), generate_private_key().public_key(), now=NOW)


@pytest.mark.parametrize("key_type", ["ec-p256", "ec-p384", "rsa-2048", "ed25519"])
def test_issuer_proves_its_leaf_signatures(key_type):
    """The probe behind ``leaf_signatures_proven`` holds for every key type a CA may have,
    and a leaf signed afterwards does verify against the issuer (what lint no longer
    re-checks at issuance)."""
    key = generate_private_key(key_type)
    cert = build_ca_certificate(
        common_name=f"t {key_type}",
        key=key,
        signer=None,
        not_before=NOW - dt.timedelta(days=1),
        not_after=NOW + dt.timedelta(days=365),
        path_length=0,
    )
    issuer = Issuer(cert=cert, key=key, chain=(cert,))
    assert issuer.leaf_signatures_proven
    _leaf(issuer).verify_directly_issued_by(cert)


def test_unproven_issuer_has_every_leaf_signature_linted(store):
    """A chain that does not start with the signing certificate (here a same-name CA with
    another key) proves nothing, so issuance lints the leaf's signature and refuses."""
    impostor = build_ca_certificate(
        common_name="t issuing",
        key=generate_private_key(),
        signer=ROOT,
        not_before=NOW - dt.timedelta(days=1),
        not_after=NOW + dt.timedelta(days=365),
        path_length=0,
    )
    issuer = Issuer(cert=ISSUING.cert, key=ISSUING.key, chain=(impostor, ROOT.cert))
    assert ISSUING.leaf_signatures_proven and not issuer.leaf_signatures_proven
    with pytest.raises(IssuanceRefused) as refused:
        _authority(store, issuer=issuer).issue(
            parse_identity(ID), generate_private_key().public_key(), now=NOW
        )
    assert "chain_signature_invalid (certificate 0)" in refused.value.reason
    assert store.certificates(now=NOW) == []


def test_lint_gate_never_returns_or_records_a_failing_certificate(store):
    """An issuer that is not a CA: the leaf would fail lint (issuer_not_ca), so no cert."""
    bogus = TestCA(name="bogus").issue(LeafSpec(dns=("notaca.example",)))
    issuer = Issuer(cert=bogus.cert, key=bogus.key, chain=(bogus.cert,))
    with pytest.raises(IssuanceRefused) as refused:
        _authority(store, issuer=issuer).issue(
            parse_identity(ID), generate_private_key().public_key(), now=NOW
        )
    assert refused.value.rule == "lint"
    assert "issuer_not_ca" in refused.value.reason
    assert store.certificates(now=NOW) == []


def test_dry_run_records_nothing(store):
    issued = _authority(store).issue(
        parse_identity(ID), generate_private_key().public_key(), now=NOW, dry_run=True
    )
    assert issued.recorded is False
    assert store.certificates(now=NOW) == [] and store.audit_entries() == []


@pytest.mark.parametrize(
    ("text", "seconds"), [("15m", 900), ("24h", 86400), ("7d", 604800), ("1h30m", 5400)]
)
def test_durations(text, seconds):
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "24", "1w", "0h", "h"])
def test_bad_durations(text):
    with pytest.raises(InputError):
        parse_duration(text)


# --- store: serials, audit chain, CRL -------------------------------------------------------


def _record_with_serial(serial: int) -> CertificateRecord:
    """A record that collides with a stored certificate's serial, and nothing else."""
    return CertificateRecord(
        serial=serial,
        identity="x",
        fingerprint="sha256:other",
        not_before=NOW,
        not_after=NOW,
        profile="client-auth",
        pem=b"",
        issued_at=NOW,
    )


def test_duplicate_serial_is_refused_by_the_store(store):
    issued = _authority(store).issue(
        parse_identity(ID), generate_private_key().public_key(), now=NOW
    )
    record = store.get(issued.cert.serial_number)
    assert record is not None
    with pytest.raises(SerialTaken):
        store.add_certificate(_record_with_serial(record.serial))
    assert len(store.certificates(now=NOW)) == 1


def _committed_serials(tmp_path) -> set[str]:
    """What another connection sees: only committed rows."""
    other = sqlite3.connect(tmp_path / "ca.db")
    try:
        return {serial for (serial,) in other.execute("SELECT serial FROM certificates")}
    finally:
        other.close()


def test_group_commits_its_writes_together_and_only_at_the_end(tmp_path, store):
    authority = _authority(store)
    with store.group():
        first = authority.issue(parse_identity(ID), generate_private_key().public_key(), now=NOW)
        store.record_event("note", {"why": "between two issues"}, at=NOW)
        second = authority.issue(parse_identity(ID), generate_private_key().public_key(), now=NOW)
        assert _committed_serials(tmp_path) == set()  # nothing durable, nothing handed out
    serials = {f"{first.cert.serial_number:x}", f"{second.cert.serial_number:x}"}
    assert _committed_serials(tmp_path) == serials
    entries = store.audit_entries()
    assert [entry.event for entry in entries] == ["issue", "note", "issue"]
    assert verify_audit_chain(entries) is None


def test_group_takes_the_write_lock_only_with_its_first_write(tmp_path, store):
    other = sqlite3.connect(tmp_path / "ca.db", timeout=0, isolation_level=None)
    try:
        with store.group():
            store.certificates(now=NOW)  # a read: another writer may still go ahead
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
            store.record_event("note", {}, at=NOW)
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
    finally:
        other.close()
    assert [entry.event for entry in store.audit_entries()] == ["note"]


def test_failed_write_in_a_group_is_rolled_back_alone(tmp_path, store):
    authority = _authority(store)
    with store.group():
        kept = authority.issue(parse_identity(ID), generate_private_key().public_key(), now=NOW)
        with pytest.raises(SerialTaken):
            store.add_certificate(_record_with_serial(kept.cert.serial_number))
        after = authority.issue(parse_identity(ID), generate_private_key().public_key(), now=NOW)
    assert _committed_serials(tmp_path) == {
        f"{kept.cert.serial_number:x}",
        f"{after.cert.serial_number:x}",
    }
    entries = store.audit_entries()
    assert [entry.seq for entry in entries] == [1, 2]  # the refused write left no entry
    assert verify_audit_chain(entries) is None


def test_group_ending_in_an_exception_records_nothing(tmp_path, store):
    authority = _authority(store)
    with pytest.raises(KeyError), store.group():
        authority.issue(parse_identity(ID), generate_private_key().public_key(), now=NOW)
        raise KeyError("the caller gave up before answering anyone")
    assert _committed_serials(tmp_path) == set()
    assert store.audit_entries() == []
    issued = authority.issue(parse_identity(ID), generate_private_key().public_key(), now=NOW)
    assert _committed_serials(tmp_path) == {f"{issued.cert.serial_number:x}"}
    assert [entry.seq for entry in store.audit_entries()] == [1]


def test_audit_chain_names_the_edited_entry(tmp_path, store):
    ca = _authority(store)
    for _ in range(3):
        ca.issue(parse_identity(ID), generate_private_key().public_key(), now=NOW)
    assert verify_audit_chain(store.audit_entries()) is None
    with sqlite3.connect(tmp_path / "ca.db") as db:
        db.execute(
            "UPDATE audit_log SET detail = replace(detail, 'payments', 'admin') WHERE seq = 2"
        )
    problem = verify_audit_chain(store.audit_entries())
    assert problem is not None and problem.seq == 2
    assert str(problem) == "audit entry 2: contents do not match the stored hash (entry was edited)"


def test_audit_chain_rehashed_or_deleted_entries():
    entries = []
    head = None
    for number in range(4):
        entry = AuditEntry.after(head, at=NOW, event="issue", detail={"n": number})
        entries.append(entry)
        head = (entry.seq, entry.hash)
    forged = AuditEntry.after((1, entries[0].hash), at=NOW, event="issue", detail={"n": 99})
    problem = verify_audit_chain([entries[0], forged, *entries[2:]])
    assert problem is not None and problem.seq == 3 and "previous-hash" in problem.message
    problem = verify_audit_chain([entries[0], *entries[2:]])
    assert problem is not None and problem.seq == 3 and "jumps from 1 to 3" in problem.message


def test_revoke_and_crl(store):
    ca = _authority(store)
    keep = ca.issue(parse_identity(ID), generate_private_key().public_key(), now=NOW)
    gone = ca.issue(parse_identity(ID), generate_private_key().public_key(), now=NOW)
    ca.revoke(gone.cert.serial_number, reason=x509.ReasonFlags.key_compromise, now=NOW)
    first, second = ca.crl(now=NOW), ca.crl(now=NOW + dt.timedelta(minutes=1))
    numbers = [
        c.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        for c in (first, second)
    ]
    assert numbers == [1, 2]
    assert second.next_update_utc == NOW + dt.timedelta(minutes=1, days=7)
    assert second.is_signature_valid(ISSUING.cert.public_key())
    entry = second.get_revoked_certificate_by_serial_number(gone.cert.serial_number)
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason is (
        x509.ReasonFlags.key_compromise
    )
    assert second.get_revoked_certificate_by_serial_number(keep.cert.serial_number) is None
    with pytest.raises(InputError, match="already revoked"):
        ca.revoke(gone.cert.serial_number, reason=x509.ReasonFlags.unspecified, now=NOW)
    assert verify_audit_chain(store.audit_entries()) is None
    assert [e.event for e in store.audit_entries()] == ["issue", "issue", "revoke", "crl", "crl"]


def _ca_server(store, tokens: int):
    """A real ``CaServer`` over ``store`` (no socket: tests call its dispatcher), its RA,
    and ``tokens`` one-time tokens for distinct identities."""
    ra = RegistrationAuthority(authority=_authority(store), records=store)
    server = CaServer(
        ra, name="t", trust_domain="acme.com", limiter=FailureLimiter(limit=10, window=60)
    )
    issued_tokens = []
    for index in range(tokens):
        token, record = new_token(
            parse_identity(f"spiffe://acme.com/w/{index}"), now=NOW, ttl=dt.timedelta(hours=1)
        )
        store.add_token(record)
        issued_tokens.append(token)
    return server, ra, issued_tokens


def _csr_pem() -> bytes:
    return build_csr(generate_private_key()).public_bytes(serialization.Encoding.PEM)


def test_ca_server_answers_concurrent_enrollments_from_one_group_commit(tmp_path, store):
    """Calls that queue while the CA thread is busy run as one batch in one ``group``;
    each caller hears back only once its certificate is committed."""
    server, ra, tokens = _ca_server(store, 6)
    groups: list[int] = []
    grouped = store.group

    @contextmanager
    def counted():
        groups.append(len(groups))
        with grouped():
            yield

    store.group = counted  # type: ignore[method-assign]
    gate = threading.Event()

    async def enroll(token: str) -> str:
        try:
            issued = await server._call(ra.enroll, token, _csr_pem(), now=NOW, client="t")
        except EnrollmentRefused as refused:
            return refused.code
        assert isinstance(issued, Issued)
        assert f"{issued.cert.serial_number:x}" in _committed_serials(tmp_path)
        return "issued"

    async def scenario() -> list[str]:
        busy = asyncio.ensure_future(server._call(gate.wait))  # holds the CA thread
        await asyncio.sleep(0.05)
        waiting = [asyncio.ensure_future(enroll(token)) for token in [*tokens, tokens[0]]]
        await asyncio.sleep(0.05)
        gate.set()
        await busy
        return list(await asyncio.gather(*waiting))

    try:
        outcomes = asyncio.run(scenario())
    finally:
        server.close()
    assert outcomes == ["issued"] * 6 + ["token_used"]
    assert len(groups) == 2  # the blocking call, then all seven enrollments together
    assert len(_committed_serials(tmp_path)) == 6
    assert verify_audit_chain(store.audit_entries()) is None


def test_a_batch_whose_commit_fails_hands_out_nothing_and_burns_no_token(tmp_path, store):
    """The disk fills up mid-batch: every caller in it hears ``StoreUnavailable`` (503),
    even the one whose enrollment had gone through, and nothing of the batch is kept."""
    server, ra, tokens = _ca_server(store, 2)
    before = len(store.audit_entries())
    gate = threading.Event()

    def disk_full() -> None:
        store.record_event("note", {}, at=NOW)  # the batch's transaction is open now
        driver = store._writer.connection.driver_connection  # type: ignore[union-attr]
        (pages,) = driver.execute("PRAGMA page_count").fetchone()
        driver.execute(f"PRAGMA max_page_count={pages}")  # this database may not grow
        store.record_event("note", {"pad": "x" * 20_000}, at=NOW)

    async def scenario() -> list[object]:
        busy = asyncio.ensure_future(server._call(gate.wait))
        await asyncio.sleep(0.05)
        waiting = [
            asyncio.ensure_future(server._call(ra.enroll, tokens[0], _csr_pem(), now=NOW)),
            asyncio.ensure_future(server._call(disk_full)),
            asyncio.ensure_future(server._call(ra.enroll, tokens[1], _csr_pem(), now=NOW)),
        ]
        await asyncio.sleep(0.05)
        gate.set()
        await busy
        failed = await asyncio.gather(*waiting, return_exceptions=True)
        again = await server._call(ra.enroll, tokens[0], _csr_pem(), now=NOW)
        return [*failed, again]

    try:
        *failed, again = asyncio.run(scenario())
    finally:
        server.close()
    assert [type(outcome) for outcome in failed] == [StoreUnavailable] * 3
    assert isinstance(again, Issued)  # the token the failed batch redeemed is still good
    assert _committed_serials(tmp_path) == {f"{again.cert.serial_number:x}"}
    entries = store.audit_entries()
    assert [entry.event for entry in entries[before:]] == ["redeem", "issue"]
    assert verify_audit_chain(entries) is None
