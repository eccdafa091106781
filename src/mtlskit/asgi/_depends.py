"""FastAPI dependencies (plain functions of a Starlette ``HTTPConnection``).

They read only what mtlskit put in the scope — ``ClientCertMiddleware`` or
``mtlskit serve`` — never a header or a server's unverified TLS extension, so an
app that depends on them cannot be fooled by a deployment that forgot both.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection

from mtlskit.identity import ClientIdentity

__all__ = ["client_identity", "optional_client_identity"]


def optional_client_identity(connection: HTTPConnection) -> ClientIdentity | None:
    """The verified client's identity, or ``None`` (no certificate, or one that failed)."""
    state = connection.scope.get("state") or {}
    identity = state.get("client_identity")
    return identity if isinstance(identity, ClientIdentity) else None


def client_identity(connection: HTTPConnection) -> ClientIdentity:
    """The verified client's identity; 403 without one (the reason stays in mtlskit's logs)."""
    identity = optional_client_identity(connection)
    if identity is None:
        raise HTTPException(status_code=403, detail="a verified client certificate is required")
    return identity
