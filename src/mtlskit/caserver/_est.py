"""EST (RFC 7030) under ``/.well-known/est/``: the same CA, reached by standard clients.

A thin translation, not a second CA: ``simpleenroll`` decodes the base64 PKCS#10 body and
calls the same ``RegistrationAuthority.enroll`` / ``enroll_verified`` as ``/v1/enroll``
(so the CA still decides every attribute), ``simplereenroll`` calls ``renew`` with the
certificate of the TLS handshake, and the approval queue answers ``202`` with
``Retry-After`` (§4.2.3) until the same CSR, sent again, finds its request issued.
Refusals are ``text/plain`` (§4.2.3) whose first word is the CA API's stable code; an
``est_refused`` audit entry is all a refusal leaves in the records.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, ClassVar, Final

from asn1crypto import core
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mtlskit.caserver._limit import read_body
from mtlskit.errors import InputError
from mtlskit.issue import EnrollmentRefused, EnrollmentRequest, Issued, RegistrationAuthority
from mtlskit.issue._csr import load_csr
from mtlskit.issue._enroll import csr_hash, required_approvals, token_hash
from mtlskit.issue._provisioner import TokenRefused, VerifiedToken

if TYPE_CHECKING:
    from mtlskit.caserver._app import CaServer

__all__ = ["EST_PREFIX", "RETRY_AFTER", "CsrAttrs", "csr_attributes", "decode_body", "est_routes"]

EST_PREFIX: Final = "/.well-known/est"
RETRY_AFTER: Final = 60  # seconds: approvers are people; polling faster only loads the CA
_CERTS_ONLY: Final = "application/pkcs7-mime; smime-type=certs-only"
_TOKEN_FAILURES: Final = frozenset({"token_invalid", "token_used", "token_expired"})
_REALM: Final = 'Basic realm="mtlskit EST", Bearer realm="mtlskit EST"'
# What key a CSR must carry, as RFC 8951 §4 (replacing RFC 7030 §4.5.2) asks for it: an
# id-ecPublicKey attribute naming the curve, or the algorithm's OID when it has no parameters.
_EC_CURVES: Final = {"ec-p256": "1.2.840.10045.3.1.7", "ec-p384": "1.3.132.0.34"}
_ID_EC_PUBLIC_KEY: Final = "1.2.840.10045.2.1"
_ID_ED25519: Final = "1.3.101.112"


class _Values(core.SetOf):
    _child_spec = core.Any


class _Attribute(core.Sequence):
    """RFC 2986's Attribute, values left undecoded: a client ignores what it does not know."""

    _fields: ClassVar = [("type", core.ObjectIdentifier), ("values", _Values)]


class _AttrOrOid(core.Choice):
    _alternatives: ClassVar = [("oid", core.ObjectIdentifier), ("attribute", _Attribute)]


class CsrAttrs(core.SequenceOf):
    """``CsrAttrs ::= SEQUENCE SIZE (0..MAX) OF AttrOrOID`` (RFC 8951 §4, the ASN.1 that
    errata 4384 corrected), declared for asn1crypto, which does the DER."""

    _child_spec = _AttrOrOid


def csr_attributes(key_types: frozenset[str]) -> bytes:
    """The DER ``CsrAttrs`` for a CA accepting ``key_types``. The CA sets every name and
    extension itself, so all it can ask for is the key: the curve when ca.toml accepts
    only one EC curve, Ed25519 when only that; otherwise nothing (an empty SEQUENCE)."""
    asked: list[_AttrOrOid] = []
    if len(key_types) == 1 and (curve := _EC_CURVES.get(next(iter(key_types)))):
        attribute = _Attribute(
            {"type": _ID_EC_PUBLIC_KEY, "values": [core.ObjectIdentifier(curve)]}
        )
        asked.append(_AttrOrOid(name="attribute", value=attribute))
    elif key_types == {"ed25519"}:
        asked.append(_AttrOrOid(name="oid", value=_ID_ED25519))
    return bytes(CsrAttrs(asked).dump())


def decode_body(text: bytes) -> bytes:
    """An EST body's base64 (RFC 4648 §4), tolerating the CR, LF, space and tab that
    RFC 8951 §3.1 tells receivers to accept; ``ValueError`` (``binascii.Error``) when it
    is not base64."""
    return base64.b64decode(b"".join(text.split()), validate=True)


def _certs_only(certs: list[x509.Certificate]) -> Response:
    """A certs-only CMC Simple PKI Response (§4.1.3, §4.2.3), base64 as §4 requires."""
    der = pkcs7.serialize_certificates(certs, serialization.Encoding.DER)
    return Response(
        base64.encodebytes(der),
        media_type=_CERTS_ONLY,
        headers={"Content-Transfer-Encoding": "base64"},
    )


def _refusal(
    code: str, message: str, status: int, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        f"{code}: {message}\n", status_code=status, media_type="text/plain", headers=headers
    )


def _credentials(request: Request) -> tuple[str, str] | None:
    """``("token" | "bearer", secret)`` from §3.2.3 HTTP Basic (the password is the one-time
    token; the user name is ignored) or a Bearer header; None without either."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise EnrollmentRefused(
                "request_invalid", "Authorization: Basic is not base64 user:password", status=400
            ) from None
        _, colon, password = decoded.partition(":")
        if not colon or not password:
            raise EnrollmentRefused(
                "token_invalid", "Basic credentials carry no token as password", status=401
            )
        return "token", password
    if scheme.lower() == "bearer" and value:
        return "bearer", value
    return None


async def _pkcs10(request: Request) -> x509.CertificateSigningRequest:
    """The body: ``application/pkcs10``, base64 (line breaks allowed) of a DER PKCS#10."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/pkcs10":
        raise EnrollmentRefused(
            "request_invalid", "Content-Type must be application/pkcs10", status=415
        )
    body = await read_body(request)  # /v1/enroll's limit: base64 of a large CSR stays far below
    try:
        der = decode_body(body)
    except ValueError:
        raise EnrollmentRefused("csr_invalid", "body is not base64", status=400) from None
    try:
        return load_csr(der, source="csr")
    except InputError as exc:  # empty, or not a PKCS#10
        raise EnrollmentRefused("csr_invalid", str(exc), status=400) from None


def _waiting(
    ra: RegistrationAuthority, identity: str, csr: x509.CertificateSigningRequest
) -> EnrollmentRequest | None:
    """The newest request for exactly this CSR and identity: §4.2.3's retry of "the same
    request" finds it, instead of redeeming (or burning) anything again. Only identities
    an approval rule covers can have one, so no other enrollment pays for the lookup."""
    if not required_approvals(ra.approval, identity):
        return None
    digest = csr_hash(csr)
    found = [r for r in ra.records.requests() if r.csr_sha256 == digest and r.identity == identity]
    return found[-1] if found else None


def _enroll_token(
    ra: RegistrationAuthority,
    token: str,
    csr: x509.CertificateSigningRequest,
    *,
    now: dt.datetime,
    client: str,
) -> Issued | EnrollmentRequest:
    """On the CA thread: a used token whose CSR waits in the queue polls that request;
    anything else is ``enroll`` exactly as on ``/v1/enroll``."""
    record = ra.records.find_token(token_hash(token))
    if record is not None and record.used_at is not None:
        request = _waiting(ra, record.identity, csr)
        if request is not None:
            return ra.poll(request.id, now=now)
    der = csr.public_bytes(serialization.Encoding.DER)
    return ra.enroll(token, der, now=now, client=client)


def _enroll_verified(
    ra: RegistrationAuthority,
    verified: VerifiedToken,
    csr: x509.CertificateSigningRequest,
    *,
    now: dt.datetime,
    client: str,
) -> Issued | EnrollmentRequest:
    request = _waiting(ra, verified.identity, csr)
    if request is not None:  # a denied one stays denied: a new request needs a new CSR
        return ra.poll(request.id, now=now)
    der = csr.public_bytes(serialization.Encoding.DER)
    return ra.enroll_verified(verified, der, now=now, client=client)


def _labelled(ra: RegistrationAuthority, label: str | None) -> RegistrationAuthority:
    """``ra`` issuing under the profile ca.toml's ``[est.labels]`` gives ``label``
    (§3.2.2's optional segment); the unlabelled paths keep the CA's own profile."""
    if label is None:
        return ra
    profile = ra.labels.get(label)
    if profile is None:
        raise EnrollmentRefused(
            "est_label_unknown", f"this CA has no EST label {label[:64]!r}", status=404
        )
    return replace(ra, authority=replace(ra.authority, profile=profile))


class _Est:
    """The EST endpoints of one ``CaServer`` (its CA thread, limiter and token verifier)."""

    def __init__(self, server: CaServer) -> None:
        self._server = server

    async def _ra(self, label: str | None, reason: str) -> RegistrationAuthority:
        """The authority for ``label``: a label is looked up in ca.toml as it is now (one
        added without SIGHUP serves at once); 404 ``est_label_unknown`` when it has none."""
        if label is None:
            return self._server._ra
        server = self._server
        return await server._call(server._decide, reason, lambda ra: _labelled(ra, label))

    async def _audit(self, operation: str, refused: EnrollmentRefused, client: str) -> None:
        detail = {"operation": operation, "code": refused.code, "client": client}
        if isinstance(refused, TokenRefused):
            detail["detail"] = refused.detail
        ra = self._server._ra
        await self._server._call(lambda: ra.records.record_event("est_refused", detail, at=_now()))

    async def _answer(
        self,
        operation: str,
        request: Request,
        work: Callable[[str], Awaitable[Issued | EnrollmentRequest]],
    ) -> Response:
        """Run ``work``; an ``EnrollmentRefused`` becomes §4.2.3's text/plain refusal
        (plus its audit entry), a pending request 202 with Retry-After."""
        client = request.client.host if request.client else "unknown"
        try:
            result = await work(client)
        except EnrollmentRefused as refused:
            if refused.code in _TOKEN_FAILURES or isinstance(refused, TokenRefused):
                self._server._limiter.failed(client, time.monotonic())
            await self._audit(operation, refused, client)
            headers = {"WWW-Authenticate": _REALM} if refused.status == 401 else None
            return _refusal(refused.code, refused.message, refused.status, headers)
        if isinstance(result, EnrollmentRequest):
            return _refusal(
                "approval_pending",
                f"waiting for {result.required} approver(s); send the same CSR again later",
                202,
                {"Retry-After": str(RETRY_AFTER)},
            )
        return _certs_only([result.cert])

    async def cacerts(self, request: Request) -> Response:
        """§4.1: the issuing chain up to and including the root (no authentication); one
        CA, so every label has the same."""
        try:
            ra = await self._ra(request.path_params.get("label"), "cacerts")
        except EnrollmentRefused as refused:
            return _refusal(refused.code, refused.message, refused.status)
        return _certs_only(list(ra.authority.issuer.chain))

    async def csrattrs(self, request: Request) -> Response:
        """§4.5 as RFC 8951 §4 rewrote it: ``application/csrattrs``, base64 of the DER."""
        try:
            ra = await self._ra(request.path_params.get("label"), "csrattrs")
        except EnrollmentRefused as refused:
            return _refusal(refused.code, refused.message, refused.status)
        der = csr_attributes(ra.authority.policy.key_types)
        return Response(
            base64.encodebytes(der),
            media_type="application/csrattrs",
            headers={"Content-Transfer-Encoding": "base64"},
        )

    async def simpleenroll(self, request: Request) -> Response:
        client = request.client.host if request.client else "unknown"
        wait = self._server._limiter.retry_after(client, time.monotonic())
        if wait is not None:  # not audited: the limit is there to spare the audit log
            return _refusal(
                "rate_limited",
                "too many failed token attempts from this address",
                429,
                {"Retry-After": str(int(wait) + 1)},
            )

        label = request.path_params.get("label")

        async def work(client: str) -> Issued | EnrollmentRequest:
            await self._ra(label, "enroll")  # an unknown label: 404 before anything else
            credentials = _credentials(request)
            if credentials is None:
                raise EnrollmentRefused(
                    "token_invalid",
                    "authenticate with Basic (password = enrollment token) or Bearer",
                    status=401,
                )
            csr = await _pkcs10(request)
            kind, secret = credentials
            server = self._server
            now = _now()
            if kind == "token" or secret.startswith("mtk1_"):
                return await server._call(
                    server._decide,
                    "enroll",
                    lambda ra: _enroll_token(
                        _labelled(ra, label), secret, csr, now=now, client=client
                    ),
                )
            # ca.toml's provisioners as they are now, as /v1/enroll reads them
            ra = await server._call(server._decide, "enroll", lambda ra: ra)
            verified = await asyncio.to_thread(server._verify, ra.provisioners, secret, now)
            return await server._call(
                server._decide,
                "enroll",
                lambda ra: _enroll_verified(
                    _labelled(ra, label), verified, csr, now=now, client=client
                ),
            )

        return await self._answer("simpleenroll", request, work)

    async def simplereenroll(self, request: Request) -> Response:
        label = request.path_params.get("label")

        async def work(client: str) -> Issued:
            await self._ra(label, "renew")
            presented = presented_certificate(request, "re-enrollment")
            csr = await _pkcs10(request)
            der = csr.public_bytes(serialization.Encoding.DER)
            return await self._server._call(
                self._server._decide,
                "renew",
                lambda ra: _labelled(ra, label).renew(presented, der, now=_now()),
            )

        return await self._answer("simplereenroll", request, work)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def est_routes(server: CaServer) -> list[Route]:
    """The four EST operations of §3.2.2 for ``server``'s app, with and without a label."""
    est = _Est(server)
    return [
        Route(f"{EST_PREFIX}{label}/{operation}", handler, methods=[method])
        for label in ("", "/{label}")
        for operation, handler, method in (
            ("cacerts", est.cacerts, "GET"),
            ("csrattrs", est.csrattrs, "GET"),
            ("simpleenroll", est.simpleenroll, "POST"),
            ("simplereenroll", est.simplereenroll, "POST"),
        )
    ]


def presented_certificate(request: Request, needed_for: str) -> x509.Certificate:
    """The leaf the client presented in this connection's handshake (renewal, EST
    re-enrollment): 401 ``client_cert_required`` when there is none."""
    tls = (request.scope.get("extensions") or {}).get("tls") or {}
    chain = tls.get("client_cert_chain") or []
    if not chain:
        raise EnrollmentRefused(
            "client_cert_required",
            f"{needed_for} needs the current certificate and key in the TLS handshake",
            status=401,
        )
    return x509.load_pem_x509_certificate(chain[0].encode())
