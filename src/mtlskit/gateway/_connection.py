"""One client connection: TLS over memory BIOs, the two gates, then the HTTP/1.1 relay.

The protocol object only moves bytes (TCP in → incoming BIO, outgoing BIO → TCP)
and wakes one coroutine, ``run``, which walks the lifecycle table of
``_lifecycle``. Flushing the outgoing BIO after every TLS step (``mtlskit.handshake``,
shared with the CA servers) is what gets a refused client its alert (``unknown_ca``,
``decrypt_error``, ...).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import os
import ssl
import time
from collections.abc import Coroutine
from json.encoder import encode_basestring_ascii  # type: ignore[attr-defined]
from typing import TYPE_CHECKING, Any, Final

import httptools
from cryptography import x509

from mtlskit.authz import needs_normalizing
from mtlskit.forward import ForwardedClient, forward_headers
from mtlskit.gateway._config import ClientAuthMode
from mtlskit.gateway._http import (
    FRAMING_CHUNKED,
    FRAMING_NONE,
    KIND_CHUNKED,
    KIND_CONNECTION,
    KIND_KEEP,
    KIND_LENGTH,
    NOT_DOWNSTREAM,
    RESPONSE_KINDS,
    STATUS_LINES,
    ClientRequestError,
    Framing,
    RequestHead,
    UpstreamError,
    chunk,
    connection_tokens,
    error_response,
    fast_upstream_head,
    finish_head,
    forwarding_fields,
    identity_tail,
    normalized_target,
    relay_framing,
    request_framing,
    response_head,
    response_header_kind,
    upstream_request_head,
)
from mtlskit.gateway._lifecycle import TRANSITIONS, Event, Lifecycle, State
from mtlskit.gateway._log import json_members
from mtlskit.gateway._tls import classify_handshake_error, peer_chain
from mtlskit.gateway._upstream import UpstreamConnection
from mtlskit.handshake import step as handshake_step
from mtlskit.verify import Decision

if TYPE_CHECKING:
    from mtlskit.gateway._generation import Generation
    from mtlskit.gateway._server import Gateway

__all__ = ["ClientConnection", "ClientView"]

_HIGH_WATER: Final = 256 * 1024  # pause reading the client above this much unread TLS data
_READ_SIZE: Final = 64 * 1024
_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
_json: Final = encode_basestring_ascii  # a str as JSON, exactly as json.dumps writes it
_NO_CLIENT: Final = '"identity":null,"verified":false'
_NO_REQUEST: Final = '"method":null,"path":null'
# Enum members read on every request, as module globals: Python 3.11 reads an enum
# member through its class in ~70 ns, a module global in ~5 ns (measured).
_IDLE: Final = State.IDLE
# The fast path's two steps from IDLE (a request head, then forwarding it), taken at once:
# it has checked the state is IDLE, and the table says where the two events lead.
_IDLE_FORWARDING: Final = TRANSITIONS[TRANSITIONS[State.IDLE][Event.REQUEST_HEAD]][Event.FORWARD]
_CLOSED_STATE: Final = State.CLOSED
_REQUEST_HEAD: Final = Event.REQUEST_HEAD
_FORWARD: Final = Event.FORWARD
_RESPONSE_DONE: Final = Event.RESPONSE_DONE
_CLOSE: Final = Event.CLOSE
_METHOD_NAMES: Final = {
    m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")
}


_ID_POOL_HEX: Final = 512 * 16  # hex digits: 512 request ids of 16


class _RequestIds:
    """Request ids, 64 random bits each, drawn from one ``urandom`` call per 512.

    ``os.urandom(8).hex()`` per request was a ``getrandom`` syscall per request; the
    ids need to be unguessable and unique, not each fetched from the kernel.
    """

    __slots__ = ("_at", "_pool")

    def __init__(self) -> None:
        self._pool = ""
        self._at = _ID_POOL_HEX

    def take(self) -> str:
        at = self._at
        if at >= _ID_POOL_HEX:
            self._pool = os.urandom(_ID_POOL_HEX // 2).hex()
            at = 0
        self._at = at + 16
        return self._pool[at : at + 16]


_request_ids: Final = _RequestIds()


_MEMO_LIMIT: Final = 1024  # entries in each access-log memo below before it starts over
_upstream_names: dict[str, str] = {}  # an upstream's name as JSON: a handful, on every request
_request_lines: dict[tuple[str, bytes], str] = {}  # "method" and "path" per (method, target)
# A duration's digits after the point, as JSON writes a float of at most three decimals:
# ".5" for 500 µs, ".0" for none (``repr(round(ms, 3))`` cost twice the whole rest).
_MS_FRACTIONS: Final = tuple(f".{n:03d}".rstrip("0") if n else ".0" for n in range(1000))


def _request_members(head: RequestHead) -> str:
    """An access record's ``"method":...,"path":...``: the same few targets recur, so each
    is encoded once (origin-form without a query is the path itself; else ``head.path``)."""
    key = (head.method, head.target)
    members = _request_lines.get(key)
    if members is None:
        target = head.target
        if target[:1] == b"/" and b"?" not in target and b"#" not in target:
            path = target.decode("latin-1")
        else:
            path = head.path
        members = f'"method":{_json(head.method)},"path":{_json(path)}'
        if len(_request_lines) >= _MEMO_LIMIT:
            _request_lines.clear()
        _request_lines[key] = members
    return members


def _peer(address: tuple[str, int] | None) -> str:
    return f"{address[0]}:{address[1]}" if address else "?"


def _access_members(  # noqa: PLR0917 - one access record's fields, kept as a tuple
    request: str,
    status: int,
    request_id: str,
    peer: str,
    client: str,
    code: str | None,
    upstream: str | None,
    sent: int,
    seconds: float,
) -> str:
    """An access record's JSON members: the same JSON that encoding a dict of them gives.

    ``request`` and ``peer`` are JSON already (``_request_members``; the connection's
    peer, made once) and ``request_id`` is hex. Once per relayed request: 0.5 µs, against
    1.37 with each member encoded per call and ``repr(round(ms, 3))`` (measured).
    """
    name = "null" if upstream is None else _upstream_names.get(upstream) or _upstream_name(upstream)
    whole, fraction = divmod(round(seconds * 1_000_000), 1000)  # milliseconds, to the µs
    return (
        f'"event":"request","request_id":"{request_id}","peer":{peer},'
        f'{request},"status":{status},'
        f'"code":{_json(code) if code is not None else "null"},{client},'
        f'"upstream":{name},"bytes_sent":{sent},"duration_ms":{whole}{_MS_FRACTIONS[fraction]}'
    )


def _upstream_name(upstream: str) -> str:
    """``upstream`` as JSON, memoized (``_access_members``'s miss)."""
    if len(_upstream_names) >= _MEMO_LIMIT:
        _upstream_names.clear()
    name = _upstream_names[upstream] = _json(upstream)
    return name  # type: ignore[no-any-return]


class _Closed(Exception):
    """The client went away (EOF or reset); nothing more can be sent."""


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class ClientView:
    """What the gateway concluded about one presented chain: reused across connections.

    Keyed by (generation, chain): the decision, the identity headers for the
    upstream and the certificate fields for the connection log are computed once.
    """

    __slots__ = (
        "chain",
        "client",
        "connection_fields",
        "decision",
        "expires",
        "headers",
        "leaf_fields",
        "log_fields",
        "stale_at",
        "tls_extension",
        "upstream_tail",
    )

    def __init__(
        self,
        decision: Decision,
        headers: list[tuple[bytes, bytes]],
        leaf: Any,
        client: ForwardedClient,
    ) -> None:
        self.decision = decision
        self.headers = headers
        self.upstream_tail = identity_tail(headers)  # the fast path's
        self.leaf_fields = leaf
        self.client = client  # what an in-process ASGI app is told (the TLS extension)
        self.expires = 0.0
        self.chain: tuple[bytes, ...] = ()  # what a connection re-decides after a reload
        # When (time.monotonic) the decision stops holding: the certificate's notAfter, a
        # CRL's nextUpdate. A connection's next request past it is decided again.
        self.stale_at = float("inf")
        identity = decision.identity.value if decision.identity else None
        self.log_fields = (  # the access log's members for this chain, JSON already
            f'"identity":{_json(identity) if identity is not None else "null"},'
            f'"verified":{"true" if decision.accepted else "false"}'
        )
        self.connection_fields = ""  # the connection log's, set by ``of``
        # The TLS extension's certificate fields (PEMs, name, error), made at first use.
        self.tls_extension: dict[str, Any] | None = None

    @classmethod
    def of(cls, generation: Generation, chain: tuple[bytes, ...]) -> ClientView:
        now = dt.datetime.now(dt.UTC)
        if not chain:
            decision = generation.verifier.verify([], at=now)
            client = ForwardedClient.missing()
            view = cls(decision, forward_headers(client, generation.forward), None, client)
            view.connection_fields = view._connection_members(generation, "NONE")
            return view
        decision = generation.cache.verify(generation.verifier, chain, at=now)
        certs = [x509.load_der_x509_certificate(der) for der in chain]
        error = None if decision.accepted else decision.reasons[0].code.value
        client = ForwardedClient.from_chain(certs, verified=decision.accepted, error=error)
        leaf = certs[0]
        fields = {
            "subject": leaf.subject.rfc4514_string(),
            "issuer": leaf.issuer.rfc4514_string(),
            "serial": f"{leaf.serial_number:x}",
            "not_before": leaf.not_valid_before_utc.isoformat(),
            "not_after": leaf.not_valid_after_utc.isoformat(),
            "sha256": hashlib.sha256(chain[0]).hexdigest(),
        }
        view = cls(decision, forward_headers(client, generation.forward), fields, client)
        view.chain = chain
        verify = "SUCCESS" if decision.accepted else f"FAILED:{error}"
        view.connection_fields = view._connection_members(generation, verify)
        return view

    def _connection_members(self, generation: Generation, verify: str) -> str:
        """What the connection log says about this chain, encoded once for every handshake."""
        decision = self.decision
        return json_members(
            {
                "outcome": "accepted" if decision.accepted else "rejected",
                "verify": verify,
                "code": None if decision.accepted else decision.reasons[0].code.value,
                "reasons": [reason.as_dict() for reason in decision.reasons],
                "identity": decision.identity.as_dict() if decision.identity else None,
                "leaf": self.leaf_fields,
                "mode": generation.mode.value,
                "generation": generation.number,
            }
        )


class ClientConnection(asyncio.Protocol):
    """One client connection; slotted, because 10,000 idle ones must fit in 300 MB (issue 6)."""

    __slots__ = (
        "_drained",
        "_due",
        "_eof",
        "_events",
        "_failure",
        "_fast",
        "_head_raw",
        "_head_started",
        "_headers",
        "_idle_since",
        "_in_head",
        "_old_at",
        "_parse_error",
        "_parser",
        "_paused",
        "_peer_json",
        "_reading",
        "_ssl",
        "_task",
        "_url",
        "_view",
        "_waiter",
        "_write_paused",
        "_xff",
        "asgi_tls",
        "client_address",
        "gateway",
        "generation",
        "incoming",
        "life",
        "outgoing",
        "server_address",
        "tls",
        "transport",
    )

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.generation = gateway.generation
        self.life = Lifecycle()
        self.transport: asyncio.Transport | None = None
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.tls = self.generation.context.wrap_bio(self.incoming, self.outgoing, server_side=True)
        # The C object under the ``SSLObject``: its read/write/pending are what the
        # SSLObject methods call, one Python frame each, several times per request.
        self._ssl = self.tls._sslobj  # type: ignore[attr-defined]
        self._waiter: asyncio.Future[None] | None = None  # reading: more bytes, or EOF
        self._eof = False
        self._paused = False
        self._write_paused = False  # the transport's buffer is full
        self._drained: asyncio.Future[None] | None = None  # _send waits here while paused
        self._events: list[tuple[str, Any]] = []
        self._task: asyncio.Task[None] | None = None  # None while parked (see ``_serve``)
        self._idle_since = 0.0  # when the wait for the next request head began
        # time.monotonic() when the connection is too old to be kept alive (max_connection_age),
        # and when its next request must be checked again (that, or its decision going stale).
        self._old_at = self._due = 0.0
        self._view: ClientView | None = None
        self._fast: _FastExchange | None = None  # a request relayed by callbacks, in flight
        self._failure: ClientRequestError | None = None  # the fast path's, for the task
        self._xff = b""  # the fast path's X-Forwarded-* fields up to the request id, once made
        self._peer_json = ""  # the access log's "peer", once made
        self.client_address: tuple[str, int] | None = None  # ASGI scope "client"
        self.server_address: tuple[str, int] | None = None  # ASGI scope "server"
        self.asgi_tls: dict[str, Any] | None = None  # the TLS extension, once per connection
        # request parsing state
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_raw = 0  # bytes read in earlier reads of an unfinished head
        self._reading = 0  # bytes in the read being parsed
        self._in_head = False
        self._head_started = 0.0
        self._parse_error: ClientRequestError | None = None
        self._parser: httptools.HttpRequestParser | None = None

    # --- protocol: bytes in and out ------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        if peer and (type(peer) is not tuple or len(peer) != 2):  # IPv6 has 4; ASGI wants 2
            peer = (str(peer[0]), int(peer[1]))
        self.client_address = peer or None
        self._old_at = time.monotonic() + self.gateway.limits.max_connection_age
        self.server_address = self.gateway.local_address(transport.get_extra_info("sockname"))
        self.gateway.connections.add(self)
        self.gateway.metrics.open_connections += 1
        self._task = self._loop.create_task(self.run())

    def data_received(self, data: bytes) -> None:
        self.incoming.write(data)
        if self.incoming.pending > _HIGH_WATER and not self._paused and self.transport:
            self._paused = True
            self.transport.pause_reading()
        if self._task is None and self._fast is None and self.transport is not None:
            self._fast_start()  # parked: the next request may need no task at all
        else:
            self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._notify()
        return True  # keep the transport: the coroutine decides when to close

    @property
    def _loop(self) -> asyncio.AbstractEventLoop:
        loop = self.gateway.loop
        return loop if loop is not None else asyncio.get_running_loop()

    @property
    def peer(self) -> str:
        """``ip:port`` for the logs (derived, not stored: one string less per connection)."""
        return _peer(self.client_address)

    @property
    def _client_ip(self) -> str:
        return self.client_address[0] if self.client_address else "?"

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._write_paused = False
        self._resume_send()
        self._notify()
        if self in self.gateway.connections:
            self.gateway.connections.discard(self)
            self.gateway.metrics.open_connections -= 1

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._resume_send()

    def _resume_send(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _notify(self) -> None:
        """News for the connection: wake its task, or give a parked connection one again."""
        if self._task is None and self.transport is not None:
            self.resume()
        else:
            self._wake()

    def resume(self) -> None:
        """A task for a parked connection (bytes, EOF, drain, or its idle deadline passed).

        ``_idle_since`` is kept, so the idle deadline stays the one fixed when the wait
        began: bytes that never complete a request do not extend it (slowloris). While
        the fast path relays a request, it decides what comes next when it is done.
        """
        if self._fast is not None:
            return
        self.gateway.unpark(self)
        self._task = self._loop.create_task(self.run(resumed=True))

    def idle_expired(self, now: float) -> bool:
        """Whether a parked connection's deadline has passed (the gateway's sweep).

        Idle, that is ``idle_timeout`` since the wait began; relaying a request without
        a task, ``read_timeout`` since the upstream last sent something (or was asked).
        """
        relay = self._fast
        if relay is not None:
            return now >= relay.last + self.gateway.read_timeout
        return now >= self._idle_since + self.gateway.limits.idle_timeout

    def expire(self) -> None:
        """The sweep found the deadline passed: the task times the connection out."""
        relay = self._fast
        if relay is not None:
            self._fast_handover(relay)  # with no time left: 504, as the task would answer
        else:
            self.resume()

    def _parkable(self, *, fresh: bool) -> bool:
        """Idle with nothing buffered anywhere: the task can end until the next byte.

        ``fresh``: the idle clock started just now, so its deadline cannot have passed.
        """
        transport = self.transport
        return (
            not self._events
            and not self._in_head
            and not self._eof
            and not self.gateway.draining
            and transport is not None
            and not transport.is_closing()
            and not self.incoming.pending
            and not self._ssl.pending()
            and (fresh or not self.idle_expired(time.monotonic()))
        )

    def _park_now(self) -> bool:
        """Park (give up the task) if nothing is buffered anywhere; whether it did."""
        fresh = not self._idle_since
        if fresh:
            self._idle_since = time.monotonic()
        if not self._parkable(fresh=fresh):
            return False
        if self.outgoing.pending:
            self._flush()
        self._task = None
        self.gateway.park(self)
        return True

    async def _wait(self, timeout: float) -> None:
        """Until more bytes, EOF or a wake-up; ``TimeoutError`` after ``timeout`` seconds."""
        if self._eof:
            raise _Closed
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        if timeout <= 0:
            raise TimeoutError
        # A timer cancelled on progress, not asyncio.wait_for: this runs once per read
        # and wait_for's extra callbacks and cancellation dance were ~5% of a request.
        loop = self._loop
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(timeout, _expire, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def _flush(self) -> None:
        data = self.outgoing.read()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    async def _send(self, data: bytes) -> None:
        if self._write(data):
            await self._drain()

    def _write(self, data: bytes) -> bool:
        """Encrypt and hand ``data`` to the transport; whether the caller must ``_drain``.

        Split from ``_send`` so that a response written while the client keeps up needs
        no coroutine of its own (the in-process app's ``send`` is one already).
        """
        if self._eof and (self.transport is None or self.transport.is_closing()):
            raise _Closed
        self._ssl.write(data)
        self._flush()
        return self._write_paused

    async def _drain(self) -> None:
        """Backpressure: the client reads too slowly. A future made only now (not an Event
        per connection) until the transport drains, or give up after idle_timeout."""
        loop = asyncio.get_running_loop()
        drained = self._drained = loop.create_future()
        timer = loop.call_later(self.gateway.limits.idle_timeout, _expire, drained)
        try:
            await drained
        except TimeoutError:
            raise _Closed from None
        finally:
            timer.cancel()
            self._drained = None

    async def _read(self, timeout: float) -> bytes:
        """Decrypted bytes within ``timeout`` seconds; ``b""`` at EOF or close_notify.

        The deadline is fixed on entry: raw bytes that never complete a TLS record (a
        slowloris below the TLS layer) do not restart it.
        """
        end = time.monotonic() + timeout
        while True:
            # With nothing to decrypt, SSL_read would only raise SSLWantReadError.
            if self.incoming.pending or self._ssl.pending():
                try:
                    data = self._ssl.read(_READ_SIZE)
                except ssl.SSLWantReadError:
                    pass  # a partial record: wait for the rest
                except ssl.SSLError:  # close_notify, EOF, or a broken record
                    return b""
                else:
                    self._flush()  # TLS 1.3 may answer a KeyUpdate
                    return data
            self._flush()
            try:
                await self._wait(end - time.monotonic())
            except _Closed:
                return b""

    # --- the lifecycle ---------------------------------------------------------------

    async def run(
        self,
        *,
        resumed: bool = False,
        handover: _FastExchange | None = None,
        head: RequestHead | None = None,
    ) -> None:
        """The connection's task: handshake and requests, or (``resumed``) requests only.

        ``handover``: a response the fast path started and gives up on (1xx, large,
        slow, broken); the task streams the rest and then serves the next requests.
        ``head``: a request the fast path parsed for the in-process app.
        """
        parked = False
        try:
            if head is not None:
                self.life.handle(_REQUEST_HEAD)
                await self._request(head)
                if self.life.state is _IDLE and self._park_now():
                    parked = True
                    return
            if handover is not None:
                response = self._response(
                    handover.head,
                    handover.conn,
                    handover.request_id,
                    handover.started,
                    first_timeout=handover.timeout,
                )
                await self._exchange(handover.head, handover.conn, handover.request_id,
                                     handover.started, response)  # fmt: skip
            parked = await (self._serve() if resumed else self._run())
        except (_Closed, ConnectionError):
            self.life.handle(Event.EOF)
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # mtlskit's bug: log it, drop this connection only
            self.gateway.connection_log.write(
                {"event": "error", "peer": self.peer, "error": repr(exc)}
            )
        finally:
            if not parked:
                self._close()

    async def _run(self) -> bool:
        started = time.monotonic()
        if not await self._handshake(started):
            return False
        handshake_ms = (time.monotonic() - started) * 1000
        view = self._verify(handshake_ms)
        self._view = view
        self._due = min(self._old_at, view.stale_at)
        refused = not view.decision.accepted and self.generation.mode is (
            ClientAuthMode.REJECT_INVALID
        )
        self.life.handle(Event.REFUSED if refused else Event.VERIFIED)
        return await self._serve()

    async def _serve(self) -> bool:
        """Requests until the connection closes (``False``) or parks idle (``True``).

        Parked, a connection has no task, coroutine frames, future or timer — ~2.5 KiB
        less per idle connection (issue 6: 10,000 idle ones in 300 MB). The next byte,
        EOF or drain gives it a task again (``resume``); the gateway's one shared sweep
        resumes it when its idle deadline passes, and ``_next_head`` then times it out.
        """
        view = self._view
        assert view is not None
        while not self.life.closed:
            if self._park_now():  # also starts the idle clock
                return True
            deadline = self._idle_since + self.gateway.limits.idle_timeout
            head = await self._next_head(deadline - time.monotonic())
            self._idle_since = 0.0
            if head is None:
                return False
            if self.life.state is State.REFUSING:
                self.life.handle(Event.REQUEST_HEAD)
                await self._refuse(head, view.decision)
                return False
            self.life.handle(_REQUEST_HEAD)
            await self._request(head)
        return False

    async def _handshake(self, started: float) -> bool:
        gateway = self.gateway
        deadline = started + gateway.limits.handshake_timeout
        while True:
            try:
                done = handshake_step(self.tls, self._flush)
            except ssl.SSLError as exc:  # its alert is already sent
                failure = classify_handshake_error(exc)
                self.life.handle(Event.HANDSHAKE_FAILED)
                gateway.metrics.handshake("failed", failure.label)
                self._log_failure("failed", failure.label, failure.detail, failure.verify_code)
                return False
            except OSError:
                self.life.handle(Event.EOF)
                return False
            if done:
                self.life.handle(Event.HANDSHAKE_OK)
                return True
            try:
                await self._wait(deadline - time.monotonic())
            except TimeoutError:
                self.life.handle(Event.TIMEOUT)
                gateway.metrics.handshake("timeout")
                self._log_failure("timeout", None, "no complete handshake in time")
                return False
            except _Closed:
                self.life.handle(Event.EOF)
                gateway.metrics.handshake("eof")
                return False

    def _log_failure(
        self, outcome: str, code: str | None, detail: str, verify_code: int | None = None
    ) -> None:
        self.gateway.connection_log.write(
            {
                "event": "connection",
                "peer": self.peer,
                "outcome": f"handshake_{outcome}",
                "verify": f"FAILED:{code}" if code else "NONE",
                "code": code,
                "detail": detail,
                "openssl_verify_code": verify_code,
                "generation": self.generation.number,
            }
        )

    def _verify(self, handshake_ms: float) -> ClientView:
        """mtlskit's gate, always; resumed sessions find their chain by leaf fingerprint."""
        gateway = self.gateway
        chain, resumed = peer_chain(self.tls)
        if chain:
            leaf_key = hashlib.sha256(chain[0]).digest()
            if len(chain) == 1 and resumed:
                chain = gateway.chains.get(leaf_key, chain)
            else:
                gateway.remember_chain(leaf_key, chain)
        view = gateway.view(self.generation, chain)
        decision = view.decision
        code = "" if decision.accepted else decision.reasons[0].code.value
        gateway.metrics.handshake("ok" if decision.accepted else "rejected", code)
        log = gateway.connection_log
        if log.enabled:
            cipher = self.tls.cipher()
            version = self.tls.version()
            log.write_fields(
                f'"event":"connection","peer":{_json(self.peer)},"pid":{gateway.pid},'
                f'"tls_version":{_json(version) if version else "null"},'
                f'"cipher":{_json(cipher[0]) if cipher else "null"},'
                f'"handshake_ms":{round(handshake_ms, 3)!r},'
                f'"resumed":{"true" if resumed else "false"},{view.connection_fields}'
            )
        return view

    # --- HTTP parsing callbacks (httptools) --------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers.clear()  # normally empty already (``on_headers_complete``)
        self._in_head = True
        self._head_started = 0.0  # set by _parse if the head is not complete in one read

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        # The limits are checked once per head and once per read (``_check_head``): a
        # read holds at most _READ_SIZE bytes, so the fields between checks are bounded.
        self._headers.append((name, value))

    def _head_size(self) -> int:
        """What ``max_header_bytes`` limits: the target and each field, 4 bytes over its
        name and value (": " and CRLF)."""
        return len(self._url) + sum(len(name) + len(value) + 4 for name, value in self._headers)

    def _check_head(self) -> None:
        """The header limits, for the fields parsed so far; ``ClientRequestError`` (431)."""
        limits = self.gateway.limits
        if len(self._headers) > limits.max_headers:
            self._parse_error = ClientRequestError("too many header fields", status_hint=431)
            raise self._parse_error
        if self._head_size() > limits.max_header_bytes:
            self._parse_error = ClientRequestError("header section too large", status_hint=431)
            raise self._parse_error

    def on_headers_complete(self) -> None:
        parser = self._parser
        assert parser is not None
        limits = self.gateway.limits
        fields = len(self._headers)
        # The head's raw bytes, plus one per field (a bare "a:b" is counted as 6), bound
        # ``_head_size``: it is summed only for a head that might be over the limit.
        if fields > limits.max_headers or (
            self._head_raw + self._reading + fields > limits.max_header_bytes
            and self._head_size() > limits.max_header_bytes
        ):
            self._check_head()  # raises, with the limit's message
        self._in_head = False
        method = parser.get_method()
        head = RequestHead(
            _METHOD_NAMES.get(method) or method.decode("ascii", "replace"),
            self._url,
            parser.get_http_version(),
            tuple(self._headers),
            parser.should_keep_alive(),
        )
        # The head owns them now: an idle keep-alive connection keeps no copy (issue 6).
        self._url = b""
        self._headers.clear()
        self._events.append(("head", head))

    def on_body(self, body: bytes) -> None:
        self._events.append(("body", body))

    def on_message_complete(self) -> None:
        self._events.append(("end", None))

    async def _next_event(self, timeout: float) -> tuple[str, Any]:
        """The next parser event, reading and parsing more bytes as needed.

        A request head must be complete within ``idle_timeout`` of its first byte (as
        nginx's ``client_header_timeout``): a client trickling one byte at a time, each
        inside the idle timeout, would otherwise hold its slot forever (slowloris).
        """
        while not self._events:
            if self._failure is not None:  # the fast path's parse error, raised here
                failure, self._failure = self._failure, None
                raise failure
            wait = timeout
            if self._in_head:
                wait = self._head_started + self.gateway.limits.idle_timeout - time.monotonic()
                if wait <= 0:
                    raise TimeoutError
                wait = min(wait, timeout)
            data = await self._read(wait)
            if not data:
                return ("eof", None)
            self._parse(data)
        return self._events.pop(0)

    def _parse(self, data: bytes) -> None:
        """Feed decrypted bytes to the request parser; ``ClientRequestError`` if bad."""
        if self._parser is None:
            # Made at the first request byte, not at the handshake: the parser and its
            # nine bound callbacks are ~0.9 KiB that an idle connection does not need.
            self._parser = httptools.HttpRequestParser(self)
        self._reading = len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            raise ClientRequestError("protocol upgrades are not relayed", status_hint=501) from None
        except httptools.HttpParserError:
            error = self._parse_error or ClientRequestError("malformed HTTP request")
            raise error from None
        if not self._in_head:
            self._head_raw = 0
            return
        if not self._head_started:  # the head's first byte came in this read
            self._head_started = time.monotonic()
        self._check_head()
        # An unfinished header line is invisible to on_header: count raw bytes too.
        self._head_raw += len(data)
        if self._head_raw > 2 * self.gateway.limits.max_header_bytes:
            raise ClientRequestError("header section too large", status_hint=431)

    async def _next_head(self, timeout: float) -> RequestHead | None:
        """The next request head within ``timeout`` seconds; ``None`` when closing."""
        try:
            if self.gateway.draining and not self._events:
                self.life.handle(Event.SHUTDOWN)
                return None
            kind, value = await self._next_event(timeout)
        except TimeoutError:
            self.life.handle(Event.TIMEOUT)
            if self._in_head:
                await self._error(408, self._request_id(), code="request_timeout")
            return None
        except ClientRequestError as exc:
            self.life.handle(Event.BAD_REQUEST)
            await self._error(exc.status_hint, self._request_id(), code=str(exc))
            return None
        if kind == "eof":
            self.life.handle(Event.EOF)
            return None
        if kind != "head":  # body or end before a head: cannot happen with llhttp
            raise AssertionError(f"parser event {kind} outside a request")
        return value  # type: ignore[no-any-return]

    @staticmethod
    def _request_id() -> str:
        return _request_ids.take()

    async def _error(
        self, status: int, request_id: str, *, code: str, head: RequestHead | None = None
    ) -> None:
        """A generic response (the reason goes to the access log only), then close."""
        self.gateway.metrics.request(status)
        self._access(head, status, request_id, code=code, started=time.monotonic())
        with contextlib.suppress(_Closed, ConnectionError):
            await self._send(error_response(status, request_id=request_id, close=True))

    def _access(
        self,
        head: RequestHead | None,
        status: int,
        request_id: str,
        *,
        started: float,
        code: str | None = None,
        upstream: str | None = None,
        sent: int = 0,
    ) -> None:
        log = self.gateway.access_log
        if not log.enabled:
            return
        view = self._view
        client = view.log_fields if view is not None else _NO_CLIENT
        # Strings and numbers only: a batch holds up to 0.1 s of records, and a request
        # head kept that long would keep all its fields' bytes with it.
        request = _request_members(head) if head is not None else _NO_REQUEST
        log.write_later(
            _access_members,
            (request, status, request_id, self._peer_json or self._log_peer(), client, code,
             upstream, sent, time.monotonic() - started),
        )  # fmt: skip

    def _log_peer(self) -> str:
        self._peer_json = _json(self.peer)
        return self._peer_json

    async def _refuse(self, head: RequestHead, decision: Decision) -> None:
        request_id = self._request_id()
        await self._error(403, request_id, code=decision.reasons[0].code.value, head=head)

    # --- one request -----------------------------------------------------------------

    async def _request(self, head: RequestHead) -> None:
        gateway = self.gateway
        generation = self.generation
        request_id = self._request_id()
        started = time.monotonic()
        try:
            framing, length = request_framing(head, max_body_bytes=gateway.limits.max_body_bytes)
            if needs_normalizing(head.target):  # authorized and forwarded normalised
                head.target = normalized_target(head.target)
        except ClientRequestError as exc:
            self.life.handle(Event.BAD_REQUEST)
            await self._error(exc.status_hint, request_id, code=str(exc), head=head)
            return
        view = self._view
        assert view is not None
        if generation is not gateway.generation or started >= self._due:
            view = self._recheck(head, started)
            generation = self.generation
            if not view.decision.accepted and generation.mode is ClientAuthMode.REJECT_INVALID:
                self.life.handle(Event.CLOSE)  # no longer trusted: 403, as at the handshake
                await self._error(
                    403, request_id, code=view.decision.reasons[0].code.value, head=head
                )
                return
        decision = view.decision
        if generation.policy is not None and decision.accepted:
            decision = generation.policy.authorize(decision, method=head.method, path=head.path)
            if not decision.accepted:
                self.life.handle(Event.DENIED)
                code = decision.reasons[-1].code.value
                if framing is FRAMING_NONE and head.keep_alive and not gateway.draining:
                    await self._skip_body()
                    gateway.metrics.request(403)
                    self._access(head, 403, request_id, code=code, started=started)
                    await self._send(error_response(403, request_id=request_id, close=False))
                else:
                    self.life.state = State.CLOSED  # a body we will not read: close
                    await self._error(403, request_id, code=code, head=head)
                return
        self.life.handle(_FORWARD)
        asgi = gateway.asgi
        if asgi is not None:  # in-process: the app gets this request's authorized decision
            try:
                keep_alive, status, sent = await asgi.handle(
                    self, head, framing, request_id, decision
                )
            except ClientRequestError as exc:
                self.life.handle(Event.BAD_REQUEST)
                await self._error(exc.status_hint, request_id, code=str(exc), head=head)
                return
            self._finish(head, status, request_id, started, asgi.name, sent, keep_alive)
            return
        try:
            conn = await gateway.pool.acquire()
        except UpstreamError as exc:
            self.life.handle(Event.CLOSE)
            await self._error(exc.status_hint, request_id, code=str(exc), head=head)
            return
        relay = self._relay(head, framing, length, conn, request_id, view)
        await self._exchange(head, conn, request_id, started, relay)

    def _recheck(self, head: RequestHead, now: float) -> ClientView:
        """The connection's view under the gateway's current generation, decided again for a
        reload or a stale decision (a revoked certificate's open connection is refused on its
        next request, not 70 s later); an old connection's request is its last."""
        gateway = self.gateway
        view = self._view
        assert view is not None
        if self.generation is not gateway.generation or now >= view.stale_at:
            self.generation = gateway.generation
            view = self._view = gateway.view(self.generation, view.chain)
        if now >= self._old_at:
            head.keep_alive = False  # answered with Connection: close
        self._due = min(self._old_at, view.stale_at)
        return view

    async def _exchange(
        self,
        head: RequestHead,
        conn: UpstreamConnection,
        request_id: str,
        started: float,
        relay: Coroutine[Any, Any, tuple[bool, int, int]],
    ) -> None:
        """Await one relay and account for it: errors answered, logged, counted."""
        try:
            keep_alive, status, sent = await relay
        except UpstreamError as exc:
            conn.close()
            self.life.handle(Event.CLOSE)
            await self._error(exc.status_hint, request_id, code=str(exc), head=head)
            return
        except ClientRequestError as exc:
            conn.close()
            self.life.handle(Event.BAD_REQUEST)
            await self._error(exc.status_hint, request_id, code=str(exc), head=head)
            return
        except BaseException:
            conn.close()
            raise
        self._finish(head, status, request_id, started, conn.upstream.url, sent, keep_alive)

    def _finish(  # noqa: PLR0917 - one response's facts, passed once
        self,
        head: RequestHead,
        status: int,
        request_id: str,
        started: float,
        upstream: str,
        sent: int,
        keep_alive: bool,
    ) -> None:
        gateway = self.gateway
        gateway.metrics.request(status)
        if gateway.access_log.enabled:
            self._access(head, status, request_id, started=started, upstream=upstream, sent=sent)
        self.life.handle(_RESPONSE_DONE if keep_alive else _CLOSE)

    async def _skip_body(self) -> None:
        while True:
            kind, _ = await self._next_event(self.gateway.limits.idle_timeout)
            if kind in ("end", "eof"):
                return

    async def _relay(  # noqa: PLR0917 - one request's parts, passed once
        self,
        head: RequestHead,
        framing: Framing,
        length: int,
        conn: UpstreamConnection,
        request_id: str,
        view: ClientView,
    ) -> tuple[bool, int, int]:
        """Stream the request up and the response down; (client keep-alive, status, bytes)."""
        gateway = self.gateway
        limits = gateway.limits
        headers = self.generation.sanitize(head.headers)
        wire = upstream_request_head(
            head,
            framing=framing,
            length=length,
            client_ip=self._client_ip,
            request_id=request_id,
            headers=headers,
            identity=view.headers,
            upstream_host=conn.upstream.authority,
        )
        if framing is not FRAMING_NONE and any(
            value.strip().lower() == b"100-continue" for value in head.values(b"expect")
        ):
            await self._send(_CONTINUE)
        writer = conn.writer
        sent_at = time.monotonic()
        try:
            writer.write(wire)
            received = 0
            while True:
                kind, value = await self._next_event(limits.idle_timeout)
                if kind == "eof":
                    raise _Closed
                if kind == "end":
                    if framing is FRAMING_CHUNKED:
                        writer.write(chunk(b""))
                    break
                received += len(value)
                if received > limits.max_body_bytes:
                    raise ClientRequestError("body larger than the limit", status_hint=413)
                writer.write(chunk(value) if framing is FRAMING_CHUNKED else value)
                await writer.drain()  # backpressure: the upstream sets the pace
            if writer.transport.get_write_buffer_size():  # else drain() is pure overhead
                await writer.drain()
        except TimeoutError:
            raise ClientRequestError("request body stalled", status_hint=408) from None
        except (ConnectionError, OSError) as exc:
            raise UpstreamError(f"write to {conn.upstream.url} failed: {exc}") from None
        return await self._response(head, conn, request_id, sent_at)

    async def _response(
        self,
        head: RequestHead,
        conn: UpstreamConnection,
        request_id: str,
        sent_at: float,
        *,
        first_timeout: float | None = None,
    ) -> tuple[bool, int, int]:
        gateway = self.gateway
        collector = _ResponseCollector()
        parser = httptools.HttpResponseParser(collector)
        collector.parser = parser
        read_timeout = gateway.read_timeout
        timeout = read_timeout if first_timeout is None else first_timeout
        started = False
        framing = wire_framing = FRAMING_NONE  # set by the response head
        client_keep_alive = False
        sent = 0
        status = 0
        pending: list[bytes] = []  # response bytes not yet written to the client
        while True:
            if not collector.events:
                if pending:  # everything parsed so far goes out in one TLS record
                    await self._send(b"".join(pending))
                    pending.clear()
                try:
                    async with asyncio.timeout(timeout):  # no extra task, as wait_for makes
                        data = await conn.reader.read(_READ_SIZE)
                    timeout = read_timeout
                except TimeoutError:
                    if started:
                        raise _Closed from None  # head already sent: nothing to do but abort
                    raise UpstreamError("upstream read timed out", status_hint=504) from None
                except (ConnectionError, OSError) as exc:
                    if started:
                        raise _Closed from None
                    raise UpstreamError(f"upstream connection failed: {exc}") from None
                if not data:
                    if started and framing is FRAMING_CHUNKED and collector.close_delimited:
                        collector.events.append(("end", None))
                        conn.close()
                        collector.reusable = False
                    elif started:
                        raise _Closed  # truncated response: the client must see a broken one
                    else:
                        raise UpstreamError("upstream closed without a response")
                else:
                    try:
                        parser.feed_data(data)
                    except httptools.HttpParserError as exc:
                        if started:
                            raise _Closed from None
                        raise UpstreamError(f"malformed upstream response: {exc}") from None
                continue
            kind, value = collector.events.pop(0)
            if kind == "head":
                status, _, _, _, upstream_keep_alive = value
                client_head, framing, wire_framing, client_keep_alive = self._client_head(
                    head, value, request_id, sent_at
                )
                no_body = framing is FRAMING_NONE
                if framing is FRAMING_CHUNKED:
                    collector.close_delimited = not collector.chunked
                collector.reusable = upstream_keep_alive and not collector.close_delimited
                pending.append(client_head)
                started = True
                if no_body:
                    conn_reusable = head.method != "HEAD" and collector.reusable
                    gateway.pool.release(conn, reusable=conn_reusable and not collector.events)
                    await self._send(b"".join(pending))
                    return client_keep_alive, status, sent
            elif kind == "body":
                sent += len(value)
                pending.append(chunk(value) if wire_framing is FRAMING_CHUNKED else value)
            elif kind == "end":
                if wire_framing is FRAMING_CHUNKED:
                    pending.append(chunk(b""))
                # Bytes after the response: the upstream is out of step, do not reuse it.
                gateway.pool.release(conn, reusable=collector.reusable and not collector.trailing)
                await self._send(b"".join(pending))
                return client_keep_alive, status, sent

    # --- the keep-alive fast path ------------------------------------------------------

    def _fast_start(self) -> None:
        """Relay the next request in callbacks alone, or give the connection its task.

        A parked keep-alive connection whose new bytes hold exactly one complete request
        without a body, authorized, with a pooled upstream connection at hand, needs no
        coroutine: the task, futures and timeout contexts were most of a relayed
        request's cost (issue 6). Anything else — a partial head, a body, a refusal, a
        parse error, a pipelined second request, no pooled connection — goes to the
        task, which finds the parser's events (or its error) where this left them; the
        checks and answers live there, once.
        """
        gateway = self.gateway
        if self.life.state is not _IDLE or gateway.draining or self._write_paused or self._eof:
            self.resume()
            return
        tls = self._ssl
        try:
            while self.incoming.pending or tls.pending():
                try:
                    data = tls.read(_READ_SIZE)
                except ssl.SSLWantReadError:
                    break
                if not data:
                    self.resume()
                    return
                self._parse(data)
        except ssl.SSLError:  # close_notify, EOF, garbage: the task's read meets it again
            self._flush()
            self.resume()
            return
        except ClientRequestError as exc:
            self._failure = exc
            self.resume()
            return
        if self.outgoing.pending:  # TLS 1.3 may answer a KeyUpdate
            self._flush()
        events = self._events
        if not events:
            if self._in_head:
                self.resume()  # a head in pieces: the task keeps its deadline
            return  # a partial TLS record: still parked, the sweep keeps the idle deadline
        if gateway.asgi is not None:
            # An in-process app is a coroutine anyway: one task for this request, given its
            # head directly (its body, if any, is read by the app through the events).
            kind, head = events.pop(0)
            if kind != "head":  # cannot happen with llhttp: a body needs a head first
                raise AssertionError(f"parser event {kind} outside a request")
            self._idle_since = 0.0
            gateway.unpark(self)
            self._task = self._loop.create_task(self.run(resumed=True, head=head))
            return
        if len(events) != 2 or events[1][0] != "end":
            self.resume()
            return
        head: RequestHead = events[0][1]
        # HEAD: its upstream connection is not reused; a path to normalise (or refuse): the
        # task's cases.
        generation = self.generation
        if (
            head.method == "HEAD"
            or needs_normalizing(head.target)
            or generation is not gateway.generation  # a reload: decide again
            or time.monotonic() >= self._due  # too old, or the decision went stale
        ):
            self.resume()
            return
        # None for a body, a second Host, Connection naming fields: the task's cases.
        lines = fast_upstream_head(head, generation.header_kinds, generation.classify_header)
        view = self._view
        assert view is not None
        policy = generation.policy
        if lines is None or (
            policy is not None
            and view.decision.accepted
            and not policy.authorize(view.decision, method=head.method, path=head.path).accepted
        ):
            self.resume()
            return
        conn = gateway.pool.take_idle()
        if conn is None:
            self.resume()
            return
        events.clear()
        self._idle_since = 0.0
        self.life.state = _IDLE_FORWARDING
        request_id = _request_ids.take()
        xff = self._xff or self._forwarding()
        # upstream_request_head's bytes, exactly (tests compare the two)
        wire = b"\r\n".join(lines) + xff + request_id.encode() + view.upstream_tail
        relay = conn.parsing
        if relay is None:
            relay = conn.parsing = _FastExchange(conn)
        relay.begin(self, head, request_id)
        self._fast = relay
        conn.protocol.sink = relay  # no timer: the gateway's idle sweep enforces read_timeout
        # Held to the end of the loop's pass (a failed write is the relay's EOF: 502).
        gateway.writes.later(conn.send, wire)

    def _forwarding(self) -> bytes:
        self._xff = forwarding_fields(self._client_ip)
        return self._xff

    def _client_head(
        self, head: RequestHead, response: tuple[Any, ...], request_id: str, sent_at: float
    ) -> tuple[bytes, Framing, Framing, bool]:
        """An upstream response head as the streaming code sends it, with the upstream's
        latency counted: (bytes, upstream framing, client framing, client keep-alive)."""
        status, reason, headers, length, _ = response
        framing, wire_framing, keep_alive = self._framing(head, status, length, sent_at)
        client_head = response_head(
            status,
            reason,
            headers,
            framing=wire_framing,
            length=length or 0,
            keep_alive=keep_alive,
            request_id=request_id,
        )
        return client_head, framing, wire_framing, keep_alive

    def _framing(
        self, head: RequestHead, status: int, length: int | None, sent_at: float
    ) -> tuple[Framing, Framing, bool]:
        """(upstream framing, client framing, client keep-alive) of a response to ``head``,
        with the upstream's latency counted: both paths, once per response head."""
        gateway = self.gateway
        gateway.metrics.upstream_latency(time.monotonic() - sent_at)
        framing, wire_framing = relay_framing(
            method=head.method, status=status, length=length, version=head.version
        )
        # Close-delimited to an HTTP/1.0 client (wire framing differs): the close ends it.
        keep_alive = head.keep_alive and not gateway.draining and wire_framing is framing
        return framing, wire_framing, keep_alive

    def _fast_finish(self, relay: _FastExchange) -> None:
        """A whole response arrived: send it in one TLS record and park again."""
        conn = relay.conn
        conn.protocol.sink = None
        self._fast = None
        gateway = self.gateway
        head = relay.head
        status = relay.status
        request_id = relay.request_id
        started = relay.started
        # (Close-delimited responses end only at EOF: they were handed over.)
        framing, wire_framing, keep_alive = self._framing(head, status, relay.length, started)
        parts = [relay.client_head(framing=wire_framing, keep_alive=keep_alive)]
        sent = 0
        if wire_framing is FRAMING_CHUNKED:
            for body in relay.body:
                sent += len(body)
                parts.append(chunk(body))
            parts.append(chunk(b""))
        elif framing is not FRAMING_NONE:  # as is, or up to the close to an HTTP/1.0 client
            for body in relay.body:
                sent += len(body)
                parts.append(body)
        # Bytes after the response (an upstream speaking out of turn): do not reuse it.
        gateway.pool.release(conn, reusable=relay.keep_alive and not relay.trailing)
        transport = self.transport
        try:
            if transport is None or transport.is_closing():
                raise _Closed
            self._ssl.write(b"".join(parts))  # the record waits in the BIO: ``_flush`` sends it
        except (_Closed, ssl.SSLError, OSError):
            self.life.handle(Event.EOF)
            gateway.unpark(self)
            self._close()
            return
        gateway.writes.later(_FLUSH, self)  # a full buffer then: the next request, the task's
        self._finish(head, status, request_id, started, conn.upstream.url, sent, keep_alive)
        if self.life.state is _CLOSED_STATE:
            gateway.unpark(self)
            self._close()
            return
        self._idle_since = time.monotonic()
        if self._eof or self.incoming.pending or self._ssl.pending():
            self._fast_start()

    def _fast_handover(self, relay: _FastExchange) -> None:
        """Give a started response to the task: it re-reads the bytes from the start.

        Nothing has reached the client yet, so the streaming code (``_response``) sees
        the upstream's bytes as if it had read them itself, with what is left of the
        read timeout.
        """
        conn = relay.conn
        conn.protocol.sink = None
        conn.parsing = None  # stopped mid-response: the streaming code parses from here
        relay.timeout = max(0.0, relay.last + self.gateway.read_timeout - time.monotonic())
        reader = conn.reader
        for piece in relay.raw:
            reader.feed_data(piece)
        if relay.ended:
            reader.feed_eof()
        self._fast = None
        self.gateway.unpark(self)
        self._task = self._loop.create_task(self.run(resumed=True, handover=relay))

    # --- closing ---------------------------------------------------------------------

    def _close(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self.life.state is not State.HANDSHAKE:
            with contextlib.suppress(ssl.SSLError, OSError, ValueError):
                self.tls.unwrap()
            self._flush()
        transport.close()

    def shutdown(self) -> None:
        """Drain: an idle connection closes now, a busy one after its response."""
        if self._task is None and self.transport is not None:
            self.resume()  # parked: its new task sees the drain and closes
            return
        self._wake()
        if self.life.state is _IDLE and not self._events and self._task is not None:
            self._task.cancel()


_FLUSH: Final = ClientConnection._flush  # a connection's held write (``WriteBatch``)


class _FastExchange:
    """One upstream connection's keep-alive fast path: a request relayed by callbacks, and
    its response parsed as the bytes come, the client's head fields picked on the way with
    ``response_head``'s rules. Made once per upstream connection (llhttp parses one
    response after another on it), begun again for each request.

    The connection's ``SinkProtocol`` hands its bytes here instead of to a waiting
    coroutine. The raw bytes are kept (a response is at most ``_READ_SIZE`` here), so
    that a handover can replay them to the streaming code (``_response``), which then
    re-parses the response from its start: on a parse error, a large or close-delimited
    response, bytes after it, an interim or switching response (1xx), or a Connection
    field naming other fields (``odd``).
    """

    __slots__ = (
        "body",
        "complete",
        "conn",
        "connection",
        "ended",
        "head",
        "keep_alive",
        "last",
        "length",
        "lines",
        "odd",
        "parser",
        "raw",
        "request_id",
        "size",
        "started",
        "status",
        "timeout",
        "trailing",
    )

    def __init__(self, conn: UpstreamConnection) -> None:
        self.conn = conn
        self.parser = httptools.HttpResponseParser(self)

    def begin(
        self, connection: ClientConnection | None, head: RequestHead, request_id: str
    ) -> None:
        """Ready for ``head``'s response (the parser keeps its place between responses)."""
        self.connection = connection
        self.head = head
        self.request_id = request_id
        self.raw: list[bytes] = []
        self.size = 0
        self.started = self.last = time.monotonic()
        self.ended = False
        self.timeout = 0.0  # what is left of the read timeout at a handover
        self.lines: list[bytes] = [b""]  # [0]: the status line, set when it is sent
        self.body: list[bytes] = []
        self.status = 0
        self.length: int | None = None  # None: chunked, or up to EOF
        self.keep_alive = False
        self.odd = False
        self.complete = False
        self.trailing = False  # bytes after the response: an upstream not to reuse

    def client_head(self, *, framing: Framing, keep_alive: bool) -> bytes:
        """The complete response's head as the client gets it: ``response_head``'s bytes
        for the same response (a test compares the two)."""
        lines = self.lines
        lines[0] = STATUS_LINES[self.status]
        return finish_head(
            lines,
            framing=framing,
            length=self.length or 0,
            keep_alive=keep_alive,
            request_id=self.request_id,
        )

    # --- the upstream's bytes (``ResponseSink``) ---

    def feed(self, data: bytes) -> None:
        self.raw.append(data)
        self.size += len(data)
        self.last = time.monotonic()
        connection = self.connection
        assert connection is not None
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            connection._fast_handover(self)  # the task re-parses and answers 502
            return
        if self.odd or self.trailing or self.size > _READ_SIZE:
            connection._fast_handover(self)  # the streaming code's cases
        elif self.complete:
            connection._fast_finish(self)

    def eof(self) -> None:
        self.ended = True
        assert self.connection is not None
        self.connection._fast_handover(self)

    # --- httptools callbacks ---

    def on_message_begin(self) -> None:
        if self.complete:
            self.trailing = True  # bytes after the response: an upstream out of step

    def on_header(self, name: bytes, value: bytes) -> None:
        kind = RESPONSE_KINDS.get(name)
        if kind is None:
            kind = response_header_kind(name)
        if kind == KIND_KEEP:
            self.lines.append(name + b": " + value)
        elif kind == KIND_LENGTH:
            self.length = int(value) if value.strip().isdigit() else None
        elif kind == KIND_CHUNKED:
            self.length = None
        elif (
            kind == KIND_CONNECTION
            and value != b"keep-alive"
            and not connection_tokens(value) <= NOT_DOWNSTREAM
        ):
            self.odd = True  # it names fields to drop (or close): response_head's case

    def on_headers_complete(self) -> None:
        parser = self.parser
        self.status = status = parser.get_status_code()
        if status < 200 or status not in STATUS_LINES:  # 1xx; a reason phrase to pass on
            self.odd = True
        self.keep_alive = parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete = True


class _ResponseCollector:
    """httptools callbacks for one upstream response, turned into events."""

    def __init__(self) -> None:
        self.parser: httptools.HttpResponseParser | None = None
        self.reset()

    def reset(self) -> None:
        """Ready for the next response on the same connection (the parser is kept)."""
        self.events: list[tuple[str, Any]] = []
        self.headers: list[tuple[bytes, bytes]] = []
        self.reason = b""
        self.chunked = False
        self.length: int | None = None
        self.close_delimited = False
        self.reusable = False
        self.interim = False  # inside a 1xx response, which is not relayed
        self.complete = False
        self.trailing = False  # bytes after the response: an upstream not to reuse

    def on_message_begin(self) -> None:
        if self.complete:
            self.trailing = True

    def on_status(self, reason: bytes) -> None:
        self.reason += reason  # passed on for a status without a name (``STATUS_LINES``)

    def on_header(self, name: bytes, value: bytes) -> None:
        size = len(name)  # the length first: lower() is a call, and most names differ in it
        if size == 14 and name.lower() == b"content-length":
            self.length = int(value) if value.strip().isdigit() else None
        elif size == 17 and name.lower() == b"transfer-encoding":
            self.chunked = b"chunked" in value.lower()
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        assert self.parser is not None
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            # Interim (100 Continue, 103 Early Hints): llhttp parses it as a whole message;
            # the gateway answered 100-continue itself, so it is dropped, end and all.
            self.interim = True
            self.headers = []
            self.reason = b""
            self.chunked = False
            self.length = None
            return
        self.events.append(
            (
                "head",
                (
                    status,
                    self.reason,
                    list(self.headers),
                    None if self.chunked else self.length,
                    self.parser.should_keep_alive(),
                ),
            )
        )

    def on_body(self, body: bytes) -> None:
        self.events.append(("body", body))

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        self.complete = True
        self.events.append(("end", None))
