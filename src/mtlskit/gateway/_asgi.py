"""An ASGI application as the gateway's upstream: in-process, no proxy hop.

``AsgiHost`` loads the app (``package.module:attribute``), runs its lifespan
(startup before the listener accepts, shutdown after the drain) and serves one
request at a time per connection, reading the body from the connection as the
app asks for it (``receive``) and writing the response as the app sends it —
streamed both ways, with the connection's backpressure. What the scope holds is
``_asgi_scope``'s business; this module is the IO around it, and it uses the
connection's own byte primitives (``_send``, ``_next_event``) as a friend module.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import sys
import traceback
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from mtlskit.errors import ConfigError
from mtlskit.forward import asgi_tls_extension, tls_version_number
from mtlskit.gateway._asgi_scope import (
    LIFESPAN_VERSION,
    cipher_suite_ids,
    http_scope,
    response_head,
)
from mtlskit.gateway._http import (
    FRAMING_CHUNKED,
    FRAMING_LENGTH,
    FRAMING_NONE,
    ClientRequestError,
    Framing,
    RequestHead,
    chunk,
    error_response,
)
from mtlskit.verify import Decision

if TYPE_CHECKING:
    from mtlskit.gateway._connection import ClientConnection

__all__ = ["AsgiApp", "AsgiHost", "load_app"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"


def load_app(spec: str, *, app_dir: Path | None = None) -> AsgiApp:
    """Import ``package.module:attribute`` (dotted attributes allowed); ``ConfigError`` if not.

    ``app_dir`` goes first on ``sys.path``, as uvicorn's ``--app-dir`` does, so an
    ``app.py`` beside the config is found without installing it.
    """
    module_name, _, attribute = spec.partition(":")
    if app_dir is not None and str(app_dir) not in sys.path:
        sys.path.insert(0, str(app_dir))
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import {module_name!r}: {exc}", source="upstream.asgi") from None
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigError(
                f"module {module_name!r} has no attribute {attribute!r}", source="upstream.asgi"
            ) from None
    if not callable(target):
        raise ConfigError(f"{spec!r} is not callable", source="upstream.asgi")
    return target  # type: ignore[no-any-return]


class AsgiHost:
    """One ASGI app served by the gateway; ``name`` is what the access log shows as upstream."""

    def __init__(self, app: AsgiApp, *, name: str, lifespan: str = "auto") -> None:
        self.app = app
        self.name = name
        self.lifespan = lifespan
        self.state: dict[str, Any] = {}  # lifespan state, copied into every request's scope
        self._ciphers: dict[int, dict[str, int]] = {}
        self._queue: asyncio.Queue[Message] = asyncio.Queue()
        self._answers: asyncio.Queue[Message] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._lifespan_live = False

    # --- lifespan -----------------------------------------------------------------------

    async def startup(self) -> None:
        """Run ``lifespan.startup``; an app without lifespan support is fine in ``auto`` mode."""
        if self.lifespan == "off":
            return
        scope = {"type": "lifespan", "asgi": LIFESPAN_VERSION, "state": self.state}
        self._task = asyncio.get_running_loop().create_task(self._run_lifespan(scope))
        await self._queue.put({"type": "lifespan.startup"})
        answer = await self._answers.get()
        if answer["type"] == "lifespan.startup.complete":
            self._lifespan_live = True
            return
        if answer["type"] == "unsupported" and self.lifespan == "auto":
            return
        message = answer.get("message") or answer.get("error") or "no reason given"
        raise ConfigError(f"the app's lifespan startup failed: {message}", source=self.name)

    async def shutdown(self) -> None:
        if not self._lifespan_live or self._task is None:
            return
        self._lifespan_live = False
        await self._queue.put({"type": "lifespan.shutdown"})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._answers.get(), 10)
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(self._task, 1)

    async def _run_lifespan(self, scope: Scope) -> None:
        async def send(message: Message) -> None:
            await self._answers.put(message)

        try:
            await self.app(scope, self._queue.get, send)
        except Exception as exc:
            await self._answers.put({"type": "unsupported", "error": repr(exc)})
        else:  # returned without answering: no lifespan support
            await self._answers.put({"type": "unsupported"})

    # --- one request ------------------------------------------------------------------

    def tls_extension(self, conn: ClientConnection) -> dict[str, Any]:
        """The connection's TLS facts, computed once per connection (its view never changes).

        The certificate fields (PEM encodings, the RFC 4514 name) are the view's, shared
        by every connection that presented the same chain: ~50 µs per handshake less.
        """
        generation = conn.generation
        ciphers = self._ciphers.get(generation.number)
        if ciphers is None:
            ciphers = self._ciphers[generation.number] = cipher_suite_ids(generation.context)
        view = conn._view
        assert view is not None
        if view.tls_extension is None:
            view.tls_extension = asgi_tls_extension(view.client, server_cert=generation.server_cert)
        cipher = conn.tls.cipher()
        shared = view.tls_extension
        return {
            **shared,
            "client_cert_chain": list(shared["client_cert_chain"]),  # the app's own copy
            "tls_version": tls_version_number(conn.tls.version()),
            "cipher_suite": ciphers.get(cipher[0]) if cipher else None,
        }

    async def handle(
        self,
        conn: ClientConnection,
        head: RequestHead,
        framing: Framing,
        request_id: str,
        decision: Decision,
    ) -> tuple[bool, int, int]:
        """Serve one request; (keep-alive, status, body bytes sent).

        A ``ClientRequestError`` (body over the limit, stalled, malformed chunks)
        comes back to the connection to answer, unless the response has started.
        """
        if conn.asgi_tls is None:
            conn.asgi_tls = self.tls_extension(conn)
        headers = conn.generation.sanitize(head.headers, lower=True)
        scope = http_scope(
            head,
            headers,
            conn.client_address,
            conn.server_address,
            conn.asgi_tls,
            decision,
            request_id,
            self.state,
        )
        cycle = _Cycle(conn, head, framing, request_id)
        try:
            await self.app(scope, cycle.receive, cycle.send)
        except Exception as exc:
            if cycle.disconnected:
                raise ConnectionResetError("client went away during the response") from None
            if cycle.error is not None and not cycle.head_sent:
                raise cycle.error from None
            conn.gateway.connection_log.write(
                {
                    "event": "app_error",
                    "peer": conn.peer,
                    "request_id": request_id,
                    "error": repr(exc),
                    "traceback": traceback.format_exc(limit=8),
                }
            )
            if not cycle.head_sent:
                await conn._send(error_response(500, request_id=request_id, close=True))
                return False, 500, 0
            return False, cycle.status, cycle.sent
        if cycle.disconnected:
            raise ConnectionResetError("client went away during the response")
        if cycle.error is not None and not cycle.head_sent:
            raise cycle.error
        if not cycle.head_sent:  # the app returned without a response
            conn.gateway.connection_log.write(
                {"event": "app_error", "peer": conn.peer, "request_id": request_id,
                 "error": "the app returned without sending a response"}
            )  # fmt: skip
            await conn._send(error_response(500, request_id=request_id, close=True))
            return False, 500, 0
        if not cycle.complete:
            return False, cycle.status, cycle.sent  # truncated by the app: close the connection
        keep_alive = cycle.keep_alive and cycle.finish_request_body()
        return keep_alive, cycle.status, cycle.sent


class _Cycle:
    """One request/response: the ``receive`` and ``send`` callables an app is given.

    Slotted, every field set in ``__init__``: Python 3.11 specializes slot reads, but
    not reads of a default kept on the class (three times slower, measured).
    """

    __slots__ = (
        "_finished",
        "body_done",
        "complete",
        "conn",
        "disconnected",
        "done",
        "error",
        "expect_continue",
        "framing",
        "head",
        "head_sent",
        "keep_alive",
        "length",
        "received",
        "request_id",
        "sent",
        "start",
        "status",
    )

    def __init__(
        self, conn: ClientConnection, head: RequestHead, framing: Framing, request_id: str
    ) -> None:
        self.conn = conn
        self.head = head
        self.request_id = request_id
        self.body_done = False
        self.received = 0
        self.expect_continue = framing is not FRAMING_NONE and any(
            value.strip().lower() == b"100-continue" for value in head.values(b"expect")
        )
        self.error: ClientRequestError | None = None
        self.disconnected = False
        self._finished: asyncio.Event | None = None  # made only if the app waits on it
        self.done = False  # response complete, or the client is gone
        # response state
        self.start: Message | None = None
        self.head_sent = False
        self.complete = False
        self.status = 0
        self.sent = 0
        self.framing = FRAMING_NONE
        self.length = 0
        self.keep_alive = head.keep_alive and not conn.gateway.draining

    def _finish(self) -> None:
        self.done = True
        if self._finished is not None:
            self._finished.set()

    async def receive(self) -> Message:
        if self.body_done or self.error is not None or self.disconnected:
            if not self.done:  # http.disconnect only once the response is over
                if self._finished is None:
                    self._finished = asyncio.Event()
                await self._finished.wait()
            return {"type": "http.disconnect"}
        if self.expect_continue:
            self.expect_continue = False
            await self.conn._send(_CONTINUE)
        limits = self.conn.gateway.limits
        try:
            kind, value = await self.conn._next_event(limits.idle_timeout)
        except TimeoutError:
            self.error = ClientRequestError("request body stalled", status_hint=408)
            return {"type": "http.disconnect"}
        except ClientRequestError as exc:
            self.error = exc
            return {"type": "http.disconnect"}
        if kind == "eof":
            self.disconnected = True
            self._finish()
            return {"type": "http.disconnect"}
        if kind == "end":
            self.body_done = True
            return {"type": "http.request", "body": b"", "more_body": False}
        self.received += len(value)
        if self.received > limits.max_body_bytes:
            self.error = ClientRequestError("body larger than the limit", status_hint=413)
            return {"type": "http.disconnect"}
        events = self.conn._events
        if events and events[0][0] == "end":  # the rest of the body is already parsed
            self.body_done = True
            events.pop(0)
            return {"type": "http.request", "body": value, "more_body": False}
        return {"type": "http.request", "body": value, "more_body": True}

    async def send(self, message: Message) -> None:
        if self.disconnected:
            raise ConnectionResetError("client went away")
        kind = message["type"]
        if kind != "http.response.body":
            if kind == "http.response.start":
                if self.start is not None:
                    raise RuntimeError("http.response.start sent twice")
                self.start = message
                self.status = int(message["status"])
            return  # unknown message types (e.g. pathsend, trailers) are ignored
        if self.start is None:
            raise RuntimeError("http.response.body before http.response.start")
        if self.complete:
            raise RuntimeError("http.response.body after the response completed")
        body = message.get("body", b"")
        if type(body) is not bytes:
            body = bytes(body)
        more = bool(message.get("more_body", False))
        try:
            # head, body and terminator in one TLS write: one record, one syscall
            if self.head_sent:
                out = b""
            else:
                out, self.framing, self.length, self.keep_alive = response_head(
                    self.status,
                    self.start.get("headers", ()),
                    self.head.method,
                    self.head.version,
                    len(body),
                    more,
                    self.keep_alive,
                    self.request_id,
                )
                self.head_sent = True
            framing = self.framing
            if body:
                if framing is not FRAMING_NONE:
                    if self.head.method != "HEAD":
                        self.sent += len(body)
                        out += chunk(body) if framing is FRAMING_CHUNKED else body
                elif not self.keep_alive:
                    self.sent += len(body)  # HTTP/1.0 close-delimited
                    out += body
            if not more:
                if framing is FRAMING_CHUNKED:
                    out += chunk(b"")
                elif (
                    framing is FRAMING_LENGTH
                    and self.sent != self.length
                    and self.head.method != "HEAD"
                ):
                    self.keep_alive = False  # the app's Content-Length was wrong: close
                self.complete = True
            if out and self.conn._write(out):
                await self.conn._drain()
            if self.complete:
                self._finish()
        except (ConnectionError, OSError) as exc:
            self.disconnected = True
            self._finish()
            raise ConnectionResetError("client went away") from exc

    def finish_request_body(self) -> bool:
        """After the response: consume an unread body if it is already here; else close."""
        if self.body_done:
            return True
        if self.error is not None:
            return False
        events = self.conn._events
        while events:
            kind, _ = events.pop(0)
            if kind == "end":
                self.body_done = True
                return True
        return False
