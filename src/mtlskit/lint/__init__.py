"""``lint``: is a certificate fit for TLS client authentication, by which standard?

Pure: certificates and an instant go in, findings come out. Each finding has a
stable code, a severity, a message that says what to do, and a reference.

>>> import datetime as dt
>>> from mtlskit.testca import LeafSpec, TestCA
>>> leaf = TestCA().issue(LeafSpec(uris=("spiffe://acme.com/billing",), ca=True))
>>> report = lint_chain([leaf.cert], ["client-auth"], at=dt.datetime.now(dt.UTC))[0]
>>> [finding.code for finding in report.findings]
['leaf_is_ca']
"""

from mtlskit.lint._finding import CertificateReport, Finding, Severity
from mtlskit.lint._lint import lint_chain, resolve_profiles
from mtlskit.lint._profiles import DEFAULT_PROFILE, PROFILES, Profile
from mtlskit.lint._rules import CertRule, ChainRule

__all__ = [
    "DEFAULT_PROFILE",
    "PROFILES",
    "CertRule",
    "CertificateReport",
    "ChainRule",
    "Finding",
    "Profile",
    "Severity",
    "lint_chain",
    "resolve_profiles",
]
