"""Who is using the console, from the client certificate of this connection alone.

Pure. There are no passwords: OpenSSL has verified the certificate against the
console's trust anchors before any request is read, and the identity in its SAN
(``approver_identity``: case-folded) is looked up in ``[console] approvers`` and
``viewers``. The CSRF token is an HMAC of that certificate's fingerprint under a
secret drawn at start: a page served to one certificate carries a token that is
worthless to any other, and nothing needs to be stored.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from enum import StrEnum

from cryptography import x509

from mtlskit.certs import Fingerprint
from mtlskit.errors import MtlskitError
from mtlskit.issue import ApprovalRefused, ConsoleConfig, approver_identity, key_fingerprint

__all__ = ["ConsoleRefused", "ConsoleUser", "Role", "console_user", "csrf_token", "csrf_valid"]


class Role(StrEnum):
    """``approver``: approve, deny, revoke; ``viewer``: read every page, change nothing."""

    APPROVER = "approver"
    VIEWER = "viewer"


class ConsoleRefused(MtlskitError):
    """A page the user does not get: a stable ``code`` (shown in ``#error-code``) and the
    HTTP status; the message names no data the user may not see."""

    def __init__(self, code: str, message: str, *, status: int) -> None:
        self.code = code
        self.message = message
        self.status = status
        super().__init__(f"{code}: {message}")


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsoleUser:
    """The person behind this connection's certificate."""

    identity: str  # case-folded, as approvals count it
    role: Role
    cert: x509.Certificate
    fingerprint: str  # sha256:HEX of the certificate: what the CSRF token is bound to
    key: str  # key_fingerprint: what a registered approver is looked up by

    @property
    def can_change(self) -> bool:
        return self.role is Role.APPROVER


def console_user(cert: x509.Certificate, config: ConsoleConfig) -> ConsoleUser:
    """The user, or ``not_console_user`` (403) for an identity in neither list."""
    try:
        identity = approver_identity(cert)
    except ApprovalRefused:
        raise ConsoleRefused(
            "not_console_user", "this certificate names no identity", status=403
        ) from None
    if identity in config.approvers:
        role = Role.APPROVER
    elif identity in config.viewers:
        role = Role.VIEWER
    else:
        raise ConsoleRefused(
            "not_console_user",
            "this certificate's identity is not a console approver or viewer",
            status=403,
        )
    return ConsoleUser(
        identity=identity,
        role=role,
        cert=cert,
        fingerprint=str(Fingerprint.of(cert)),
        key=key_fingerprint(cert.public_key()),
    )


def csrf_token(secret: bytes, user: ConsoleUser) -> str:
    """The form token for this user's certificate (HMAC-SHA256, hex)."""
    return hmac.new(secret, user.fingerprint.encode(), hashlib.sha256).hexdigest()


def csrf_valid(secret: bytes, user: ConsoleUser, token: str | None) -> bool:
    return token is not None and hmac.compare_digest(csrf_token(secret, user), token)
