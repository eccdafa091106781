"""Verification of client certificates: trust store, path validation, revocation, decisions.

Pure: certificates, CRLs and bundles come in as objects or bytes, the time as a
parameter; a ``Decision`` comes out with every failed check as a stable code.

>>> import datetime as dt
>>> from mtlskit.testca import TestCA, LeafSpec
>>> ca = TestCA(name="doc")
>>> leaf = ca.issue(LeafSpec(uris=("spiffe://acme.com/billing",)))
>>> verifier = Verifier(trust=TrustStore.build(anchors=[ca.root.cert]))
>>> verifier.verify(leaf.chain[:-1], at=dt.datetime.now(dt.UTC)).verdict.value
'accept'
"""

from mtlskit.verify._cache import VerificationCache
from mtlskit.verify._decision import (
    AWS_TLS_VERIFY_STATUS,
    GCP_ERRORS,
    NO_INTERMEDIATE,
    Code,
    Decision,
    Reason,
    Verdict,
)
from mtlskit.verify._trust import RevocationList, TrustStore, load_crl, parse_spiffe_bundle
from mtlskit.verify._verifier import Authorize, Verifier

__all__ = [
    "AWS_TLS_VERIFY_STATUS",
    "GCP_ERRORS",
    "NO_INTERMEDIATE",
    "Authorize",
    "Code",
    "Decision",
    "Reason",
    "RevocationList",
    "TrustStore",
    "Verdict",
    "VerificationCache",
    "Verifier",
    "load_crl",
    "parse_spiffe_bundle",
]
