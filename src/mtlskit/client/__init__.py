"""``client``: enroll with a one-time token and keep the certificate renewed.

The library behind ``mtlskit enroll`` and ``mtlskit renew``; the CA side is
``mtlskit ca serve``. The private key is made here and never sent.

>>> from mtlskit.client import enroll, renew                             # doctest: +SKIP
>>> enroll("https://ca.internal:8444", token, "svc/", ca_fingerprint="sha256:…")
>>> renew("https://ca.internal:8444", "svc/cert.pem", "svc/key.pem")
"""

from mtlskit.client._enroll import Enrolled, build_csr, enroll
from mtlskit.client._http import CaRefused, CaUnavailable
from mtlskit.client._renew import Renewed, backoff, renew, renew_forever, renewal_time

__all__ = [
    "CaRefused",
    "CaUnavailable",
    "Enrolled",
    "Renewed",
    "backoff",
    "build_csr",
    "enroll",
    "renew",
    "renew_forever",
    "renewal_time",
]
