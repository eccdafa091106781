"""Profiles: declarative rule sets, one per question a user asks of a client certificate.

A profile lists which rules run on the leaf (index 0), on the CA certificates above
it, and across the chain. Several profiles may be combined; a rule shared between
them runs once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from mtlskit.lint import _rules as r

__all__ = ["DEFAULT_PROFILE", "PROFILES", "Profile"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Profile:
    """A named set of rules; ``summary`` is what ``mtlskit lint --help`` shows."""

    name: str
    summary: str
    leaf: tuple[r.CertRule, ...]
    ca: tuple[r.CertRule, ...] = ()
    chain: tuple[r.ChainRule, ...] = ()


CHAIN_RULES: Final = (
    r.CHAIN_ORDER,
    r.CHAIN_ISSUER_MISMATCH,
    r.CHAIN_SIGNATURE_INVALID,
    r.CHAIN_KEY_ID_MISMATCH,
    r.CHAIN_PATH_LENGTH_EXCEEDED,
)
_CA_BASICS: Final = (r.ISSUER_NOT_CA, r.CA_KEY_USAGE_MISSING_CERT_SIGN)
_CRYPTO: Final = (r.KEY_TOO_WEAK, r.KEY_TYPE_UNSUPPORTED, r.SIGNATURE_ALGORITHM_WEAK)
_TIME: Final = (r.CERT_EXPIRED, r.CERT_NOT_YET_VALID)

CLIENT_AUTH: Final = Profile(
    name="client-auth",
    summary="fit for TLS client authentication: CA:FALSE, keyUsage, EKU clientAuth, SAN "
    "identity, validity, key and signature strength",
    leaf=(
        r.EXTENSIONS_MALFORMED,
        r.LEAF_IS_CA,
        r.KEY_USAGE_MISSING,
        r.KEY_USAGE_NO_DIGITAL_SIGNATURE,
        r.LEAF_KEY_USAGE_CA_BITS,
        r.KEY_USAGE_EC_ENCIPHERMENT,
        r.EKU_MISSING,
        r.EKU_ANY_ONLY,
        r.EKU_MISSING_CLIENT_AUTH,
        r.EKU_SERVER_AUTH_PRESENT,
        r.EKU_CODE_SIGNING_PRESENT,
        r.SAN_MISSING,
        r.SAN_MALFORMED,
        r.IDENTITY_MISSING,
        r.SPIFFE_ID_INVALID,
        r.SPIFFE_MULTIPLE_URI_SANS,
        r.IDENTITY_CN_ONLY,
        r.SAN_UNUSUAL_TYPE,
        *_TIME,
        r.VALIDITY_OVER_398_DAYS,
        r.VALIDITY_OVER_90_DAYS,
        *_CRYPTO,
    ),
    ca=(r.EXTENSIONS_MALFORMED, *_CA_BASICS, r.CA_EKU_EXCLUDES_CLIENT_AUTH, *_TIME, *_CRYPTO),
    chain=CHAIN_RULES,
)

SPIFFE: Final = Profile(
    name="spiffe",
    summary="a valid X509-SVID: one SPIFFE ID URI SAN with a path, CA:FALSE, critical "
    "keyUsage; signing certificates per the X509-SVID spec",
    leaf=(
        r.EXTENSIONS_MALFORMED,
        r.SPIFFE_ID_MISSING,
        r.SPIFFE_MULTIPLE_URI_SANS,
        r.SAN_MALFORMED,
        r.SPIFFE_ID_INVALID,
        r.SPIFFE_LEAF_ROOT_PATH,
        r.LEAF_IS_CA,
        r.SPIFFE_KEY_USAGE_MISSING,
        r.SPIFFE_KEY_USAGE_NOT_CRITICAL,
        r.KEY_USAGE_NO_DIGITAL_SIGNATURE,
        r.LEAF_KEY_USAGE_CA_BITS,
        r.EKU_MISSING_CLIENT_AUTH,
        r.SPIFFE_EKU_MISSING_SERVER_AUTH,
        *_TIME,
    ),
    ca=(r.EXTENSIONS_MALFORMED, *_CA_BASICS, r.SPIFFE_CA_ID_HAS_PATH, *_TIME),
    chain=CHAIN_RULES,
)

GCP_LB: Final = Profile(
    name="gcp-lb",
    summary="accepted by a Google Cloud Application Load Balancer with mTLS: key types, "
    "SHA-2 signatures, chain depth 10, CA:FALSE leaf, EKU clientAuth",
    leaf=(
        r.LEAF_IS_CA,
        r.EKU_MISSING,
        r.EKU_MISSING_CLIENT_AUTH,
        r.GCP_KEY_TYPE,
        r.GCP_SIGNATURE,
        *_TIME,
    ),
    ca=(*_CA_BASICS, r.CA_EKU_EXCLUDES_CLIENT_AUTH, r.GCP_KEY_TYPE, r.GCP_SIGNATURE),
    chain=(*CHAIN_RULES, r.GCP_CHAIN_TOO_DEEP),
)

AWS_ALB: Final = Profile(
    name="aws-alb",
    summary="accepted by an AWS Application Load Balancer in mTLS verify mode: X.509v3, "
    "key types, signatures, chain depth 4, EKU clientAuth",
    leaf=(
        r.X509_V1,
        r.EKU_MISSING_CLIENT_AUTH,
        r.AWS_KEY_TYPE,
        r.AWS_SIGNATURE,
        *_TIME,
    ),
    ca=(r.X509_V1, *_CA_BASICS, r.AWS_KEY_TYPE, r.AWS_SIGNATURE),
    chain=(*CHAIN_RULES, r.AWS_CHAIN_TOO_DEEP),
)

PUBLIC_CA: Final = Profile(
    name="public-ca",
    summary="for chains ending in a publicly trusted root: why that is a poor client "
    "identity, and clientAuth against the root programs' dates",
    leaf=(
        r.PUBLIC_CA_ISSUER,
        r.PUBLIC_CA_CLIENT_AUTH_NO_LONGER_ISSUED,
        r.PUBLIC_CA_CLIENT_AUTH_PHASING_OUT,
        r.PUBLIC_CA_CLIENT_AUTH_ALLOWED,
    ),
    ca=(r.PUBLIC_CA_INTERMEDIATE_CLIENT_AUTH,),
)

PROFILES: Final[dict[str, Profile]] = {
    profile.name: profile for profile in (CLIENT_AUTH, SPIFFE, GCP_LB, AWS_ALB, PUBLIC_CA)
}
DEFAULT_PROFILE: Final = CLIENT_AUTH.name
