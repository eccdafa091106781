"""The verified client certificate inside ASGI apps (Starlette, FastAPI), whatever serves them.

``ClientCertMiddleware`` reads the ASGI TLS extension, Envoy XFCC, RFC 9440,
GCP/AWS-style headers and nginx's escaped PEM — headers only from allow-listed
proxy addresses — optionally verifies the chain again against a ``TrustStore``,
and gives the app one ``ClientIdentity`` (``request.state.client_identity``, or the
FastAPI dependency ``client_identity``) plus the v0.2 TLS extension fields.
``mtlskit serve`` fills the same scope keys itself, so the app code is the same
behind nginx and served directly.

>>> from fastapi import Depends, FastAPI
>>> from mtlskit.asgi import ClientCertMiddleware, client_identity
>>> app = FastAPI()
>>> @app.get("/whoami")
... def whoami(identity=Depends(client_identity)):
...     return {"id": identity.value}
>>> app.add_middleware(ClientCertMiddleware, trusted_proxies=["127.0.0.1"])
"""

from mtlskit.asgi._depends import client_identity, optional_client_identity
from mtlskit.asgi._middleware import NOT_FORWARDED, ClientCertMiddleware
from mtlskit.asgi._normalize import HEADER_FORMATS, HeaderSources, Observed, observe, parse_networks

__all__ = [
    "HEADER_FORMATS",
    "NOT_FORWARDED",
    "ClientCertMiddleware",
    "HeaderSources",
    "Observed",
    "client_identity",
    "observe",
    "optional_client_identity",
    "parse_networks",
]
