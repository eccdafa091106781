"""Talking to ``mtlskit ca serve``: TLS contexts pinned to the CA, and errors sorted by
whether waiting helps.

A ``CaRefused`` is the CA's answer (a 4xx with a stable code, or a TLS handshake the
CA refused): retrying the same request will not change it. ``CaUnavailable`` is the
network or a 5xx/429: a renewal daemon backs off and tries again. A 429 is the narrower
``CaRateLimited``, which says how long the CA asked to wait (its ``Retry-After``).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import ssl
from typing import Any, Final

import httpx
from cryptography import x509

from mtlskit.certs import Fingerprint, certificate_pem, load_certificates
from mtlskit.errors import MtlskitError

__all__ = [
    "CaRateLimited",
    "CaRefused",
    "CaUnavailable",
    "fetch_root",
    "get_json",
    "post_json",
    "verified_context",
]

TIMEOUT: Final = 15.0


class CaRefused(MtlskitError):
    """The CA said no; ``code`` is the server's stable error code."""

    def __init__(self, code: str, message: str, *, status: int | None = None) -> None:
        self.code = code
        self.message = message
        self.status = status
        super().__init__(f"the CA refused: {code}: {message}")


class CaUnavailable(MtlskitError):
    """The CA could not be reached or failed (connection, timeout, 5xx, 429): try later."""


class CaRateLimited(CaUnavailable):
    """A 429: the CA limits this client address; ``retry_after`` is its Retry-After in seconds.

    ``ca serve`` answers 429 ``rate_limited`` after repeated failed token redemptions (an
    unknown, used or expired token) from one address, not because it is down: the
    message says so, and when the address may try again, instead of "CA unavailable".
    """

    def __init__(self, url: str, code: str, retry_after: float | None) -> None:
        self.code = code
        self.retry_after = retry_after
        self.retry_at = (
            dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=retry_after)
            if retry_after is not None
            else None
        )
        why = (
            " after repeated failed enrollments from this address (unknown, used or expired tokens)"
            if code == "rate_limited"
            else ""
        )
        when = (
            f"retry in {retry_after:.0f} s (after {self.retry_at:%Y-%m-%d %H:%M:%S} UTC)"
            if self.retry_at is not None
            else "retry later"
        )
        super().__init__(f"{url}: rate-limited by the CA{why}: {when}")


def _retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP-date (RFC 9110 §10.2.3); None if absent
    or unreadable."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max((when - dt.datetime.now(dt.UTC)).total_seconds(), 0.0)


def _tls_refusal(exc: BaseException) -> ssl.SSLError | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _request(
    method: str,
    url: str,
    context: ssl.SSLContext,
    *,
    json_body: dict[str, Any] | None = None,
    timeout: float = TIMEOUT,
) -> httpx.Response:
    try:
        with httpx.Client(verify=context, timeout=timeout) as http:
            return http.request(method, url, json=json_body)
    except httpx.HTTPError as exc:
        refusal = _tls_refusal(exc)
        if isinstance(refusal, ssl.SSLCertVerificationError):
            raise CaRefused(
                "server_untrusted",
                f"{url}: the server's certificate does not chain to the pinned CA "
                f"({refusal.verify_message})",
            ) from None
        if refusal is not None and "ALERT" in (refusal.reason or "").upper():
            raise CaRefused(
                "tls_refused",
                f"{url}: the CA refused the TLS handshake ({refusal.reason}): the client "
                "certificate is expired, revoked or from another CA",
            ) from None
        raise CaUnavailable(f"{url}: {type(exc).__name__}: {exc}") from None


def _json(response: httpx.Response) -> dict[str, Any]:
    if response.status_code == 429:
        try:
            code = str(response.json().get("code", ""))
        except (ValueError, AttributeError):
            code = ""
        wait = _retry_after(response.headers.get("retry-after"))
        raise CaRateLimited(str(response.request.url), code, wait)
    if response.status_code >= 500:
        raise CaUnavailable(f"{response.request.url}: HTTP {response.status_code}")
    try:
        document = response.json()
    except ValueError:
        raise CaUnavailable(
            f"{response.request.url}: HTTP {response.status_code} without JSON"
        ) from None
    if not isinstance(document, dict):
        raise CaUnavailable(f"{response.request.url}: unexpected JSON")
    if response.status_code >= 400:
        raise CaRefused(
            str(document.get("code", "unknown")),
            str(document.get("message", "")),
            status=response.status_code,
        )
    return document


def post_json(
    url: str, context: ssl.SSLContext, body: dict[str, Any], *, timeout: float = TIMEOUT
) -> tuple[int, dict[str, Any]]:
    response = _request("POST", url, context, json_body=body, timeout=timeout)
    return response.status_code, _json(response)


def get_json(
    url: str, context: ssl.SSLContext, *, timeout: float = TIMEOUT
) -> tuple[int, dict[str, Any]]:
    response = _request("GET", url, context, timeout=timeout)
    return response.status_code, _json(response)


def verified_context(
    root: x509.Certificate, *, cert: str | None = None, key: str | None = None
) -> ssl.SSLContext:
    """Trust exactly the CA's root (not the system store); present ``cert``/``key`` if given."""
    context = ssl.create_default_context(cadata=certificate_pem(root).decode())
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None:
        context.load_cert_chain(cert, key)
    return context


def fetch_root(base: str, *, fingerprint: Fingerprint | None) -> x509.Certificate:
    """The CA's root from ``/v1/bundle``, fetched before anything is trusted.

    With ``fingerprint`` the root must hash to it (else ``CaRefused("ca_fingerprint_mismatch")``);
    without, this is trust on first use, and the caller should show the fingerprint.
    Only the root comes over this unverified connection; every later request verifies
    the server against it.
    """
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    response = _request("GET", f"{base}/v1/bundle", context)
    if response.status_code != 200:
        raise CaUnavailable(f"{base}/v1/bundle: HTTP {response.status_code}")
    try:
        roots = load_certificates(response.content, source=f"{base}/v1/bundle")
    except MtlskitError as exc:
        raise CaUnavailable(str(exc)) from None
    if fingerprint is None:
        return roots[0]
    for root in roots:
        if Fingerprint.of(root) == fingerprint:
            return root
    raise CaRefused(
        "ca_fingerprint_mismatch",
        f"{base} offers root {Fingerprint.of(roots[0])}, not the expected {fingerprint}: "
        "the token was not sent",
    )
