"""The operator console as a Starlette app: server-rendered pages over the CA's store.

IO shell. Every decision is the core's: ``check_approval``/``check_not_counted`` for an
approval (countersigned by the CA's key, since the browser cannot sign),
``review_csr`` and a dry-run ``issue`` for the planned certificate, ``lint_chain`` for
its findings, ``verify_audit_chain`` for the log, and the CRL is written by the same
function as ``mtlskit ca crl``. Store calls run on one thread (the store is used by one
thread only). Pages have no inline script or style; every response carries the
security headers, and every POST needs the user's CSRF token and the approver role.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import secrets
import time
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any, Final, TypeVar

import jinja2
from cryptography import x509
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from mtlskit.cadir import CaDirectory
from mtlskit.certinfo import summarize
from mtlskit.certs import certificate_pem, chain_pem, load_certificates
from mtlskit.console._auth import (
    ConsoleRefused,
    ConsoleUser,
    console_user,
    csrf_token,
    csrf_valid,
)
from mtlskit.errors import InputError
from mtlskit.issue import (
    REVOCATION_REASONS,
    ApprovalRefused,
    EnrollmentRefused,
    EnrollmentRequest,
    IssuanceRefused,
    Issuer,
    KeyUnavailable,
    RequestStatus,
    StoreUnavailable,
    UnknownCertificate,
    check_approval,
    check_not_counted,
    countersign_approval,
    format_duration,
    is_external_key,
    load_csr,
    parse_identity,
    review_csr,
    revoked_by,
    verify_audit_chain,
)
from mtlskit.issue import CertificateStatus as Status
from mtlskit.lint import lint_chain
from mtlskit.trustfiles import read_crls

if TYPE_CHECKING:
    from mtlskit.caserver import ConfigWatch

__all__ = ["PAGE_SIZE", "SECURITY_HEADERS", "Console"]

PAGE_SIZE: Final = 50
MAX_FORM: Final = 16 * 1024
AUDIT_SHOWN: Final = 500  # newest entries listed; the verification covers all of them
SECURITY_HEADERS: Final = {
    "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "frame-ancestors 'none'; form-action 'self'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}
_FLASH: Final = {
    "approved": "Approval recorded.",
    "repeat": "You had already approved this request; it still counts once.",
    "denied": "Request denied.",
    "revoked": "Certificate revoked; the CRL was written.",
}
_T = TypeVar("_T")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


class _SecurityHeaders:
    """ASGI middleware: the same headers on every response, errors and assets included,
    and ``Server-Timing: app;dur=MS`` (request in to headers out) for bench/console.py."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._headers = [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in self._headers}
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                spent = f"app;dur={(time.perf_counter() - started) * 1000:.1f}".encode()
                message = {**message, "headers": [*kept, *self._headers, (b"server-timing", spent)]}
            await send(message)

        await self.app(scope, receive, with_headers)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Form:
    fields: dict[str, str]

    def get(self, name: str) -> str | None:
        return self.fields.get(name)


class Console:
    """The console over one CA directory, its loaded issuing key and its store.

    ``publish_crl(ca_dir, now)`` writes the CRL file ``ca_dir``'s ``[console] crl_file``
    names (``mtlskit ca crl``'s own function) and returns the CRL; ``key_store`` names
    where the CA key lives, for /health. With ``watch``, ca.toml is re-read when it
    changed (hashed before every request, as ``ca serve`` does) and on ``reload``
    (SIGHUP): an approver removed from ``[console]`` is refused from the next request on."""

    def __init__(
        self,
        *,
        ca_dir: CaDirectory,
        issuer: Issuer,
        store: Any,
        publish_crl: Callable[[CaDirectory, dt.datetime], x509.CertificateRevocationList],
        key_store: str,
        watch: ConfigWatch[CaDirectory] | None = None,
    ) -> None:
        self._watch = watch
        self._ca_dir = ca_dir
        self._config = ca_dir.config.console
        self._issuer = issuer
        self._store = store
        self._publish_crl = publish_crl
        self._key_store = key_store
        self._secret = secrets.token_bytes(32)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mtlskit-console")
        self._pages = jinja2.Environment(
            loader=jinja2.PackageLoader("mtlskit.console", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        self._css = resources.files("mtlskit.console").joinpath("static/console.css").read_bytes()
        routes = [
            Route("/", self.root, methods=["GET"]),
            Route("/static/console.css", self.css, methods=["GET"]),
            Route("/requests", self.requests, methods=["GET"]),
            Route("/requests/{request_id}", self.request_page, methods=["GET"]),
            Route("/requests/{request_id}/approve", self.approve, methods=["POST"]),
            Route("/requests/{request_id}/deny", self.deny, methods=["POST"]),
            Route("/certificates", self.certificates, methods=["GET"]),
            Route("/certificates/{serial}", self.certificate_page, methods=["GET"]),
            Route("/certificates/{serial}/chain.pem", self.chain, methods=["GET"]),
            Route("/certificates/{serial}/revoke", self.revoke, methods=["POST"]),
            Route("/audit", self.audit, methods=["GET"]),
            Route("/health", self.health, methods=["GET"]),
        ]
        starlette = Starlette(
            routes=routes,
            exception_handlers={
                ConsoleRefused: self._refused,
                HTTPException: self._http_error,
                StoreUnavailable: self._unavailable,
                KeyUnavailable: self._unavailable,
            },
        )
        self.app = _SecurityHeaders(starlette)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self._store.close()

    # --- plumbing ---------------------------------------------------------------------

    async def _call(self, fn: Callable[..., _T], *args: Any) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _user(self, request: Request) -> ConsoleUser:
        """The user behind this connection's certificate; one this CA has revoked (the
        handshake does not read CRLs) is ``cert_revoked``, whatever the lists say."""
        tls = (request.scope.get("extensions") or {}).get("tls") or {}
        chain = tls.get("client_cert_chain") or []
        if not chain:  # the handshake requires one; this is a server without the extension
            raise ConsoleRefused("not_console_user", "no client certificate", status=403)
        cert = load_certificates(chain[0].encode(), source="client certificate")[0]
        user, revoked = await self._call(self._identify, cert)
        if revoked:
            raise ConsoleRefused("cert_revoked", "this certificate is revoked", status=403)
        request.state.console_user = user  # for this request's error page, if it gets one
        return user

    def _identify(self, cert: x509.Certificate) -> tuple[ConsoleUser, bool]:
        """On the console's thread: ca.toml as it is now, then who ``cert`` is and whether
        this CA revoked it (one hop to the thread for both)."""
        self._refresh("before a request")
        user = console_user(cert, self._config)
        return user, revoked_by(self._issuer.cert, self._store)(cert)

    def _refresh(self, reason: str, *, force: bool = False) -> None:
        """Swap in ca.toml if it changed (``ConfigWatch`` logs what); a changed file that
        does not validate refuses every page (``config_invalid``, 503) until it is fixed."""
        if self._watch is None:
            return
        try:
            fresh = self._watch.check(reason, force=force)
        except EnrollmentRefused as exc:
            raise ConsoleRefused("config_invalid", exc.message, status=503) from None
        if fresh is not None:
            self._ca_dir, self._config = fresh, fresh.config.console

    def reload(self, reason: str) -> None:
        """Re-read ca.toml now (SIGHUP), on the console's thread, between two requests."""

        def work() -> None:
            with contextlib.suppress(ConsoleRefused):  # logged; pages say config_invalid
                self._refresh(reason, force=True)

        with contextlib.suppress(RuntimeError):  # the console is closing
            self._executor.submit(work).result()

    async def _changer(self, request: Request) -> tuple[ConsoleUser, _Form]:
        """The approver behind a POST and its form, after the role and the CSRF token."""
        user = await self._user(request)
        if not user.can_change:
            raise ConsoleRefused("not_approver", "viewers cannot change anything", status=403)
        form = await self._form(request)
        if not csrf_valid(self._secret, user, form.get("csrf")):
            raise ConsoleRefused("csrf_invalid", "missing or wrong form token", status=403)
        return user, form

    async def _form(self, request: Request) -> _Form:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM:
                raise ConsoleRefused("form_too_large", "the form is too large", status=413)
        try:
            pairs = urllib.parse.parse_qsl(body.decode(), keep_blank_values=True)
        except (UnicodeDecodeError, ValueError):
            raise ConsoleRefused(
                "form_invalid", "the form is not URL-encoded", status=400
            ) from None
        fields: dict[str, str] = {}
        for name, value in pairs:
            fields.setdefault(name, value)
        return _Form(fields=fields)

    def _render(
        self, name: str, user: ConsoleUser | None, *, http_status: int = 200, **values: Any
    ) -> Response:
        page = self._pages.get_template(name).render(
            user=user,
            csrf=csrf_token(self._secret, user) if user is not None else "",
            flash=values.pop("flash", None),
            nav=values.pop("nav", ""),
            **values,
        )
        return HTMLResponse(page, status_code=http_status)

    def _error(self, user: ConsoleUser | None, code: str, message: str, status: int) -> Response:
        return self._render(
            "error.html", user, http_status=status, code=code, message=message, title="Error"
        )

    async def _refused(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ConsoleRefused)
        # A refusal after the user was known (csrf_invalid, request_unknown, ...) reuses
        # them: no second ca.toml hash, store lookup and signature check for the error page.
        user: ConsoleUser | None = getattr(request.state, "console_user", None)
        if user is None and exc.code != "not_console_user":
            try:
                user = await self._user(request)
            except ConsoleRefused:
                user = None
        return self._error(user, exc.code, exc.message, exc.status)

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        try:
            user: ConsoleUser | None = await self._user(request)
        except ConsoleRefused:
            return self._error(None, "not_console_user", "not a console user", 403)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return self._error(user, code, str(exc.detail), exc.status_code)

    async def _unavailable(self, request: Request, exc: Exception) -> Response:
        # KeyUnavailable is a StoreUnavailable (the CA cannot answer now): ask for it first.
        code = "key_unavailable" if isinstance(exc, KeyUnavailable) else "store_unavailable"
        return self._error(None, code, "the CA cannot answer now; try again", 503)

    def _flash(self, request: Request) -> str | None:
        return _FLASH.get(request.query_params.get("done", ""))

    # --- pages --------------------------------------------------------------------------

    async def root(self, request: Request) -> Response:
        await self._user(request)
        return RedirectResponse("/requests", status_code=303)

    async def css(self, request: Request) -> Response:
        return Response(self._css, media_type="text/css")

    async def requests(self, request: Request) -> Response:
        user = await self._user(request)

        def open_requests() -> list[EnrollmentRequest]:
            return [
                *self._store.requests(status=RequestStatus.PENDING),
                *self._store.requests(status=RequestStatus.APPROVED),
            ]

        pending = await self._call(open_requests)
        return self._render(
            "requests.html", user, nav="requests", title="Pending requests", requests=pending
        )

    def _request(self, request_id: str) -> EnrollmentRequest:
        found = self._store.get_request(request_id)
        if found is None:
            raise ConsoleRefused("request_unknown", "no such enrollment request", status=404)
        return found

    def _plan(self, request: EnrollmentRequest, now: dt.datetime) -> dict[str, Any]:
        """What the CA will issue for this request: the dry-run certificate, its lint
        findings and what the CSR asked for that it drops (or why it would refuse)."""
        authority = self._ca_dir.authority(self._issuer, self._store)
        try:
            csr = load_csr(request.csr_pem, source="request")
            target = parse_identity(request.identity)
            review = review_csr(csr, identity=target, profile=authority.profile, source="CSR")
        except InputError as exc:
            return {"refused": str(exc), "dropped": (), "summary": None, "findings": ()}
        try:
            issued = authority.issue(
                target, review.public_key, now=now, dropped=review.dropped, dry_run=True
            )
        except IssuanceRefused as refused:
            return {"refused": str(refused), "dropped": review.dropped, "summary": None,
                    "findings": ()}  # fmt: skip
        summary = summarize(list(issued.chain))
        reports = lint_chain(issued.chain, (self._ca_dir.config.profile,), at=now)
        return {
            "refused": None,
            "dropped": review.dropped,
            "summary": summary,
            "lifetime": format_duration(authority.default_ttl),  # what the CA signs with
            "findings": reports[0].findings if reports else (),
        }

    def _request_view(self, request_id: str) -> dict[str, Any]:
        now = _now()
        found = self._request(request_id)
        return {"request": found, "plan": self._plan(found, now)}

    async def request_page(self, request: Request) -> Response:
        user = await self._user(request)
        view = await self._call(self._request_view, request.path_params["request_id"])
        found = view["request"]
        return self._render(
            "request.html",
            user,
            nav="requests",
            title=f"Request {found.id}",
            flash=self._flash(request),
            open=found.status in {RequestStatus.PENDING, RequestStatus.APPROVED},
            **view,
        )

    def _approve(self, user: ConsoleUser, request_id: str, reviewed: str) -> str:
        now = _now()
        found = self._request(request_id)
        if found.status not in {RequestStatus.PENDING, RequestStatus.APPROVED}:
            raise ConsoleRefused(
                "request_closed", f"this request is {found.status.value}", status=409
            )
        if reviewed.lower().removeprefix("sha256:") != found.csr_sha256:
            self._store.record_event(
                "approve_refused",
                {
                    "request": found.id,
                    "approver": user.identity,
                    "code": "approval_stale",
                    "via": "console",
                },
                at=now,
            )
            raise ConsoleRefused(
                "approval_stale",
                "the request's CSR is not the one on the page you approved; review it again",
                status=409,
            )
        issuer = self._issuer.cert
        records = {record.fingerprint: record for record in self._store.approvers()}
        record = records.get(user.key)
        signature = countersign_approval(
            found.id, found.csr_sha256, fingerprint=user.key, ca_key=self._issuer.key
        )
        try:
            if record is not None and record.identity != user.identity:
                raise ApprovalRefused(
                    "approver_unregistered",
                    f"this key is registered for {record.identity}, not {user.identity}",
                )
            identity = check_approval(
                found,
                record,
                fingerprint=user.key,
                signature=signature,
                at=now,
                ca_public_key=issuer.public_key(),
                revoked=revoked_by(issuer, self._store),
            )
            new = check_not_counted(found, identity, user.key)
        except ApprovalRefused as refused:
            self._store.record_event(
                "approve_refused",
                {
                    "request": found.id,
                    "approver": user.identity,
                    "fingerprint": user.key,
                    "code": refused.code,
                    "via": "console",
                },
                at=now,
            )
            raise ConsoleRefused(refused.code, refused.message, status=403) from None
        _, added = self._store.approve_request(
            found.id,
            approver=identity,
            csr_sha256=found.csr_sha256,
            at=now,
            fingerprint=user.key,
            signature=signature,
        )
        return "approved" if added and new else "repeat"

    async def approve(self, request: Request) -> Response:
        user, form = await self._changer(request)
        request_id = request.path_params["request_id"]
        done = await self._call(self._approve, user, request_id, form.get("csr_sha256") or "")
        return RedirectResponse(f"/requests/{request_id}?done={done}", status_code=303)

    def _deny(self, user: ConsoleUser, request_id: str, reason: str) -> None:
        found = self._request(request_id)
        try:
            self._store.deny_request(found.id, approver=user.identity, reason=reason, at=_now())
        except InputError as exc:  # no longer open
            raise ConsoleRefused("request_closed", exc.detail, status=409) from None

    async def deny(self, request: Request) -> Response:
        user, form = await self._changer(request)
        request_id = request.path_params["request_id"]
        reason = (form.get("reason") or "").strip()
        if not reason:
            raise ConsoleRefused("reason_missing", "say why the request is denied", status=400)
        await self._call(self._deny, user, request_id, reason[:1000])
        return RedirectResponse(f"/requests/{request_id}?done=denied", status_code=303)

    # --- certificates -------------------------------------------------------------------

    async def certificates(self, request: Request) -> Response:
        user = await self._user(request)
        params = request.query_params
        query = (params.get("q") or "").strip()[:256]
        status_text = params.get("status") or ""
        try:
            page = max(1, int(params.get("page") or 1))
            days = int(params.get("days") or 30)
        except ValueError:
            raise ConsoleRefused("query_invalid", "page and days are numbers", status=400) from None
        if status_text not in {"", "valid", "revoked", "expiring"} or not 0 < days <= 3650:
            raise ConsoleRefused("query_invalid", "unknown status or days", status=400)
        status = {"valid": Status.VALID, "revoked": Status.REVOKED}.get(status_text)
        within = dt.timedelta(days=days) if status_text == "expiring" else None
        now = _now()

        def fetch() -> tuple[Any, int]:
            return self._store.certificate_page(
                now=now,
                query=query,
                status=status,
                expiring_within=within,
                limit=PAGE_SIZE,
                offset=(page - 1) * PAGE_SIZE,
            )

        records, total = await self._call(fetch)

        def link(number: int) -> str:
            kept = {"q": query, "status": status_text}
            if status_text == "expiring":
                kept["days"] = str(days)
            kept = {k: v for k, v in kept.items() if v}
            return "/certificates?" + urllib.parse.urlencode({**kept, "page": number})

        return self._render(
            "certificates.html",
            user,
            nav="certificates",
            title="Certificates",
            records=records,
            total=total,
            page=page,
            now=now,
            q=query,
            status=status_text,
            days=days,
            previous=link(page - 1) if page > 1 else None,
            next=link(page + 1) if page * PAGE_SIZE < total else None,
        )

    def _record(self, serial_text: str) -> Any:
        try:
            serial = int(serial_text, 16)
        except ValueError:
            raise ConsoleRefused("certificate_unknown", "not a serial number", status=404) from None
        record = self._store.get(serial)
        if record is None:
            raise ConsoleRefused("certificate_unknown", "no such certificate", status=404)
        return record

    async def certificate_page(self, request: Request) -> Response:
        user = await self._user(request)
        record = await self._call(self._record, request.path_params["serial"])
        now = _now()
        chain = [*load_certificates(record.pem, source="store"), *self._issuer.chain]
        rows = [(field, value) for field, value, _ in summarize(chain).rows(now)]  # as inspect
        return self._render(
            "certificate.html",
            user,
            nav="certificates",
            title=f"Certificate {record.serial:x}",
            flash=self._flash(request),
            record=record,
            status=record.status(now).value,
            rows=rows,
            reasons=REVOCATION_REASONS,
        )

    async def chain(self, request: Request) -> Response:
        await self._user(request)
        record = await self._call(self._record, request.path_params["serial"])
        leaf = load_certificates(record.pem, source="store")[0]
        body = chain_pem([leaf, *self._issuer.chain[:-1]]) + certificate_pem(self._issuer.chain[-1])
        return Response(
            body,
            media_type="application/x-pem-file",
            headers={"content-disposition": f'attachment; filename="{record.serial:x}.pem"'},
        )

    def _key_signs(self) -> bool:
        """Whether the CA key is in a token and signs now; ``KeyUnavailable`` if it does not."""
        key = self._issuer.key
        if not is_external_key(key):
            return False  # a key in memory: nothing to ask
        key.sign_data(b"mtlskit console health")
        return True

    def _revoke(self, user: ConsoleUser, serial_text: str, reason: str) -> None:
        """Record the revocation, then write the CRL. The token must sign first: a
        revocation in the store that the CRL lacks would be refused on retry as already
        revoked, while relying parties still accept the certificate."""
        record = self._record(serial_text)
        flag = x509.ReasonFlags(reason)
        self._key_signs()
        now = _now()
        try:
            with self._store.group():
                self._store.revoke(record.serial, reason=flag, at=now)
                self._store.record_event(
                    "console_revoke",
                    {
                        "serial": f"{record.serial:x}",
                        "identity": record.identity,
                        "reason": flag.value,
                        "by": user.identity,
                    },
                    at=now,
                )
        except UnknownCertificate as exc:
            raise ConsoleRefused("certificate_revoked", exc.detail, status=409) from None
        try:
            self._publish_crl(self._ca_dir, now)
        except KeyUnavailable:  # the token went between the check and the CRL
            raise ConsoleRefused(
                "crl_not_written",
                "revoked, but the CRL could not be signed: run `mtlskit ca crl` once the "
                "CA key is back",
                status=503,
            ) from None

    async def revoke(self, request: Request) -> Response:
        user, form = await self._changer(request)
        serial = request.path_params["serial"]
        reason = form.get("reason") or "unspecified"
        if reason not in REVOCATION_REASONS:
            raise ConsoleRefused("reason_invalid", "not an RFC 5280 reason", status=400)
        if form.get("confirm") != "yes":
            record = await self._call(self._record, serial)
            return self._render(
                "revoke_confirm.html",
                user,
                nav="certificates",
                title=f"Revoke {record.serial:x}?",
                record=record,
                reason=reason,
            )
        await self._call(self._revoke, user, serial, reason)
        return RedirectResponse(f"/certificates/{serial}?done=revoked", status_code=303)

    # --- audit and health ----------------------------------------------------------------

    async def audit(self, request: Request) -> Response:
        user = await self._user(request)
        entries = await self._call(self._store.audit_entries)
        problem = verify_audit_chain(entries)
        shown = list(reversed(entries[-AUDIT_SHOWN:]))
        return self._render(
            "audit.html",
            user,
            nav="audit",
            title="Audit log",
            problem=problem,
            count=len(entries),
            entries=shown,
        )

    def _health(self) -> dict[str, Any]:
        now = _now()
        try:
            latency = self._store.ping()
            store = f"ok ({self._store.backend}, {latency * 1000:.1f} ms)"
        except StoreUnavailable as exc:
            store = f"unavailable: {exc.detail}"
        try:
            key = f"{self._key_store}: {'signs' if self._key_signs() else 'loaded'}"
        except KeyUnavailable as exc:
            key = f"{self._key_store}: unavailable ({exc.detail})"  # its source: the URI
        crl_path = self._ca_dir.path / self._config.crl_file
        # As ca.toml names it (relative to the CA directory): the page shows no host paths.
        crl: dict[str, Any] = {"path": self._config.crl_file, "error": None}
        if not crl_path.exists():
            crl["error"] = "not written yet (revoke here, or `mtlskit ca crl`)"
        else:
            try:
                parsed = read_crls([crl_path])[0]  # the issuer's (`ca crl` writes two)
                written = dt.datetime.fromtimestamp(crl_path.stat().st_mtime, dt.UTC)
                crl |= {
                    "written": written.replace(microsecond=0),
                    "number": parsed.extensions.get_extension_for_class(
                        x509.CRLNumber
                    ).value.crl_number,
                    "this_update": parsed.last_update_utc,
                    "next_update": parsed.next_update_utc,
                    "stale": parsed.next_update_utc is None or parsed.next_update_utc <= now,
                    "entries": len(parsed),
                }
            except (InputError, OSError, x509.ExtensionNotFound):
                crl["error"] = "unreadable"
        return {"store": store, "key": key, "crl": crl, "now": now}

    async def health(self, request: Request) -> Response:
        user = await self._user(request)
        view = await self._call(self._health)
        return self._render("health.html", user, nav="health", title="Health", **view)
