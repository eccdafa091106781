"""One client connection's lifecycle as a state table (h11's discipline): no IO here.

handshake → verify → (idle ⇄ request ⇄ relay)* → closed, plus the refusing state
of a connection whose certificate passed OpenSSL but failed mtlskit's own gate.
The IO shell reports what happened as an ``Event``; the table says what state
follows, and a transition the table does not list is mtlskit's bug
(``LifecycleError``), never silently tolerated.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from mtlskit.errors import MtlskitError

__all__ = ["TRANSITIONS", "Event", "Lifecycle", "LifecycleError", "State"]


class State(StrEnum):
    HANDSHAKE = "handshake"  # TLS bytes in, alerts out
    VERIFY = "verify"  # handshake done: mtlskit's second gate runs
    REFUSING = "refusing"  # second gate failed in reject mode: next request gets 403, then close
    IDLE = "idle"  # between requests (keep-alive)
    REQUEST = "request"  # a request head arrived: limits, framing, authorization
    RELAY = "relay"  # request and response streaming between client and upstream
    CLOSED = "closed"


class Event(StrEnum):
    HANDSHAKE_OK = "handshake_ok"
    HANDSHAKE_FAILED = "handshake_failed"  # alert sent (bad cert, no cert, bad signature, ...)
    VERIFIED = "verified"  # accepted, or rejected in allow_invalid_or_missing mode
    REFUSED = "refused"  # rejected in reject_invalid mode
    REQUEST_HEAD = "request_head"
    BAD_REQUEST = "bad_request"  # client's fault: 400/413/431, then close
    DENIED = "denied"  # authorization said no: 403, keep-alive continues
    FORWARD = "forward"
    RESPONSE_DONE = "response_done"  # keep-alive: back to idle
    CLOSE = "close"  # response finished with close, or an upstream error answered with close
    TIMEOUT = "timeout"
    EOF = "eof"
    SHUTDOWN = "shutdown"  # drain: idle connections close now


TRANSITIONS: Final[dict[State, dict[Event, State]]] = {
    State.HANDSHAKE: {
        Event.HANDSHAKE_OK: State.VERIFY,
        Event.HANDSHAKE_FAILED: State.CLOSED,
        Event.TIMEOUT: State.CLOSED,
        Event.EOF: State.CLOSED,
        Event.SHUTDOWN: State.CLOSED,
    },
    State.VERIFY: {
        Event.VERIFIED: State.IDLE,
        Event.REFUSED: State.REFUSING,
    },
    State.REFUSING: {
        Event.REQUEST_HEAD: State.CLOSED,  # answered 403 with Connection: close
        Event.BAD_REQUEST: State.CLOSED,
        Event.TIMEOUT: State.CLOSED,
        Event.EOF: State.CLOSED,
        Event.SHUTDOWN: State.CLOSED,
    },
    State.IDLE: {
        Event.REQUEST_HEAD: State.REQUEST,
        Event.BAD_REQUEST: State.CLOSED,
        Event.TIMEOUT: State.CLOSED,
        Event.EOF: State.CLOSED,
        Event.SHUTDOWN: State.CLOSED,
    },
    State.REQUEST: {
        Event.BAD_REQUEST: State.CLOSED,
        Event.DENIED: State.IDLE,
        Event.FORWARD: State.RELAY,
        Event.CLOSE: State.CLOSED,
    },
    State.RELAY: {
        Event.RESPONSE_DONE: State.IDLE,
        Event.CLOSE: State.CLOSED,
        Event.BAD_REQUEST: State.CLOSED,
        Event.TIMEOUT: State.CLOSED,
        Event.EOF: State.CLOSED,
    },
    State.CLOSED: {},
}
# What a closed connection may still hear about (CLOSED has no transitions at all).
_LATE_NEWS: Final = frozenset({Event.EOF, Event.TIMEOUT, Event.SHUTDOWN})


class LifecycleError(MtlskitError):
    """An event the table does not allow in the current state: a gateway bug, not a client's."""


class Lifecycle:
    """The current state of one connection; ``handle`` moves it by the table."""

    __slots__ = ("state",)

    def __init__(self) -> None:
        self.state = State.HANDSHAKE

    def handle(self, event: Event) -> State:
        try:
            self.state = TRANSITIONS[self.state][event]
        except KeyError:
            if self.state is State.CLOSED and event in _LATE_NEWS:
                return self.state  # late news about a connection already closed
            raise LifecycleError(
                f"event {event.value} is not allowed in state {self.state.value}"
            ) from None
        return self.state

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED
