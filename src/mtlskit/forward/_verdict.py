"""mtlskit's own verdict headers, and nginx's ``$ssl_client_*`` variables read back.

The peers' formats either carry no verdict (XFCC, RFC 9440, AWS verify mode) or
carry GCP's coarse one. In ``allow_invalid_or_missing`` mode the backend decides,
so mtlskit always says, in its own headers:

``X-Mtlskit-Client-Present``   ``true`` | ``false``
``X-Mtlskit-Client-Verified``  ``true`` | ``false``
``X-Mtlskit-Client-Error``     the stable code (DESIGN.md §5), only when not verified
``X-Mtlskit-Client-Fingerprint`` ``sha256:HEX`` of the leaf, when one was presented
``X-Mtlskit-Client-Identity``  the identity value, only when verified
``X-Mtlskit-Client-Identity-Kind`` ``spiffe`` | ``uri`` | ``dns`` | ``email`` | ``cn``

nginx: ``$ssl_client_verify`` is ``SUCCESS``, ``FAILED:reason`` or ``NONE``, and
``$ssl_client_escaped_cert`` the leaf as URL-encoded PEM (nginx http_ssl module
docs); operators forward them under header names of their choosing.
"""

from __future__ import annotations

from typing import Final

from mtlskit.certs import Fingerprint
from mtlskit.errors import InputError
from mtlskit.forward._client import ForwardedClient
from mtlskit.forward._encoding import (
    certificates_from_url_encoded_pem,
    printable,
    unprintable,
)
from mtlskit.forward._headers import Headers, header, header_values
from mtlskit.identity import ClientIdentity, IdentityError, IdentityKind, SpiffeId, SpiffeIdError

__all__ = [
    "VERDICT_ERROR",
    "VERDICT_FINGERPRINT",
    "VERDICT_IDENTITY",
    "VERDICT_IDENTITY_KIND",
    "VERDICT_PRESENT",
    "VERDICT_VERIFIED",
    "read_nginx",
    "read_verdict",
    "verdict_headers",
]

VERDICT_PRESENT: Final = "X-Mtlskit-Client-Present"
VERDICT_VERIFIED: Final = "X-Mtlskit-Client-Verified"
VERDICT_ERROR: Final = "X-Mtlskit-Client-Error"
VERDICT_FINGERPRINT: Final = "X-Mtlskit-Client-Fingerprint"
VERDICT_IDENTITY: Final = "X-Mtlskit-Client-Identity"
VERDICT_IDENTITY_KIND: Final = "X-Mtlskit-Client-Identity-Kind"


def verdict_headers(client: ForwardedClient) -> list[tuple[bytes, bytes]]:
    out = [
        header(VERDICT_PRESENT, "true" if client.present else "false"),
        header(VERDICT_VERIFIED, "true" if client.verified else "false"),
    ]
    if not client.verified and client.error:
        out.append(header(VERDICT_ERROR, printable(client.error)))
    if client.fingerprint is not None:
        out.append(header(VERDICT_FINGERPRINT, str(client.fingerprint)))
    if client.verified and client.identity is not None:
        out.append(header(VERDICT_IDENTITY, printable(client.identity.value)))
        out.append(header(VERDICT_IDENTITY_KIND, client.identity.kind.value))
    return out


def _one(headers: Headers, name: str) -> str | None:
    values = header_values(headers, name)
    if len(values) > 1:
        raise InputError("appears more than once", source=name)
    return values[0].strip(" \t") if values else None


def _flag(headers: Headers, name: str) -> bool | None:
    text = _one(headers, name)
    if text is None:
        return None
    if text not in {"true", "false"}:
        raise InputError(f"expected true or false, got {text[:20]!r}", source=name)
    return text == "true"


def read_verdict(headers: Headers) -> ForwardedClient | None:
    """mtlskit's verdict headers read back (no certificate: pair with another format for it)."""
    present = _flag(headers, VERDICT_PRESENT)
    if present is None:
        return None
    verified = bool(_flag(headers, VERDICT_VERIFIED))
    if verified and not present:
        raise InputError("says verified but no certificate present", source=VERDICT_VERIFIED)
    text = _one(headers, VERDICT_FINGERPRINT)
    fingerprint = Fingerprint.parse(text) if text else None
    identity = None
    value, kind_text = _one(headers, VERDICT_IDENTITY), _one(headers, VERDICT_IDENTITY_KIND)
    if value and verified:
        value = unprintable(value)
        try:
            kind = IdentityKind(kind_text or "")
        except ValueError:
            raise InputError(
                f"unknown identity kind {kind_text!r}", source=VERDICT_IDENTITY_KIND
            ) from None
        spiffe_id = None
        if kind is IdentityKind.SPIFFE:
            try:
                spiffe_id = SpiffeId.parse(value)
            except SpiffeIdError as exc:
                raise InputError(str(exc), source=VERDICT_IDENTITY) from None
        try:
            identity = ClientIdentity(
                kind=kind, value=value, spiffe_id=spiffe_id, legacy=kind is IdentityKind.CN
            )
        except ValueError as exc:  # e.g. kind "uri" for a spiffe:// value
            raise InputError(str(exc), source=VERDICT_IDENTITY_KIND) from None
    text = None if verified else _one(headers, VERDICT_ERROR)
    error = unprintable(text) if text else None
    if not present and fingerprint is not None:
        raise InputError(
            "a fingerprint for a client that sent no certificate", source=VERDICT_FINGERPRINT
        )
    return ForwardedClient(
        present=present, verified=verified, error=error, identity=identity, fingerprint=fingerprint
    )


def read_nginx(escaped_cert: str | None, verify: str | None = None) -> ForwardedClient:
    """nginx's ``$ssl_client_escaped_cert`` (and optionally ``$ssl_client_verify``).

    Without ``verify`` the certificate is reported unverified: the escaped PEM alone
    does not say whether nginx checked it (``ssl_verify_client optional_no_ca``
    forwards certificates it never verified). ``FAILED:reason`` keeps nginx's
    reason as the error.
    """
    status = (verify or "").strip(" \t")
    if status and status not in {"SUCCESS", "NONE"} and not status.startswith("FAILED:"):
        raise InputError(
            f"not SUCCESS, FAILED:reason or NONE: {status[:40]!r}", source="ssl_client_verify"
        )
    cert_text = (escaped_cert or "").strip(" \t")
    if status == "NONE" or (not cert_text and not status.startswith("FAILED:")):
        if cert_text:
            raise InputError("NONE, yet a certificate is forwarded", source="ssl_client_verify")
        return ForwardedClient.missing()
    if not cert_text:
        return ForwardedClient(present=True, verified=False, error=status[len("FAILED:") :] or None)
    chain = tuple(certificates_from_url_encoded_pem(cert_text, source="ssl_client_escaped_cert"))
    verified = status == "SUCCESS"
    error = (status[len("FAILED:") :] or None) if status.startswith("FAILED:") else None
    try:
        identity: ClientIdentity | None = ClientIdentity.from_certificate(chain[0])
    except IdentityError:
        identity = None
    return ForwardedClient(
        present=True, verified=verified, error=error, chain=chain, identity=identity
    )
