"""SPIFFE IDs per the SPIFFE-ID spec (go-spiffe v2's strict parser); client identity precedence."""

from __future__ import annotations

import string

import pytest
import trustme
from cryptography import x509
from hypothesis import given
from hypothesis import strategies as st

from mtlskit.identity import (
    ClientIdentity,
    IdentityError,
    IdentityKind,
    SpiffeId,
    SpiffeIdError,
    TrustDomain,
    san_entries,
)
from mtlskit.testca import LeafSpec

TD_CHARS = (
    "trust domain characters are limited to lowercase letters, numbers, dots, dashes, "
    "and underscores"
)
PATH_CHARS = (
    "path segment characters are limited to letters, numbers, dots, dashes, and underscores"
)

VALID = [
    ("spiffe://acme.com/billing/payments", "acme.com", "/billing/payments"),
    ("spiffe://trustdomain", "trustdomain", ""),
    ("spiffe://trust-domain_1.example/path", "trust-domain_1.example", "/path"),
    ("spiffe://td/a/b/c/D_E-F.G", "td", "/a/b/c/D_E-F.G"),
    ("spiffe://td/...", "td", "/..."),  # three dots is a name, not a dot segment
    ("spiffe://td/.hidden", "td", "/.hidden"),
]

INVALID = [
    ("", "cannot be empty"),
    ("acme.com/billing", "scheme is missing or invalid"),
    ("http://acme.com/billing", "scheme is missing or invalid"),
    ("SPIFFE://acme.com/billing", "scheme is missing or invalid"),
    ("spiffe:/acme.com/billing", "scheme is missing or invalid"),
    ("spiffe://", "trust domain is missing"),
    ("spiffe:///path", "trust domain is missing"),
    ("spiffe://Acme.com/path", TD_CHARS),
    ("spiffe://acme.com:8443/path", TD_CHARS),
    ("spiffe://user@acme.com/path", TD_CHARS),
    ("spiffe://acme.com/", "path cannot have a trailing slash"),
    ("spiffe://acme.com/billing/", "path cannot have a trailing slash"),
    ("spiffe://acme.com//billing", "path cannot contain empty segments"),
    ("spiffe://acme.com/a//b", "path cannot contain empty segments"),
    ("spiffe://acme.com/./billing", "path cannot contain dot segments"),
    ("spiffe://acme.com/billing/..", "path cannot contain dot segments"),
    ("spiffe://acme.com/billing?x=1", PATH_CHARS),
    ("spiffe://acme.com/billing#frag", PATH_CHARS),
    ("spiffe://acme.com/bill%20ing", PATH_CHARS),
    ("spiffe://acme.com/billing\n", PATH_CHARS),
    ("spiffe://acme.com/bil ling", PATH_CHARS),
    ("spiffe://acme.com/ü", PATH_CHARS),
]


@pytest.mark.parametrize(("text", "domain", "path"), VALID)
def test_valid_ids_round_trip(text, domain, path):
    parsed = SpiffeId.parse(text)
    assert (parsed.trust_domain.name, parsed.path, str(parsed)) == (domain, path, text)


@pytest.mark.parametrize(("text", "reason"), INVALID)
def test_invalid_ids_name_the_broken_rule(text, reason):
    with pytest.raises(SpiffeIdError) as caught:
        SpiffeId.parse(text)
    assert caught.value.reason == reason
    assert str(caught.value) == f"invalid SPIFFE ID {text!r}: {reason}"


def test_length_limits():
    assert SpiffeId.parse("spiffe://" + "a" * 255)
    with pytest.raises(SpiffeIdError, match="trust domain is longer than 255 bytes"):
        SpiffeId.parse("spiffe://" + "a" * 256)
    long_path = "spiffe://td/" + "/".join(["x" * 100] * 20)
    assert len(long_path) < 2048
    assert SpiffeId.parse(long_path)
    with pytest.raises(SpiffeIdError, match="longer than 2048 bytes"):
        SpiffeId.parse(long_path + "/" + "y" * 100)


def test_every_character_in_trust_domain_and_path():
    """go-spiffe's table: each ASCII character tried in both places."""
    for code in range(0x20, 0x7F):
        char = chr(code)
        td_ok = char in string.ascii_lowercase + string.digits + ".-_"
        path_ok = char in string.ascii_letters + string.digits + ".-_"
        if char == "/":
            continue
        td_text = f"spiffe://a{char}b/path"
        path_text = f"spiffe://td/a{char}b"
        if td_ok:
            assert SpiffeId.parse(td_text).trust_domain.name == f"a{char}b"
        else:
            with pytest.raises(SpiffeIdError):
                SpiffeId.parse(td_text)
        if path_ok:
            assert SpiffeId.parse(path_text).path == f"/a{char}b"
        else:
            with pytest.raises(SpiffeIdError):
                SpiffeId.parse(path_text)


def test_trust_domain_parse_and_membership():
    td = TrustDomain.parse("acme.com")
    assert TrustDomain.parse("spiffe://acme.com") == td
    assert SpiffeId.parse("spiffe://acme.com/x").member_of(td)
    assert not SpiffeId.parse("spiffe://acme.com.evil/x").member_of(td)
    with pytest.raises(SpiffeIdError, match=r"invalid trust domain 'Acme\.com'"):
        TrustDomain.parse("Acme.com")
    assert SpiffeId.parse("spiffe://td/a/b").segments == ("a", "b")


@given(st.text(max_size=80))
def test_parser_never_raises_anything_else(text):
    try:
        parsed = SpiffeId.parse(text)
    except SpiffeIdError:
        return
    assert str(parsed) == text


_ID_PIECES = st.sampled_from(
    ["a", "z", "Z", "0", ".", "..", "-", "_", "/", "//", "é", " ", "a" * 300]
)


@given(st.lists(_ID_PIECES, max_size=12).map(lambda pieces: "spiffe://" + "".join(pieces)))
def test_one_regex_fast_path_agrees_with_the_rules(text):
    """``parse`` checks a common ID in one regex; the constructors apply each rule separately."""
    name, slash, rest = text.removeprefix("spiffe://").partition("/")
    try:
        parsed = SpiffeId.parse(text)
    except SpiffeIdError:
        with pytest.raises(SpiffeIdError):
            SpiffeId(TrustDomain(name), slash + rest)
        return
    assert parsed == SpiffeId(TrustDomain(name), slash + rest)
    assert str(parsed) == text


# --- ClientIdentity -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "kind", "value"),
    [
        (
            LeafSpec(uris=("spiffe://acme.com/a",), dns=("a.acme.com",)),
            IdentityKind.SPIFFE,
            "spiffe://acme.com/a",
        ),
        (
            LeafSpec(uris=("https://id.acme.com/a",), dns=("a.acme.com",)),
            IdentityKind.URI,
            "https://id.acme.com/a",
        ),
        (LeafSpec(dns=("a.acme.com",), emails=("a@acme.com",)), IdentityKind.DNS, "a.acme.com"),
        (LeafSpec(emails=("a@acme.com",)), IdentityKind.EMAIL, "a@acme.com"),
    ],
)
def test_identity_precedence(ca, spec, kind, value):
    cert = ca.issue(spec).cert
    identity = ClientIdentity.from_certificate(cert)
    assert (identity.kind, identity.value, identity.legacy) == (kind, value, False)
    assert ClientIdentity.from_subject_alt_name(san_entries(cert)) == identity


def test_cn_only_when_allowed_and_flagged_legacy(ca):
    cert = ca.issue(LeafSpec(common_name="payments", include_san=False)).cert
    with pytest.raises(IdentityError) as caught:
        ClientIdentity.from_certificate(cert)
    assert caught.value.code == "san_missing"
    identity = ClientIdentity.from_certificate(cert, allow_cn=True)
    assert (identity.kind, identity.value, identity.legacy) == (IdentityKind.CN, "payments", True)


@pytest.mark.parametrize(
    ("uris", "code"),
    [
        (("spiffe://acme.com/a", "spiffe://acme.com/b"), "spiffe_multiple_uri_sans"),
        (("spiffe://acme.com/a", "https://acme.com/b"), "spiffe_multiple_uri_sans"),
        (("spiffe://Acme.com/a",), "spiffe_id_invalid"),
        (("spiffe://acme.com/a/",), "spiffe_id_invalid"),
    ],
)
def test_svid_rules(ca, uris, code):
    with pytest.raises(IdentityError) as caught:
        ClientIdentity.from_certificate(ca.issue(LeafSpec(uris=uris)).cert)
    assert caught.value.code == code


def test_interop_trustme_identity():
    issued = trustme.CA().issue_cert("client.example", "user@example.com")
    cert = x509.load_pem_x509_certificate(issued.cert_chain_pems[0].bytes())
    identity = ClientIdentity.from_certificate(cert)
    assert (identity.kind, identity.value) == (IdentityKind.DNS, "client.example")


def test_a_spiffe_kind_is_exactly_its_parsed_id():
    """issue 27 item 2: authz matches spiffe:// rules by kind, so the kind cannot lie."""
    admin = "spiffe://acme.com/admin"
    spiffe_id = SpiffeId.parse(admin)
    assert ClientIdentity(kind=IdentityKind.SPIFFE, value=admin, spiffe_id=spiffe_id).value == admin
    with pytest.raises(ValueError, match="parsed SPIFFE ID"):
        ClientIdentity(kind=IdentityKind.SPIFFE, value=admin)
    with pytest.raises(ValueError, match="parsed SPIFFE ID"):
        ClientIdentity(kind=IdentityKind.SPIFFE, value="spiffe://acme.com/x", spiffe_id=spiffe_id)
    with pytest.raises(ValueError, match="not a uri"):
        ClientIdentity(kind=IdentityKind.URI, value=admin)
    with pytest.raises(ValueError, match="carries no SPIFFE ID"):
        ClientIdentity(kind=IdentityKind.DNS, value="a.example", spiffe_id=spiffe_id)
    # a DNS SAN with that text stays a DNS identity (and lint calls it san_malformed)
    assert ClientIdentity.from_sans([], [admin]).kind is IdentityKind.DNS
