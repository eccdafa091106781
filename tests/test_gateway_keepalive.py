"""Requests on a kept-alive connection: the callback fast path and its handovers to the task.

After a connection's first request, a parked connection relays the next simple request
from callbacks alone (issue 6); large, chunked, interim, slow, broken and refused
responses are handed to the streaming code mid-way. Every test here sends its
interesting request second (or later) on one TLS connection, with the upstream pool
already warm, so that it meets that path.
"""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from _gateway_support import GatewayThread, Site, write_config
from conftest import SPIFFE_ID
from mtlskit.testca import IssuedCert, TestCA

KEEP = b"GET /hello HTTP/1.1\r\nHost: localhost\r\n\r\n"


@pytest.fixture
def site(echo_site: Site) -> Site:
    return echo_site


@pytest.fixture
def gateway(site: Site, ca: TestCA) -> Iterator[GatewayThread]:
    paths = [
        "double",
        "after",
        "hello",
        "big",
        "chunked",
        "early",
        "again",
        "a",
        "b",
        "p0",
        "p1",
        "p2",
        "p3",
        "slow",
        "drop",
        "x",
        "up",
    ]
    routes = ", ".join(f'"* /{path}"' for path in paths)  # /private is not among them
    (site.dir / "policy.toml").write_text(f'[[allow]]\nid = "{SPIFFE_ID}"\nroutes = [{routes}]\n')
    config = write_config(
        site,
        ca.bundle_pem,
        '[client_auth]\ntrust = ["trust.pem"]\npolicy = "policy.toml"\n'
        '[forward]\nformats = ["xfcc", "verdict"]\n',
    )
    running = GatewayThread(config)
    yield running
    running.stop()


@contextmanager
def _connection(site: Site, gateway: GatewayThread, client: IssuedCert) -> Iterator[ssl.SSLSocket]:
    context = site.client_context(client)
    with (
        socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock,
        context.wrap_socket(sock, server_hostname="localhost") as tls,
    ):
        yield tls


class _Reader:
    """Responses one at a time from a kept-alive connection (Content-Length or chunked)."""

    def __init__(self, tls: ssl.SSLSocket) -> None:
        self.tls = tls
        self.buffer = b""

    def _fill(self) -> None:
        data = self.tls.recv(65536)
        if not data:
            raise EOFError("the gateway closed the connection")
        self.buffer += data

    def _take(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self._fill()
        out, self.buffer = self.buffer[:size], self.buffer[size:]
        return out

    def _line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            self._fill()
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def response(self) -> tuple[int, dict[bytes, bytes], bytes]:
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status_line, *lines = head.split(b"\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in (x.split(b":", 1) for x in lines)}
        if headers.get(b"transfer-encoding") == b"chunked":
            body = b""
            while size := int(self._line(), 16):
                body += self._take(size)
                self._take(2)
            self._take(2)
        else:
            body = self._take(int(headers.get(b"content-length", b"0")))
        return int(status_line.split(b" ")[1]), headers, body


def _echoed(body: bytes) -> dict[str, list[str]]:
    headers: dict[str, list[str]] = {}
    for key, value in json.loads(body)["headers"]:
        headers.setdefault(key.lower(), []).append(value)
    return headers


def test_a_sequence_of_response_shapes_on_one_connection(site, gateway, clean_leaf):
    """Small, large (handed over), chunked, interim 103 and small again, all intact."""
    with _connection(site, gateway, clean_leaf) as tls:
        reader = _Reader(tls)
        size = 300_000
        requests = [
            b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /big?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % size,
            b"GET /chunked HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /early HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /again HTTP/1.1\r\nHost: x\r\n\r\n",
        ]
        answers = []
        for request in requests:
            tls.sendall(request)
            answers.append(reader.response())
    assert [status for status, _, _ in answers] == [200] * 5
    assert answers[1][2] == bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    assert answers[2][1][b"transfer-encoding"] == b"chunked"
    for index in (0, 2, 3, 4):
        echoed = _echoed(answers[index][2])
        assert echoed["x-mtlskit-client-identity"] == [SPIFFE_ID]
    ids = {headers[b"x-request-id"] for _, headers, _ in answers}
    assert len(ids) == 5
    logged = [r for r in site.flushed_records("access") if r.get("event") == "request"]
    assert sorted(r["request_id"].encode() for r in logged) == sorted(ids)
    assert all(r["status"] == 200 and r["identity"] == SPIFFE_ID for r in logged)


def test_spoofed_identity_headers_on_a_later_request_are_stripped(site, gateway, clean_leaf):
    spoof = (
        b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Forwarded-Client-Cert: By=evil;URI=spiffe://evil\r\n"
        b"X-Mtlskit-Client-Identity: spiffe://acme.com/admin\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n"
    )
    with _connection(site, gateway, clean_leaf) as tls:
        reader = _Reader(tls)
        for _ in range(3):
            tls.sendall(spoof)
            status, _, body = reader.response()
            assert status == 200
            echoed = _echoed(body)
            assert echoed["x-mtlskit-client-identity"] == [SPIFFE_ID]
            assert len(echoed["x-forwarded-client-cert"]) == 1
            assert "evil" not in echoed["x-forwarded-client-cert"][0]
            assert echoed["x-forwarded-for"] == ["127.0.0.1"]


def test_a_denied_route_between_allowed_ones_keeps_the_connection(site, gateway, clean_leaf):
    with _connection(site, gateway, clean_leaf) as tls:
        reader = _Reader(tls)
        statuses = []
        for path in (b"/a", b"/private", b"/b"):
            tls.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path)
            status, _, body = reader.response()
            statuses.append(status)
            assert b"identity_not_authorized" not in body
    assert statuses == [200, 403, 200]
    denied = site.wait_for_record(lambda r: r.get("status") == 403, which="access")
    assert denied["path"] == "/private"


def test_a_body_on_a_later_request_is_relayed(site, gateway, clean_leaf):
    with _connection(site, gateway, clean_leaf) as tls:
        reader = _Reader(tls)
        tls.sendall(KEEP)
        assert reader.response()[0] == 200
        payload = b"p" * 5000
        tls.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + payload)
        status, _, body = reader.response()
        tls.sendall(KEEP)
        assert reader.response()[0] == 200
    assert status == 200
    assert json.loads(body)["body_bytes"] == 5000


def test_pipelined_requests_are_answered_in_order(site, gateway, clean_leaf):
    with _connection(site, gateway, clean_leaf) as tls:
        reader = _Reader(tls)
        tls.sendall(KEEP)
        assert reader.response()[0] == 200
        tls.sendall(b"".join(b"GET /p%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(4)))
        paths = [json.loads(reader.response()[2])["path"] for _ in range(4)]
    assert paths == ["/p0", "/p1", "/p2", "/p3"]


@pytest.mark.parametrize(("path", "status"), [(b"/slow?s=3", 504), (b"/drop", 502)])
def test_upstream_failure_on_a_later_request(site, gateway, clean_leaf, path, status):
    """read_timeout is 2 s in write_config: /slow?s=3 times out; /drop closes silently."""
    with _connection(site, gateway, clean_leaf) as tls:
        reader = _Reader(tls)
        tls.sendall(KEEP)
        assert reader.response()[0] == 200
        tls.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path)
        got, headers, _ = reader.response()
    assert got == status
    assert headers[b"connection"] == b"close"


def test_malformed_later_request_is_400_and_closed(site, gateway, clean_leaf):
    with _connection(site, gateway, clean_leaf) as tls:
        reader = _Reader(tls)
        tls.sendall(KEEP)
        assert reader.response()[0] == 200
        tls.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
        status, headers, _ = reader.response()
        assert status == 400 and headers[b"connection"] == b"close"
        with pytest.raises((EOFError, ssl.SSLError, ConnectionError)):
            reader.response()


def test_http10_keep_alive_as_ab_sends_it(site, gateway, clean_leaf):
    """ab -k: HTTP/1.0 with Connection: keep-alive; a chunked upstream answer then closes."""
    request = b"GET /%s HTTP/1.0\r\nConnection: Keep-Alive\r\nHost: x\r\n\r\n"
    with _connection(site, gateway, clean_leaf) as tls:
        reader = _Reader(tls)
        for _ in range(3):
            tls.sendall(request % b"hello")
            status, headers, _ = reader.response()
            assert status == 200 and headers[b"connection"] == b"keep-alive"
        tls.sendall(request % b"chunked")
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"connection: close" in head.lower()
    assert b"transfer-encoding" not in head.lower()
    assert json.loads(body)["path"] == "/chunked"


def test_access_log_lines_are_json_with_hostile_paths(site, gateway, clean_leaf):
    """The access log line is formatted directly: quotes, backslashes and UTF-8 survive."""
    with _connection(site, gateway, clean_leaf) as tls:
        reader = _Reader(tls)
        tls.sendall(b'GET /z/"q"\\%C3%A9?x=1 HTTP/1.1\r\nHost: x\r\n\r\n')
        status, headers, _ = reader.response()
    request_id = headers[b"x-request-id"].decode()
    record = site.wait_for_record(lambda r: r.get("request_id") == request_id, which="access")
    assert status == 400  # a backslash in a path is refused (issue 27), the raw path logged
    assert record["path"] == '/z/"q"\\%C3%A9'
    assert record["method"] == "GET"
    assert record["identity"] == SPIFFE_ID
    assert record["verified"] is True
    assert record["code"] == "path refused: a backslash in the path"
    line = next(x for x in site.access_log.read_text().splitlines() if request_id in x)
    assert line == json.dumps(record, separators=(",", ":"))


def test_access_log_off_writes_nothing_and_keeps_the_connection_log(site, ca, clean_leaf):
    config = write_config(site, ca.bundle_pem, '[client_auth]\ntrust = ["trust.pem"]\n')
    config.write_text(config.read_text().replace('access = "access.log"', 'access = "off"'))
    running = GatewayThread(config)
    try:
        with _connection(site, running, clean_leaf) as tls:
            reader = _Reader(tls)
            for _ in range(3):
                tls.sendall(KEEP)
                assert reader.response()[0] == 200
        site.wait_for_record(lambda r: r.get("outcome") == "accepted")
    finally:
        running.stop()
    assert not site.access_log.exists()
    assert not (site.dir / "off").exists()  # "off" is no file name
    assert all(r.get("event") != "request" for r in site.log_records())


def test_an_upstream_that_answers_twice_is_not_reused(site, gateway, clean_leaf):
    """Bytes after a response mean the upstream connection is out of step: close it."""
    with _connection(site, gateway, clean_leaf) as tls:
        reader = _Reader(tls)
        answers = []
        for path in (b"/hello", b"/double", b"/after", b"/after"):
            tls.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path)
            answers.append(reader.response())
    echoed = [json.loads(body) for _, _, body in answers]
    assert [status for status, _, _ in answers] == [200] * 4
    assert [e["path"] for e in echoed] == ["/hello", "/double", "/after", "/after"]
    assert echoed[0]["port"] == echoed[1]["port"]  # the pooled connection was reused...
    assert echoed[2]["port"] != echoed[1]["port"]  # ...until it answered out of turn
    assert echoed[3]["port"] == echoed[2]["port"]


def test_the_header_size_limit_is_exact_on_both_paths(site, ca, clean_leaf):
    """``max_header_bytes`` counts the target and each field's name and value plus 4: a
    head of exactly the limit passes, as a connection's first request (the task) and as a
    later one (the fast path), and one byte more is 431. The 60 bare ``a:b`` fields are
    each counted one byte above their raw size, which the cheap check's bound allows for."""
    config = write_config(
        site,
        ca.bundle_pem,
        '[client_auth]\ntrust = ["trust.pem"]\n[limits]\nmax_header_bytes = 1024\n',
    )
    running = GatewayThread(config)
    # (60, not more: with the gateway's own fields, the echo backend's limit is 100.)
    bare = b"".join(b"a%03d:b\r\n" % i for i in range(60))  # 60 x 9 counted, 8 raw

    def request(pad: int) -> bytes:  # "/x" 2 + "Host: x" 9 + 540 + "p: ..." 5 + pad
        return b"GET /x HTTP/1.1\r\nHost: x\r\n" + bare + b"p: " + b"v" * pad + b"\r\n\r\n"

    try:
        with _connection(site, running, clean_leaf) as tls:
            reader = _Reader(tls)
            for _ in range(2):
                tls.sendall(request(468))  # 1,024 exactly
                assert reader.response()[0] == 200
            tls.sendall(request(469))
            assert reader.response()[0] == 431
        with _connection(site, running, clean_leaf) as tls:
            tls.sendall(request(469))
            assert _Reader(tls).response()[0] == 431
    finally:
        running.stop()
