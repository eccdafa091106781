"""``caserver``: the CA's enrollment and renewal API over HTTPS (Starlette on uvicorn).

IO only: the decisions are ``mtlskit.issue.RegistrationAuthority``'s. ``mtlskit ca
serve DIR`` is the usual way in; ``start_in_thread`` embeds a server in a process.
Endpoints and error codes are in the OpenAPI document (``/openapi.json``).
"""

from mtlskit.caserver._app import MAX_BODY, CaServer
from mtlskit.caserver._bundle import spiffe_bundle
from mtlskit.caserver._limit import FailureLimiter
from mtlskit.caserver._openapi import ERROR_CODES, openapi_document
from mtlskit.caserver._reload import ConfigWatch, reload_on
from mtlskit.caserver._tls import (
    ServerHandle,
    bind,
    server_context,
    start_in_thread,
    uvicorn_server,
)

__all__ = [
    "ERROR_CODES",
    "MAX_BODY",
    "CaServer",
    "ConfigWatch",
    "FailureLimiter",
    "ServerHandle",
    "bind",
    "openapi_document",
    "reload_on",
    "server_context",
    "spiffe_bundle",
    "start_in_thread",
    "uvicorn_server",
]
