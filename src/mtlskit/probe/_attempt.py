"""One connection attempt against the endpoint, as a real client would make it.

Two clients: Python's ``ssl`` (OpenSSL) for every honest-looking attempt, and
tlslite-ng for the one OpenSSL cannot make — presenting a certificate while
signing CertificateVerify with another key. Each attempt sends one HTTP request
and reads the answer before concluding anything: in TLS 1.3 the server checks
the client's certificate after the client's handshake is already complete, so a
refusal often arrives only as an alert on the first read.

The probe does not check the server's certificate: it tests how the endpoint
treats clients, not who the endpoint is. Nothing secret is sent.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from cryptography import x509

from mtlskit.certs import PrivateKey, chain_pem, private_key_pem
from mtlskit.probe._cases import Observation, Outcome, alert_from_ssl_error, http_status
from mtlskit.probe._forge import Credential

__all__ = ["Target", "attempt_foreign_key", "attempt_ssl"]

MAX_RESPONSE: Final = 1 << 20


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """Where to connect and what to say: address, SNI, request path, per-step timeout."""

    host: str
    port: int
    server_name: str | None = None
    path: str = "/"
    timeout: float = 5.0

    @property
    def sni(self) -> str | None:
        """The SNI to send: ``server_name``, else the host unless it is an IP address."""
        if self.server_name:
            return self.server_name
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return self.host
        return None

    def request(self, extra: Sequence[tuple[str, str]] = ()) -> bytes:
        name = self.server_name or (f"[{self.host}]" if ":" in self.host else self.host)
        host = name if self.port == 443 else f"{name}:{self.port}"
        lines = [
            f"GET {self.path} HTTP/1.1",
            f"Host: {host}",
            "User-Agent: mtlskit-probe",
            "Accept: */*",
            "Connection: close",
            *(f"{key}: {value}" for key, value in extra),
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _connect(target: Target) -> socket.socket:
    return socket.create_connection((target.host, target.port), timeout=target.timeout)


def _judge_response(data: bytes, version: str | None) -> Observation:
    status = http_status(data)
    if status is None:
        if not data:
            return Observation(
                outcome=Outcome.REFUSED,
                tls_version=version,
                detail="closed after the handshake without a response",
            )
        return Observation(
            outcome=Outcome.ACCEPTED, tls_version=version, detail="handshake done; reply not HTTP"
        )
    outcome = Outcome.REFUSED if status >= 400 else Outcome.ACCEPTED
    return Observation(outcome=outcome, http_status=status, tls_version=version)


def _client_context(max_version: ssl.TLSVersion | None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    # Level 0, or OpenSSL refuses to even load the RSA-1024 and SHA-1 client certificates:
    # whether they are acceptable is the server's decision under test, not ours.
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    if max_version is not None:
        context.maximum_version = max_version
    return context


def _load_credential(context: ssl.SSLContext, credential: Credential, workdir: Path) -> None:
    """``load_cert_chain`` reads files only: write one (0600), load it, remove it."""
    path = workdir / f"client-{os.urandom(6).hex()}.pem"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(chain_pem(list(credential.chain)) + private_key_pem(credential.key))
        context.load_cert_chain(path)
    finally:
        path.unlink(missing_ok=True)


def _ssl_refusal(exc: ssl.SSLError, version: str | None) -> Observation:
    alert = alert_from_ssl_error(exc.reason, str(exc))
    if alert is not None:
        return Observation(outcome=Outcome.REFUSED, alert=alert, tls_version=version)
    if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        return Observation(
            outcome=Outcome.REFUSED, tls_version=version, detail="connection closed, no alert"
        )
    return Observation(outcome=Outcome.ERROR, tls_version=version, detail=exc.reason or str(exc))


def attempt_ssl(
    target: Target,
    credential: Credential | None,
    workdir: Path,
    *,
    headers: Sequence[tuple[str, str]] = (),
    max_version: ssl.TLSVersion | None = None,
) -> tuple[Observation, bytes]:
    """Connect with OpenSSL presenting ``credential`` (or nothing), send GET, read the answer.

    Returns the observation and the raw response (for the header-spoofing check).
    """
    context = _client_context(max_version)
    if credential is not None:
        try:
            _load_credential(context, credential, workdir)
        except ssl.SSLError as exc:
            detail = f"the local TLS client cannot use this certificate: {exc.reason or exc}"
            return Observation(outcome=Outcome.ERROR, detail=detail), b""
    try:
        sock = _connect(target)
    except OSError as exc:
        return Observation(outcome=Outcome.ERROR, detail=f"cannot connect: {exc}"), b""
    version = None
    data = b""
    with sock:
        try:
            with context.wrap_socket(sock, server_hostname=target.sni) as tls:
                version = tls.version()
                tls.sendall(target.request(headers))
                while len(data) < MAX_RESPONSE:
                    chunk = tls.recv(65536)
                    if not chunk:
                        break
                    data += chunk
        except ssl.SSLError as exc:
            if not data:
                return _ssl_refusal(exc, version), b""
        except ConnectionError:
            if not data:
                detail = "connection reset" + (" after the handshake" if version else "")
                return Observation(outcome=Outcome.REFUSED, tls_version=version, detail=detail), b""
        except TimeoutError:
            if http_status(data) is None:
                detail = f"no answer within {target.timeout:g}s"
                return Observation(outcome=Outcome.ERROR, tls_version=version, detail=detail), b""
        except OSError as exc:
            return Observation(outcome=Outcome.ERROR, tls_version=version, detail=str(exc)), b""
    return _judge_response(data, version), data


def attempt_foreign_key(
    target: Target,
    chain: Sequence[x509.Certificate],
    key: PrivateKey,
    version: Literal["1.2", "1.3"],
) -> Observation:
    """Present the legitimate ``chain`` and sign CertificateVerify with ``key`` (tlslite-ng).

    A correct endpoint fails the signature check and sends ``decrypt_error``.
    """
    try:
        import tlslite
        from tlslite.constants import AlertDescription
        from tlslite.errors import TLSAbruptCloseError, TLSError, TLSLocalAlert, TLSRemoteAlert
    except ImportError:
        return Observation(
            outcome=Outcome.SKIPPED, detail="tlslite-ng is not installed (pip install tlslite-ng)"
        )
    tls_chain = tlslite.X509CertChain()
    tls_chain.parsePemList(chain_pem(list(chain)).decode())
    tls_key = tlslite.parsePEMKey(private_key_pem(key).decode(), private=True)
    settings = tlslite.HandshakeSettings()
    settings.minVersion = settings.maxVersion = (3, 3) if version == "1.2" else (3, 4)
    settings.certificate_compression_send = []  # else OpenSSL 3.0 fails every TLS 1.3 client cert
    name = f"TLSv{version}"
    try:
        sock = _connect(target)
    except OSError as exc:
        return Observation(outcome=Outcome.ERROR, detail=f"cannot connect: {exc}")
    data = b""
    with sock:
        connection = tlslite.TLSConnection(sock)
        try:
            connection.handshakeClientCert(
                tls_chain, tls_key, settings=settings, serverName=target.sni
            )
            connection.write(target.request())
            while len(data) < MAX_RESPONSE:
                chunk = bytes(connection.read())
                if not chunk:
                    break
                data += chunk
        except TLSRemoteAlert as exc:
            if not data:
                alert = AlertDescription.toStr(exc.description)
                if alert == "protocol_version":
                    return Observation(
                        outcome=Outcome.SKIPPED, detail=f"the endpoint does not offer {name}"
                    )
                return Observation(outcome=Outcome.REFUSED, alert=alert, tls_version=name)
        except (TLSAbruptCloseError, ConnectionError):
            if not data:
                return Observation(
                    outcome=Outcome.REFUSED, tls_version=name, detail="connection closed, no alert"
                )
        except TLSLocalAlert as exc:
            if exc.description == AlertDescription.protocol_version:
                return Observation(
                    outcome=Outcome.SKIPPED, detail=f"the endpoint does not offer {name}"
                )
            return Observation(outcome=Outcome.ERROR, tls_version=name, detail=f"tlslite: {exc}")
        except TimeoutError:
            if http_status(data) is None:
                detail = f"no answer within {target.timeout:g}s"
                return Observation(outcome=Outcome.ERROR, tls_version=name, detail=detail)
        except (TLSError, OSError) as exc:
            return Observation(outcome=Outcome.ERROR, tls_version=name, detail=str(exc))
    return _judge_response(data, name)
