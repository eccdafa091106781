"""What a verification (and then an authorization) concluded, and every reason why.

One ``Decision`` flows from the verifier to the authorizer to headers and logs.
Reasons carry the stable codes of DESIGN.md §5, so a log query or an alert never
depends on message wording; operators see the messages, clients see nothing.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from mtlskit.certs import Fingerprint
from mtlskit.identity import ClientIdentity

__all__ = [
    "AWS_TLS_VERIFY_STATUS",
    "GCP_ERRORS",
    "NO_INTERMEDIATE",
    "Code",
    "Decision",
    "Reason",
    "Verdict",
]

# The commonest chain_untrusted in practice (``openssl s_client -cert`` without
# ``-cert_chain``): said the same way by verify, the gateway's log and probe.
NO_INTERMEDIATE: Final = "the client sent no intermediate; its issuer is not a trust anchor"


class Code(StrEnum):
    """Stable rejection codes (DESIGN.md §5); these strings never change meaning."""

    CERT_NOT_PROVIDED = "cert_not_provided"
    CHAIN_UNTRUSTED = "chain_untrusted"
    CERT_EXPIRED = "cert_expired"
    CERT_NOT_YET_VALID = "cert_not_yet_valid"
    CERT_REVOKED = "cert_revoked"
    EKU_MISSING_CLIENT_AUTH = "eku_missing_client_auth"
    LEAF_IS_CA = "leaf_is_ca"
    SAN_MISSING = "san_missing"
    SPIFFE_ID_INVALID = "spiffe_id_invalid"
    SPIFFE_MULTIPLE_URI_SANS = "spiffe_multiple_uri_sans"
    TRUST_DOMAIN_MISMATCH = "trust_domain_mismatch"
    KEY_TOO_WEAK = "key_too_weak"
    SIGNATURE_ALGORITHM_WEAK = "signature_algorithm_weak"
    CHAIN_TOO_DEEP = "chain_too_deep"
    PUBLIC_CA_NOT_ALLOWED = "public_ca_not_allowed"
    PROOF_OF_POSSESSION_FAILED = "proof_of_possession_failed"
    IDENTITY_NOT_AUTHORIZED = "identity_not_authorized"
    CRL_STALE = "crl_stale"
    PIN_MISMATCH = "pin_mismatch"
    # Added by the verifier (DESIGN.md §5 allows new codes):
    KEY_USAGE_INVALID = (
        "key_usage_invalid"  # SVID leaf without digitalSignature, or with keyCertSign
    )
    CRL_INVALID = "crl_invalid"  # a configured CRL's signature does not verify against its issuer


# What Google Cloud's load balancer puts in ``client_cert_error`` for the nearest failure;
# codes with no GCP counterpart map to its catch-all ``client_cert_validation_failed``.
GCP_ERRORS: Final[dict[Code, str]] = {
    Code.CERT_NOT_PROVIDED: "client_cert_not_provided",
    Code.CHAIN_UNTRUSTED: "client_cert_validation_failed",
    Code.CERT_EXPIRED: "client_cert_validation_failed",
    Code.CERT_NOT_YET_VALID: "client_cert_validation_failed",
    Code.CERT_REVOKED: "client_cert_validation_failed",
    Code.EKU_MISSING_CLIENT_AUTH: "client_cert_chain_invalid_eku",
    Code.LEAF_IS_CA: "client_cert_validation_failed",
    Code.SAN_MISSING: "client_cert_validation_failed",
    Code.SPIFFE_ID_INVALID: "client_cert_validation_failed",
    Code.SPIFFE_MULTIPLE_URI_SANS: "client_cert_validation_failed",
    Code.TRUST_DOMAIN_MISMATCH: "client_cert_validation_failed",
    Code.KEY_TOO_WEAK: "client_cert_invalid_rsa_key_size",
    Code.SIGNATURE_ALGORITHM_WEAK: "client_cert_validation_failed",
    Code.CHAIN_TOO_DEEP: "client_cert_chain_exceeded_limit",
    Code.PUBLIC_CA_NOT_ALLOWED: "client_cert_validation_failed",
    Code.PROOF_OF_POSSESSION_FAILED: "client_cert_validation_failed",
    Code.IDENTITY_NOT_AUTHORIZED: "client_cert_validation_failed",
    Code.CRL_STALE: "client_cert_validation_failed",
    Code.PIN_MISMATCH: "client_cert_validation_failed",
    Code.KEY_USAGE_INVALID: "client_cert_validation_failed",
    Code.CRL_INVALID: "client_cert_validation_failed",
}

# AWS ALB connection-log ``tls_verify_status`` values (logged as ``Failed:<value>``).
AWS_TLS_VERIFY_STATUS: Final[dict[Code, str]] = {
    Code.CERT_NOT_PROVIDED: "ClientCertRejected",
    Code.CHAIN_UNTRUSTED: "ClientCertUntrusted",
    Code.CERT_EXPIRED: "ClientCertExpired",
    Code.CERT_NOT_YET_VALID: "ClientCertNotYetValid",
    Code.CERT_REVOKED: "ClientCertCrlHit",
    Code.EKU_MISSING_CLIENT_AUTH: "ClientCertPurposeInvalid",
    Code.LEAF_IS_CA: "ClientCertPurposeInvalid",
    Code.SAN_MISSING: "ClientCertInvalid",
    Code.SPIFFE_ID_INVALID: "ClientCertInvalid",
    Code.SPIFFE_MULTIPLE_URI_SANS: "ClientCertInvalid",
    Code.TRUST_DOMAIN_MISMATCH: "ClientCertUntrusted",
    Code.KEY_TOO_WEAK: "ClientCertTypeUnsupported",
    Code.SIGNATURE_ALGORITHM_WEAK: "ClientCertTypeUnsupported",
    Code.CHAIN_TOO_DEEP: "ClientCertMaxChainDepthExceeded",
    Code.PUBLIC_CA_NOT_ALLOWED: "ClientCertUntrusted",
    Code.PROOF_OF_POSSESSION_FAILED: "ClientCertRejected",
    Code.IDENTITY_NOT_AUTHORIZED: "ClientCertRejected",
    Code.CRL_STALE: "ClientCertCrlProcessingError",
    Code.PIN_MISMATCH: "ClientCertUntrusted",
    Code.KEY_USAGE_INVALID: "ClientCertPurposeInvalid",
    Code.CRL_INVALID: "ClientCertCrlProcessingError",
}


class Verdict(StrEnum):
    ACCEPT = "accept"
    REJECT = "reject"


# A module global: Python 3.11 reads an enum member through its class in ~70 ns (the
# metaclass's __getattr__ hook), a global in ~5 ns; ``accepted`` runs on every request.
_ACCEPT: Final = Verdict.ACCEPT


@dataclass(frozen=True, slots=True, kw_only=True)
class Reason:
    """One failed check: a stable code, words for the operator, and where in the chain.

    ``depth`` is the index in the chain (0 = leaf); ``None`` when the reason is about
    the configuration or the request rather than one certificate.
    """

    code: Code
    message: str
    depth: int | None = 0

    def __post_init__(self) -> None:
        if not isinstance(self.code, Code):
            object.__setattr__(self, "code", Code(self.code))

    @property
    def gcp_error(self) -> str:
        return GCP_ERRORS[self.code]

    @property
    def aws_tls_verify_status(self) -> str:
        return AWS_TLS_VERIFY_STATUS[self.code]

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code.value, "message": self.message, "depth": self.depth}

    def __str__(self) -> str:
        where = f" (depth {self.depth})" if self.depth is not None else ""
        return f"{self.code.value}{where}: {self.message}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """Verdict, identity, chain and reasons; a reject always says at least one reason.

    An accept may still carry reasons: shadow-mode authorization records what it
    would have denied without denying. ``chain`` is the validated path (leaf to
    anchor) when there is one, else the chain as presented. ``rule`` names the
    authorization rule that allowed it; ``valid_until`` is when the verdict must
    be recomputed at the latest (earliest notAfter, CRL nextUpdate).
    """

    verdict: Verdict
    identity: ClientIdentity | None = None
    chain: tuple[Fingerprint, ...] = ()
    reasons: tuple[Reason, ...] = ()
    rule: str | None = None
    pinned: bool = False
    valid_until: dt.datetime | None = None

    def __post_init__(self) -> None:
        if self.verdict is Verdict.REJECT and not self.reasons:
            raise ValueError("a rejection must carry at least one reason")

    @classmethod
    def accept(
        cls,
        *,
        identity: ClientIdentity | None,
        chain: tuple[Fingerprint, ...],
        pinned: bool = False,
        valid_until: dt.datetime | None = None,
    ) -> Decision:
        """An accept with no reasons and no rule yet: the verifier's per-handshake result.

        Nothing here can be invalid, so the fields are set directly, at half the
        generated ``__init__``'s cost (as in ``with_rule``).
        """
        decision = object.__new__(cls)
        _set_verdict(decision, _ACCEPT)
        _set_identity(decision, identity)
        _set_chain(decision, chain)
        _set_reasons(decision, ())
        _set_rule(decision, None)
        _set_pinned(decision, pinned)
        _set_valid_until(decision, valid_until)
        return decision

    @property
    def accepted(self) -> bool:
        return self.verdict is _ACCEPT

    def with_rule(self, rule: str) -> Decision:
        """This decision, now naming the authorization rule that allowed it.

        The authorizer's hot path: only ``rule`` changes, so the fields are copied
        through the slot descriptors themselves (``object.__setattr__`` looks each
        name up again): a quarter of the generated ``__init__``'s cost (measured).
        """
        copy = object.__new__(Decision)
        _set_verdict(copy, self.verdict)
        _set_identity(copy, self.identity)
        _set_chain(copy, self.chain)
        _set_reasons(copy, self.reasons)
        _set_rule(copy, rule)
        _set_pinned(copy, self.pinned)
        _set_valid_until(copy, self.valid_until)
        return copy

    @property
    def codes(self) -> tuple[Code, ...]:
        return tuple(reason.code for reason in self.reasons)

    def as_dict(self) -> dict[str, Any]:
        """The ``verify --json`` shape of DESIGN.md §5, exactly."""
        return {
            "verdict": self.verdict.value,
            "identity": self.identity.as_dict() if self.identity else None,
            "reasons": [reason.as_dict() for reason in self.reasons],
            "chain": [str(fingerprint) for fingerprint in self.chain],
        }


# Decision's slot setters, for the copies above (frozen: the generated __setattr__ raises).
(
    _set_verdict,
    _set_identity,
    _set_chain,
    _set_reasons,
    _set_rule,
    _set_pinned,
    _set_valid_until,
) = (
    Decision.__dict__[name].__set__
    for name in ("verdict", "identity", "chain", "reasons", "rule", "pinned", "valid_until")
)
