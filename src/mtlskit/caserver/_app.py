"""The CA's HTTP API as a Starlette app: a thin shell over ``RegistrationAuthority``.

Every call into the CA (store, signing) runs on one dedicated thread: the store is
used by one thread only, and the event loop stays free for TLS handshakes. Calls that
arrive while that thread is busy run next as one batch inside ``SqlStore.group``: group
commit, one fsync for all their writes, and no answer leaves before that COMMIT. Errors
are JSON ``{"code", "message"}`` with the stable codes of ``ERROR_CODES``; a
client's fault is a 4xx chosen from the exception type, never from its text.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

from cryptography.hazmat.primitives import serialization
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mtlskit.caserver._bundle import spiffe_bundle
from mtlskit.caserver._est import est_routes, presented_certificate
from mtlskit.caserver._jwks import JwksCache, JwksUnavailable
from mtlskit.caserver._limit import MAX_BODY, FailureLimiter, read_body
from mtlskit.caserver._openapi import openapi_document
from mtlskit.caserver._reload import ConfigWatch, reload_on
from mtlskit.certs import certificate_pem, chain_pem
from mtlskit.errors import InputError
from mtlskit.identity import ClientIdentity, IdentityError
from mtlskit.issue import (
    EnrollmentRefused,
    EnrollmentRequest,
    Issued,
    KeyUnavailable,
    RegistrationAuthority,
    StoreUnavailable,
)
from mtlskit.issue._provisioner import (
    OidcProvisioner,
    TokenRefused,
    UnknownKeyId,
    VerifiedToken,
    peek_token,
    select_provisioner,
    verify_token,
)

__all__ = ["MAX_BODY", "CaServer"]

_TOKEN_FAILURES: Final = frozenset(
    {"token_invalid", "token_used", "token_expired", "identity_mismatch"}
)  # an id token's refusals (TokenRefused) all count too
_REQUEST_ID: Final = re.compile(r"[0-9a-f]{32}")
# Calls per group commit: enough to share one fsync under load, few enough that the
# last answer in a batch waits tens of milliseconds, not hundreds.
MAX_BATCH: Final = 32
_log = logging.getLogger("mtlskit.caserver")
_T = TypeVar("_T")


def _error(code: str, message: str, status: int, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"code": code, "message": message}, status_code=status, headers=headers)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _issued(issued: Issued, status: int) -> Response:
    cert = issued.cert
    try:
        identity = ClientIdentity.from_certificate(cert).value
    except IdentityError:
        identity = ""
    return JSONResponse(
        {
            "status": "issued",
            "serial": f"{cert.serial_number:x}",
            "identity": identity,
            "not_after": cert.not_valid_after_utc.isoformat(),
            "certificate": certificate_pem(cert).decode(),
            "chain": chain_pem(list(issued.chain[:-1])).decode(),
            "ca": certificate_pem(issued.chain[-1]).decode(),
            "dropped": list(issued.dropped),
        },
        status_code=status,
    )


def _pending(request: EnrollmentRequest) -> Response:
    return JSONResponse(
        {
            "status": "pending",
            "code": "approval_pending",
            "message": f"waiting for {request.required} approver(s); poll its request",
            "request_id": request.id,
            "approvals": len(request.approved_by),
            "required": request.required,
            "csr_sha256": request.csr_sha256,
        },
        status_code=202,
    )


async def _json_object(request: Request, *, required: bool) -> dict[str, Any]:
    """The body as a JSON object (size-limited); ``{}`` for an empty optional body."""
    body = await read_body(request)
    if not body.strip() and not required:
        return {}
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise EnrollmentRefused("request_invalid", "body is not JSON", status=400) from None
    if not isinstance(document, dict):
        raise EnrollmentRefused("request_invalid", "body is not a JSON object", status=400)
    return document


def _string(document: dict[str, Any], key: str, *, required: bool) -> str | None:
    value = document.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise EnrollmentRefused(
            "request_invalid", f"field {key!r} must be a non-empty string", status=400
        )
    return value


def _claimed(token: str) -> dict[str, str]:
    """Who a refused id token says it is (unverified, cut short): for the operator reading
    the audit log, never for a decision."""
    try:
        _, claims = peek_token(token)
    except TokenRefused:
        return {}
    return {f"claimed_{name}": str(claims[name])[:256] for name in ("iss", "sub") if name in claims}


@dataclass(slots=True, kw_only=True)
class _CrlCache:
    revoked: tuple[int, ...]
    built: dt.datetime
    der: bytes


class CaServer:
    """One CA behind the HTTP API; ``app`` is the ASGI application to serve over TLS."""

    def __init__(
        self,
        ra: RegistrationAuthority,
        *,
        name: str,
        trust_domain: str | None,
        limiter: FailureLimiter,
        close: Callable[[], None] = lambda: None,
        refresh_hint: int = 3600,
        watch: ConfigWatch[RegistrationAuthority] | None = None,
        jwks: JwksCache | None = None,
    ) -> None:
        self._ra = ra
        self._jwks = jwks or JwksCache(base=Path())
        self._watch = watch
        self._name = name
        self._trust_domain = trust_domain
        self._limiter = limiter
        self._close = close
        self._refresh_hint = refresh_hint
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mtlskit-ca")
        self._pending: list[tuple[Callable[[], Any], asyncio.Future[Any]]] = []
        self._running = False  # a batch is on the CA thread
        self._crl: _CrlCache | None = None
        self.app = Starlette(
            routes=[
                Route("/healthz", self.healthz, methods=["GET"]),
                Route("/openapi.json", self.openapi, methods=["GET"]),
                Route("/v1/enroll", self.enroll, methods=["POST"]),
                Route("/v1/requests/{request_id}", self.poll, methods=["GET"]),
                Route("/v1/renew", self.renew, methods=["POST"]),
                Route("/v1/crl", self.crl, methods=["GET"]),
                Route("/v1/bundle", self.bundle, methods=["GET"]),
                *est_routes(self),  # RFC 7030 under /.well-known/est/ (_est.py)
            ],
            exception_handlers={
                KeyUnavailable: self._key_unavailable,
                StoreUnavailable: self._unavailable,
                EnrollmentRefused: self._refused,
                InputError: self._bad_input,
                HTTPException: self._http_error,
                Exception: self._internal_error,
            },
        )

    def close(self) -> None:
        """Finish the CA thread's work, then close the store from that same thread."""
        self._thread.submit(self._close).result()
        self._thread.shutdown(wait=True)

    def _decide(self, reason: str, decide: Callable[[RegistrationAuthority], _T]) -> _T:
        """On the CA thread: ``decide`` under ca.toml as it is now (re-read if it changed)."""
        if self._watch is not None:
            fresh = self._watch.check(f"before {reason}")
            if fresh is not None:
                self._ra = fresh
        return decide(self._ra)

    def reload(self, reason: str) -> None:
        """Re-read ca.toml now (SIGHUP), on the CA thread so no decision is half-way."""
        if self._watch is None:
            return

        def work() -> None:
            assert self._watch is not None
            try:
                fresh = self._watch.check(reason, force=True)
            except EnrollmentRefused:
                return  # logged; decisions answer config_invalid until it is fixed
            if fresh is not None:
                self._ra = fresh

        self._thread.submit(work).result()

    def reload_on(self, signum: int) -> None:
        """``reload`` whenever ``signum`` arrives (main thread only, before serving)."""
        reload_on(signum, self.reload)

    async def _call(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """``fn`` on the CA thread, in the next batch; its answer once that batch committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_T] = loop.create_future()
        self._pending.append((lambda: fn(*args, **kwargs), future))
        if not self._running:
            self._next_batch(loop)
        return await future

    def _next_batch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start what is pending as one batch (event loop only: no lock needed)."""
        batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
        self._running = True
        done = loop.run_in_executor(self._thread, self._run_batch, [work for work, _ in batch])
        done.add_done_callback(lambda outcome: self._answer(loop, batch, outcome))

    def _run_batch(self, works: list[Callable[[], Any]]) -> list[tuple[bool, Any]]:
        """On the CA thread: every call, each in its own savepoint, then one COMMIT.

        A call's refusal is its own answer; a COMMIT that fails (or a database that stops
        answering) makes every answer ``StoreUnavailable``, because none of them was
        recorded."""
        outcomes: list[tuple[bool, Any]] = []
        try:
            with self._ra.records.group():
                for work in works:
                    try:
                        outcomes.append((True, work()))
                    except KeyUnavailable:
                        # The CA key could not sign: a call may already have written (a
                        # redeemed token, a refusal) for a certificate that will not exist,
                        # so the whole group is rolled back and every call answers 503.
                        raise
                    except Exception as exc:  # handed to the caller's task, as raised
                        outcomes.append((False, exc))
        except StoreUnavailable as exc:
            self._crl = None  # it may carry a CRL number that was rolled back
            return [(False, exc)] * len(works)
        return outcomes

    def _answer(
        self,
        loop: asyncio.AbstractEventLoop,
        batch: list[tuple[Callable[[], Any], asyncio.Future[Any]]],
        done: asyncio.Future[list[tuple[bool, Any]]],
    ) -> None:
        self._running = False
        failure = asyncio.CancelledError() if done.cancelled() else done.exception()
        outcomes = [(False, failure)] * len(batch) if failure is not None else done.result()
        for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
            if future.done():  # the client went away; the work stands
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
        if self._pending:
            self._next_batch(loop)

    # --- errors ---------------------------------------------------------------------

    async def _refused(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, EnrollmentRefused)
        return _error(exc.code, exc.message, exc.status)

    async def _unavailable(self, request: Request, exc: Exception) -> Response:
        """The database did not answer: 503, so a load balancer or client tries another node.
        Nothing is known to have been recorded; the reason goes to the log, not the client."""
        _log.warning("store unavailable on %s %s: %s", request.method, request.url.path, exc)
        return _error(
            "store_unavailable",
            "the CA's database is unavailable; retry later",
            503,
            headers={"Retry-After": "1"},
        )

    async def _key_unavailable(self, request: Request, exc: Exception) -> Response:
        """The CA key's token did not sign (absent, session lost): 503 like a lost database,
        nothing recorded; the next request opens the token again, no restart needed."""
        _log.warning("CA key unavailable on %s %s: %s", request.method, request.url.path, exc)
        return _error(
            "key_unavailable",
            "the CA's signing key is unavailable; retry later",
            503,
            headers={"Retry-After": "1"},
        )

    async def _bad_input(self, request: Request, exc: Exception) -> Response:
        return _error("request_invalid", str(exc), 400)

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "request_invalid")
        return _error(code, str(exc.detail), exc.status_code, headers=exc.headers)

    async def _internal_error(self, request: Request, exc: Exception) -> Response:
        _log.exception("internal error on %s %s", request.method, request.url.path)
        return _error("internal_error", "the CA failed on this request; see its log", 500)

    # --- endpoints ------------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        """200 only when the database answers a ping from this node (on the CA thread, so a
        wedged CA thread shows too); 503 otherwise, for the load balancer to act on."""
        store = self._ra.records
        backend = getattr(store, "backend", "sqlite")
        ping = getattr(store, "ping", None)
        try:
            seconds = await self._call(ping) if ping is not None else 0.0
        except StoreUnavailable as exc:
            _log.warning("healthz: %s", exc)
            return JSONResponse(
                {
                    "status": "unavailable",
                    "ca": self._name,
                    "database": {"ok": False, "backend": backend, "error": "no answer"},
                },
                status_code=503,
                headers={"Retry-After": "1"},
            )
        return JSONResponse(
            {
                "status": "ok",
                "ca": self._name,
                "database": {"ok": True, "backend": backend, "ping_ms": round(seconds * 1e3, 2)},
            }
        )

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi_document(title=f"mtlskit CA {self._name}"))

    async def enroll(self, request: Request) -> Response:
        client = request.client.host if request.client else "unknown"
        wait = self._limiter.retry_after(client, time.monotonic())
        if wait is not None:
            return _error(
                "rate_limited",
                "too many failed token attempts from this address",
                429,
                headers={"Retry-After": str(int(wait) + 1)},
            )
        document = await _json_object(request, required=True)
        csr = _string(document, "csr", required=True)
        id_token = _string(document, "id_token", required=False)
        if id_token is not None:
            if "token" in document:
                raise EnrollmentRefused(
                    "request_invalid", "give 'token' or 'id_token', not both", status=400
                )
            return await self._enroll_id_token(id_token, csr or "", client)
        token = _string(document, "token", required=True)
        try:
            result = await self._call(
                self._decide,
                "enroll",
                lambda ra: ra.enroll(token, csr, now=_now(), client=client),
            )
        except EnrollmentRefused as refused:
            if refused.code in _TOKEN_FAILURES:
                self._limiter.failed(client, time.monotonic())
            raise
        if isinstance(result, EnrollmentRequest):
            return _pending(result)
        return _issued(result, 201)

    def _verify(
        self, provisioners: tuple[OidcProvisioner, ...], token: str, now: dt.datetime
    ) -> VerifiedToken:
        """Off the event loop (a JWKS fetch is network IO): the provisioner, its keys, the
        token verified; one refetch of the keys when the token names an unknown ``kid``."""
        provisioner, _ = select_provisioner(provisioners, token)
        try:
            jwks, fresh = self._jwks.keys(provisioner)
            try:
                return verify_token(provisioner, token, jwks, now=now)
            except UnknownKeyId:
                if fresh:
                    raise
                jwks, fresh = self._jwks.keys(provisioner, refresh=True)
                if not fresh:  # refetched within the interval already: the kid stays unknown
                    raise
                return verify_token(provisioner, token, jwks, now=now)
        except UnknownKeyId as unknown:
            raise TokenRefused(
                "token_signature_invalid",
                f"{provisioner.name}: kid {unknown.kid!r} is not in the issuer's keys",
            ) from None
        except JwksUnavailable as exc:
            _log.warning("provisioner %s: keys unavailable: %s", provisioner.name, exc)
            raise EnrollmentRefused(
                "token_issuer_unavailable",
                "the CA cannot fetch the token issuer's keys; retry later",
                status=503,
            ) from None

    async def _enroll_id_token(self, token: str, csr: str, client: str) -> Response:
        """Enrollment with a workload-identity token: the provisioner decides the identity.
        The client gets the code; the audit log gets what exactly was wrong."""
        now = _now()
        try:
            # The provisioners of ca.toml as it is now: re-read first (on the CA thread), so
            # one added without SIGHUP is trusted by this very request.
            ra = await self._call(self._decide, "enroll", lambda ra: ra)
            verified = await asyncio.to_thread(self._verify, ra.provisioners, token, now)
            result = await self._call(
                self._decide,
                "enroll",
                lambda ra: ra.enroll_verified(verified, csr, now=now, client=client),
            )
        except TokenRefused as refused:
            self._limiter.failed(client, time.monotonic())
            if refused.code != "token_replayed":  # the store audited that one with the jti
                audit = {
                    "code": refused.code,
                    "detail": refused.detail,
                    "client": client,
                    **_claimed(token),
                }
                await self._call(
                    lambda: self._ra.records.record_event("id_token_refused", audit, at=now)
                )
            raise
        except EnrollmentRefused as refused:
            if refused.code in _TOKEN_FAILURES:
                self._limiter.failed(client, time.monotonic())
            raise
        if isinstance(result, EnrollmentRequest):
            return _pending(result)
        return _issued(result, 201)

    async def poll(self, request: Request) -> Response:
        request_id = request.path_params["request_id"]
        if not _REQUEST_ID.fullmatch(request_id):
            raise EnrollmentRefused("request_unknown", "no such enrollment request", status=404)
        result = await self._call(self._decide, "poll", lambda ra: ra.poll(request_id, now=_now()))
        if isinstance(result, EnrollmentRequest):
            return _pending(result)
        return _issued(result, 200)

    async def renew(self, request: Request) -> Response:
        presented = presented_certificate(request, "renewal")
        document = await _json_object(request, required=False)
        csr = _string(document, "csr", required=False)
        issued = await self._call(
            self._decide, "renew", lambda ra: ra.renew(presented, csr, now=_now())
        )
        return _issued(issued, 201)

    def _crl_der(self) -> bytes:
        """A fresh CRL only when the revoked set changed or half its validity has passed:
        each build takes a CRL number and an audit entry."""
        authority = self._ra.authority
        now = _now()
        revoked = tuple(record.serial for record in authority.store.revoked_unexpired(now))
        cache = self._crl
        if (
            cache is None
            or cache.revoked != revoked
            or now >= cache.built + authority.crl_validity / 2
        ):
            crl = authority.crl(now=now)
            cache = _CrlCache(
                revoked=revoked, built=now, der=crl.public_bytes(serialization.Encoding.DER)
            )
            self._crl = cache
        return cache.der

    async def crl(self, request: Request) -> Response:
        der = await self._call(self._crl_der)
        return Response(der, media_type="application/pkix-crl")

    async def bundle(self, request: Request) -> Response:
        wanted = request.query_params.get("format", "pem")
        root = self._ra.authority.issuer.chain[-1]
        if wanted == "pem":
            return Response(certificate_pem(root), media_type="application/x-pem-file")
        if wanted != "spiffe":
            raise EnrollmentRefused(
                "request_invalid", f"unknown format {wanted!r} (pem or spiffe)", status=400
            )
        if self._trust_domain is None:
            raise EnrollmentRefused(
                "no_trust_domain", "this CA has no SPIFFE trust domain", status=404
            )
        return JSONResponse(spiffe_bundle((root,), refresh_hint=self._refresh_hint))
