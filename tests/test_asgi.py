"""ASGI apps with the verified client: served in-process by the gateway (``mtlskit serve``),
and behind a real nginx with ``ClientCertMiddleware`` — the same identity either way.

Everything listens on 127.0.0.x with ephemeral ports and is stopped in teardown.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

import httpx
import pytest
import trustme
import uvicorn
from cryptography import x509
from fastapi import Depends, FastAPI, Request
from fastapi.responses import StreamingResponse

from _gateway_support import Site, write_config
from _servers import free_port as _free_port
from _servers import nginx
from _servers import wait_for as _wait_for
from mtlskit.asgi import (
    NOT_FORWARDED,
    ClientCertMiddleware,
    ProxyHeaders,
    client_identity,
    observe,
    parse_proxies,
)
from mtlskit.certs import certificate_pem
from mtlskit.forward import (
    AwsMode,
    ForwardConfig,
    ForwardedClient,
    XfccConfig,
    XfccDetail,
    aws_headers,
    forward_headers,
    gcp_headers,
    rfc9440_headers,
    verdict_headers,
    xfcc_headers,
)
from mtlskit.gateway import Gateway, load_config
from mtlskit.identity import ClientIdentity
from mtlskit.testca import IssuedCert, LeafSpec, TestCA
from mtlskit.verify import TrustStore

SPIFFE = "spiffe://acme.com/billing/payments"
XFCC_CHAIN = XfccConfig(details=frozenset({XfccDetail.CERT, XfccDetail.CHAIN, XfccDetail.URI}))


def escaped_pem(cert: x509.Certificate) -> str:
    """As nginx's ``$ssl_client_escaped_cert``."""
    return quote(certificate_pem(cert).decode(), safe="")


def make_app(events: list[str] | None = None) -> FastAPI:
    """The app under test: reports what mtlskit put in its scope."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if events is not None:
            events.append("startup")
        yield {"started": True}
        if events is not None:
            events.append("shutdown")

    app = FastAPI(lifespan=lifespan)

    @app.get("/whoami")
    async def whoami(
        request: Request, identity: Annotated[ClientIdentity, Depends(client_identity)]
    ):
        extensions = request.scope["extensions"]
        decision = extensions["mtlskit"].get("decision")
        return {
            "id": identity.value,
            "kind": identity.kind.value,
            "state_id": str(request.state.client_identity.value),
            "tls": extensions["tls"],
            "verdict": decision.verdict.value if decision else None,
            "headers": [k.decode() for k, _ in request.scope["headers"]],
            "client": list(request.scope["client"]),
            "lifespan_state": getattr(request.state, "started", None),
        }

    @app.post("/upload")
    async def upload(request: Request):
        size = 0
        chunks = 0
        async for piece in request.stream():
            size += len(piece)
            chunks += 1
        return {"size": size, "chunks": chunks}

    @app.get("/stream")
    async def stream():
        async def parts():
            for i in range(5):
                yield f"part {i}\n".encode()
                await asyncio.sleep(0.01)

        return StreamingResponse(parts(), media_type="text/plain")

    return app


class InProcess:
    """A ``Gateway(app=...)`` on its own loop thread."""

    def __init__(self, config: Path, app: FastAPI) -> None:
        self.gateway = Gateway(load_config(config), app=app)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.gateway.start(), self.loop).result(10)
        assert self.gateway.address is not None
        self.port = self.gateway.address[1]

    def stop(self) -> None:
        try:
            future = asyncio.run_coroutine_threadsafe(self.gateway.drain(timeout=1), self.loop)
            future.result(10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            self.loop.close()
            self.gateway.close_logs()


@pytest.fixture(scope="module")
def acme() -> TestCA:
    return TestCA(name="acme")


@pytest.fixture(scope="module")
def leaf(acme: TestCA) -> IssuedCert:
    return acme.issue(LeafSpec(uris=(SPIFFE,)))


@pytest.fixture
def site(tmp_path, acme):
    site = Site(dir=tmp_path, server_ca=trustme.CA(), backend=None)  # type: ignore[arg-type]
    write_config(
        site,
        acme.bundle_pem,
        '[client_auth]\ntrust = ["trust.pem"]\n',
        upstream="http://127.0.0.1:9",  # replaced by app=
    )
    return site


@pytest.fixture
def served(site):
    events: list[str] = []
    server = InProcess(site.dir / "gateway.toml", make_app(events))
    try:
        yield server, events
    finally:
        server.stop()


def _client(site: Site, leaf: IssuedCert) -> httpx.Client:
    return httpx.Client(verify=site.client_context(leaf), timeout=10)


def test_in_process_app_sees_verified_spiffe_id_and_tls_extension(site, served, leaf):
    server, events = served
    with _client(site, leaf) as client:
        response = client.get(
            f"https://localhost:{server.port}/whoami",
            headers={"X-Forwarded-Client-Cert": "URI=spiffe://acme.com/admin", "X-Test": "1"},
        )
        again = client.get(f"https://localhost:{server.port}/whoami")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == SPIFFE and body["kind"] == "spiffe" and body["state_id"] == SPIFFE
    assert body["verdict"] == "accept"
    tls = body["tls"]
    assert tls["client_cert_chain"][0] == certificate_pem(leaf.cert).decode()
    assert len(tls["client_cert_chain"]) == len(leaf.chain) - 1  # as presented: no root
    assert tls["client_cert_name"] == leaf.cert.subject.rfc4514_string()
    assert tls["client_cert_error"] is None
    assert tls["tls_version"] == 0x0304
    assert tls["cipher_suite"] in (0x1301, 0x1302, 0x1303)
    server_pem = (site.dir / "server.pem").read_bytes()
    assert x509.load_pem_x509_certificate(tls["server_cert"].encode()) == (
        x509.load_pem_x509_certificate(server_pem)
    )
    # identity headers a client sends never reach the app; the others do
    assert "x-forwarded-client-cert" not in body["headers"] and "x-test" in body["headers"]
    assert body["lifespan_state"] is True and events == ["startup"]
    # keep-alive: both requests on one TLS connection
    assert again.json()["client"] == body["client"]
    accepted = [r for r in site.flushed_records() if r.get("outcome") == "accepted"]
    assert len(accepted) == 1


def test_in_process_streams_both_ways_and_runs_lifespan(site, served, leaf):
    server, events = served

    def body():
        for _ in range(64):
            yield b"x" * 16384

    with _client(site, leaf) as client:
        upload = client.post(f"https://localhost:{server.port}/upload", content=body())
        with client.stream("GET", f"https://localhost:{server.port}/stream") as response:
            assert response.headers["transfer-encoding"] == "chunked"
            text = "".join(response.iter_text())
    assert upload.json()["size"] == 64 * 16384 and upload.json()["chunks"] > 1
    assert text == "".join(f"part {i}\n" for i in range(5))
    server.stop()
    assert events == ["startup", "shutdown"]
    server.stop = lambda: None  # type: ignore[method-assign]


def test_in_process_without_certificate_is_refused_by_tls(site, served):
    server, _ = served
    with (
        pytest.raises(httpx.HTTPError),
        httpx.Client(verify=site.client_context(None)) as client,
    ):
        client.get(f"https://localhost:{server.port}/whoami")


def test_in_process_allow_missing_mode_app_decides(tmp_path, acme):
    site = Site(dir=tmp_path, server_ca=trustme.CA(), backend=None)  # type: ignore[arg-type]
    write_config(
        site,
        acme.bundle_pem,
        '[client_auth]\nmode = "allow_invalid_or_missing"\ntrust = ["trust.pem"]\n',
        upstream="http://127.0.0.1:9",
    )
    server = InProcess(site.dir / "gateway.toml", make_app())
    try:
        with httpx.Client(verify=site.client_context(None)) as client:
            response = client.get(f"https://localhost:{server.port}/whoami")
        assert response.status_code == 403  # the dependency: no verified identity
    finally:
        server.stop()


@pytest.mark.parametrize("workers", [1, 2])
def test_mtlskit_serve_command_short_form(site, leaf, tmp_path, workers):
    """The command, in one process and with a master and two workers (``[listen] workers``)."""
    (tmp_path / "served_app.py").write_text(
        "from test_asgi import make_app\napp = make_app()\n", encoding="utf-8"
    )
    port = _free_port()
    config = site.dir / "gateway.toml"
    text = config.read_text().replace("127.0.0.1:0", f"127.0.0.1:{port}")
    text = text.replace('urls = ["http://127.0.0.1:9"]', "")
    text = text.replace("[listen]\n", f"[listen]\nworkers = {workers}\n")
    assert f"workers = {workers}" in text
    config.write_text(text)
    tests_dir = Path(__file__).parent
    process = subprocess.Popen(
        [sys.executable, "-m", "mtlskit", "serve", "served_app:app", "--config", str(config)],
        cwd=tmp_path,
        env={"PYTHONPATH": f"{tests_dir}", "PATH": "/usr/bin:/bin"},
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for(port, process, "mtlskit serve")
        for _ in range(4):  # a new connection each: with two workers, either may answer
            with _client(site, leaf) as client:
                body = client.get(f"https://localhost:{port}/whoami").json()
            assert body["id"] == SPIFFE and body["tls"]["client_cert_error"] is None
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
        if process.stderr:
            process.stderr.close()


def test_serve_refuses_a_config_with_http_upstreams(site, run_cli):
    result = run_cli("serve", "x:app", "--config", site.dir / "gateway.toml")
    assert result.code == 2 and "upstream.urls is set" in result.err


# --- the middleware: pure reading, then behind a real nginx ---------------------------


def _scope(headers, client=("127.0.0.1", 5000), extensions=None):
    return {"type": "http", "headers": headers, "client": client, "extensions": extensions or {}}


def _family(name: str, client: ForwardedClient) -> list[tuple[bytes, bytes]]:
    return {
        "xfcc": lambda: xfcc_headers(client),
        "rfc9440": lambda: rfc9440_headers(client),
        "gcp": lambda: gcp_headers(client),
        "aws": lambda: aws_headers(client),
        "nginx": lambda: [
            (b"x-ssl-client-cert", escaped_pem(client.chain[0]).encode()),
            (b"x-ssl-client-verify", b"SUCCESS"),
        ],
        "verdict": lambda: verdict_headers(client),
    }[name]()


FAMILIES = ["xfcc", "rfc9440", "gcp", "aws", "nginx", "verdict"]


@pytest.mark.parametrize("name", FAMILIES)
def test_observe_reads_each_format_from_its_configured_proxy_only(name, leaf):
    client = ForwardedClient.from_chain(leaf.chain[:-1], verified=True)
    headers = _family(name, client)
    trusted = observe(_scope(headers), proxies=parse_proxies({"127.0.0.1": name}))
    assert trusted.source == name and trusted.client.verified and trusted.ignored == ()
    assert trusted.client.identity is not None and trusted.client.identity.value == SPIFFE
    assert trusted.headers == headers  # the proxy's own format stays visible
    spoofed = observe(
        _scope(headers, client=("127.0.0.9", 5000)), proxies=parse_proxies({"127.0.0.1": name})
    )
    assert spoofed.source is None and not spoofed.client.present
    assert spoofed.headers == []  # every identity header stripped


@pytest.mark.attack("forged-identity-headers")
@pytest.mark.parametrize("configured", FAMILIES)
def test_a_proxy_speaks_one_format_every_other_family_is_never_read(configured, leaf, acme):
    """The proxy set its own format for the real client; the client added all the others."""
    admin = acme.issue(LeafSpec(uris=("spiffe://acme.com/admin",)))
    forged = ForwardedClient.from_chain(admin.chain[:-1], verified=True)
    real = ForwardedClient.from_chain(leaf.chain[:-1], verified=True)
    others = [h for name in FAMILIES if name != configured for h in _family(name, forged)]
    observed = observe(
        _scope([*others, *_family(configured, real)]),
        proxies=parse_proxies({"127.0.0.1": configured}),
    )
    assert observed.client.identity is not None and observed.client.identity.value == SPIFFE
    assert observed.source == configured and observed.ignored
    assert {name for name, _ in observed.headers} == {n for n, _ in _family(configured, real)}
    # and without the proxy's own headers, the forged families give nothing at all
    alone = observe(_scope(others), proxies=parse_proxies({"127.0.0.1": configured}))
    assert not alone.client.present and alone.source is None


def test_the_servers_tls_extension_is_the_peers_own_never_a_proxys_clients(leaf, acme):
    """From a listed proxy the extension describes the proxy's connection: not the client."""
    proxy_cert = acme.issue(LeafSpec(uris=("spiffe://acme.com/nginx",)))
    tls = {"client_cert_chain": [certificate_pem(proxy_cert.cert).decode()]}
    proxies = parse_proxies({"127.0.0.1": "nginx"})
    behind = observe(_scope([], extensions={"tls": tls}), proxies=proxies)
    assert behind.source is None and not behind.client.present
    direct = observe(_scope([], client=("10.1.1.1", 1), extensions={"tls": tls}), proxies=proxies)
    assert direct.source == "tls" and direct.client.identity is not None
    assert direct.client.identity.value == "spiffe://acme.com/nginx"


def test_proxies_are_required_and_checked():
    with pytest.raises(TypeError):
        ClientCertMiddleware(lambda *a: None)  # type: ignore[call-arg, arg-type]
    with pytest.raises(ValueError, match="unknown proxy header format 'any'"):
        parse_proxies({"127.0.0.1": "any"})
    with pytest.raises(ValueError, match="overlap with different formats"):
        parse_proxies({"10.0.0.0/8": "xfcc", "10.1.2.3": "nginx"})
    with pytest.raises(ValueError, match="not an IP address"):
        parse_proxies({"nginx.local": "nginx"})
    custom = ProxyHeaders(format="nginx", nginx_cert="X-Client-Cert", nginx_verify="X-Verify")
    assert parse_proxies({"::1": custom})[0][1].names == ("X-Client-Cert", "X-Verify")


def _run(middleware, headers) -> dict[str, object]:
    seen: dict[str, object] = {}

    async def app(scope, receive, send):
        seen.update(scope["state"])
        seen["tls"] = scope["extensions"]["tls"]

    middleware.app = app
    asyncio.run(middleware(_scope(headers), None, None))  # type: ignore[arg-type]
    return seen


def test_middleware_reverifies_and_refuses_a_foreign_chain(leaf):
    other = TestCA(name="evil").issue(LeafSpec(uris=(SPIFFE,)))
    middleware = ClientCertMiddleware(
        None,  # type: ignore[arg-type]
        proxies={"127.0.0.1": "rfc9440"},
        trust=TrustStore.build(anchors=[leaf.chain[-1]]),
    )
    for issued, verified in ((leaf, True), (other, False)):
        forwarded = ForwardedClient.from_chain(issued.chain[:-1], verified=True)
        headers = forward_headers(forwarded, ForwardConfig(formats=("rfc9440",)))
        seen = _run(middleware, headers)
        cert = seen["client_cert"]
        assert isinstance(cert, ForwardedClient) and cert.verified is verified
        assert (seen["client_identity"] is not None) is verified
        tls = seen["tls"]
        assert isinstance(tls, dict)
        assert (tls["client_cert_error"] is None) is verified
    # XFCC without Cert names a certificate but cannot be verified again: not accepted
    middleware = ClientCertMiddleware(
        None,  # type: ignore[arg-type]
        proxies={"127.0.0.1": "xfcc"},
        trust=TrustStore.build(anchors=[leaf.chain[-1]]),
    )
    forwarded = ForwardedClient.from_chain(leaf.chain[:-1], verified=True)
    seen = _run(middleware, forward_headers(forwarded, ForwardConfig(formats=("xfcc",))))
    assert seen["client_identity"] is None
    assert seen["client_cert"].error == NOT_FORWARDED  # type: ignore[attr-defined]


@pytest.mark.attack("forged-identity-headers")
def test_trust_is_integrity_only_a_public_chain_never_makes_anyone_verified(leaf, acme, caplog):
    """With ``trust=``, a chain that verifies is still only as good as the proxy's word."""
    admin = acme.issue(LeafSpec(uris=("spiffe://acme.com/admin",)))
    public = ForwardedClient.from_chain(admin.chain[:-1], verified=True)
    trust = TrustStore.build(anchors=[acme.root.cert])
    # nginx saw alice (the leaf fixture) and says so; the client added the admin's public
    # chain as XFCC Chain= and RFC 9440 Client-Cert-Chain: the answer is alice.
    middleware = ClientCertMiddleware(None, proxies={"127.0.0.1": "nginx"}, trust=trust)  # type: ignore[arg-type]
    headers = [
        *xfcc_headers(public, XFCC_CHAIN),
        *rfc9440_headers(public),
        (b"X-SSL-Client-Cert", escaped_pem(leaf.cert).encode()),
        (b"X-SSL-Client-Verify", b"SUCCESS"),
    ]
    anchored = ClientCertMiddleware(
        None,  # type: ignore[arg-type]
        proxies={"127.0.0.1": "nginx"},
        trust=TrustStore.build(anchors=[leaf.chain[1]]),  # nginx forwards the leaf only
    )
    with caplog.at_level(logging.WARNING, logger="mtlskit.asgi"):
        seen = _run(anchored, headers)
    identity = seen["client_identity"]
    assert isinstance(identity, ClientIdentity) and identity.value == SPIFFE
    assert "x-forwarded-client-cert" in caplog.text and "client-cert-chain" in caplog.text
    # the proxy says the certificate failed; the admin's chain (which verifies) changes nothing
    headers[-1] = (b"X-SSL-Client-Verify", b"FAILED:certificate revoked")
    seen = _run(middleware, headers)
    assert seen["client_identity"] is None and not seen["client_cert"].verified  # type: ignore[attr-defined]
    # an AWS passthrough chain is unverified by the ALB; re-verifying it must not promote it
    passthrough = ClientCertMiddleware(None, proxies={"127.0.0.1": "aws"}, trust=trust)  # type: ignore[arg-type]
    seen = _run(passthrough, aws_headers(public, AwsMode.PASSTHROUGH))
    assert seen["client_identity"] is None and not seen["client_cert"].verified  # type: ignore[attr-defined]


# nginx in front: verifies the client, forwards $ssl_client_escaped_cert; proxy_bind puts
# its connections on 127.0.0.2, the only allow-listed address, so a client connecting
# to the app directly from 127.0.0.1 is "someone else" and its headers are dropped.


class UvicornThread:
    def __init__(self, app, port: int) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise AssertionError("uvicorn did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def nginx_server(*, upstream: int, server: Path, trust: Path) -> str:
    return f"""
    ssl_certificate {server};
    ssl_certificate_key {server};
    ssl_client_certificate {trust};
    ssl_verify_client on;
    ssl_verify_depth 3;
    location / {{
      proxy_pass http://127.0.0.1:{upstream};
      proxy_bind 127.0.0.2;
      proxy_set_header X-SSL-Client-Cert $ssl_client_escaped_cert;
      proxy_set_header X-SSL-Client-Verify $ssl_client_verify;
    }}
"""


@pytest.mark.integration
def test_behind_nginx_middleware_gives_the_same_identity(tmp_path, site, served, leaf):
    work = tmp_path / "nginx"
    work.mkdir()
    server_cert = site.server_ca.issue_cert("localhost", "127.0.0.1")
    server_cert.private_key_and_cert_chain_pem.write_to_path(str(work / "server.pem"))
    app = make_app()
    app.add_middleware(ClientCertMiddleware, proxies={"127.0.0.2": "nginx"})
    app_port = _free_port()
    backend = UvicornThread(app, app_port)
    config = nginx_server(
        upstream=app_port, server=work / "server.pem", trust=site.dir / "trust.pem"
    )
    try:
        with nginx(work, config) as nginx_port:
            with _client(site, leaf) as client:
                behind = client.get(f"https://localhost:{nginx_port}/whoami")
                direct = client.get(f"https://localhost:{served[0].port}/whoami")
            assert behind.status_code == 200, behind.text
            assert behind.json()["id"] == direct.json()["id"] == SPIFFE
            tls = behind.json()["tls"]
            assert tls["client_cert_chain"][0] == certificate_pem(leaf.cert).decode()
            assert tls["client_cert_name"] == direct.json()["tls"]["client_cert_name"]
            assert tls["client_cert_error"] is None
            assert behind.json()["client"][0] == "127.0.0.2"
            # the same headers, sent straight to the app from 127.0.0.1: ignored and stripped
            spoof = {
                "X-SSL-Client-Cert": escaped_pem(leaf.cert),
                "X-SSL-Client-Verify": "SUCCESS",
                "X-Forwarded-Client-Cert": f"Hash={'ab' * 32};URI={SPIFFE}",
            }
            with httpx.Client() as plain:
                spoofed = plain.get(f"http://127.0.0.1:{app_port}/whoami", headers=spoof)
            assert spoofed.status_code == 403
            # and a client nginx refuses never reaches the app at all
            with (
                pytest.raises(httpx.HTTPError),
                httpx.Client(verify=site.client_context(None)) as anonymous,
            ):
                anonymous.get(f"https://localhost:{nginx_port}/whoami").raise_for_status()
    finally:
        backend.stop()


def test_spoofed_headers_from_an_unlisted_address_never_reach_the_app(leaf):
    seen: list[list[str]] = []

    async def app(scope, receive, send):
        seen.append([k.decode() for k, _ in scope["headers"]])

    middleware = ClientCertMiddleware(app, proxies={"10.0.0.0/8": "nginx"})
    headers = [(b"x-ssl-client-cert", escaped_pem(leaf.cert).encode()), (b"x-other", b"1")]
    asyncio.run(middleware(_scope(headers), None, None))  # type: ignore[arg-type]
    assert seen == [["x-other"]]


def test_https_request_to_nothing_is_a_clean_error():
    # negative control for the fixtures above: a closed port is an error, not a hang
    with pytest.raises((ssl.SSLError, OSError)):
        socket.create_connection(("127.0.0.1", _free_port()), timeout=1)


def test_json_round_trip_of_tls_extension_is_plain_data(site, served, leaf):
    with _client(site, leaf) as client:
        body = client.get(f"https://localhost:{served[0].port}/whoami").json()
    assert json.loads(json.dumps(body["tls"])) == body["tls"]
