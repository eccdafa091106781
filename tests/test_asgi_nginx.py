"""Forged identity headers through a real nginx to an app behind ``ClientCertMiddleware``.

nginx runs docs/python.md's server block (ports and paths changed, nothing else) in front
of uvicorn; a client holding a legitimate non-admin certificate (alice) sends every
identity-header family with the admin's values — the admin's *public* chain where the
family carries certificates, which anyone can copy. The app must see alice, verified,
whatever it sends, with and without ``trust=``; and nginx must have cleared every forged
name before the request reached the app. Everything listens on loopback, ephemeral ports,
and is stopped in teardown.
"""

from __future__ import annotations

import json
import logging
import ssl
import subprocess
import sys
from contextlib import AbstractContextManager
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import trustme

from _servers import free_port, nginx, stop, wait_for
from mtlskit.asgi import ClientCertMiddleware
from mtlskit.certs import certificate_pem
from mtlskit.forward import (
    ForwardedClient,
    HeaderFormat,
    XfccConfig,
    XfccDetail,
    aws_headers,
    gcp_headers,
    rfc9440_headers,
    verdict_headers,
    xfcc_headers,
)
from mtlskit.forward.names import identity_header_names, written_by
from mtlskit.testca import IssuedCert, LeafSpec, TestCA
from mtlskit.verify import TrustStore
from test_asgi import UvicornThread
from test_docs_python import blocks

ALICE = "spiffe://acme.com/billing/alice"
ADMIN = "spiffe://acme.com/admin"


def _forged(admin: IssuedCert) -> dict[str, list[tuple[bytes, bytes]]]:
    """Each family as a real proxy would write it for the admin, from public data only."""
    client = ForwardedClient.from_chain(admin.chain[:-1], verified=True)
    escaped = quote(certificate_pem(admin.cert).decode(), safe="").encode()
    return {
        "xfcc-uri": [(b"X-Forwarded-Client-Cert", f"Hash={'00' * 32};URI={ADMIN}".encode())],
        "xfcc-chain": xfcc_headers(client, XfccConfig(details=frozenset(XfccDetail))),
        "xfcc-lowercase": [(b"x-forwarded-client-cert", f"URI={ADMIN}".encode())],
        "rfc9440": rfc9440_headers(client),
        "gcp": gcp_headers(client),
        "aws": aws_headers(client),
        "verdict": verdict_headers(client),
        "nginx-own": [(b"X-SSL-Client-Cert", escaped), (b"X-SSL-Client-Verify", b"SUCCESS")],
        "every-known-name": [(name.encode(), b"forged") for name in identity_header_names()],
        "underscored": [
            (b"X_Forwarded_Client_Cert", f"URI={ADMIN}".encode()),
            (b"X_SSL_Client_Cert", escaped),
            (b"Client_Cert", rfc9440_headers(client)[0][1]),
        ],
    }


def _app(seen: list[dict[str, object]]):
    """Reports what the middleware decided; ``outer`` records the headers nginx sent."""

    async def inner(scope, receive, send):
        state = scope["state"]
        identity = state["client_identity"]
        body = json.dumps(
            {
                "identity": identity.value if identity is not None else None,
                "verified": state["client_cert"].verified,
                "headers": sorted({k.decode().lower() for k, _ in scope["headers"]}),
            }
        ).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    return inner


def _outer(app, seen: list[dict[str, object]]):
    async def outer(scope, receive, send):
        if scope["type"] == "http":
            seen.append({"raw": sorted({k.decode().lower() for k, _ in scope["headers"]})})
        await app(scope, receive, send)

    return outer


def protected(app, trust: TrustStore | None):
    """docs/python.md's call, with or without ``trust=``."""
    return ClientCertMiddleware(app, proxies={"127.0.0.1": "nginx"}, trust=trust)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("asgi-nginx")
    acme = TestCA(name="acme")  # root + issuing intermediate, as a real deployment
    alice = acme.issue(LeafSpec(uris=(ALICE,)))
    admin = acme.issue(LeafSpec(uris=(ADMIN,)))
    certs = tmp / "certs"
    certs.mkdir()
    server_ca = trustme.CA()
    server_ca.cert_pem.write_to_path(str(certs / "server-ca.pem"))
    server = server_ca.issue_cert("localhost", "127.0.0.1")
    server.private_key_and_cert_chain_pem.write_to_path(str(certs / "server.pem"))
    server.private_key_pem.write_to_path(str(certs / "server.key"))
    (certs / "clients-ca.pem").write_bytes(acme.bundle_pem)
    (tmp / "alice.pem").write_bytes(alice.chain_pem)
    (tmp / "alice.key").write_bytes(alice.key_pem)
    return {"tmp": tmp, "acme": acme, "alice": alice, "admin": admin}


def docs_nginx(work: Path, certs: Path, port: int, upstream: int) -> AbstractContextManager[int]:
    """docs/python.md's ``nginx-site.conf`` inside a minimal ``http {}``."""
    site = (
        blocks()["nginx-site.conf"]
        .replace(":9443", f":{port}")
        .replace(":8000", f":{upstream}")
        .replace("certs/", f"{certs}/")
    )
    # the docs' depth default suits a client CA without intermediates; ours has one
    assert "ssl_verify_depth" in site
    return nginx(work, http=site, port=port)


@pytest.mark.integration
@pytest.mark.attack("forged-identity-headers")
@pytest.mark.parametrize("reverify", [False, True], ids=["proxy-verdict", "trust"])
def test_forged_identity_headers_through_docs_nginx_never_give_admin(
    pki, tmp_path, reverify, caplog
):
    seen: list[dict[str, object]] = []
    # nginx forwards the leaf only: the trust store is anchored at the issuing CA
    trust = TrustStore.build(anchors=[pki["alice"].chain[1]]) if reverify else None
    app_port, nginx_port = free_port(), free_port()
    backend = UvicornThread(_outer(protected(_app(seen), trust), seen), app_port)
    running = docs_nginx(tmp_path / "nginx", pki["tmp"] / "certs", nginx_port, app_port)
    context = ssl.create_default_context(cafile=pki["tmp"] / "certs" / "server-ca.pem")
    context.load_cert_chain(pki["tmp"] / "alice.pem", pki["tmp"] / "alice.key")
    forged_names = {
        name.decode().lower() for family in _forged(pki["admin"]).values() for name, _ in family
    } - {"x-ssl-client-cert", "x-ssl-client-verify"}  # nginx's own two, which it overwrites
    try:
        with (
            running,
            httpx.Client(verify=context, timeout=10) as client,
            caplog.at_level(logging.WARNING, logger="mtlskit.asgi"),
        ):
            honest = client.get(f"https://localhost:{nginx_port}/")
            assert honest.json()["identity"] == ALICE and honest.json()["verified"]
            for family, headers in _forged(pki["admin"]).items():
                answer = client.get(f"https://localhost:{nginx_port}/", headers=headers)
                assert answer.status_code == 200, (family, answer.text)
                body = answer.json()
                assert (body["identity"], body["verified"]) == (ALICE, True), family
                # nginx cleared every forged name (case and underscore variants included)
                assert not set(seen[-1]["raw"]) & forged_names, family
                assert not set(body["headers"]) & forged_names, family
        # nothing reached the middleware for it to ignore: the docs' list is complete
        assert "passed on identity headers" not in caplog.text
    finally:
        backend.stop()


@pytest.fixture(params=["xfcc", "verdict"])
def generated_stack(pki, tmp_path, request):
    """`mtlskit config nginx --forward FORMAT` + `mtlskit authz-server` + the middleware.

    The proxy forwards exactly the one format the middleware is configured to read.
    """
    from mtlskit.cli import main

    acme, certs = pki["acme"], pki["tmp"] / "certs"
    (tmp_path / "root.pem").write_bytes(acme.root.cert_pem)
    (tmp_path / "issuing.pem").write_bytes(certificate_pem(pki["alice"].chain[1]))
    (tmp_path / "policy.toml").write_text(
        f'[[allow]]\nid = "{ALICE}"\n\n[[allow]]\nid = "{ADMIN}"\n'
    )
    seen: list[dict[str, object]] = []
    fmt = request.param
    app = ClientCertMiddleware(_app(seen), proxies={"127.0.0.1": fmt})
    port, app_port, authz_port = free_port(), free_port(), free_port()
    argv = [
        "config", "nginx", "--trust", tmp_path / "root.pem",
        "--intermediate", tmp_path / "issuing.pem", "--policy", tmp_path / "policy.toml",
        "--server-cert", certs / "server.pem", "--server-key", certs / "server.key",
        "--listen", f"127.0.0.1:{port}", "--upstream", f"http://127.0.0.1:{app_port}",
        "--authz", f"http://127.0.0.1:{authz_port}", "--forward", fmt,
        "--out", tmp_path / "site.conf", "--authz-config", tmp_path / "authz.toml",
    ]  # fmt: skip
    assert main([str(a) for a in argv]) == 0
    authz_toml = (tmp_path / "authz.toml").read_text().replace('"-"', '"decisions.log"')
    (tmp_path / "authz.toml").write_text(authz_toml)
    backend = UvicornThread(_outer(app, seen), app_port)
    authz = subprocess.Popen(
        [sys.executable, "-m", "mtlskit", "authz-server", "--config", str(tmp_path / "authz.toml")],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(authz_port, authz, "authz-server")
        with nginx(tmp_path / "nginx", http=(tmp_path / "site.conf").read_text(), port=port):
            yield port, seen, fmt
    finally:
        stop(authz)
        backend.stop()


@pytest.mark.integration
@pytest.mark.attack("forged-identity-headers")
def test_forged_identity_headers_through_generated_nginx_never_give_admin(
    pki, generated_stack, caplog
):
    port, seen, fmt = generated_stack
    context = ssl.create_default_context(cafile=pki["tmp"] / "certs" / "server-ca.pem")
    context.load_cert_chain(pki["tmp"] / "alice.pem", pki["tmp"] / "alice.key")
    forwarded = {name.lower() for name in written_by((HeaderFormat(fmt),))}
    forged_names = {
        name.decode().lower() for family in _forged(pki["admin"]).values() for name, _ in family
    }
    with (
        httpx.Client(verify=context, timeout=10) as client,
        caplog.at_level(logging.WARNING, logger="mtlskit.asgi"),
    ):
        for family, headers in {"honest": [], **_forged(pki["admin"])}.items():
            answer = client.get(f"https://localhost:{port}/", headers=headers)
            assert answer.status_code == 200, (family, answer.text)
            body = answer.json()
            assert (body["identity"], body["verified"]) == (ALICE, True), family
            leaked = set(seen[-1]["raw"]) & (forged_names - forwarded)
            assert not leaked, (family, leaked)
    assert "passed on identity headers" not in caplog.text


@pytest.mark.attack("forged-identity-headers")
def test_every_generated_config_clears_every_known_identity_header(tmp_path):
    """nginx and Envoy by exact name, HAProxy by its regex; only the forwarded ones stay."""
    import re

    import yaml

    from mtlskit.proxyconfig import (
        Endpoint,
        ProxySetup,
        envoy_config,
        haproxy_config,
        nginx_config,
        spoofable_regex,
    )

    setup = ProxySetup(
        server_cert=tmp_path / "s.pem",
        server_key=tmp_path / "s.key",
        trust=tmp_path / "t.pem",
        upstream=Endpoint.parse("http://127.0.0.1:8080", what="--upstream"),
        authz=Endpoint.parse("http://127.0.0.1:9191", what="--authz"),
    )
    known = {name.lower() for name in identity_header_names()}
    forwarded = {name.lower() for name in setup.forwarded}
    app_location = nginx_config(setup).split("location / {")[1]
    cleared = {n.lower() for n in re.findall(r'proxy_set_header (\S+) "";', app_location)}
    assert known - forwarded <= cleared
    assert {"x-mtlskit-nginx-cert", "x-mtlskit-original-uri"} <= cleared  # authz-only names
    assert "underscores_in_headers on" not in nginx_config(setup)
    doc = yaml.safe_load(envoy_config(setup))
    hcm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    (host,) = hcm["typed_config"]["route_config"]["virtual_hosts"]
    assert known - forwarded <= set(host["request_headers_to_remove"])
    assert not forwarded & set(host["request_headers_to_remove"])
    pattern = spoofable_regex()
    assert f"del-header {pattern} -m reg" in haproxy_config(setup, lua_path="l", crt_path="c")
    for name in identity_header_names():
        for spelling in (name, name.upper(), name.replace("-", "_")):
            assert re.match(pattern, spelling), spelling
