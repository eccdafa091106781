"""The decision point without sockets (a table per proxy contract), its config file, and the
generated proxy configurations: nginx checked by `nginx -t`, HAProxy by `haproxy -c`, Envoy
for structure only (Envoy is not installable here)."""

from __future__ import annotations

import base64
import datetime as dt
import subprocess
import urllib.parse

import pytest
import yaml

from conftest import require_program, write
from mtlskit.authz import Policy
from mtlskit.authzserver import CheckRequest, DecisionPoint, Proxy, load_config
from mtlskit.certs import certificate_pem
from mtlskit.errors import ConfigError
from mtlskit.forward import ForwardedClient, XfccConfig, XfccDetail, xfcc_value
from mtlskit.proxyconfig import (
    Endpoint,
    ProxySetup,
    envoy_config,
    haproxy_config,
    haproxy_lua,
    nginx_config,
)
from mtlskit.testca import LeafSpec, TestCA
from mtlskit.verify import TrustStore, VerificationCache, Verifier

NOW = dt.datetime.now(dt.UTC)
ALLOWED = "spiffe://acme.com/billing/payments"
POLICY = Policy.from_toml(
    '[[allow]]\nid = "spiffe://acme.com/billing/*"\nroutes = ["GET /invoices"]\n'
)


@pytest.fixture(scope="module")
def pki():
    ca = TestCA(name="authz unit")
    good = ca.issue(LeafSpec(uris=(ALLOWED,)))
    other = ca.issue(LeafSpec(uris=("spiffe://acme.com/marketing/x",)))
    gone = ca.issue(LeafSpec(uris=(ALLOWED,)))
    stranger = TestCA(name="stranger").issue(LeafSpec(uris=(ALLOWED,)))
    trust = TrustStore.build(anchors=[ca.root.cert], crls=[ca.crl((gone.cert.serial_number,))])
    return {
        "ca": ca,
        "good": good,
        "other": other,
        "gone": gone,
        "stranger": stranger,
        "trust": trust,
    }


def _point(pki, **kw) -> DecisionPoint:
    return DecisionPoint(
        verifier=Verifier(trust=pki["trust"]),
        policy=POLICY,
        intermediates=(pki["ca"].issuer.cert,),
        **kw,
    )


def _nginx(issued, verify="SUCCESS", method="GET", uri="/invoices/7", extra=()):
    escaped = urllib.parse.quote(certificate_pem(issued.cert).decode(), safe="") if issued else ""
    return CheckRequest(
        proxy=Proxy.NGINX,
        method="GET",
        path="/nginx",
        headers=[
            (b"x-mtlskit-nginx-cert", escaped.encode()),
            (b"x-mtlskit-nginx-verify", verify.encode()),
            (b"x-mtlskit-original-method", method.encode()),
            (b"x-mtlskit-original-uri", uri.encode()),
            *extra,
        ],
    )


@pytest.mark.parametrize(
    ("who", "verify", "method", "uri", "extra", "status", "codes"),
    [
        ("good", "SUCCESS", "GET", "/invoices/7", (), 200, []),
        ("good", "SUCCESS", "POST", "/invoices/7", (), 403, ["identity_not_authorized"]),
        ("other", "SUCCESS", "GET", "/invoices", (), 403, ["identity_not_authorized"]),
        ("gone", "SUCCESS", "GET", "/invoices", (), 403, ["cert_revoked"]),
        ("stranger", "SUCCESS", "GET", "/invoices", (), 403, ["chain_untrusted"]),
        (None, "NONE", "GET", "/invoices", (), 403, ["cert_not_provided"]),
        ("good", "FAILED:certificate revoked", "GET", "/invoices", (), 403, ["chain_untrusted"]),
        # cleared by the generated nginx config: harmless here
        ("good", "SUCCESS", "GET", "/invoices", ((b"X-Client-Cert-Hash", b"x"),), 200, []),
        # not cleared by name (nginx cannot strip by prefix): denied
        (
            "good",
            "SUCCESS",
            "GET",
            "/invoices",
            ((b"X-SSL-Foo", b"x"),),
            403,
            ["identity_not_authorized"],
        ),
    ],
)
def test_nginx_contract(pki, who, verify, method, uri, extra, status, codes):
    answer = _point(pki).check(
        _nginx(pki[who] if who else None, verify, method, uri, extra), at=NOW
    )
    assert answer.status == status
    assert [r.code.value for r in answer.decision.reasons] == codes
    if status == 200:
        headers = dict(answer.headers)
        assert headers[b"X-Mtlskit-Client-Identity"] == ALLOWED.encode()
        assert b"URI=spiffe://acme.com/billing/payments" in headers[b"X-Forwarded-Client-Cert"]
    else:
        assert answer.headers == []  # nothing about the reason leaves the log


def test_reasons_reach_the_log_record_only(pki):
    answer = _point(pki).check(_nginx(pki["gone"]), at=NOW)
    record = answer.record()
    assert (
        record["codes"] == ["cert_revoked"] and "revoked since" in record["reasons"][0]["message"]
    )
    assert record["identity"] == {"kind": "spiffe", "value": ALLOWED}


def test_cache_serves_repeat_checks(pki):
    point = _point(pki, cache=VerificationCache())
    first = point.check(_nginx(pki["good"]), at=NOW)
    second = point.check(_nginx(pki["good"]), at=NOW)
    assert (first.cache_hit, second.cache_hit) == (False, True)
    assert first.headers == second.headers and second.status == 200
    # the policy still runs per request on a cache hit
    assert point.check(_nginx(pki["good"], method="DELETE"), at=NOW).status == 403


def test_allow_invalid_mode_answers_200_with_the_verdict(pki):
    answer = _point(pki, allow_invalid=True).check(_nginx(pki["stranger"]), at=NOW)
    headers = dict(answer.headers)
    assert answer.status == 200 and headers[b"X-Mtlskit-Client-Verified"] == b"false"
    assert headers[b"X-Mtlskit-Client-Error"] == b"chain_untrusted"


def test_haproxy_contract(pki):
    def check(issued, status="0"):
        headers = [
            (b"x-mtlskit-original-method", b"GET"),
            (b"x-mtlskit-original-uri", b"/invoices"),
        ]
        if issued:
            der = base64.b64encode(
                issued.cert.public_bytes(
                    __import__("cryptography").hazmat.primitives.serialization.Encoding.DER
                )
            )
            headers += [
                (b"x-mtlskit-haproxy-cert", der),
                (b"x-mtlskit-haproxy-verify", status.encode()),
            ]
        return _point(pki).check(
            CheckRequest(proxy=Proxy.HAPROXY, method="GET", path="/haproxy", headers=headers),
            at=NOW,
        )

    assert check(pki["good"]).status == 200
    assert check(pki["other"]).status == 403
    assert check(None).decision.codes[0].value == "cert_not_provided"
    assert check(pki["good"], "10").status == 403  # HAProxy's own verify failed


def test_envoy_contract_lists_spoofed_headers_for_removal(pki):
    client = ForwardedClient.from_chain(pki["good"].chain[:-1], verified=True)
    xfcc = xfcc_value(
        client, XfccConfig(details=(XfccDetail.CERT, XfccDetail.CHAIN, XfccDetail.URI))
    )
    request = CheckRequest(
        proxy=Proxy.ENVOY,
        method="GET",
        path="/envoy/invoices/1",
        headers=[
            (b"x-forwarded-client-cert", xfcc.encode()),
            (b"x-client-cert-hash", b"forged"),
            (b"x-ssl-foo", b"x"),
        ],
    )
    answer = _point(pki).check(request, at=NOW)
    assert answer.status == 200 and answer.path == "/invoices/1"
    headers = dict(answer.headers)
    assert headers[b"x-envoy-auth-headers-to-remove"] == b"x-client-cert-hash,x-ssl-foo"
    assert headers[b"X-Mtlskit-Client-Identity"] == ALLOWED.encode()
    # an XFCC without the certificate cannot be verified: denied with a reason
    bare = CheckRequest(
        proxy=Proxy.ENVOY,
        method="GET",
        path="/envoy/x",
        headers=[(b"x-forwarded-client-cert", b"URI=spiffe://acme.com/billing/payments")],
    )
    assert _point(pki).check(bare, at=NOW).status == 403


def test_config_file_errors_name_the_key(tmp_path):
    bad = write(tmp_path / "authz.toml", b'[client_auth]\ntrust = ["root.pem"]\ncolour = "red"\n')
    with pytest.raises(ConfigError, match=r"unknown key 'client_auth.colour'"):
        load_config(bad)
    empty = write(tmp_path / "empty.toml", b"[client_auth]\n")
    with pytest.raises(ConfigError, match="needs at least one of trust, pins or spiffe_bundles"):
        load_config(empty)
    good = write(
        tmp_path / "ok.toml",
        b'[client_auth]\ntrust = ["ca/root.pem"]\n[log]\ndecisions = "d.log"\n',
    )
    config = load_config(good)
    assert config.client_auth.trust == [tmp_path / "ca" / "root.pem"]
    assert config.log.decisions == str(tmp_path / "d.log")


@pytest.fixture
def setup(tmp_path, pki):
    server = TestCA(name="srv").issue(LeafSpec(dns=("localhost",)))
    write(tmp_path / "server.pem", server.chain_pem)
    write(tmp_path / "server.key", server.key_pem)
    write(tmp_path / "root.pem", pki["ca"].root.cert_pem)
    return ProxySetup(
        listen="127.0.0.1:18443",
        server_cert=tmp_path / "server.pem",
        server_key=tmp_path / "server.key",
        trust=tmp_path / "root.pem",
        upstream=Endpoint.parse("http://127.0.0.1:8080", what="--upstream"),
        authz=Endpoint.parse("http://127.0.0.1:9191", what="--authz"),
    )


def test_nginx_config_passes_nginx_t(tmp_path, setup):
    nginx = require_program("nginx")
    text = nginx_config(setup)
    assert "ssl_verify_depth 2;" in text and 'proxy_set_header x-forwarded-ssl "";' in text
    conf = write(
        tmp_path / "nginx.conf",
        f"pid {tmp_path}/n.pid; error_log {tmp_path}/e.log; events {{}} http {{ {text} }}".encode(),
    )
    result = subprocess.run(
        [nginx, "-t", "-c", str(conf), "-p", str(tmp_path), "-e", str(tmp_path / "e.log")],
        check=False,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_haproxy_config_passes_haproxy_c(tmp_path, setup):
    haproxy = require_program("haproxy")
    write(tmp_path / "mtls.lua", haproxy_lua(setup).encode())
    write(
        tmp_path / "crt.pem",
        (tmp_path / "server.pem").read_bytes() + (tmp_path / "server.key").read_bytes(),
    )
    cfg = write(
        tmp_path / "h.cfg",
        haproxy_config(
            setup, lua_path=str(tmp_path / "mtls.lua"), crt_path=str(tmp_path / "crt.pem")
        ).encode(),
    )
    result = subprocess.run(
        [haproxy, "-c", "-f", str(cfg)], check=False, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_envoy_config_structure(setup):
    """Not validated by Envoy itself: the fields the contract depends on are present."""
    doc = yaml.safe_load(envoy_config(setup))
    (listener,) = doc["static_resources"]["listeners"]
    (chain,) = listener["filter_chains"]
    tls = chain["transport_socket"]["typed_config"]
    assert tls["require_client_certificate"] is True
    assert tls["common_tls_context"]["validation_context"]["trusted_ca"]["filename"] == str(
        setup.trust
    )
    hcm = chain["filters"][0]["typed_config"]
    assert hcm["forward_client_cert_details"] == "SANITIZE_SET"
    assert (
        hcm["set_current_client_cert_details"]["cert"]
        and hcm["set_current_client_cert_details"]["chain"]
    )
    ext, router = hcm["http_filters"]
    assert router["name"] == "envoy.filters.http.router"
    service = ext["typed_config"]["http_service"]
    assert service["path_prefix"] == "/envoy" and ext["typed_config"]["failure_mode_allow"] is False
    allowed = service["authorization_request"]["allowed_headers"]["patterns"]
    assert {"exact": "x-forwarded-client-cert"} in allowed
    upstream = {
        p["exact"]
        for p in service["authorization_response"]["allowed_upstream_headers"]["patterns"]
    }
    assert "x-mtlskit-client-identity" in upstream
    clusters = {c["name"] for c in doc["static_resources"]["clusters"]}
    assert (
        clusters == {"mtlskit_app", "mtlskit_authz"}
        and service["server_uri"]["cluster"] in clusters
    )


def test_config_cli_refuses_unreadable_inputs(run_cli, tmp_path, setup):
    result = run_cli("config", "nginx", "--trust", tmp_path / "missing.pem")
    assert result.code == 2 and "missing.pem" in result.err
    result = run_cli("config", "nginx", "--trust", setup.trust, "--authz", "https://x:1")
    assert result.code == 2 and "--authz" in result.err
    result = run_cli("config", "nginx", "--trust", setup.trust)
    assert result.code == 0 and "ssl_verify_client on;" in result.out
