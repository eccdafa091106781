"""The gateway's sans-IO parts: the lifecycle table, framing and header rewriting, TLS errors."""

from __future__ import annotations

import datetime as dt
import json
import ssl

import httptools
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mtlskit.forward import is_spoofable, sanitize_headers
from mtlskit.gateway import (
    TRANSITIONS,
    ClientRequestError,
    Event,
    Lifecycle,
    LifecycleError,
    State,
    classify_handshake_error,
)
from mtlskit.gateway._asgi_scope import http_scope, response_head
from mtlskit.gateway._connection import (
    _access_members,
    _FastExchange,
    _RequestIds,
    _ResponseCollector,
)
from mtlskit.gateway._http import (
    _NOT_UPSTREAM,
    NOT_DOWNSTREAM,
    STATUS_LINES,
    Framing,
    RequestHead,
    connection_tokens,
    fast_upstream_head,
    forwarding_fields,
    header_kind,
    identity_tail,
    relay_framing,
    request_framing,
    upstream_request_head,
)
from mtlskit.gateway._http import response_head as http_response_head
from mtlskit.gateway._log import JsonLog
from mtlskit.verify import Code, Decision


def _head(*headers: tuple[bytes, bytes], method: str = "POST", version: str = "1.1"):
    return RequestHead(
        method=method,
        target=b"/a?b=c",
        version=version,
        headers=((b"Host", b"x"), *headers),
        keep_alive=True,
    )


def test_every_state_is_in_the_table_and_closed_is_final():
    assert set(TRANSITIONS) == set(State)
    assert TRANSITIONS[State.CLOSED] == {}
    reachable = {State.HANDSHAKE}
    for targets in TRANSITIONS.values():
        reachable |= set(targets.values())
    assert reachable == set(State)


def test_a_keep_alive_walk_and_an_illegal_event():
    life = Lifecycle()
    for event, state in [
        (Event.HANDSHAKE_OK, State.VERIFY),
        (Event.VERIFIED, State.IDLE),
        (Event.REQUEST_HEAD, State.REQUEST),
        (Event.FORWARD, State.RELAY),
        (Event.RESPONSE_DONE, State.IDLE),
        (Event.REQUEST_HEAD, State.REQUEST),
        (Event.DENIED, State.IDLE),
        (Event.EOF, State.CLOSED),
    ]:
        assert life.handle(event) is state
    assert life.handle(Event.TIMEOUT) is State.CLOSED  # late news is harmless
    fresh = Lifecycle()
    with pytest.raises(LifecycleError, match="event forward is not allowed in state handshake"):
        fresh.handle(Event.FORWARD)


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        (((b"Content-Length", b"3"), (b"Transfer-Encoding", b"chunked")), 400),
        (((b"Content-Length", b"3"), (b"content-length", b"3")), 400),
        (((b"Content-Length", b"3, 3"),), 400),
        (((b"Content-Length", b"-1"),), 400),
        (((b"Transfer-Encoding", b"chunked, gzip"),), 400),
        (((b"Transfer-Encoding", b"chunked"), (b"Transfer-Encoding", b"chunked")), 400),
        (((b"Content-Length", b"99999999"),), 413),
        (((b"Host", b"second"),), 400),
    ],
)
def test_ambiguous_framing_is_the_clients_fault(headers, status):
    with pytest.raises(ClientRequestError) as info:
        request_framing(_head(*headers), max_body_bytes=1000)
    assert info.value.status_hint == status


def test_framing_of_clean_requests():
    assert request_framing(
        _head(
            (b"Content-Length", b"12"),
        ),
        max_body_bytes=100,
    ) == (
        Framing.LENGTH,
        12,
    )
    assert request_framing(
        _head(
            (b"Transfer-Encoding", b"Chunked"),
        ),
        max_body_bytes=100,
    )[0] is (Framing.CHUNKED)
    assert request_framing(_head(method="GET"), max_body_bytes=100) == (Framing.NONE, 0)


def test_upstream_head_drops_hop_by_hop_and_sets_forwarding_fields():
    head = _head(
        (b"Host", b"api"),
        (b"Connection", b"keep-alive, X-Secret-Hop"),
        (b"X-Secret-Hop", b"1"),
        (b"Keep-Alive", b"timeout=5"),
        (b"Upgrade", b"h2c"),
        (b"X-Forwarded-For", b"6.6.6.6"),
        (b"Expect", b"100-continue"),
        (b"Transfer-Encoding", b"chunked"),
        method="POST",
    )
    wire = upstream_request_head(
        head,
        framing=Framing.CHUNKED,
        length=-1,
        client_ip="192.0.2.7",
        request_id="abc",
        headers=head.headers,
        identity=[(b"X-Mtlskit-Client-Verified", b"true")],
    ).decode()
    lines = wire.split("\r\n")
    assert lines[0] == "POST /a?b=c HTTP/1.1"
    lower = wire.lower()
    for gone in ("x-secret-hop", "keep-alive", "upgrade", "6.6.6.6", "expect", "connection:"):
        assert gone not in lower
    assert "transfer-encoding: chunked" in lower
    assert "x-forwarded-for: 192.0.2.7" in lower
    assert "x-forwarded-proto: https" in lower
    assert "x-request-id: abc" in lower
    assert wire.endswith("X-Mtlskit-Client-Verified: true\r\n\r\n")


def test_handshake_errors_map_to_stable_codes():
    verify = ssl.SSLCertVerificationError(1, "certificate verify failed")
    verify.verify_code = 20
    verify.verify_message = "unable to get local issuer certificate"
    assert classify_handshake_error(verify).code is Code.CHAIN_UNTRUSTED
    verify.verify_code = 26
    assert classify_handshake_error(verify).code is Code.EKU_MISSING_CLIENT_AUTH
    bad_signature = ssl.SSLError(1, "[SSL: BAD_SIGNATURE] bad signature")
    bad_signature.reason = "BAD_SIGNATURE"
    assert classify_handshake_error(bad_signature).code is Code.PROOF_OF_POSSESSION_FAILED
    noise = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER]")
    noise.reason = "WRONG_VERSION_NUMBER"
    failure = classify_handshake_error(noise)
    assert failure.code is None and failure.label == "tls_error"


@pytest.mark.parametrize(
    ("method", "status", "length", "version", "framing", "to_client"),
    [
        ("HEAD", 200, 10, "1.1", Framing.NONE, Framing.NONE),
        ("GET", 204, None, "1.1", Framing.NONE, Framing.NONE),
        ("GET", 304, None, "1.0", Framing.NONE, Framing.NONE),
        ("GET", 200, 10, "1.0", Framing.LENGTH, Framing.LENGTH),
        ("GET", 200, None, "1.1", Framing.CHUNKED, Framing.CHUNKED),
        ("GET", 200, None, "1.0", Framing.CHUNKED, Framing.NONE),  # close-delimited
    ],
)
def test_relay_framing(method, status, length, version, framing, to_client):
    got = relay_framing(method=method, status=status, length=length, version=version)
    assert got == (framing, to_client)


def test_request_ids_are_unique_hex_across_pool_refills():
    """Ids come from a pool of 512 per urandom call: across several refills they stay
    16 hex digits (64 bits) and none repeats."""
    ids = _RequestIds()
    taken = [ids.take() for _ in range(512 * 4 + 7)]
    assert all(len(value) == 16 and int(value, 16) >= 0 for value in taken)
    assert len(set(taken)) == len(taken)


def _app_head(headers, *, status=200, method="GET", version="1.1", body=3, more=False):
    return response_head(status, headers, method, version, body, more, True, "rid")


def test_app_response_head_frames_and_drops_what_the_gateway_sets():
    """An app's start headers: Content-Length kept as the length, hop-by-hop fields, the
    fields Connection names and the app's X-Request-Id dropped, Connection: close kept."""
    head, framing, length, keep_alive = _app_head(
        [
            (b"Content-Type", b"text/plain"),
            (b"Content-Length", b"3"),
            (b"X-Secret-Hop", b"1"),
            (b"Connection", b"close, X-Secret-Hop"),
            (b"x-request-id", b"chosen-by-app"),
            (b"Keep-Alive", b"timeout=5"),
        ]
    )
    assert (framing, length, keep_alive) == (Framing.LENGTH, 3, False)
    assert head == (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\ncontent-length: 3\r\n"
        b"x-request-id: rid\r\nconnection: close\r\n\r\n"
    )


@pytest.mark.parametrize(
    ("headers", "more", "version", "expected"),
    [
        ([(b"content-length", b"x")], False, "1.1", (Framing.LENGTH, 3, True)),  # not a number
        ([], True, "1.1", (Framing.CHUNKED, 0, True)),
        ([], True, "1.0", (Framing.NONE, 0, False)),  # close-delimited for HTTP/1.0
    ],
    ids=["bad-length-framed-by-gateway", "stream-chunked", "stream-http10"],
)
def test_app_response_framing(headers, more, version, expected):
    _, *framing = _app_head(headers, more=more, version=version)
    assert tuple(framing) == expected


def test_app_response_head_for_a_status_python_does_not_name():
    head, *_ = _app_head([], status=299)
    assert head.startswith(b"HTTP/1.1 299 \r\n")


@pytest.mark.parametrize(
    ("target", "path", "raw_path", "query"),
    [
        (b"/plain/path", "/plain/path", b"/plain/path", b""),
        (b"/a%20b/%C3%A9?x=1#frag", "/a b/é", b"/a%20b/%C3%A9", b"x=1"),
        (b"http://host:8443/p?q", "/p", b"/p", b"q"),
    ],
    ids=["origin-form", "escaped-with-query", "absolute-form"],
)
def test_scope_path_forms(target, path, raw_path, query):
    head = RequestHead("GET", target, "1.1", ((b"Host", b"x"),), True)
    decision = Decision.accept(identity=None, chain=())
    scope = http_scope(head, [(b"host", b"x")], None, None, {}, decision, "rid", {})
    assert (scope["path"], scope["raw_path"], scope["query_string"]) == (path, raw_path, query)


# --- the keep-alive fast path builds the same bytes as the general path ------------------

_NAMES = [
    b"Host", b"host", b"User-Agent", b"Accept", b"Connection", b"Keep-Alive", b"X-Forwarded-For",
    b"X-Request-Id", b"Expect", b"Content-Length", b"Transfer-Encoding", b"X-Client-Cert",
    b"X-SSL-Client-Verify", b"x_forwarded_client_cert", b"Client-Cert-Chain", b"X-Custom",
    b"Cookie", b"TE", b"Upgrade", b"Forwarded", b"X-Mtlskit-Client-Id", b"Close",
]  # fmt: skip
_VALUES = [b"1", b"keep-alive", b"close", b"Keep-Alive", b"x-custom", b"keep-alive, X-Custom", b""]


def _fast_kind(name: bytes) -> int:
    return header_kind(name, spoofable=is_spoofable(name))


@settings(max_examples=400, deadline=None)
@given(
    method=st.sampled_from(["GET", "POST", "DELETE", "OPTIONS", "PUT"]),
    version=st.sampled_from(["1.1", "1.0"]),
    headers=st.lists(st.tuples(st.sampled_from(_NAMES), st.sampled_from(_VALUES)), max_size=8),
    identity=st.lists(st.tuples(st.sampled_from([b"X-Client-Cert-Present", b"XFCC"]),
                                st.sampled_from([b"true", b"Hash=ab"])), max_size=3),
)  # fmt: skip
def test_fast_upstream_head_is_upstream_request_head(method, version, headers, identity):
    head = RequestHead(method, b"/p?q=1", version, tuple(headers), True)
    lines = fast_upstream_head(head, {}, _fast_kind)
    try:
        framing, length = request_framing(head, max_body_bytes=100)
    except ClientRequestError:
        assert lines is None  # the general path answers 400
        return
    if lines is None:  # the general path's cases, and only those
        hosts = sum(name.lower() == b"host" for name, _ in headers)
        extra = set().union(
            *(connection_tokens(v) for n, v in headers if n.lower() == b"connection")
        )
        assert (
            framing is not Framing.NONE
            or hosts != 1
            or not extra <= _NOT_UPSTREAM
            or any(name.lower() in (b"content-length", b"transfer-encoding") for name, _ in headers)
        )
        return
    fast = b"\r\n".join(lines) + forwarding_fields("192.0.2.7") + b"rid" + identity_tail(identity)
    assert fast == upstream_request_head(
        head,
        framing=framing,
        length=length,
        client_ip="192.0.2.7",
        request_id="rid",
        headers=sanitize_headers(head.headers),
        identity=identity,
    )


def test_fast_upstream_head_takes_a_plain_request():
    head = RequestHead(
        "GET", b"/", "1.0", ((b"Host", b"x"), (b"Connection", b"Keep-Alive"), (b"X-A", b"1")), True
    )
    assert fast_upstream_head(head, {}, _fast_kind) == [b"GET / HTTP/1.1", b"Host: x", b"X-A: 1"]


@settings(max_examples=300, deadline=None)
@given(
    status=st.sampled_from([200, 201, 204, 304, 404, 500]),
    fields=st.lists(
        st.tuples(
            st.sampled_from([b"Server", b"Date", b"X-Request-Id", b"Keep-Alive", b"Connection",
                             b"Content-Type", b"Set-Cookie", b"Trailer", b"X-Hop"]),
            st.sampled_from([b"a", b"keep-alive", b"close", b"X-Hop", b"timeout=5"]),
        ),
        max_size=6,
    ),
    chunked=st.booleans(),
    method=st.sampled_from(["GET", "POST"]),
    version=st.sampled_from(["1.1", "1.0"]),
)  # fmt: skip
def test_fast_response_head_is_response_head(status, fields, chunked, method, version):
    body = b"" if status in (204, 304) else b"hello"
    framing_field = (
        b"Transfer-Encoding: chunked\r\n" if chunked else b"Content-Length: %d\r\n" % len(body)
    )
    if chunked and body:
        body = b"5\r\nhello\r\n0\r\n\r\n"
    raw = b"HTTP/1.1 %d Some Reason\r\n" % status + framing_field
    raw += b"".join(name + b": " + value + b"\r\n" for name, value in fields) + b"\r\n" + body
    fast = _FastExchange(conn=None)  # type: ignore[arg-type]  # parsing only
    fast.begin(None, RequestHead(method, b"/", version, (), True), "rid")
    fast.parser.feed_data(raw)
    general = _ResponseCollector()
    general.parser = httptools.HttpResponseParser(general)
    general.parser.feed_data(raw)
    (kind, (g_status, reason, g_headers, g_length, g_keep)), *_ = general.events
    assert kind == "head"
    assert fast.complete
    if fast.odd:  # a Connection field naming fields (or close): the streaming code's case
        assert any(
            not connection_tokens(v) <= NOT_DOWNSTREAM
            for n, v in fields if n.lower() == b"connection"
        )  # fmt: skip
        return
    assert (fast.status, fast.length, fast.keep_alive) == (g_status, g_length, g_keep)
    _, wire_framing = relay_framing(
        method=method, status=status, length=fast.length, version=version
    )
    head = fast.client_head(framing=wire_framing, keep_alive=True)
    assert head == http_response_head(
        status, reason, g_headers, framing=wire_framing, length=fast.length or 0,
        keep_alive=True, request_id="rid",
    )  # fmt: skip
    assert head.startswith(STATUS_LINES[status] + b"\r\n") and b"Some Reason" not in head


def test_a_status_without_a_name_keeps_its_reason_phrase():
    """The fast path hands it to the streaming code, which passes the phrase on."""
    raw = b"HTTP/1.1 299 Custom Thing\r\nContent-Length: 0\r\n\r\n"
    fast = _FastExchange(conn=None)  # type: ignore[arg-type]  # parsing only
    fast.begin(None, RequestHead("GET", b"/", "1.1", (), True), "rid")
    fast.parser.feed_data(raw)
    assert fast.odd
    assert http_response_head(
        299, b"Custom Thing", [], framing=Framing.LENGTH, length=0, keep_alive=True,
        request_id="rid",
    ).startswith(b"HTTP/1.1 299 Custom Thing\r\n")  # fmt: skip


def test_write_batch_holds_writes_to_the_end_of_the_loop_pass_in_order():
    import asyncio

    from mtlskit.gateway._writes import WriteBatch

    async def go() -> list[object]:
        loop = asyncio.get_running_loop()
        batch = WriteBatch(loop)
        made: list[object] = []
        batch.later(made.append, "upstream request")
        batch.later(made.append, "client response")
        assert made == []  # held: nothing written inside the callback that asked
        loop.call_soon(made.append, "a callback scheduled after them")
        await asyncio.sleep(0)
        batch.later(made.append, "next pass")
        await asyncio.sleep(0)
        return made

    assert asyncio.run(go()) == [
        "upstream request",
        "client response",
        "a callback scheduled after them",
        "next pass",
    ]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(0, 4e9, allow_nan=False), min_size=1, max_size=20).map(sorted))
def test_log_time_is_the_records_own_utc_millisecond(tmp_path_factory, stamps):
    """Each line's ``time`` is its record's instant, ISO 8601 UTC to the millisecond, as
    ``datetime.isoformat`` writes it, though the date and time are formatted once per
    second of a batch."""
    path = tmp_path_factory.mktemp("log") / "access.log"
    log = JsonLog(str(path))
    log._pending = [(seconds, None, f'"n":{n}') for n, seconds in enumerate(stamps)]
    log.flush()
    log.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["n"] for line in lines] == list(range(len(stamps)))
    for seconds, line in zip(stamps, lines, strict=True):
        instant = dt.datetime.fromtimestamp(int(seconds * 1000) / 1000, dt.UTC)
        assert line["time"] == instant.isoformat(timespec="milliseconds")


@settings(max_examples=500, deadline=None)
@given(st.floats(0, 3600, allow_nan=False), st.integers(0, 2**40))
def test_access_record_is_canonical_json(seconds, sent):
    """An access record's members are what ``json.dumps`` writes for their values, with
    the duration in milliseconds to three decimals (0.5 µs at most from the truth)."""
    members = _access_members(
        '"method":"GET","path":"/a"', 200, "00ff00ff00ff00ff", '"127.0.0.1:5"',
        '"identity":null,"verified":false', None, "http://127.0.0.1:8080", sent, seconds,
    )  # fmt: skip
    line = "{" + members + "}"
    record = json.loads(line)
    assert json.dumps(record, separators=(",", ":")) == line
    assert abs(record["duration_ms"] - seconds * 1000) <= 0.0005 + 1e-9
    assert record["bytes_sent"] == sent and record["upstream"] == "http://127.0.0.1:8080"
