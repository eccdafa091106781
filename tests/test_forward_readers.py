"""Readers: round trips from every writer, peers' own spellings, and malformed input."""

from __future__ import annotations

import contextlib
import urllib.parse

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtlskit.certs import Fingerprint
from mtlskit.errors import InputError, MtlskitError
from mtlskit.forward import (
    AwsMode,
    ForwardedClient,
    GcpHeaderNames,
    XfccConfig,
    XfccDetail,
    aws_headers,
    gcp_headers,
    parse_xfcc,
    read_aws,
    read_gcp,
    read_nginx,
    read_rfc9440,
    read_verdict,
    read_xfcc,
    rfc9440_headers,
    verdict_headers,
    xfcc_headers,
)
from mtlskit.identity import IdentityKind
from mtlskit.testca import IssuedCert, LeafSpec, TestCA

SPIFFE = "spiffe://acme.com/billing/payments"


@pytest.fixture(scope="module")
def rca() -> TestCA:
    return TestCA(name="acme")


@pytest.fixture(scope="module", params=["spiffe", "dns", "email", "nasty"])
def issued(request, rca) -> IssuedCert:
    specs = {
        "spiffe": LeafSpec(uris=(SPIFFE,)),
        "dns": LeafSpec(dns=("client.acme.com",), common_name="client.acme.com"),
        "email": LeafSpec(emails=("ops@acme.com",)),
        "nasty": LeafSpec(
            dns=("a.acme.com", "b.acme.com"),
            uris=("https://acme.com/x?a=1;b=2",),
            common_name='Ops, "R&D"; team=blue\\',
        ),
    }
    return rca.issue(specs[request.param])


def verified(issued: IssuedCert) -> ForwardedClient:
    return ForwardedClient.from_chain(issued.chain[:-1], verified=True)


def lower(pairs):
    """A backend (ASGI) sees lower-case names; readers must not care."""
    return [(name.lower(), value) for name, value in pairs]


# --- round trips --------------------------------------------------------------------


def test_xfcc_round_trip_with_chain(issued):
    client = verified(issued)
    got = read_xfcc(lower(xfcc_headers(client, XfccConfig(details=frozenset(XfccDetail)))))
    assert got == client


def test_xfcc_round_trip_without_cert_keeps_identity_and_hash(issued):
    client = verified(issued)
    got = read_xfcc(xfcc_headers(client))
    assert got.chain == ()
    assert got.fingerprint == client.fingerprint
    if client.identity.kind is IdentityKind.EMAIL:
        assert got.identity is None  # neither format has a field for an email SAN
    else:
        assert (got.identity.kind, got.identity.value) == (
            client.identity.kind,
            client.identity.value,
        )


def test_gcp_round_trip(issued):
    client = verified(issued)
    assert read_gcp(lower(gcp_headers(client))) == client


def test_gcp_round_trip_without_leaf_uses_san_fields(issued):
    names = GcpHeaderNames(leaf=None, chain=None)
    client = verified(issued)
    got = read_gcp(gcp_headers(client, names), names)
    assert got.fingerprint == client.fingerprint
    if client.identity.kind is IdentityKind.EMAIL:
        assert got.identity is None  # neither format has a field for an email SAN
    else:
        assert (got.identity.kind, got.identity.value) == (
            client.identity.kind,
            client.identity.value,
        )


def test_aws_round_trips(issued):
    client = verified(issued)
    got = read_aws(lower(aws_headers(client)))
    assert got.chain == client.chain[:1]
    assert got.identity == client.identity
    assert got.verified
    passthrough = read_aws(aws_headers(client, AwsMode.PASSTHROUGH))
    assert passthrough.chain == client.chain
    assert not passthrough.verified


def test_rfc9440_round_trip(issued):
    client = verified(issued)
    assert read_rfc9440(lower(rfc9440_headers(client))) == client


def test_verdict_round_trip(issued):
    client = verified(issued)
    got = read_verdict(verdict_headers(client))
    assert (got.present, got.verified, got.fingerprint, got.chain) == (
        True,
        True,
        client.fingerprint,
        (),
    )
    # the verdict names the identity, not the other SAN values
    assert (got.identity.kind, got.identity.value) == (client.identity.kind, client.identity.value)
    failed = ForwardedClient.from_chain(issued.chain[:-1], verified=False, error="cert_expired")
    got = read_verdict(verdict_headers(failed))
    assert (got.present, got.verified, got.error, got.identity) == (
        True,
        False,
        "cert_expired",
        None,
    )
    assert read_verdict(verdict_headers(ForwardedClient.missing())) == ForwardedClient.missing()


def test_gcp_errors_come_back_as_mtlskit_codes_where_exact(rca):
    leaf = rca.issue(LeafSpec(dns=("x.acme.com",)))
    eku = ForwardedClient.from_chain(
        leaf.chain[:-1], verified=False, error="eku_missing_client_auth"
    )
    assert read_gcp(gcp_headers(eku)).error == "eku_missing_client_auth"
    expired = ForwardedClient.from_chain(leaf.chain[:-1], verified=False, error="cert_expired")
    assert read_gcp(gcp_headers(expired)).error == "client_cert_validation_failed"
    assert read_gcp(gcp_headers(ForwardedClient.missing())) == ForwardedClient.missing()


def test_absent_formats_read_as_none():
    headers = [(b"host", b"api")]
    for reader in (read_xfcc, read_gcp, read_aws, read_rfc9440, read_verdict):
        assert reader(headers) is None


# --- peers' own spellings -----------------------------------------------------------


ENVOY_DOC_EXAMPLE = (
    "By=http://frontend.lyft.com;Hash=468ed33be74eee6556d90c0149c1309e9ba61d6425303443c0748a02dd8de688;"
    'Subject="/C=US/ST=CA/L=San Francisco/OU=Lyft/CN=Test Client";URI=http://testclient.lyft.com,'
    "By=http://backend.lyft.com;Hash=9ba61d6425303443c0748a02dd8de688468ed33be74eee6556d90c0149c1309e;"
    "URI=http://frontend.lyft.com;DNS=lyft.com;DNS=www.lyft.com"
)


def test_envoy_documented_example_parses_and_last_element_wins():
    first, last = parse_xfcc(ENVOY_DOC_EXAMPLE)
    assert first.by == ("http://frontend.lyft.com",)
    assert first.subject == "/C=US/ST=CA/L=San Francisco/OU=Lyft/CN=Test Client"
    assert last.dns == ("lyft.com", "www.lyft.com")
    client = read_xfcc([(b"x-forwarded-client-cert", ENVOY_DOC_EXAMPLE.encode())])
    assert client.fingerprint == Fingerprint.parse(
        "9ba61d6425303443c0748a02dd8de688468ed33be74eee6556d90c0149c1309e"
    )
    assert (client.identity.kind, client.identity.value) == (
        IdentityKind.URI,
        "http://frontend.lyft.com",
    )


def test_xfcc_envoy_style_backslashes_and_several_header_lines():
    lines = [
        (b"X-Forwarded-Client-Cert", b"URI=spiffe://a.com/x"),
        (b"x-forwarded-client-cert", b'Subject="CN=a\\,b";URI=spiffe://b.com/y'),
    ]
    client = read_xfcc(lines)
    assert client.identity.value == "spiffe://b.com/y"
    assert parse_xfcc('Subject="CN=a\\,b"')[0].subject == "CN=a\\,b"
    assert parse_xfcc('KEY="x" ;uri = spiffe://a.com/p')[0].uris == ("spiffe://a.com/p",)


def test_gcp_sample_values_from_real_load_balancer():
    """Values as recorded from a GCP LB in GoogleCloudPlatform/apigee-samples mtls-northbound."""
    headers = [
        (b"x-client-cert-present", b"true"),
        (b"x-client-cert-chain-verified", b"true"),
        (b"x-client-cert-error", b""),
        (b"x-client-cert-hash", b"om8vGt3r6eTx5TI1kCeNKRJYZTUreIbHGu+Gu8FN8To"),
        (
            b"x-client-cert-serial-number",
            b"00:ad:3e:0e:bc:c3:d4:f4:2d:ae:5b:21:3b:e4:cb:8b:f4:9d:49:a1",
        ),
        (b"x-client-cert-dnsname-sans", b"eGFwaS1kZXYua3VydGthbmFza2llLm5ldA=="),
        (b"x-client-cert-uri-sans", b"aHR0cHM6Ly94YXBpLWRldi5rdXJ0a2FuYXNraWUubmV0"),
        (b"x-client-cert-spiffe", b""),
    ]
    client = read_gcp(headers)
    assert client.verified
    assert client.fingerprint.hex.startswith("a26f2f1addebe9e4")
    assert (client.identity.kind, client.identity.value) == (
        IdentityKind.URI,
        "https://xapi-dev.kurtkanaskie.net",
    )
    assert client.identity.others == ("xapi-dev.kurtkanaskie.net",)


def test_nginx_escaped_cert(rca):
    issued = rca.issue(LeafSpec(uris=(SPIFFE,)))
    pem = issued.cert.public_bytes(Encoding.PEM).decode()
    escaped = urllib.parse.quote(pem, safe="")  # what ngx_escape_uri does to PEM text
    client = read_nginx(escaped, "SUCCESS")
    assert client.chain == (issued.cert,)
    assert client.identity.value == SPIFFE
    failed = read_nginx(escaped, "FAILED:certificate has expired")
    assert (failed.verified, failed.error) == (False, "certificate has expired")
    assert not read_nginx(escaped).verified
    assert read_nginx("", "NONE") == ForwardedClient.missing()
    assert read_nginx(None) == ForwardedClient.missing()


# --- malformed input ----------------------------------------------------------------


def xfcc(value: str):
    return [(b"x-forwarded-client-cert", value.encode())]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "is empty"),
        ('Subject="CN=a', "unterminated quoted value"),
        ("Hash", "pair without '='"),
        ("URI=a;;DNS=b", "empty pair"),
        ("=x", "empty key"),
        ("Hash=abc", "Hash is not 64 hex digits"),
        (f"Hash={'a' * 64};Hash={'b' * 64}", "appears twice"),
        ('Subject="a"b', "text after a closing quote"),
        ('URI=a"b"', "quotes must enclose a whole value"),
        ('Cert="not%20pem"', "not URL-encoded PEM"),
        ("By=x", "names no certificate"),
    ],
)
def test_xfcc_errors(value, message):
    with pytest.raises(InputError, match=message):
        read_xfcc(xfcc(value))


def test_xfcc_hash_must_match_cert(rca):
    issued = rca.issue(LeafSpec(dns=("a.acme.com",)))
    value = xfcc_headers(verified(issued), XfccConfig(details=frozenset({XfccDetail.CERT})))[0][1]
    forged = value.replace(value[5:15], b"0000000000")
    with pytest.raises(InputError, match="Hash does not match"):
        read_xfcc(xfcc(forged.decode()))


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ([(b"client-cert", b"MIIB")], "not a byte sequence"),
        ([(b"client-cert", b":M$IB:")], "outside base64"),
        ([(b"client-cert", b":AAAA:")], "not a DER certificate"),
        ([(b"client-cert-chain", b":AAAA:")], "without Client-Cert"),
        ([(b"client-cert", b":AAAA:"), (b"client-cert", b":AAAA:")], "more than once"),
    ],
)
def test_rfc9440_errors(headers, message):
    with pytest.raises(InputError, match=message):
        read_rfc9440(headers)


def test_rfc9440_chain_errors(rca):
    good = rfc9440_headers(verified(rca.issue(LeafSpec(dns=("a.acme.com",)))))[0]
    for chain, message in ((b":AAAA:;a=1", "no parameters"), (b":AAAA:,,:AAAA:", "empty member")):
        with pytest.raises(InputError, match=message):
            read_rfc9440([good, (b"client-cert-chain", chain)])


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ([(b"x-client-cert-present", b"yes")], "expected true or false"),
        (
            [(b"x-client-cert-present", b"false"), (b"x-client-cert-chain-verified", b"true")],
            "says verified",
        ),
        ([(b"x-client-cert-present", b"true"), (b"x-client-cert-hash", b"AAAA")], "3 bytes"),
        ([(b"x-client-cert-present", b"true"), (b"x-client-cert-uri-sans", b"@@")], "not base64"),
        (
            [(b"x-client-cert-present", b"true"), (b"x-client-cert-serial-number", b"zz")],
            "colon-separated",
        ),
        (
            [(b"x-client-cert-present", b"true"), (b"x-client-cert-present", b"true")],
            "more than once",
        ),
    ],
)
def test_gcp_errors(headers, message):
    with pytest.raises(InputError, match=message):
        read_gcp(headers)


def test_gcp_leaf_must_match_fingerprint(rca):
    a = gcp_headers(verified(rca.issue(LeafSpec(dns=("a.acme.com",)))))
    b = gcp_headers(verified(rca.issue(LeafSpec(dns=("b.acme.com",)))))
    mixed = [pair for pair in a if pair[0] != b"X-Client-Cert-Hash"]
    mixed += [pair for pair in b if pair[0] == b"X-Client-Cert-Hash"]
    with pytest.raises(InputError, match="does not match the forwarded leaf"):
        read_gcp(mixed)


def test_aws_errors(rca):
    issued = rca.issue(LeafSpec(dns=("a.acme.com",)))
    good = aws_headers(verified(issued))
    wrong_serial = [(n, b"01" if n.endswith(b"Serial-Number") else v) for n, v in good]
    with pytest.raises(InputError, match="does not match"):
        read_aws(wrong_serial)
    bad_validity = [(n, b"yesterday" if n.endswith(b"Validity") else v) for n, v in good]
    with pytest.raises(InputError, match="NotBefore"):
        read_aws(bad_validity)
    with pytest.raises(InputError, match="not URL-encoded PEM"):
        read_aws([(b"x-amzn-mtls-clientcert-leaf", b"MIIB")])


def test_nginx_errors():
    with pytest.raises(InputError, match="not SUCCESS"):
        read_nginx("x", "OK")
    with pytest.raises(InputError, match="truncated PEM"):
        read_nginx("-----BEGIN%20CERTIFICATE-----%0AMIIB", "SUCCESS")


# --- properties ---------------------------------------------------------------------

_LABEL = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=12)
_CA = TestCA(name="prop")


@st.composite
def leaf_specs(draw) -> LeafSpec:
    dns = tuple(f"{label}.acme.com" for label in draw(st.lists(_LABEL, max_size=3, unique=True)))
    spiffe = draw(st.one_of(st.none(), st.lists(_LABEL, min_size=1, max_size=3)))
    uris = (f"spiffe://acme.com/{'/'.join(spiffe)}",) if spiffe else ()
    emails = tuple(f"{label}@acme.com" for label in draw(st.lists(_LABEL, max_size=2)))
    # At most 64 UTF-8 bytes: cryptography refuses a longer commonName (X.520's bound), and
    # 30 characters outside the BMP are 120 bytes.
    names = st.text(st.characters(codec="utf-8"), min_size=1, max_size=30)
    cn = draw(st.one_of(st.none(), names.filter(lambda text: len(text.encode()) <= 64)))
    if not (dns or uris or emails):
        dns = ("fallback.acme.com",)
    return LeafSpec(dns=dns, uris=uris, emails=emails, common_name=cn)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=leaf_specs(), with_root=st.booleans())
def test_every_writer_reader_pair_round_trips(spec, with_root):
    issued = _CA.issue(spec)
    chain = issued.chain if with_root else issued.chain[:-1]
    client = ForwardedClient.from_chain(chain, verified=True)
    full = XfccConfig(details=frozenset(XfccDetail))
    assert read_xfcc(xfcc_headers(client, full)) == client
    assert read_gcp(gcp_headers(client)) == client
    assert read_rfc9440(rfc9440_headers(client)) == client
    assert read_aws(aws_headers(client, AwsMode.PASSTHROUGH)).chain == client.chain
    assert read_aws(aws_headers(client)).chain == client.chain[:1]
    named = read_verdict(verdict_headers(client)).identity
    assert (named.kind, named.value) == (client.identity.kind, client.identity.value)
    for _, value in xfcc_headers(client) + gcp_headers(client) + aws_headers(client):
        assert all(0x20 <= byte < 0x7F for byte in value)


_TRICKY = st.text(alphabet=',;="\\: =%+/\t-ABCMIab09tru', max_size=60)
_ANY = st.one_of(st.text(max_size=80), _TRICKY)
_NAMES = [
    "x-forwarded-client-cert",
    "client-cert",
    "client-cert-chain",
    "x-client-cert-present",
    "x-client-cert-chain-verified",
    "x-client-cert-hash",
    "x-client-cert-uri-sans",
    "x-client-cert-serial-number",
    "x-client-cert-leaf",
    "x-client-cert-chain",
    "x-amzn-mtls-clientcert",
    "x-amzn-mtls-clientcert-leaf",
    "x-mtlskit-client-present",
    "x-mtlskit-client-verified",
    "x-mtlskit-client-fingerprint",
    "x-mtlskit-client-identity",
    "x-mtlskit-client-identity-kind",
]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_NAMES), _ANY), max_size=6), _ANY, _ANY)
def test_arbitrary_headers_raise_only_mtlskit_errors(pairs, escaped, verify):
    headers = [(name.encode(), value.encode("utf-8", "surrogatepass")) for name, value in pairs]
    for reader in (read_xfcc, read_gcp, read_aws, read_rfc9440, read_verdict):
        with contextlib.suppress(MtlskitError):
            reader(headers)
    with contextlib.suppress(MtlskitError):
        read_nginx(escaped, verify)


@settings(max_examples=300, deadline=None)
@given(_TRICKY)
def test_xfcc_parser_raises_only_input_error(value):
    with contextlib.suppress(InputError):
        parse_xfcc(value)


def test_readers_accept_a_real_x509_object_only(rca):
    """A forwarded CSR or CRL is not a certificate: the loader's own message comes through."""
    crl = rca.crl().public_bytes(Encoding.PEM).decode()
    with pytest.raises(InputError, match="contains no certificate"):
        read_nginx(urllib.parse.quote(crl, safe=""), "SUCCESS")
    assert isinstance(rca.root.cert, x509.Certificate)


def _all_formats(client: ForwardedClient) -> list[tuple[bytes, bytes]]:
    full = XfccConfig(details=frozenset(XfccDetail))
    return (
        xfcc_headers(client, full)
        + gcp_headers(client)
        + aws_headers(client)
        + aws_headers(client, AwsMode.PASSTHROUGH)
        + rfc9440_headers(client)
        + verdict_headers(client)
    )


_VALID = _all_formats(
    ForwardedClient.from_chain(_CA.issue(LeafSpec(uris=(SPIFFE,))).chain[:-1], verified=True)
)


@settings(max_examples=300, deadline=None)
@given(
    index=st.integers(0, len(_VALID) - 1),
    start=st.integers(0, 4000),
    cut=st.integers(0, 40),
    insert=st.text(alphabet=',;="\\:=%+/ A0\x00é', max_size=3),
)
def test_mutated_real_headers_raise_only_mtlskit_errors(index, start, cut, insert):
    """Corrupt one real header deep inside (PEM, DER, base64, quoting): never a raw exception."""
    name, value = _VALID[index]
    text = value.decode()
    start %= len(text) + 1
    mutated = (text[:start] + insert + text[start + cut :]).encode("utf-8")
    headers = [(n, mutated if i == index else v) for i, (n, v) in enumerate(_VALID)]
    for reader in (read_xfcc, read_gcp, read_aws, read_rfc9440, read_verdict):
        with contextlib.suppress(MtlskitError):
            reader(headers)
    if name == b"X-Amzn-Mtls-Clientcert-Leaf":
        with contextlib.suppress(MtlskitError):
            read_nginx(mutated.decode("latin-1"), "SUCCESS")


def test_verdict_kind_that_contradicts_its_value_is_an_input_error():
    """A spiffe:// value under kind "uri" would dodge spiffe:// rules' bundle binding."""
    headers = [
        (b"x-mtlskit-client-present", b"true"),
        (b"x-mtlskit-client-verified", b"true"),
        (b"x-mtlskit-client-identity", b"spiffe://acme.com/admin"),
        (b"x-mtlskit-client-identity-kind", b"uri"),
    ]
    with pytest.raises(InputError, match="not a uri"):
        read_verdict(headers)
