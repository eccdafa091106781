"""The decision point: a proxy's check request in, an answer (status, headers, log record) out.

Pure: no sockets, no clock, no files. The HTTP shell (``_server``) turns a request
into a ``CheckRequest``, calls ``DecisionPoint.check`` with the time, and writes
the ``Answer`` back; the log line and the metrics come from the same ``Answer``.

What each proxy sends, and why it is believed:

- **nginx** (``/nginx``, from ``auth_request``): ``$ssl_client_escaped_cert`` and
  ``$ssl_client_verify`` in ``X-Mtlskit-Nginx-Cert``/``-Verify``, the original
  method and URI in ``X-Mtlskit-Original-Method``/``-Uri``. nginx sets these with
  ``proxy_set_header``, which replaces anything the client sent under those names.
  The generated config sends nothing else (``proxy_pass_request_headers off``, so
  nginx may cache the answer by certificate, method and URI). An nginx config that
  does pass the client's headers gets a request with an identity-looking name it
  does not clear denied: nginx cannot delete headers by prefix.
- **HAProxy** (``/haproxy``, from the Lua action of ``mtlskit config haproxy``): the
  leaf as base64 DER in ``X-Mtlskit-Haproxy-Cert`` (``ssl_c_der``), its verify result
  (``ssl_c_verify``) and the original method and path. The Lua builds this request
  itself, so no client header reaches it; HAProxy deletes spoofable names by regex.
- **Envoy** (``/envoy/<original path>``, HTTP ext_authz): the XFCC header Envoy sets
  in ``SANITIZE_SET`` mode (``Cert`` and ``Chain``), the original method and path.
  Envoy can only remove headers by exact name, and removes before routing, so the
  answer lists every spoofable name the client sent in
  ``x-envoy-auth-headers-to-remove``, which Envoy strips before going upstream.

nginx and HAProxy hand over the leaf only (nginx has no variable for the client's
chain), so the intermediates the client presented are supplied from configuration
(``intermediates``): they help build the path and are never anchors.

A rejection's details go to the log record only; the proxy (and so the client)
gets a bare 403.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from mtlskit.authz import PathError, Policy, needs_normalizing, normalize_target
from mtlskit.certs import Fingerprint
from mtlskit.errors import InputError
from mtlskit.forward import (
    ForwardConfig,
    ForwardedClient,
    HeaderFormat,
    Headers,
    forward_headers,
    is_spoofable,
    read_nginx,
    read_xfcc,
)
from mtlskit.forward.names import XFCC, identity_header_names
from mtlskit.verify import Code, Decision, Reason, Verdict, VerificationCache, Verifier

__all__ = [
    "NGINX_CERT",
    "NGINX_SHORT_NAMES",
    "NGINX_VERIFY",
    "ORIGINAL_METHOD",
    "ORIGINAL_URI",
    "Answer",
    "CheckRequest",
    "DecisionPoint",
    "Proxy",
    "cleared_by_proxy",
    "nginx_answer_name",
    "short_answer_headers",
]

NGINX_CERT: Final = "X-Mtlskit-Nginx-Cert"
NGINX_VERIFY: Final = "X-Mtlskit-Nginx-Verify"
HAPROXY_CERT: Final = "X-Mtlskit-Haproxy-Cert"
HAPROXY_VERIFY: Final = "X-Mtlskit-Haproxy-Verify"
ORIGINAL_METHOD: Final = "X-Mtlskit-Original-Method"
ORIGINAL_URI: Final = "X-Mtlskit-Original-Uri"
ENVOY_REMOVE: Final = "x-envoy-auth-headers-to-remove"
# The query of ``/nginx`` with which the generated config asks for nginx_answer_name's names.
NGINX_SHORT_NAMES: Final = "names=short"
# Set by the proxy itself on the check request: never a client's spoofing attempt.
_PROXY_SET: Final = frozenset(
    n.lower()
    for n in (NGINX_CERT, NGINX_VERIFY, HAPROXY_CERT, HAPROXY_VERIFY, ORIGINAL_METHOD, ORIGINAL_URI)
)
_DER: Final = Encoding.DER
_MEMO_LIMIT: Final = 10_000


class Proxy(StrEnum):
    NGINX = "nginx"
    HAPROXY = "haproxy"
    ENVOY = "envoy"


def cleared_by_proxy() -> tuple[str, ...]:
    """Every header name the generated nginx/Envoy configs clear or overwrite by exact name.

    ``forward.names.identity_header_names()``; ``config`` and the decision point both
    read this one list, so they cannot disagree.
    """
    return identity_header_names()


_CLEARED: Final = frozenset(name.lower() for name in cleared_by_proxy())


@functools.cache
def nginx_answer_name(name: str) -> str:
    """The name an identity header travels under from authz-server to nginx (``names=short``).

    nginx 1.22 finds each ``$upstream_http_*`` by comparing it with the answer's headers in
    turn, character by character; the verdict headers all begin ``x-mtlskit-client-``, so
    every comparison walked 17 characters before failing (~8,000 instructions per request
    for the default seven, a tenth of nginx's work). Derived from the name, never from its
    position: a config generated for other ``[forward] formats`` then misses a header, it
    cannot put a value under the wrong one.
    """
    return "m" + hashlib.sha256(name.lower().encode("ascii")).hexdigest()[:7]


def short_answer_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """An answer's headers under ``nginx_answer_name``'s names, values unchanged."""
    return [(nginx_answer_name(n.decode("latin-1")).encode(), v) for n, v in headers]


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckRequest:
    """One check as the shell received it: which proxy contract, the HTTP method, path, headers."""

    proxy: Proxy
    method: str
    path: str
    headers: Headers


@dataclass(frozen=True, slots=True, kw_only=True)
class Answer:
    """What to send back, and what to log: never any reason text in ``headers``."""

    status: int
    headers: list[tuple[bytes, bytes]]
    decision: Decision
    method: str
    path: str
    cache_hit: bool | None = None  # None: caching is off

    @property
    def allowed(self) -> bool:
        return 200 <= self.status < 300

    def record(self) -> dict[str, Any]:
        """The JSON decision-log fields (the shell adds time, proxy, duration)."""
        decision = self.decision
        return {
            "status": self.status,
            "verdict": decision.verdict.value,
            "method": self.method,
            "path": self.path,
            "identity": decision.identity.as_dict() if decision.identity else None,
            "rule": decision.rule,
            "codes": [reason.code.value for reason in decision.reasons],
            "reasons": [reason.as_dict() for reason in decision.reasons],
            "fingerprint": str(decision.chain[0]) if decision.chain else None,
            "cache": None if self.cache_hit is None else ("hit" if self.cache_hit else "miss"),
        }


def _reject(code: Code, message: str, chain: tuple[Fingerprint, ...] = ()) -> Decision:
    return Decision(
        verdict=Verdict.REJECT,
        chain=chain,
        reasons=(Reason(code=code, message=message, depth=None),),
    )


def _one(headers: Headers, name: str) -> str | None:
    wanted = name.lower().encode("ascii")
    found = [value for key, value in headers if key.lower() == wanted]
    if len(found) > 1:
        raise InputError("appears more than once", source=name)
    return found[0].decode("latin-1").strip(" \t") if found else None


@dataclass(frozen=True, slots=True, kw_only=True)
class _Presented:
    """The client certificate a proxy reported: DER chain (leaf first) and the proxy's verdict."""

    chain: tuple[bytes, ...] = ()
    proxy_error: str | None = None  # the proxy itself refused the certificate (and why)
    client: ForwardedClient | None = None  # already parsed (XFCC), else built on demand


@dataclass(slots=True, kw_only=True)
class DecisionPoint:
    """Verifier + policy + forward formats, with an optional verdict cache.

    - ``intermediates``: CA certificates appended to a leaf-only chain (nginx,
      HAProxy) for path building; the verifier never treats them as anchors.
    - ``cache``: a ``VerificationCache`` (keyed by DER chain, so a hit costs no
      parsing); ``None`` verifies every request from scratch.
    - ``allow_invalid``: GCP's ``ALLOW_INVALID_OR_MISSING_CLIENT_CERT`` — answer 200
      with verdict headers for any client and let the backend decide.

    Mutable only in its memo dicts; one per event loop (as the cache).
    """

    verifier: Verifier
    policy: Policy | None = None
    forward: ForwardConfig = field(
        default_factory=lambda: ForwardConfig(formats=(HeaderFormat.XFCC, HeaderFormat.VERDICT))
    )
    intermediates: tuple[x509.Certificate, ...] = ()
    cache: VerificationCache | None = None
    allow_invalid: bool = False
    _intermediate_der: tuple[bytes, ...] = ()
    _pem_memo: dict[str, tuple[bytes, ...]] = field(default_factory=dict)
    _header_memo: dict[tuple[bytes, ...], list[tuple[bytes, bytes]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._intermediate_der = tuple(cert.public_bytes(_DER) for cert in self.intermediates)

    # --- reading what the proxy sent ---------------------------------------------------

    def _nginx(self, headers: Headers) -> _Presented:
        escaped = _one(headers, NGINX_CERT) or ""
        status = _one(headers, NGINX_VERIFY) or ""
        if status == "NONE" or (not escaped and not status.startswith("FAILED:")):
            return _Presented()
        error = status.removeprefix("FAILED:") if status.startswith("FAILED:") else None
        if not escaped:
            return _Presented(proxy_error=error or "no certificate forwarded")
        chain = self._pem_memo.get(escaped) if self.cache is not None else None
        if chain is None:
            client = read_nginx(escaped, status or None)
            chain = tuple(cert.public_bytes(_DER) for cert in client.chain)
            if self.cache is not None:
                if len(self._pem_memo) >= _MEMO_LIMIT:
                    self._pem_memo.clear()
                self._pem_memo[escaped] = chain
        if status and status != "SUCCESS" and error is None:
            error = status
        return _Presented(chain=chain + self._intermediate_der, proxy_error=error)

    def _haproxy(self, headers: Headers) -> _Presented:
        text = _one(headers, HAPROXY_CERT) or ""
        status = _one(headers, HAPROXY_VERIFY)
        if not text:
            return _Presented()
        try:
            leaf = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise InputError("is not base64", source=HAPROXY_CERT) from None
        error = None
        if status not in {None, "", "0"}:
            error = f"OpenSSL verify error {status}"
        return _Presented(chain=(leaf, *self._intermediate_der), proxy_error=error)

    def _envoy(self, headers: Headers) -> _Presented:
        client = read_xfcc(headers)
        if client is None:
            return _Presented()
        if not client.chain:
            raise InputError(
                "carries no Cert: set_current_client_cert_details needs cert and chain",
                source="x-forwarded-client-cert",
            )
        return _Presented(chain=tuple(cert.public_bytes(_DER) for cert in client.chain))

    # --- deciding -----------------------------------------------------------------------

    def check(self, request: CheckRequest, *, at: dt.datetime) -> Answer:
        """Decide one request; malformed proxy input is a rejection with a reason, not a crash."""
        method, path = self._original(request)
        if needs_normalizing(path):  # the rules see the path the backend will serve
            try:
                path = normalize_target(path)
            except PathError as exc:  # in every mode: not the certificate's fault, a probe
                message = f"path refused before authorization: {exc} ({path!r})"
                decision = _reject(Code.IDENTITY_NOT_AUTHORIZED, message)
                return Answer(status=403, headers=[], decision=decision, method=method, path=path)
        hit: bool | None = None
        extra: list[tuple[bytes, bytes]] = []
        try:
            presented = {
                Proxy.NGINX: self._nginx,
                Proxy.HAPROXY: self._haproxy,
                Proxy.ENVOY: self._envoy,
            }[request.proxy](request.headers)
        except InputError as exc:
            decision = _reject(
                Code.CHAIN_UNTRUSTED, f"unreadable certificate from the proxy: {exc}"
            )
            return self._answer(decision, None, method=method, path=path, hit=hit, extra=extra)
        spoofed = self._spoofed(request)
        if not presented.chain:
            message = "the proxy reports no client certificate"
            if presented.proxy_error:
                message = f"the proxy refused the client certificate: {presented.proxy_error}"
            decision = _reject(Code.CERT_NOT_PROVIDED, message)
        else:
            if self.cache is not None:
                before = self.cache.hits
                decision = self.cache.verify(self.verifier, presented.chain, at=at)
                hit = self.cache.hits != before
            else:
                certs = [x509.load_der_x509_certificate(der) for der in presented.chain]
                decision = self.verifier.verify(certs, at=at)
            if presented.proxy_error and decision.accepted:
                decision = _reject(
                    Code.CHAIN_UNTRUSTED,
                    f"the proxy refused the certificate ({presented.proxy_error}) although "
                    "mtlskit would accept it: the proxy's trust settings differ from mtlskit's",
                    decision.chain,
                )
            if self.policy is not None:
                decision = self.policy.authorize(decision, method=method, path=path)
        if request.proxy is Proxy.ENVOY and spoofed:
            extra.append((ENVOY_REMOVE.encode(), ",".join(spoofed).encode("latin-1")))
        elif spoofed and decision.accepted:
            decision = Decision(
                verdict=Verdict.REJECT,
                identity=decision.identity,
                chain=decision.chain,
                reasons=(
                    *decision.reasons,
                    Reason(
                        code=Code.IDENTITY_NOT_AUTHORIZED,
                        message=f"the request carries identity headers the proxy does not "
                        f"strip ({', '.join(spoofed)}); it would reach the backend, so it is "
                        "denied (clear these names in the proxy configuration)",
                        depth=None,
                    ),
                ),
            )
        return self._answer(
            decision, presented.chain, method=method, path=path, hit=hit, extra=extra
        )

    @staticmethod
    def _original(request: CheckRequest) -> tuple[str, str]:
        if request.proxy is Proxy.ENVOY:
            return request.method, request.path.removeprefix("/envoy") or "/"
        method = _one(request.headers, ORIGINAL_METHOD) or request.method
        path = _one(request.headers, ORIGINAL_URI) or request.path
        return method, path

    @staticmethod
    def _spoofed(request: CheckRequest) -> list[str]:
        """Spoofable names the client sent that the proxy has not removed by itself."""
        out: list[str] = []
        for name, _ in request.headers:
            text = name.decode("latin-1")
            lower = text.lower()
            if lower in _PROXY_SET or not is_spoofable(text):
                continue
            if request.proxy is Proxy.ENVOY:
                if lower != XFCC.lower() and lower not in out:
                    out.append(lower)  # Envoy set XFCC itself (SANITIZE_SET)
            elif lower not in _CLEARED and lower not in out:
                out.append(lower)
        return out

    def _answer(
        self,
        decision: Decision,
        chain: Sequence[bytes] | None,
        *,
        method: str,
        path: str,
        hit: bool | None,
        extra: list[tuple[bytes, bytes]],
    ) -> Answer:
        if decision.accepted:
            headers = self._identity_headers(tuple(chain or ()))
            return Answer(
                status=200,
                headers=headers + extra,
                decision=decision,
                method=method,
                path=path,
                cache_hit=hit,
            )
        if not self.allow_invalid:
            return Answer(
                status=403, headers=[], decision=decision, method=method, path=path, cache_hit=hit
            )
        code = decision.reasons[0].code.value
        if chain:
            certs = [x509.load_der_x509_certificate(der) for der in chain]
            client = ForwardedClient.from_chain(certs, verified=False, error=code)
        else:
            client = ForwardedClient(present=False, verified=False, error=code)
        return Answer(
            status=200,
            headers=forward_headers(client, self.forward) + extra,
            decision=decision,
            method=method,
            path=path,
            cache_hit=hit,
        )

    def _identity_headers(self, chain: tuple[bytes, ...]) -> list[tuple[bytes, bytes]]:
        memo = self._header_memo if self.cache is not None else None
        if memo is not None and chain in memo:
            return memo[chain]
        certs = [x509.load_der_x509_certificate(der) for der in chain]
        headers = forward_headers(ForwardedClient.from_chain(certs, verified=True), self.forward)
        if memo is not None:
            if len(memo) >= _MEMO_LIMIT:
                memo.clear()
            memo[chain] = headers
        return headers
