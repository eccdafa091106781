"""Writers: exact header values per format, computed here from the certificate with the
stdlib (base64, hashlib, string replacement), never with mtlskit.forward's own encoders."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from mtlskit.forward import (
    AwsMode,
    ForwardConfig,
    ForwardedClient,
    GcpHeaderNames,
    HeaderFormat,
    XfccConfig,
    XfccDetail,
    XfccMode,
    asgi_tls_extension,
    aws_headers,
    forward_headers,
    gcp_error,
    gcp_headers,
    read_xfcc,
    rfc9440_headers,
    tls_version_number,
    verdict_headers,
    xfcc_value,
)
from mtlskit.testca import IssuedCert, LeafSpec, TestCA

SPIFFE = "spiffe://acme.com/billing/payments"
NASTY_CN = 'Ops, "R&D"; team=blue'
NASTY_RFC2253 = 'CN=Ops\\, \\"R&D\\"\\; team=blue'  # what OpenSSL and pyca print


@pytest.fixture(scope="module")
def fca() -> TestCA:
    return TestCA(name="acme")


@pytest.fixture(scope="module")
def leaves(fca: TestCA) -> dict[str, IssuedCert]:
    return {
        "spiffe": fca.issue(LeafSpec(uris=(SPIFFE,))),
        "dns": fca.issue(LeafSpec(dns=("client.acme.com",), common_name="client.acme.com")),
        "email": fca.issue(LeafSpec(emails=("ops@acme.com",))),
        "nasty": fca.issue(
            LeafSpec(
                dns=("a.acme.com", "b.acme.com", "c.acme.com"),
                uris=("https://acme.com/x?a=1;b=2",),
                common_name=NASTY_CN,
            )
        ),
    }


def sent(issued: IssuedCert) -> tuple[x509.Certificate, ...]:
    """What a client sends: leaf and intermediate, not the root."""
    return issued.chain[:-1]


def client_for(issued: IssuedCert, **kw: object) -> ForwardedClient:
    return ForwardedClient.from_chain(sent(issued), verified=True, **kw)  # type: ignore[arg-type]


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.DER)


def pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(Encoding.PEM).decode()


def envoy_urlencode(text: str) -> str:
    """Envoy's StrReplaceAll table, applied by hand."""
    for char, code in (("\n", "%0A"), (" ", "%20"), ("+", "%2B"), ("/", "%2F"), ("=", "%3D")):
        text = text.replace(char, code)
    return text


def aws_urlencode(text: str) -> str:
    return text.replace("\n", "%0A").replace(" ", "%20")


def as_dict(pairs: list[tuple[bytes, bytes]]) -> dict[str, str]:
    out = {name.decode(): value.decode() for name, value in pairs}
    assert len(out) == len(pairs), "a header name repeats"
    return out


def sha_hex(cert: x509.Certificate) -> str:
    return hashlib.sha256(der(cert)).hexdigest()


# --- XFCC ---------------------------------------------------------------------------


def test_xfcc_default_details_spiffe(leaves):
    leaf = leaves["spiffe"].cert
    value = xfcc_value(client_for(leaves["spiffe"]), XfccConfig(by=("spiffe://acme.com/gw",)))
    assert value == f"By=spiffe://acme.com/gw;Hash={sha_hex(leaf)};URI={SPIFFE}"


def test_xfcc_omits_empty_elements(leaves):
    """Issue 28 item 3: no ``URI=`` for a DNS-named client and no ``Subject=""`` for an
    empty subject (Envoy writes both); ``By`` once per gateway URI SAN, first."""
    leaf = leaves["dns"].cert
    config = XfccConfig(by=("spiffe://acme.com/gw", "https://gw.acme.com/"))
    value = xfcc_value(client_for(leaves["dns"]), config)
    assert value == (
        "By=spiffe://acme.com/gw;By=https://gw.acme.com/"
        f';Hash={sha_hex(leaf)};Subject="CN=client.acme.com";DNS=client.acme.com'
    )
    assert "Subject" not in xfcc_value(client_for(leaves["spiffe"]))


def test_xfcc_reader_accepts_envoys_empty_elements(leaves):
    """What Envoy itself writes for a DNS-named client still reads back."""
    leaf = leaves["dns"].cert
    envoy = f'By=spiffe://acme.com/gw;Hash={sha_hex(leaf)};Subject="";URI=;DNS=client.acme.com'
    client = read_xfcc([(b"x-forwarded-client-cert", envoy.encode())])
    assert str(client.identity) == "client.acme.com"


def test_xfcc_every_detail_in_envoy_order(leaves):
    issued = leaves["dns"]
    leaf, inter = sent(issued)
    config = XfccConfig(details=frozenset(XfccDetail))
    value = xfcc_value(client_for(issued), config)
    assert value == (
        f"Hash={sha_hex(leaf)}"
        f';Cert="{envoy_urlencode(pem(leaf))}"'
        f';Chain="{envoy_urlencode(pem(leaf) + pem(inter))}"'
        ';Subject="CN=client.acme.com"'
        ";DNS=client.acme.com"
    )


def test_xfcc_quotes_and_escapes(leaves):
    leaf = leaves["nasty"].cert
    value = xfcc_value(client_for(leaves["nasty"]))
    subject = NASTY_RFC2253.replace("\\", "\\\\").replace('"', '\\"')
    assert value == (
        f'Hash={sha_hex(leaf)};Subject="{subject}";URI="https://acme.com/x?a=1;b=2"'
        ";DNS=a.acme.com;DNS=b.acme.com;DNS=c.acme.com"
    )


@pytest.mark.parametrize(
    "client",
    [
        ForwardedClient.missing(),
        ForwardedClient(present=True, verified=False, error="chain_untrusted"),
    ],
)
def test_xfcc_only_for_verified_clients(client):
    assert xfcc_value(client) is None


def test_xfcc_sanitize_mode_sets_nothing(leaves):
    assert xfcc_value(client_for(leaves["spiffe"]), XfccConfig(mode=XfccMode.SANITIZE)) is None


# --- GCP ----------------------------------------------------------------------------


def gcp_serial(number: int) -> str:
    digits = format(number, "x")
    digits = "0" * (len(digits) % 2) + digits
    if int(digits[0], 16) >= 8:
        digits = "00" + digits
    return ":".join(digits[i : i + 2] for i in range(0, len(digits), 2))


def rfc3339(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S+00:00")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_gcp_spiffe_leaf_every_variable(leaves):
    leaf, inter = sent(leaves["spiffe"])
    assert as_dict(gcp_headers(client_for(leaves["spiffe"]))) == {
        "X-Client-Cert-Present": "true",
        "X-Client-Cert-Chain-Verified": "true",
        "X-Client-Cert-Hash": b64(hashlib.sha256(der(leaf)).digest()).rstrip("="),
        "X-Client-Cert-Serial-Number": gcp_serial(leaf.serial_number),
        "X-Client-Cert-SPIFFE": SPIFFE,
        "X-Client-Cert-Valid-Not-Before": rfc3339(leaf.not_valid_before_utc),
        "X-Client-Cert-Valid-Not-After": rfc3339(leaf.not_valid_after_utc),
        "X-Client-Cert-Issuer-DN": b64(leaf.issuer.public_bytes()),
        "X-Client-Cert-Subject-DN": b64(leaf.subject.public_bytes()),
        "X-Client-Cert-Leaf": f":{b64(der(leaf))}:",
        "X-Client-Cert-Chain": f":{b64(der(inter))}:",
    }


def test_gcp_san_lists_are_base64_each_spiffe_excluded(fca):
    issued = fca.issue(LeafSpec(uris=(SPIFFE,), dns=("a.acme.com", "b.acme.com")))
    got = as_dict(gcp_headers(client_for(issued)))
    assert "X-Client-Cert-URI-SANs" not in got  # the only URI is the SPIFFE ID
    assert got["X-Client-Cert-DNSName-SANs"] == f"{b64(b'a.acme.com')},{b64(b'b.acme.com')}"
    got = as_dict(gcp_headers(client_for(fca.issue(LeafSpec(uris=("https://a.example/x",))))))
    assert got["X-Client-Cert-URI-SANs"] == b64(b"https://a.example/x")
    assert "X-Client-Cert-SPIFFE" not in got


def test_gcp_unverified_carries_only_verdict_and_hash(leaves):
    leaf = leaves["dns"].cert
    client = ForwardedClient.from_chain(sent(leaves["dns"]), verified=False, error="cert_expired")
    assert as_dict(gcp_headers(client)) == {
        "X-Client-Cert-Present": "true",
        "X-Client-Cert-Chain-Verified": "false",
        "X-Client-Cert-Error": "client_cert_validation_failed",
        "X-Client-Cert-Hash": b64(hashlib.sha256(der(leaf)).digest()).rstrip("="),
    }


def test_gcp_missing_client():
    assert as_dict(gcp_headers(ForwardedClient.missing())) == {
        "X-Client-Cert-Present": "false",
        "X-Client-Cert-Chain-Verified": "false",
        "X-Client-Cert-Error": "client_cert_not_provided",
    }


@pytest.mark.parametrize(
    ("code", "gcp"),
    [
        ("cert_not_provided", "client_cert_not_provided"),
        ("eku_missing_client_auth", "client_cert_chain_invalid_eku"),
        ("chain_too_deep", "client_cert_chain_exceeded_limit"),
        ("chain_untrusted", "client_cert_validation_failed"),
        ("cert_revoked", "client_cert_validation_failed"),
        ("a_code_added_later", "client_cert_validation_failed"),
        (None, None),
    ],
)
def test_gcp_error_mapping(code, gcp):
    assert gcp_error(code) == gcp


def test_gcp_oversized_dns_list_is_dropped_with_gcp_error(fca):
    names = tuple(f"host-{i:03d}-{'x' * 40}.acme.com" for i in range(12))
    got = as_dict(gcp_headers(client_for(fca.issue(LeafSpec(dns=names)))))
    assert "X-Client-Cert-DNSName-SANs" not in got
    assert got["X-Client-Cert-Error"] == "client_cert_dnsname_sans_exceeded_size_limit"


def test_gcp_names_configurable_and_omittable(leaves):
    names = GcpHeaderNames(present="X-Mtls-Present", leaf=None, chain=None, issuer_dn=None)
    got = as_dict(gcp_headers(client_for(leaves["spiffe"]), names))
    assert got["X-Mtls-Present"] == "true"
    assert not {"X-Client-Cert-Leaf", "X-Client-Cert-Chain", "X-Client-Cert-Issuer-DN"} & set(got)


@pytest.mark.parametrize("bad", [{"present": "X Bad"}, {"present": "X-A", "error": "x-a"}])
def test_gcp_names_validated(bad):
    from mtlskit.errors import ConfigError

    with pytest.raises(ConfigError):
        GcpHeaderNames(**bad)


# --- AWS ----------------------------------------------------------------------------


def test_aws_verify_mode(leaves):
    leaf = leaves["dns"].cert
    digits = format(leaf.serial_number, "X")
    assert as_dict(aws_headers(client_for(leaves["dns"]))) == {
        "X-Amzn-Mtls-Clientcert-Serial-Number": "0" * (len(digits) % 2) + digits,
        "X-Amzn-Mtls-Clientcert-Issuer": "CN=acme issuing CA",
        "X-Amzn-Mtls-Clientcert-Subject": "CN=client.acme.com",
        "X-Amzn-Mtls-Clientcert-Validity": (
            f"NotBefore={leaf.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ};"
            f"NotAfter={leaf.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}"
        ),
        "X-Amzn-Mtls-Clientcert-Leaf": aws_urlencode(pem(leaf)),
    }


def test_aws_subject_with_specials(leaves):
    got = as_dict(aws_headers(client_for(leaves["nasty"])))
    assert got["X-Amzn-Mtls-Clientcert-Subject"] == NASTY_RFC2253


def test_aws_passthrough_sends_whole_chain_even_unverified(leaves):
    leaf, inter = sent(leaves["email"])
    client = ForwardedClient.from_chain((leaf, inter), verified=False, error="chain_untrusted")
    assert as_dict(aws_headers(client, AwsMode.PASSTHROUGH)) == {
        "X-Amzn-Mtls-Clientcert": aws_urlencode(pem(leaf) + pem(inter))
    }
    assert aws_headers(client, AwsMode.VERIFY) == []


# --- RFC 9440 and verdict -----------------------------------------------------------


def test_rfc9440_leaf_and_chain_without_leaf(fca, leaves):
    leaf, inter = sent(leaves["email"])
    assert as_dict(rfc9440_headers(client_for(leaves["email"]))) == {
        "Client-Cert": f":{b64(der(leaf))}:",
        "Client-Cert-Chain": f":{b64(der(inter))}:",
    }
    root = fca.root.cert
    client = ForwardedClient.from_chain((leaf, inter, root), verified=True)
    chain_value = as_dict(rfc9440_headers(client))["Client-Cert-Chain"]
    assert chain_value == f":{b64(der(inter))}:, :{b64(der(root))}:"


def test_rfc9440_nothing_unverified(leaves):
    client = ForwardedClient.from_chain(sent(leaves["email"]), verified=False)
    assert rfc9440_headers(client) == []


def test_verdict_verified_and_failed(leaves):
    leaf = leaves["spiffe"].cert
    assert as_dict(verdict_headers(client_for(leaves["spiffe"]))) == {
        "X-Mtlskit-Client-Present": "true",
        "X-Mtlskit-Client-Verified": "true",
        "X-Mtlskit-Client-Fingerprint": f"sha256:{sha_hex(leaf)}",
        "X-Mtlskit-Client-Identity": SPIFFE,
        "X-Mtlskit-Client-Identity-Kind": "spiffe",
    }
    failed = ForwardedClient.from_chain(
        sent(leaves["spiffe"]), verified=False, error="cert_revoked"
    )
    assert as_dict(verdict_headers(failed)) == {
        "X-Mtlskit-Client-Present": "true",
        "X-Mtlskit-Client-Verified": "false",
        "X-Mtlskit-Client-Error": "cert_revoked",
        "X-Mtlskit-Client-Fingerprint": f"sha256:{sha_hex(leaf)}",
    }
    assert as_dict(verdict_headers(ForwardedClient.missing())) == {
        "X-Mtlskit-Client-Present": "false",
        "X-Mtlskit-Client-Verified": "false",
        "X-Mtlskit-Client-Error": "cert_not_provided",
    }


# --- all together -------------------------------------------------------------------


def test_forward_headers_every_format_in_configured_order(leaves):
    client = client_for(leaves["spiffe"])
    names = [n.decode() for n, _ in forward_headers(client, ForwardConfig())]
    assert names[0] == "X-Forwarded-Client-Cert"
    assert names.index("X-Client-Cert-Present") < names.index("X-Amzn-Mtls-Clientcert-Leaf")
    assert names.index("Client-Cert") < names.index("X-Mtlskit-Client-Verified")
    only = ForwardConfig(formats=(HeaderFormat.RFC9440,))
    assert [n for n, _ in forward_headers(client, only)] == [b"Client-Cert", b"Client-Cert-Chain"]


def test_no_header_value_carries_control_or_non_ascii_bytes(fca):
    issued = fca.issue(
        LeafSpec(
            common_name="evil\r\nX-Mtlskit-Client-Verified: true\x00é",
            dns=("ok.acme.com",),
            uris=("https://acme.com/a\r\nb",),
        )
    )
    config = ForwardConfig(xfcc=XfccConfig(details=frozenset(XfccDetail)))
    pairs = forward_headers(client_for(issued), config)
    for name, value in pairs:
        assert all(0x20 <= byte < 0x7F for byte in value), name
    got = as_dict(pairs)
    assert got["X-Amzn-Mtls-Clientcert-Subject"] == (
        "CN=evil\\0D\\0AX-Mtlskit-Client-Verified: true\\00\\C3\\A9"
    )
    assert "URI=https://acme.com/a%0D%0Ab" in got["X-Forwarded-Client-Cert"]


# --- ASGI ---------------------------------------------------------------------------


def test_asgi_tls_extension(fca, leaves):
    leaf, inter = sent(leaves["nasty"])
    server = fca.issue(LeafSpec(dns=("gw.acme.com",))).cert
    ext = asgi_tls_extension(
        client_for(leaves["nasty"]),
        server_cert=server,
        tls_version=tls_version_number("TLSv1.3"),
        cipher_suite=0x1301,
    )
    assert ext == {
        "server_cert": pem(server),
        "client_cert_chain": [pem(leaf), pem(inter)],
        "client_cert_name": NASTY_RFC2253,
        "client_cert_error": None,
        "tls_version": 0x0304,
        "cipher_suite": 0x1301,
    }


def test_asgi_tls_extension_unverified_and_missing(leaves):
    failed = ForwardedClient.from_chain(sent(leaves["dns"]), verified=False, error="cert_expired")
    assert asgi_tls_extension(failed)["client_cert_error"] == "cert_expired"
    assert (
        asgi_tls_extension(ForwardedClient.from_chain(sent(leaves["dns"]), verified=False))[
            "client_cert_error"
        ]
        == "unverified"
    )
    missing = asgi_tls_extension(ForwardedClient.missing())
    assert missing["client_cert_chain"] == []
    assert missing["client_cert_name"] is None
    assert missing["client_cert_error"] is None
    assert tls_version_number("TLSv1.2") == 0x0303
    assert tls_version_number(None) is None
