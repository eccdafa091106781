"""The HTTP/1.1 decisions of the relay, without sockets: framing, limits, header rewriting.

Errors are typed by whose fault they are and carry the status to answer with:
``ClientRequestError`` (400/413/431, the client's) and ``UpstreamError``
(502/503/504, the upstream's). The shell picks the response from the type and
its ``status_hint``, never from a message.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from enum import StrEnum
from http import HTTPStatus
from typing import Final

from mtlskit.authz import PathError, normalize_target
from mtlskit.errors import MtlskitError

__all__ = [
    "FRAMING_CHUNKED",
    "FRAMING_LENGTH",
    "FRAMING_NONE",
    "HOP_BY_HOP",
    "KINDS_LIMIT",
    "NOT_DOWNSTREAM",
    "RESPONSE_KINDS",
    "STATUS_LINES",
    "ClientRequestError",
    "Framing",
    "RequestHead",
    "UpstreamError",
    "chunk",
    "connection_tokens",
    "error_response",
    "fast_upstream_head",
    "finish_head",
    "forwarding_fields",
    "gateway_owned",
    "header_kind",
    "identity_tail",
    "normalized_target",
    "relay_framing",
    "request_framing",
    "response_head",
    "response_header_kind",
    "upstream_request_head",
]

Header = tuple[bytes, bytes]

# RFC 9110 §7.6.1 connection-specific fields, plus the legacy ones proxies still see.
HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# The gateway's word about the client and the request (it sets X-Forwarded-For,
# X-Forwarded-Proto and X-Request-Id), and the other names proxies and CDNs use for it,
# which backends and frameworks read as the client's address, scheme or host: whatever a
# client sent under any of them is dropped, whatever the case or ``_`` spelling
# (``gateway_owned``), and never named by Connection out of the gateway's own.
GATEWAY_SET: Final = frozenset(
    {
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-forwarded-port",
        b"x-forwarded-server",
        b"x-forwarded-prefix",
        b"x-forwarded-scheme",
        b"x-forwarded",
        b"forwarded",
        b"forwarded-for",
        b"x-original-forwarded-for",
        b"x-real-ip",
        b"x-client-ip",
        b"true-client-ip",
        b"x-cluster-client-ip",
        b"cf-connecting-ip",
        b"fastly-client-ip",
        b"x-originating-ip",
        b"x-remote-ip",
        b"x-remote-addr",
        b"x-request-id",
    }
)
# What upstream_request_head never forwards: for requests without a body, and with one.
_NOT_UPSTREAM: Final = HOP_BY_HOP | GATEWAY_SET | {b"expect"}
_NOT_UPSTREAM_WITH_BODY: Final = _NOT_UPSTREAM | {b"content-length"}
# What Connection may not remove from a request (RFC 9112 §3.2: an HTTP/1.1 request has Host).
_KEPT_WHEN_NAMED: Final = frozenset({b"host"})
# What the gateway never passes downstream as is: it frames and ids each response itself.
NOT_DOWNSTREAM: Final = HOP_BY_HOP | {b"content-length", b"x-request-id"}
_FRAMING_NAME_SIZES: Final = frozenset({4, 14, 17})  # host, content-length, transfer-encoding
_BODYLESS_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})
_TOKEN: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# The status line for every status Python names. A proxy writes its own for these, as
# nginx and Envoy do (RFC 9112 §4: a client ignores the reason phrase); only a status
# without a name passes its upstream's reason phrase on.
STATUS_LINES: Final = {
    code.value: b"HTTP/1.1 %d %s" % (code.value, code.phrase.encode()) for code in HTTPStatus
}

# What a request header is to ``fast_upstream_head``, by its name alone.
KIND_KEEP: Final = 0  # forwarded as is
KIND_DROP: Final = 1  # never forwarded: spoofable, hop-by-hop, or set by the gateway
KIND_HOST: Final = 2
KIND_BODY: Final = 3  # Content-Length, Transfer-Encoding: framing, the general path's
KIND_CONNECTION: Final = 4  # its tokens may name more fields to drop
# And a response header to the fast path's response parser (``response_header_kind``):
# KIND_KEEP, KIND_DROP, KIND_CONNECTION, or one of these framing fields.
KIND_LENGTH: Final = 5  # Content-Length
KIND_CHUNKED: Final = 6  # Transfer-Encoding
_RESPONSE_SPECIAL: Final = {
    b"content-length": KIND_LENGTH,
    b"transfer-encoding": KIND_CHUNKED,
    b"connection": KIND_CONNECTION,
}
RESPONSE_KINDS: Final[dict[bytes, int]] = {}  # response_header_kind's memo, by raw name
KINDS_LIMIT: Final = 10_000  # header names a memo of verdicts holds at most (per name)


class ClientRequestError(MtlskitError):
    """The client sent something the gateway will not relay; answer ``status_hint`` and close."""

    def __init__(self, message: str, *, status_hint: int = 400) -> None:
        super().__init__(message)
        self.status_hint = status_hint


class UpstreamError(MtlskitError):
    """The upstream failed: refused (502), none healthy (503), too slow (504), broke (502)."""

    def __init__(self, message: str, *, status_hint: int = 502) -> None:
        super().__init__(message)
        self.status_hint = status_hint


class Framing(StrEnum):
    NONE = "none"  # no body
    LENGTH = "length"
    CHUNKED = "chunked"


# The members as module globals for the per-request code: Python 3.11 reads an enum
# member through its class in ~70 ns, a module global in ~5 ns (measured).
FRAMING_NONE: Final = Framing.NONE
FRAMING_LENGTH: Final = Framing.LENGTH
FRAMING_CHUNKED: Final = Framing.CHUNKED
_NO_BODY: Final = (FRAMING_NONE, 0)


class RequestHead:
    """A parsed request line and headers, as bytes (httptools hands over bytes).

    A slotted class: one is made per request and its fields are read a dozen times.
    A frozen dataclass's ``__init__`` (``object.__setattr__`` per field) cost five
    times as much to make, and a named tuple's fields are descriptors that Python 3.11
    does not specialize, so each read took the slow attribute path.
    """

    __slots__ = ("headers", "keep_alive", "method", "target", "version")

    def __init__(
        self,
        method: str,
        target: bytes,
        version: str,  # "1.1" / "1.0"
        headers: tuple[Header, ...],
        keep_alive: bool,
    ) -> None:
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.keep_alive = keep_alive

    @property
    def path(self) -> str:
        """The path without query, for authorization; absolute-form targets are reduced."""
        target = self.target.decode("latin-1")
        if target.startswith(("http://", "https://")):
            rest = target.split("://", 1)[1]
            target = "/" + rest.split("/", 1)[1] if "/" in rest else "/"
        return target.split("?", 1)[0].split("#", 1)[0]

    def values(self, name: bytes) -> list[bytes]:
        return [value for key, value in self.headers if key.lower() == name]


def request_framing(head: RequestHead, *, max_body_bytes: int) -> tuple[Framing, int]:
    """How the body is delimited, or a ``ClientRequestError`` for anything ambiguous.

    The smuggling guards: Content-Length together with Transfer-Encoding, more
    than one Content-Length (even equal ones), a Transfer-Encoding other than a
    lone ``chunked``, and a non-numeric length are all 400 and close (RFC 9112 §6.3).
    """
    hosts = 0
    lengths: list[bytes] = []
    encodings: list[bytes] = []
    for key, value in head.headers:  # one pass: this runs for every request
        # The length first: most names are none of these, and lower() is a call.
        if len(key) in _FRAMING_NAME_SIZES:
            name = key.lower()
            if name == b"host":
                hosts += 1
            elif name == b"content-length":
                lengths.append(value)
            elif name == b"transfer-encoding":
                encodings.append(value)
    if hosts != 1 and (hosts or head.version != "1.0"):
        raise ClientRequestError("an HTTP/1.1 request needs exactly one Host (RFC 9112 §3.2)")
    if not lengths and not encodings:
        return _NO_BODY
    if lengths and encodings:
        raise ClientRequestError("both Content-Length and Transfer-Encoding")
    if len(lengths) > 1 or any(b"," in value for value in lengths):
        raise ClientRequestError("more than one Content-Length")
    if encodings:
        if len(encodings) > 1 or encodings[0].strip().lower() != b"chunked":
            raise ClientRequestError("Transfer-Encoding other than a single chunked")
        if head.version == "1.0":
            raise ClientRequestError("Transfer-Encoding in an HTTP/1.0 request")
        return FRAMING_CHUNKED, -1
    value = lengths[0].strip()
    if not value.isdigit() or len(value) > 18:
        raise ClientRequestError("Content-Length is not a number")
    length = int(value)
    if length > max_body_bytes:
        raise ClientRequestError("body larger than the limit", status_hint=413)
    return (FRAMING_LENGTH, length) if length else _NO_BODY


def normalized_target(target: bytes) -> bytes:
    """``target`` as route rules see it and the upstream receives it (``authz._path``):
    dot segments resolved, unreserved escapes decoded; ``ClientRequestError`` (400) for an
    ambiguous one (an encoded slash, double encoding, a climb above the root)."""
    try:
        return normalize_target(target.decode("latin-1")).encode("latin-1")
    except PathError as exc:
        raise ClientRequestError(f"path refused: {exc}") from None


def _connection_tokens(headers: Iterable[Header]) -> set[bytes]:
    """Field names listed in Connection: hop-by-hop too (RFC 9110 §7.6.1)."""
    tokens: set[bytes] = set()
    for key, value in headers:
        # The length first: most names are not 10 bytes long, and lower() is a call.
        if len(key) == 10 and key.lower() == b"connection":
            tokens |= connection_tokens(value)
    return tokens


def connection_tokens(value: bytes) -> set[bytes]:
    """The lower-case tokens of one Connection field's value (``close``, field names)."""
    return {t for token in value.split(b",") if (t := token.strip().lower())}


def upstream_request_head(
    head: RequestHead,
    *,
    framing: Framing,
    length: int,
    client_ip: str,
    request_id: str,
    headers: Sequence[Header],
    identity: Sequence[Header],
    upstream_host: str = "localhost",
) -> bytes:
    """The request line and headers sent upstream (keep-alive, HTTP/1.1).

    ``headers`` are the client's, already sanitized (``mtlskit.forward``: a client
    must never be able to speak for its certificate). Removed here: hop-by-hop
    fields and those named in Connection, ``Expect`` (the gateway answers
    100-continue itself), and the ``X-Forwarded-*``/``X-Request-Id`` it sets.
    ``X-Forwarded-For`` is replaced, not appended: this is the edge, and what a
    client claims about earlier hops is unverified.
    """
    bodyless = framing is FRAMING_NONE and head.method in _BODYLESS_METHODS
    drop = _NOT_UPSTREAM if bodyless else _NOT_UPSTREAM_WITH_BODY
    tokens = _connection_tokens(head.headers)
    if not tokens <= drop:
        drop = drop | (tokens - _KEPT_WHEN_NAMED)  # Host stays, as nginx and Envoy keep it
    lines = [head.method.encode() + b" " + head.target + b" HTTP/1.1"]
    lines += [key + b": " + value for key, value in headers if key.lower() not in drop]
    if not any(len(key) == 4 and key.lower() == b"host" for key, _ in head.headers):
        # HTTP/1.0 without Host: the upstream speaks 1.1 and needs one
        lines.append(b"host: " + upstream_host.encode("ascii"))
    if framing is FRAMING_CHUNKED:
        lines.append(b"transfer-encoding: chunked")
    elif not bodyless:
        lines.append(b"content-length: %d" % max(length, 0))
    return (
        b"\r\n".join(lines)
        + forwarding_fields(client_ip)
        + request_id.encode("ascii")
        + identity_tail(identity)
    )


def gateway_owned(name: bytes) -> bool:
    """Whether a client's field of this name speaks for the gateway (``GATEWAY_SET``), compared
    as WSGI/CGI backends see names: case and ``_``/``-`` folded, whitespace trimmed."""
    return name.strip(b" \t").lower().replace(b"_", b"-") in GATEWAY_SET


def header_kind(name: bytes, *, spoofable: bool) -> int:
    """What ``fast_upstream_head`` does with a request header of this name."""
    lower = name.lower()
    if spoofable:
        return KIND_DROP
    if lower == b"host":
        return KIND_HOST
    if lower in (b"content-length", b"transfer-encoding"):
        return KIND_BODY
    if lower == b"connection":
        return KIND_CONNECTION
    return KIND_DROP if lower in _NOT_UPSTREAM else KIND_KEEP


def response_header_kind(name: bytes) -> int:
    """What the fast path does with a response header of this name: ``response_head``'s
    rules, decided once per name (memoized in ``RESPONSE_KINDS``, bounded)."""
    lower = name.lower()
    kind = _RESPONSE_SPECIAL.get(lower, KIND_DROP if lower in NOT_DOWNSTREAM else KIND_KEEP)
    if len(RESPONSE_KINDS) < KINDS_LIMIT:
        RESPONSE_KINDS[name] = kind
    return kind


def fast_upstream_head(
    head: RequestHead, kinds: dict[bytes, int], classify: Callable[[bytes], int]
) -> list[bytes] | None:
    """``upstream_request_head``'s request line and client fields for a request without a
    body, one Host and no extra Connection tokens, in one pass; ``None`` for any other.

    The keep-alive fast path's: ``kinds`` memoizes each name's ``header_kind`` (the same
    few names recur on every request), ``classify`` decides a new one. The caller adds
    the gateway's own fields, which do not depend on the request.
    """
    lines = [head.method.encode() + b" " + head.target + b" HTTP/1.1"]
    hosts = 0
    for name, value in head.headers:
        kind = kinds.get(name)
        if kind is None:
            kind = classify(name)
        if kind == KIND_KEEP:
            lines.append(name + b": " + value)
        elif kind == KIND_HOST:
            hosts += 1
            lines.append(name + b": " + value)
        elif kind == KIND_CONNECTION:
            if value != b"keep-alive" and not connection_tokens(value) <= _NOT_UPSTREAM:
                return None
        elif kind == KIND_BODY:
            return None
    if hosts != 1:
        return None
    if head.method not in _BODYLESS_METHODS:
        lines.append(b"content-length: 0")
    return lines


def forwarding_fields(client_ip: str) -> bytes:
    """What follows a request head's client fields, up to the request id's value: the
    X-Forwarded-* fields (the fast path makes them once per connection)."""
    return (
        b"\r\nx-forwarded-for: " + client_ip.encode("ascii")
        + b"\r\nx-forwarded-proto: https\r\nx-request-id: "
    )  # fmt: skip


def identity_tail(identity: Sequence[Header]) -> bytes:
    """What follows the request id in a request head: the identity fields and the head's
    end (the fast path makes it once per verified chain)."""
    return b"".join(b"\r\n" + key + b": " + value for key, value in identity) + b"\r\n\r\n"


def relay_framing(
    *, method: str, status: int, length: int | None, version: str
) -> tuple[Framing, Framing]:
    """(how an upstream response's body is delimited, how it is delimited to the client).

    No body for HEAD, 204 and 304; a Content-Length passes as is; anything else is read
    as chunked (or up to EOF) and re-chunked for an HTTP/1.1 client, but goes to an
    HTTP/1.0 client delimited by the close of its connection (the two then differ).
    """
    if method == "HEAD" or status in (204, 304):
        return FRAMING_NONE, FRAMING_NONE
    if length is not None:
        return FRAMING_LENGTH, FRAMING_LENGTH
    return FRAMING_CHUNKED, FRAMING_NONE if version == "1.0" else FRAMING_CHUNKED


def response_head(
    status: int,
    reason: bytes,
    headers: Sequence[Header],
    *,
    framing: Framing,
    length: int,
    keep_alive: bool,
    request_id: str,
) -> bytes:
    """The upstream response's head as sent to the client, with this hop's framing."""
    drop = NOT_DOWNSTREAM
    tokens = _connection_tokens(headers)
    if not tokens <= drop:
        drop = drop | tokens
    lines = [STATUS_LINES.get(status) or b"HTTP/1.1 %d " % status + (reason or b"")]
    lines += [key + b": " + value for key, value in headers if key.lower() not in drop]
    return finish_head(
        lines, framing=framing, length=length, keep_alive=keep_alive, request_id=request_id
    )


_KEEP_ALIVE_END: Final = b"\r\nconnection: keep-alive\r\n\r\n"
_CLOSE_END: Final = b"\r\nconnection: close\r\n\r\n"


def finish_head(
    lines: list[bytes], *, framing: Framing, length: int, keep_alive: bool, request_id: str
) -> bytes:
    """A response head from its status line and the fields passed on (``lines``): this
    hop's framing, the request id and the connection's fate added."""
    if framing is FRAMING_CHUNKED:
        framing_field = b"\r\ntransfer-encoding: chunked"
    elif framing is FRAMING_LENGTH:
        framing_field = b"\r\ncontent-length: %d" % length
    else:
        framing_field = b""
    return b"".join(
        (
            b"\r\n".join(lines),
            framing_field,
            b"\r\nx-request-id: ",
            request_id.encode("ascii"),
            _KEEP_ALIVE_END if keep_alive else _CLOSE_END,
        )
    )


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body; the empty chunk ends the body."""
    return b"%x\r\n" % len(data) + data + b"\r\n" if data else b"0\r\n\r\n"


def error_response(status: int, *, request_id: str, close: bool) -> bytes:
    """A generic response: the status and the request id, never the reason behind it.

    The reason code goes to the gateway's log under the same request id; a client
    learns nothing it could use to probe the policy.
    """
    phrase = HTTPStatus(status).phrase
    body = f"{status} {phrase}\nrequest id: {request_id}\n".encode()
    return (
        f"HTTP/1.1 {status} {phrase}\r\n"
        "content-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\n"
        f"x-request-id: {request_id}\r\n"
        f"connection: {'close' if close else 'keep-alive'}\r\n\r\n"
    ).encode() + body


def valid_header_name(name: bytes) -> bool:
    return _TOKEN.fullmatch(name) is not None
