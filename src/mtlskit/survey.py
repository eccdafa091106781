"""Survey servers' certificates for clientAuth: the seed's "look at a handful of websites".

``fetch_chain`` is the only IO: one TLS handshake that accepts whatever the server
presents (we are reading its certificate, not trusting it). ``assess`` is pure and
says what the chain is: its EKUs, its issuer, public or private, and where a
public certificate stands on clientAuth under the root-program timeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import ssl
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from mtlskit.certinfo import EKU_NAMES, IssuerClass, extension_or_none, issuer_class
from mtlskit.errors import InputError
from mtlskit.publicca import ClientAuthVerdict, client_auth_status

__all__ = ["SurveyResult", "Target", "assess", "fetch_chain", "survey"]

DER = 2  # _ssl.ENCODING_DER


@dataclass(frozen=True, slots=True)
class Target:
    host: str
    port: int = 443

    @classmethod
    def parse(cls, text: str) -> Target:
        """``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address."""
        value = text.strip()
        if value.startswith("["):
            host, _, rest = value[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else ""
        elif value.count(":") == 1:
            host, port = value.split(":")
        else:
            host, port = value, ""
        if not host:
            raise InputError(f"not a HOST[:PORT]: {text!r}")
        if port and not (port.isdigit() and 0 < int(port) < 65536):
            raise InputError(f"not a port number in {text!r}")
        return cls(host, int(port) if port else 443)

    @property
    def server_name(self) -> str | None:
        """The SNI to send: none for an IP address, as RFC 6066 §3 requires."""
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return self.host
        return None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class SurveyResult:
    target: Target
    chain: tuple[x509.Certificate, ...] = ()
    error: str | None = None
    eku: tuple[str, ...] | None = None  # None: no EKU extension (any purpose)
    issuer: str = ""
    issuer_class: IssuerClass | None = None
    client_auth: ClientAuthVerdict | None = None  # public certificates only

    @property
    def has_client_auth(self) -> bool:
        return self.eku is None or "clientAuth" in self.eku

    @property
    def compliant(self) -> bool:
        return self.client_auth is None or self.client_auth.compliant

    def as_dict(self) -> dict[str, Any]:
        verdict = self.client_auth
        return {
            "target": str(self.target),
            "error": self.error,
            "subject": self.chain[0].subject.rfc4514_string() if self.chain else None,
            "issuer": self.issuer or None,
            "issuer_class": self.issuer_class.value if self.issuer_class else None,
            "extended_key_usage": list(self.eku) if self.eku is not None else None,
            "not_before": self.chain[0].not_valid_before_utc.isoformat() if self.chain else None,
            "client_auth_status": verdict.status.value if verdict else None,
            "compliant": self.compliant if self.chain else None,
            "policy": [
                {"date": e.date.isoformat(), "rule": e.rule, "source": e.source}
                for e in (verdict.events if verdict else ())
            ],
        }


def assess(target: Target, chain: list[x509.Certificate]) -> SurveyResult:
    leaf = chain[0]
    eku = extension_or_none(leaf, x509.ExtendedKeyUsage)
    names = (
        None if eku is None else tuple(EKU_NAMES.get(oid, oid.dotted_string) for oid in eku.value)
    )
    kind = issuer_class(chain)
    return SurveyResult(
        target=target,
        chain=tuple(chain),
        eku=names,
        issuer=leaf.issuer.rfc4514_string(),
        issuer_class=kind,
        client_auth=client_auth_status(leaf) if kind is IssuerClass.PUBLIC else None,
    )


def _client_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # reading the certificate, not trusting it
    return context


async def fetch_chain(target: Target, *, timeout: float = 5.0) -> list[x509.Certificate]:
    """The chain the server presents, leaf first; raises ``OSError``/``ssl.SSLError``/timeout."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(
            target.host, target.port, ssl=_client_context(), server_hostname=target.server_name
        ),
        timeout,
    )
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        getter = getattr(ssl_object, "get_unverified_chain", None) or (
            ssl_object._sslobj.get_unverified_chain  # public only from Python 3.13
        )
        return [x509.load_der_x509_certificate(cert.public_bytes(DER)) for cert in getter() or []]
    finally:
        writer.close()
        with contextlib.suppress(OSError, TimeoutError, ssl.SSLError):
            await asyncio.wait_for(writer.wait_closed(), 1.0)
        del reader


async def _one(target: Target, timeout: float) -> SurveyResult:
    try:
        chain = await fetch_chain(target, timeout=timeout)
    except TimeoutError:
        return SurveyResult(target=target, error=f"timed out after {timeout:g}s")
    except ssl.SSLError as exc:
        return SurveyResult(target=target, error=f"TLS error: {exc.reason or exc}")
    except OSError as exc:
        return SurveyResult(target=target, error=exc.strerror or str(exc))
    if not chain:
        return SurveyResult(target=target, error="the server sent no certificate")
    return assess(target, chain)


async def survey(
    targets: list[Target],
    *,
    timeout: float = 5.0,
    concurrency: int = 16,
    on_done: Any = None,
) -> list[SurveyResult]:
    """Survey every target, ``concurrency`` at a time; results in the order given."""
    gate = asyncio.Semaphore(concurrency)

    async def bounded(target: Target) -> SurveyResult:
        async with gate:
            result = await _one(target, timeout)
        if on_done is not None:
            on_done(result)
        return result

    return list(await asyncio.gather(*(bounded(target) for target in targets)))
