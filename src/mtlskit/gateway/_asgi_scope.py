"""The ASGI side of in-process hosting, without IO: scopes in, response framing out.

What an app served by ``[upstream] asgi`` sees in each HTTP scope beyond the
ASGI 3.0 HTTP fields:

``scope["extensions"]["tls"]``
    The ASGI TLS extension, v0.2 fields (asgiref ``specs/tls.rst``): ``server_cert``,
    ``client_cert_chain`` (PEM, leaf first), ``client_cert_name`` (RFC 4514),
    ``client_cert_error`` (``None`` when verified or absent, else mtlskit's stable
    code), ``tls_version`` (``0x0304``), ``cipher_suite`` (IANA number).
``scope["extensions"]["mtlskit"]["decision"]``
    The ``mtlskit.verify.Decision`` for this request: verification by both gates
    and then the route's authorization (identity, verdict, reasons, rule). In
    ``allow_invalid_or_missing`` mode a rejected decision reaches the app, which decides.
``scope["extensions"]["mtlskit"]["request_id"]``
    The id the access log and the ``x-request-id`` response header carry.
``scope["state"]["client_identity"]``
    The verified ``ClientIdentity`` (or ``None``): Starlette's ``request.state.client_identity``,
    the same attribute ``mtlskit.asgi.ClientCertMiddleware`` sets behind a proxy.

Identity headers a client sends are removed from ``scope["headers"]`` as they are
before any HTTP upstream: the app must never mistake them for the gateway's word.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterable, Mapping
from typing import Any, Final
from urllib.parse import unquote

from mtlskit.gateway._http import (
    FRAMING_CHUNKED,
    FRAMING_LENGTH,
    FRAMING_NONE,
    NOT_DOWNSTREAM,
    STATUS_LINES,
    Framing,
    RequestHead,
    connection_tokens,
    finish_head,
)
from mtlskit.verify import Decision

__all__ = [
    "ASGI_VERSION",
    "cipher_suite_ids",
    "http_scope",
    "response_framing",
    "response_head",
]

ASGI_VERSION: Final = {"version": "3.0", "spec_version": "2.4"}  # 2.4: send raises on disconnect
LIFESPAN_VERSION: Final = {"version": "3.0", "spec_version": "2.0"}
_NO_BODY: Final = frozenset({204, 304})
_SPECIAL: Final = re.compile(rb"[?#%]")  # a target with none of these is its own path


def cipher_suite_ids(context: ssl.SSLContext) -> dict[str, int]:
    """OpenSSL cipher names → the 16-bit IANA numbers the TLS extension wants.

    ``get_ciphers()`` lists TLS 1.3 suites too; the id's low 16 bits are the IANA value.
    """
    return {cipher["name"]: cipher["id"] & 0xFFFF for cipher in context.get_ciphers()}


def _split_target(target: bytes) -> tuple[bytes, bytes]:
    """(raw path, query) of an origin- or absolute-form request target."""
    if target.startswith((b"http://", b"https://")):
        rest = target.split(b"://", 1)[1]
        target = b"/" + rest.split(b"/", 1)[1] if b"/" in rest else b"/"
    raw_path, _, query = target.partition(b"?")
    return raw_path.partition(b"#")[0], query.partition(b"#")[0]


def http_scope(  # noqa: PLR0917 - one request's facts, passed once
    head: RequestHead,
    headers: list[tuple[bytes, bytes]],
    client: tuple[str, int] | None,
    server: tuple[str, int] | None,
    tls: Mapping[str, Any],
    decision: Decision,
    request_id: str,
    state: Mapping[str, Any],
) -> dict[str, Any]:
    """The ASGI HTTP scope for one request; ``headers`` already sanitized, names lower-case,
    in a list of the scope's own.

    ``tls`` and ``state`` are copied so that an app (or middleware) writing into its
    scope never changes what the next request on the connection sees.
    """
    target = head.target
    if target[:1] == b"/" and target.isascii() and not _SPECIAL.search(target):
        raw_path, query, path = target, b"", target.decode("ascii")  # the usual case
    else:
        raw_path, query = _split_target(target)
        path = unquote(raw_path.decode("latin-1"), encoding="utf-8", errors="replace")
    return {
        "type": "http",
        "asgi": ASGI_VERSION,
        "http_version": head.version,
        "method": head.method,
        "scheme": "https",
        "path": path,
        "raw_path": raw_path,
        "query_string": query,
        "root_path": "",
        "headers": headers,
        "client": client,
        "server": server,
        "extensions": {
            "tls": dict(tls),
            "mtlskit": {"decision": decision, "request_id": request_id},
        },
        "state": {
            **state,
            "client_identity": decision.identity if decision.accepted else None,
        },
    }


def response_head(  # noqa: PLR0917 - one response's facts, passed once
    status: int,
    raw: Iterable[Any],
    method: str,
    http_version: str,
    first_body: int,
    more_body: bool,
    keep_alive: bool,
    request_id: str,
) -> tuple[bytes, Framing, int, bool]:
    """An app's ``http.response.start`` as a head: (bytes, framing, length, keep-alive).

    Framed when the first body message arrives (``first_body`` bytes, ``more_body``).
    What the gateway frames itself is taken out, in the one pass over the fields:
    Content-Length (a number is kept as the length, anything else dropped and the
    body framed by the gateway), Connection (``close`` closes the connection after;
    the fields it names go too), the other hop-by-hop fields and X-Request-Id.
    """
    lines = [STATUS_LINES.get(status) or b"HTTP/1.1 %d " % status]
    length: int | None = None
    close = False
    tokens: set[bytes] = set()
    for name, value in raw:
        # Apps send bytes (the spec's type); copying them anyway was a call per header.
        name_b = name if type(name) is bytes else bytes(name)
        value_b = value if type(value) is bytes else bytes(value)
        lower = name_b.lower()
        if lower in NOT_DOWNSTREAM:
            if lower == b"content-length":
                text = value_b.strip()
                if text.isdigit():
                    length = int(text)
            elif lower == b"connection":
                listed = connection_tokens(value_b)
                close = close or b"close" in listed
                tokens |= listed
            continue
        lines.append(name_b + b": " + value_b)
    if tokens:
        lines[1:] = [line for line in lines[1:] if line.split(b":", 1)[0].lower() not in tokens]
    framing, length, can_keep = response_framing(
        method=method,
        status=status,
        length=length,
        first_body=first_body,
        more_body=more_body,
        http_version=http_version,
    )
    keep_alive = keep_alive and can_keep and not close
    head = finish_head(
        lines, framing=framing, length=length, keep_alive=keep_alive, request_id=request_id
    )
    return head, framing, length, keep_alive


def response_framing(
    *,
    method: str,
    status: int,
    length: int | None,
    first_body: int,
    more_body: bool,
    http_version: str,
) -> tuple[Framing, int, bool]:
    """How the response body is delimited on the wire: (framing, length, keep-alive possible).

    Decided when the first body message arrives, so a one-message body gets a
    Content-Length even if the app did not set one (as uvicorn does). Without a
    length and with more to come: chunked for HTTP/1.1, close-delimited for 1.0.
    """
    if method == "HEAD" or status in _NO_BODY or 100 <= status < 200:
        if method == "HEAD" and length is not None:
            return FRAMING_LENGTH, length, True  # the head says how long a GET would be
        return FRAMING_NONE, 0, True
    if length is not None:
        return FRAMING_LENGTH, length, True
    if not more_body:
        return FRAMING_LENGTH, first_body, True
    if http_version == "1.0":
        return FRAMING_NONE, 0, False
    return FRAMING_CHUNKED, 0, True
