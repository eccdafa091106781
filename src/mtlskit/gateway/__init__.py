"""The mTLS gateway: a TLS-terminating HTTP/1.1 reverse proxy with two verification gates.

OpenSSL checks the chain during the handshake (so a refused client gets a proper
TLS alert); mtlskit's ``Verifier`` then applies its own stricter policy, the
``authz`` policy decides per route, and ``forward`` writes the identity headers
after stripping every one a client sent. Configured by ``gateway.toml``
(DESIGN.md §6); run with ``mtlskit gateway --config gateway.toml``.
"""

from mtlskit.gateway._config import ClientAuthMode, GatewayConfig, load_config
from mtlskit.gateway._http import ClientRequestError, UpstreamError
from mtlskit.gateway._lifecycle import TRANSITIONS, Event, Lifecycle, LifecycleError, State
from mtlskit.gateway._server import Gateway
from mtlskit.gateway._tls import HandshakeFailure, classify_handshake_error

__all__ = [
    "TRANSITIONS",
    "ClientAuthMode",
    "ClientRequestError",
    "Event",
    "Gateway",
    "GatewayConfig",
    "HandshakeFailure",
    "Lifecycle",
    "LifecycleError",
    "State",
    "UpstreamError",
    "classify_handshake_error",
    "load_config",
]
