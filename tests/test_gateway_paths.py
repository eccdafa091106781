"""Route rules against encoded dot segments and other ambiguous paths (issue 27 item 3).

A real gateway with a real echo backend, and a real authz-server over HTTP: every attack
path is refused (400) or denied (403) and the backend never receives a request for the
admin page; legitimate paths pass, forwarded in their normalised form.
"""

from __future__ import annotations

import http.client
import json
import posixpath
import socket
import ssl
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from urllib.parse import unquote

import pytest
import trustme
from hypothesis import given, settings
from hypothesis import strategies as st

from _gateway_support import EchoBackend, GatewayThread, Site, https_request, write_config
from _servers import free_port, stop, wait_for, wait_for_log
from conftest import SPIFFE_ID, write
from mtlskit.authz import PathError, needs_normalizing, normalize_target
from mtlskit.certs import certificate_pem
from mtlskit.forward import ForwardedClient, XfccConfig, XfccDetail, xfcc_value
from mtlskit.testca import IssuedCert, LeafSpec, TestCA

POLICY = f'[[allow]]\nid = "{SPIFFE_ID}"\nroutes = ["GET /public/", "GET /invoices"]\n'

# (target, the gateway's status): 403 once normalised it is outside every route, 400 ambiguous.
ATTACKS = [
    ("/public/%2e%2e/admin/secret", 403),
    ("/public/%2E%2E/admin/secret", 403),  # mixed case
    ("/public/%2e%2E/admin/secret", 403),
    ("/public/.%2e/admin/secret", 403),
    ("/public/%2e./admin/secret", 403),
    ("/invoices/%2e%2e/admin/secret", 403),
    ("/invoices/%2e%2e%2fadmin/secret", 400),
    ("/public/..%2fadmin/secret", 400),  # an encoded slash
    ("/public/..%2Fadmin/secret", 400),
    ("/public%2F..%2Fadmin/secret", 400),
    ("/public/%252e%252e/admin/secret", 400),  # double encoding
    ("/public/%252e%252e%252fadmin/secret", 400),
    ("/public/..%5cadmin/secret", 400),  # an encoded backslash
    ("/public/..\\admin/secret", 400),  # a backslash
    ("/public/..;/admin/secret", 400),  # Tomcat reads "..;" as ".."
    ("/public//../admin/secret", 403),  # "//" merged first, as nginx does
    ("//admin/secret", 403),
    ("/public/../../admin/secret", 400),  # above the root
    ("/public/%2e%2e/%2e%2e/admin/secret", 400),
    ("/public/%zz/../admin/secret", 400),  # a malformed escape
    ("/public/%00/../../admin/secret", 400),
    ("http://localhost/public/%2e%2e/admin/secret", 403),  # absolute-form
]
# (target, what the backend receives): within the routes once normalised.
LEGIT = [
    ("/public/index.html", "/public/index.html"),
    ("/public/a/../b", "/public/b"),
    ("/public/./b", "/public/b"),
    ("/public//b", "/public/b"),
    ("/public/%7Euser/%c3%a9", "/public/~user/%C3%A9"),
    ("/public/a;v=1/b", "/public/a;v=1/b"),  # ";" is data
    ("/invoices/7?next=/../admin&x=%2F", "/invoices/7?next=/../admin&x=%2F"),  # query as is
    ("/invoices/%37", "/invoices/7"),
    ("/admin/../invoices/7", "/invoices/7"),
    ("http://localhost/invoices/7?a=1", "/invoices/7?a=1"),
]


pytestmark = pytest.mark.attack("encoded-dot-segments")  # issue 27; reliability/redteam.py


@pytest.fixture(scope="module")
def server_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def backend():
    server = EchoBackend()
    yield server
    server.stop()


@pytest.fixture
def gateway(tmp_path: Path, server_ca, backend, ca):
    site = Site(dir=tmp_path, server_ca=server_ca, backend=backend)
    (tmp_path / "policy.toml").write_text(POLICY)
    body = '[client_auth]\ntrust = ["trust.pem"]\npolicy = "policy.toml"\n'
    running = GatewayThread(write_config(site, ca.bundle_pem, body))
    yield site, running
    running.stop()


def _request(target: str, *, close: bool) -> bytes:
    connection = b"Connection: close\r\n" if close else b""
    return b"GET " + target.encode() + b" HTTP/1.1\r\nHost: localhost\r\n" + connection + b"\r\n"


def _response(tls: ssl.SSLSocket) -> tuple[int, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        piece = tls.recv(65536)
        assert piece, data
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += tls.recv(65536)
    return int(head.split(b" ", 2)[1]), body


def _send(site: Site, port: int, client: IssuedCert, target: str, via: str) -> tuple[int, bytes]:
    """One request for ``target``: on a fresh connection (the connection's task), or on a
    kept-alive connection parked after a first request (the callbacks' fast path)."""
    context = site.client_context(client)
    if via == "fresh":
        raw = https_request(port, context, _request(target, close=True))
        head, _, body = raw.partition(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1]), body
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
        context.wrap_socket(sock, server_hostname="localhost") as tls,
    ):
        tls.sendall(_request("/public/warm", close=False))
        assert _response(tls)[0] == 200
        time.sleep(0.1)  # parked: the next request is the fast path's to take
        tls.sendall(_request(target, close=False))
        return _response(tls)


def _reaches_admin(target: str) -> bool:
    """Whether a backend that decodes and resolves the path would serve the admin page."""
    path = urllib.parse.urlsplit(target).path if "://" in target else target.split("?", 1)[0]
    decoded = unquote(unquote(path)).replace("\\", "/").replace(";", "")
    return posixpath.normpath("/" + decoded).lstrip("/").startswith("admin")


@pytest.mark.parametrize("via", ["fresh", "parked"])
@pytest.mark.parametrize(("target", "status"), ATTACKS)
def test_attack_paths_never_reach_the_admin_page(gateway, clean_leaf, target, status, via):
    site, running = gateway
    got, _ = _send(site, running.port, clean_leaf, target, via)
    assert got == status
    assert not [seen for seen in site.backend.seen if _reaches_admin(seen)]


@pytest.mark.parametrize("via", ["fresh", "parked"])
@pytest.mark.parametrize(("target", "forwarded"), LEGIT)
def test_legitimate_paths_are_forwarded_normalised(gateway, clean_leaf, target, forwarded, via):
    site, running = gateway
    status, body = _send(site, running.port, clean_leaf, target, via)
    assert status == 200
    assert json.loads(body)["path"] == forwarded
    assert site.backend.seen[-1] == forwarded


def test_a_refused_path_is_logged_with_its_reason(gateway, clean_leaf):
    site, running = gateway
    status, _ = _send(site, running.port, clean_leaf, "/public/..%2fadmin", "fresh")
    assert status == 400
    record = site.wait_for_record(lambda r: r.get("status") == 400, which="access")
    assert "encoded slash" in record["code"]


# --- the authz-server behind a proxy, over HTTP ---------------------------------------


@pytest.fixture(scope="module")
def authz_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("authz-paths")
    ca = TestCA(name="paths")
    leaf = ca.issue(LeafSpec(uris=(SPIFFE_ID,)))
    write(tmp / "root.pem", certificate_pem(ca.root.cert))
    write(tmp / "issuing.pem", certificate_pem(ca.issuer.cert))
    write(tmp / "policy.toml", POLICY.encode())
    port = free_port()
    write(
        tmp / "authz.toml",
        f"""[listen]
address = "127.0.0.1:{port}"
[client_auth]
trust = ["root.pem"]
intermediates = ["issuing.pem"]
policy = "policy.toml"
[log]
decisions = "decisions.log"
""".encode(),
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "mtlskit", "authz-server", "--config", str(tmp / "authz.toml")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(port, process, "authz-server")
        yield port, leaf, tmp
    finally:
        stop(process)


def _check(port: int, leaf: IssuedCert, proxy: str, target: str) -> int:
    """The check request nginx (``$request_uri``) or Envoy (the path appended) sends."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        if proxy == "nginx":
            escaped = urllib.parse.quote(certificate_pem(leaf.cert).decode(), safe="")
            headers = {
                "X-Mtlskit-Nginx-Cert": escaped,
                "X-Mtlskit-Nginx-Verify": "SUCCESS",
                "X-Mtlskit-Original-Method": "GET",
                "X-Mtlskit-Original-Uri": target,
            }
            connection.request("GET", "/nginx", headers=headers)
        else:
            client = ForwardedClient.from_chain(leaf.chain[:-1], verified=True)
            xfcc = xfcc_value(client, XfccConfig(details=(XfccDetail.CERT, XfccDetail.CHAIN)))
            connection.putrequest("GET", "/envoy" + target, skip_accept_encoding=True)
            connection.putheader("X-Forwarded-Client-Cert", xfcc)
            connection.endheaders()
        return connection.getresponse().status
    finally:
        connection.close()


@pytest.mark.parametrize("proxy", ["nginx", "envoy"])
@pytest.mark.parametrize(("target", "status"), ATTACKS)
def test_authz_server_denies_attack_paths(authz_server, proxy, target, status):
    port, leaf, _ = authz_server
    if proxy == "envoy" and "://" in target:
        pytest.skip("Envoy passes the path only; absolute-form reaches it as origin-form")
    if proxy == "envoy" and "\\" in target:
        pytest.skip("http.client refuses to send a backslash in the request line")
    # nginx's auth_request takes 2xx, 401 and 403 only: every refusal is a 403 there.
    assert _check(port, leaf, proxy, target) == 403


@pytest.mark.parametrize("proxy", ["nginx", "envoy"])
@pytest.mark.parametrize("target", [t for t, _ in LEGIT if "://" not in t])
def test_authz_server_allows_legitimate_paths(authz_server, proxy, target):
    port, leaf, _ = authz_server
    assert _check(port, leaf, proxy, target) == 200


def test_authz_server_logs_the_refused_path_and_why(authz_server):
    port, leaf, tmp = authz_server
    assert _check(port, leaf, "nginx", "/public/..%2fadmin") == 403
    log = wait_for_log(tmp / "decisions.log", "..%2fadmin", seconds=5)
    records = [json.loads(line) for line in log.splitlines() if "..%2fadmin" in line]
    assert "encoded slash" in records[-1]["reasons"][-1]["message"]


# --- the normaliser itself ---------------------------------------------------------------

_SEGMENT = st.sampled_from(["a", "b", ".", "..", "", "%2e", "%2E%2e", "x;y", "%41", "~"])


@settings(max_examples=300, deadline=None)
@given(st.lists(_SEGMENT, max_size=8), st.sampled_from(["", "?q=/../x%2F", "#frag"]))
def test_normalised_paths_are_fixed_points_without_dot_segments(segments, tail):
    target = "/" + "/".join(segments) + tail
    try:
        normal = normalize_target(target)
    except PathError:
        return
    path = normal.split("?", 1)[0]
    assert path.startswith("/")
    assert "//" not in path
    assert not {".", ".."} & set(path.split("/"))
    assert "%2e" not in path.lower() and "%41" not in path
    assert normalize_target(normal) == normal  # idempotent: normalising twice changes nothing
    assert normal.endswith(tail if tail.startswith("?") else "")
    # what a decoding, resolving backend serves is what the rules were matched on
    decoded = unquote(path)
    resolved = posixpath.normpath(decoded) + (
        "/" if decoded.endswith("/") and decoded != "/" else ""
    )
    assert resolved == decoded


@pytest.mark.parametrize(
    ("target", "changes"),
    [("/a/b", False), ("/a.b/c", False), ("/a/./b", True), ("/a%2e", True), ("/a//b", True),
     ("/a\\b", True), ("/a?b", False)],
)  # fmt: skip
def test_the_cheap_test_finds_every_path_normalising_could_change(target, changes):
    assert needs_normalizing(target) is changes
    assert needs_normalizing(target.encode()) is changes
    if not changes:
        assert normalize_target(target) == target
