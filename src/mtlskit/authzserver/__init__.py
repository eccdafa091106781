"""External authorization for nginx, HAProxy and Envoy: the same trust, policy and reasons.

``DecisionPoint`` is pure (a ``CheckRequest`` and the time in, an ``Answer`` out);
``AuthzServer`` is the ASGI shell that ``mtlskit authz-server --config FILE`` runs
under uvicorn, with a JSON decision log and Prometheus ``/metrics``.

>>> import datetime as dt
>>> from mtlskit.testca import LeafSpec, TestCA
>>> from mtlskit.verify import TrustStore, Verifier
>>> from mtlskit.certs import certificate_pem
>>> import urllib.parse
>>> ca = TestCA(intermediate=False)
>>> leaf = ca.issue(LeafSpec(uris=("spiffe://acme.com/billing",)))
>>> point = DecisionPoint(verifier=Verifier(trust=TrustStore.build(anchors=[ca.root.cert])))
>>> escaped = urllib.parse.quote(certificate_pem(leaf.cert).decode(), safe="")
>>> headers = [(b"x-mtlskit-nginx-cert", escaped.encode()), (b"x-mtlskit-nginx-verify", b"SUCCESS")]
>>> answer = point.check(
...     CheckRequest(proxy=Proxy.NGINX, method="GET", path="/nginx", headers=headers),
...     at=dt.datetime.now(dt.UTC),
... )
>>> answer.status, dict(answer.headers)[b"X-Mtlskit-Client-Identity"]
(200, b'spiffe://acme.com/billing')
"""

from mtlskit.authzserver._config import AuthzServerConfig, ClientAuthMode, load_config
from mtlskit.authzserver._decide import (
    Answer,
    CheckRequest,
    DecisionPoint,
    Proxy,
    cleared_by_proxy,
)
from mtlskit.authzserver._server import AuthzServer, build_decision_point, serve

__all__ = [
    "Answer",
    "AuthzServer",
    "AuthzServerConfig",
    "CheckRequest",
    "ClientAuthMode",
    "DecisionPoint",
    "Proxy",
    "build_decision_point",
    "cleared_by_proxy",
    "load_config",
    "serve",
]
