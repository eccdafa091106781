"""``SSLContextAdapter``: requests with an ``SSLContext`` it could not build itself.

requests takes client keys only as file paths and trust only as a CA bundle
path; mount this adapter and every HTTPS connection of the session uses the
given context instead — a PKCS#12 or in-memory key, or a ``WatchingSSLContext``
that follows renewal. The adapter also stops requests from adding its default
CA bundle (certifi) to the context: the context's trust is the whole trust.
"""

from __future__ import annotations

import ssl
from typing import Any

from requests.adapters import HTTPAdapter

__all__ = ["SSLContextAdapter"]


class SSLContextAdapter(HTTPAdapter):
    """``session.mount("https://", SSLContextAdapter(context))``.

    ``verify=False`` on a request is refused rather than obeyed: turning off server
    verification belongs in the context, where it is visible.
    """

    def __init__(self, context: ssl.SSLContext, **kwargs: Any) -> None:
        self.context = context
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["ssl_context"] = self.context
        super().init_poolmanager(*args, **kwargs)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        proxy_kwargs["ssl_context"] = self.context
        return super().proxy_manager_for(proxy, **proxy_kwargs)

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        if verify is False:
            raise ValueError("verify=False with SSLContextAdapter: configure the context instead")
        if cert:
            raise ValueError("cert= with SSLContextAdapter: the context holds the certificate")
        conn.cert_reqs = "CERT_REQUIRED" if self.context.verify_mode else "CERT_NONE"
        conn.ca_certs = None  # never let urllib3 load certifi into our context
        conn.ca_cert_dir = None
