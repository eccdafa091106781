"""The server side of a TLS handshake over memory BIOs, so that a refused client gets its alert.

asyncio's TLS (``start_server(ssl=...)``, uvloop's too) closes the connection when the
handshake fails without sending the alert OpenSSL has just written (DESIGN.md §4): the
client sees an empty reply instead of ``unknown_ca`` or ``certificate_required``.
Flushing the outgoing BIO after every step, the failing one included, is the fix. The
gateway's connections and the CA servers' TLS protocol (``caserver._tls``) both step
their handshakes through ``step``; the ciphers are shared for the same reason.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Final

__all__ = ["TLS12_CIPHERS", "step"]

# TLS 1.2: forward-secret AEAD suites only (Mozilla "intermediate" without DHE). OpenSSL's
# default also offers the CBC-SHA256/384 suites, which testssl.sh rates weak ("AVERAGE").
# TLS 1.3 suites are all AEAD and are not affected by this string.
TLS12_CIPHERS: Final = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)


def step(tls: ssl.SSLObject, flush: Callable[[], object]) -> bool:
    """One handshake step: ``True`` when done, ``False`` when it needs the peer's bytes.

    ``flush`` sends what the outgoing BIO holds; it runs after every step. A refused
    handshake raises OpenSSL's ``SSLError`` after the flush, so the alert is on the wire
    before the caller closes the connection.
    """
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        flush()
        return False
    except ssl.SSLError:
        flush()  # the alert
        raise
    flush()
    return True
