"""mtlskit: client-certificate authentication for mTLS.

The library's public surface; each name links to the module that explains it.

>>> from mtlskit import SpiffeId
>>> str(SpiffeId.parse("spiffe://acme.com/billing/payments").trust_domain)
'acme.com'
"""

from mtlskit.certs import Fingerprint, KeyType, load_certificates, load_private_key
from mtlskit.errors import ConfigError, InputError, MtlskitError
from mtlskit.identity import ClientIdentity, IdentityKind, SpiffeId, TrustDomain
from mtlskit.lint import CertificateReport, Finding, Severity, lint_chain

__all__ = [
    "CertificateReport",
    "ClientIdentity",
    "ConfigError",
    "Finding",
    "Fingerprint",
    "IdentityKind",
    "InputError",
    "KeyType",
    "MtlskitError",
    "Severity",
    "SpiffeId",
    "TrustDomain",
    "lint_chain",
    "load_certificates",
    "load_private_key",
]

__version__ = "0.1.0"
