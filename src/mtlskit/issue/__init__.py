"""``issue``: certificate profiles, self-signed certificates, the private CA's logic, CRLs.

Pure over a ``Store`` protocol (``mtlskit.store`` provides the SQL one): the CA core
decides identity policy, builds every extension itself from identity + key + profile,
lints before release and records before returning. The clock is always a parameter.

>>> import datetime as dt
>>> from mtlskit.certs import generate_private_key
>>> key = generate_private_key()
>>> now = dt.datetime.now(dt.UTC)
>>> cert = build_self_signed(
...     key=key, identity=parse_identity("spiffe://acme.com/billing"), profile=CLIENT_AUTH,
...     not_before=now, not_after=now + dt.timedelta(days=1))
>>> lint_errors((cert,), CLIENT_AUTH, now)
[]
"""

from mtlskit.issue._approvers import (
    ApprovalRefused,
    ApproverRecord,
    approval_message,
    approver_identity,
    check_approval,
    check_not_counted,
    countersign_approval,
    key_fingerprint,
    register_approver,
    revoked_by,
    sign_approval,
    verified_approvers,
)
from mtlskit.issue._audit import GENESIS_HASH, AuditEntry, AuditProblem, verify_audit_chain
from mtlskit.issue._build import (
    BACKDATE,
    CaKey,
    ExternalKey,
    Issuer,
    KeyUnavailable,
    build_ca_certificate,
    build_leaf,
    build_self_signed,
    build_server_certificate,
    is_external_key,
    sign_certificate,
    sign_crl,
    signature_hash,
)
from mtlskit.issue._ca import CertificateAuthority, Issued, lint_errors
from mtlskit.issue._config import (
    CaConfig,
    ConsoleConfig,
    parse_ca_config,
    render_ca_config,
    validate_ca_config,
)
from mtlskit.issue._crl import build_crl
from mtlskit.issue._csr import CsrReview, load_csr, review_csr
from mtlskit.issue._enroll import (
    TOKEN_PREFIX,
    Approval,
    ApprovalRule,
    EnrollmentRefused,
    EnrollmentRequest,
    EnrollmentStore,
    RequestStatus,
    TokenRecord,
    approvals_counted,
    check_csr_identity,
    csr_hash,
    csr_identities,
    new_request_id,
    new_token,
    required_approvals,
    token_hash,
    unredeemable,
)
from mtlskit.issue._policy import (
    IdentityPattern,
    IdentityPolicy,
    IssuanceRefused,
    format_duration,
    key_type_name,
    parse_duration,
)
from mtlskit.issue._profile import (
    CLIENT_AUTH,
    PROFILES,
    SERVER_AUTH,
    SPIFFE,
    CertificateProfile,
    general_name,
    parse_identity,
    parse_server_hosts,
)
from mtlskit.issue._ra import RegistrationAuthority
from mtlskit.issue._store import (
    REVOCATION_REASONS,
    CertificateRecord,
    CertificateStatus,
    SerialTaken,
    Store,
    StoreUnavailable,
    UnknownCertificate,
)

__all__ = [
    "BACKDATE",
    "CLIENT_AUTH",
    "GENESIS_HASH",
    "PROFILES",
    "REVOCATION_REASONS",
    "SERVER_AUTH",
    "SPIFFE",
    "TOKEN_PREFIX",
    "Approval",
    "ApprovalRefused",
    "ApprovalRule",
    "ApproverRecord",
    "AuditEntry",
    "AuditProblem",
    "CaConfig",
    "CaKey",
    "CertificateAuthority",
    "CertificateProfile",
    "CertificateRecord",
    "CertificateStatus",
    "ConsoleConfig",
    "CsrReview",
    "EnrollmentRefused",
    "EnrollmentRequest",
    "EnrollmentStore",
    "ExternalKey",
    "IdentityPattern",
    "IdentityPolicy",
    "IssuanceRefused",
    "Issued",
    "Issuer",
    "KeyUnavailable",
    "RegistrationAuthority",
    "RequestStatus",
    "SerialTaken",
    "Store",
    "StoreUnavailable",
    "TokenRecord",
    "UnknownCertificate",
    "approval_message",
    "approvals_counted",
    "approver_identity",
    "build_ca_certificate",
    "build_crl",
    "build_leaf",
    "build_self_signed",
    "build_server_certificate",
    "check_approval",
    "check_csr_identity",
    "check_not_counted",
    "countersign_approval",
    "csr_hash",
    "csr_identities",
    "format_duration",
    "general_name",
    "is_external_key",
    "key_fingerprint",
    "key_type_name",
    "lint_errors",
    "load_csr",
    "new_request_id",
    "new_token",
    "parse_ca_config",
    "parse_duration",
    "parse_identity",
    "parse_server_hosts",
    "register_approver",
    "render_ca_config",
    "required_approvals",
    "review_csr",
    "revoked_by",
    "sign_approval",
    "sign_certificate",
    "sign_crl",
    "signature_hash",
    "token_hash",
    "unredeemable",
    "validate_ca_config",
    "verified_approvers",
    "verify_audit_chain",
]
