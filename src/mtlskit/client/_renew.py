"""``renew``: a new certificate for the one on disk, proven by its key in the TLS handshake.

Files are only ever replaced, atomically (temporary file + rename), with a newer
certificate; a failed renewal leaves the still-valid one where it is. The daemon
renews at about two thirds of the lifetime with jitter (so a fleet enrolled together
does not renew together) and backs off through CA outages.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mtlskit.certs import chain_pem, generate_private_key, load_certificates, private_key_pem
from mtlskit.client._enroll import build_csr
from mtlskit.client._http import (
    CaRateLimited,
    CaRefused,
    CaUnavailable,
    get_json,
    post_json,
    verified_context,
)
from mtlskit.files import read_bytes, write_public, write_secret

__all__ = ["Renewed", "backoff", "renew", "renew_forever", "renewal_time"]

RENEW_AT: Final = 2 / 3
JITTER: Final = 1 / 12  # ± of the lifetime: renewals of one cohort spread over a sixth of it
MAX_BACKOFF: Final = 300.0
_log = logging.getLogger("mtlskit.client")


@dataclass(frozen=True, slots=True, kw_only=True)
class Renewed:
    """A renewal that happened: the old and new serials and when the new one ends."""

    old_serial: str
    serial: str
    identity: str
    not_after: dt.datetime


def renewal_time(
    cert: x509.Certificate, *, received: dt.datetime, jitter: float = 0.0
) -> dt.datetime:
    """When to renew: ``RENEW_AT`` (+ ``jitter``, a fraction of the lifetime) into it.

    The lifetime counts from when the certificate arrived (``received``, e.g. the file's
    mtime) if that is later than notBefore: CAs backdate notBefore for clock skew (mtlskit
    by 5 minutes), which would otherwise make a 6-second certificate look 5 minutes old.
    """
    not_after = cert.not_valid_after_utc
    start = max(cert.not_valid_before_utc, min(received, not_after))
    return start + (not_after - start) * (RENEW_AT + jitter)


def backoff(attempt: int, *, remaining: dt.timedelta, rng: random.Random) -> float:
    """Seconds before retry ``attempt`` (0-based): doubling from 1 s with full jitter,
    at most ``MAX_BACKOFF`` and at most a quarter of the certificate's remaining life."""
    ceiling = min(MAX_BACKOFF, 2.0**attempt, max(remaining.total_seconds() / 4, 0.5))
    return rng.uniform(ceiling / 2, ceiling)


def _answers(base: str, root: x509.Certificate) -> bool:
    try:
        status, _ = get_json(f"{base}/healthz", verified_context(root), timeout=5)
    except (CaUnavailable, CaRefused):
        return False
    return status == 200


def _load(path: Path) -> list[x509.Certificate]:
    return load_certificates(read_bytes(path, what="certificate"), source=str(path))


def renew(
    url: str,
    cert: str | Path,
    key: str | Path,
    *,
    ca: str | Path | None = None,
    rekey: bool = False,
) -> Renewed:
    """Renew ``cert`` (its ``key`` proves possession over mTLS); replace both files in place.

    ``ca`` is the pinned CA root (default: ``ca.pem`` beside ``cert``, as ``enroll``
    writes it). ``rekey`` sends a CSR for a new key; the key file is replaced before
    the certificate, so a reader between the two renames can see a mismatched pair
    (without ``rekey`` the key never changes and each reader sees a consistent one).
    Raises ``CaRefused`` (revoked, unknown, expired) or ``CaUnavailable``.
    """
    cert_path, key_path = Path(cert), Path(key)
    ca_path = Path(ca) if ca is not None else cert_path.parent / "ca.pem"
    current = _load(cert_path)
    root = _load(ca_path)[-1]
    context = verified_context(root, cert=str(cert_path), key=str(key_path))
    new_key = generate_private_key() if rekey else None
    body: dict[str, str] = {}
    if new_key is not None:
        body["csr"] = build_csr(new_key).public_bytes(serialization.Encoding.PEM).decode()
    base = url.rstrip("/")
    try:
        _, document = post_json(f"{base}/v1/renew", context, body)
    except CaRateLimited:  # the CA answered: it is not the certificate that was refused
        raise
    except CaUnavailable:
        # A server that verifies client certificates in the handshake may just hang up on
        # one it refuses (TLS 1.3 sends its alert after the client thinks it is done). If
        # the CA answers without our certificate, it was the certificate it refused.
        if not _answers(base, root):
            raise
        raise CaRefused(
            "tls_refused",
            f"{base} is up but closed the connection on this certificate: it is expired, "
            "revoked or not from this CA",
        ) from None
    chain = load_certificates(str(document["chain"]).encode(), source="response")
    leaf = chain[0]
    wanted = new_key.public_key() if new_key is not None else current[0].public_key()
    if leaf.public_key() != wanted:
        raise CaUnavailable("the CA returned a certificate for another key")
    if new_key is not None:
        write_secret(key_path, private_key_pem(new_key))
    write_public(cert_path, chain_pem(chain if len(current) > 1 else [leaf]))
    sibling = cert_path.parent / "chain.pem"
    if sibling != cert_path and sibling.exists():
        write_public(sibling, chain_pem(chain))
    return Renewed(
        old_serial=f"{current[0].serial_number:x}",
        serial=f"{leaf.serial_number:x}",
        identity=str(document.get("identity", "")),
        not_after=leaf.not_valid_after_utc,
    )


def renew_forever(
    url: str,
    cert: str | Path,
    key: str | Path,
    *,
    ca: str | Path | None = None,
    rekey: bool = False,
    exec_command: str | None = None,
    stop: threading.Event | None = None,
    on_renewed: Callable[[Renewed], None] | None = None,
    rng: random.Random | None = None,
) -> None:
    """Keep ``cert`` fresh until ``stop`` is set: renew at ~2/3 of each lifetime, run
    ``exec_command`` (a shell command, e.g. a reload) after each renewal, back off
    through outages. Returns when stopped; raises ``CaRefused`` when the CA says no
    (revoked, or expired during an outage longer than the certificate lived)."""
    stop = stop or threading.Event()
    rng = rng or random.Random()
    cert_path = Path(cert)
    attempt = 0
    asked = 0.0  # the CA's last Retry-After: no retry sooner than it asked
    while not stop.is_set():
        leaf = _load(cert_path)[0]
        now = dt.datetime.now(dt.UTC)
        received = dt.datetime.fromtimestamp(cert_path.stat().st_mtime, dt.UTC)
        if attempt == 0:
            due = renewal_time(leaf, received=received, jitter=rng.uniform(-JITTER, JITTER))
            delay = (due - now).total_seconds()
            _log.info(
                "next renewal of %x at %s (certificate valid until %s)",
                leaf.serial_number,
                due.replace(microsecond=0).isoformat(),
                leaf.not_valid_after_utc.isoformat(),
            )
        else:
            delay = backoff(attempt - 1, remaining=leaf.not_valid_after_utc - now, rng=rng)
            delay = max(delay, asked)
        if delay > 0 and stop.wait(delay):
            return
        try:
            renewed = renew(url, cert_path, key, ca=ca, rekey=rekey)
        except CaUnavailable as exc:
            attempt += 1
            asked = (exc.retry_after or 0.0) if isinstance(exc, CaRateLimited) else 0.0
            _log.warning("renewal failed (attempt %d), retrying: %s", attempt, exc)
            continue
        attempt = 0
        _log.info("renewed %s → %s until %s", renewed.old_serial, renewed.serial, renewed.not_after)
        if on_renewed is not None:
            on_renewed(renewed)
        if exec_command:
            result = subprocess.run(exec_command, shell=True, check=False)
            if result.returncode != 0:
                _log.warning("--exec %r exited with %d", exec_command, result.returncode)
