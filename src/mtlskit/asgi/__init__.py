"""The verified client certificate inside ASGI apps (Starlette, FastAPI), whatever serves them.

``ClientCertMiddleware`` reads, for each proxy address you list, the one header
format that proxy writes (nginx's escaped PEM, Envoy XFCC, RFC 9440, GCP/AWS-style
headers or mtlskit's verdict) and nothing else — from any other peer, only the
server's own ASGI TLS extension — optionally checks the forwarded chain against a
``TrustStore`` as well (an integrity check that can only refuse), and gives the app
one ``ClientIdentity`` (``request.state.client_identity``, or the
FastAPI dependency ``client_identity``) plus the v0.2 TLS extension fields.
``mtlskit serve`` fills the same scope keys itself, so the app code is the same
behind nginx and served directly.

>>> from fastapi import Depends, FastAPI
>>> from mtlskit.asgi import ClientCertMiddleware, client_identity
>>> app = FastAPI()
>>> @app.get("/whoami")
... def whoami(identity=Depends(client_identity)):
...     return {"id": identity.value}
>>> app.add_middleware(ClientCertMiddleware, proxies={"127.0.0.1": "nginx"})
"""

from mtlskit.asgi._depends import client_identity, optional_client_identity
from mtlskit.asgi._middleware import NOT_FORWARDED, ClientCertMiddleware
from mtlskit.asgi._normalize import PROXY_FORMATS, Observed, ProxyHeaders, observe, parse_proxies

__all__ = [
    "NOT_FORWARDED",
    "PROXY_FORMATS",
    "ClientCertMiddleware",
    "Observed",
    "ProxyHeaders",
    "client_identity",
    "observe",
    "optional_client_identity",
    "parse_proxies",
]
