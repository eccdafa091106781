"""``enroll``: a key made here, a token redeemed there, four files written.

The private key is generated locally and written (0600) before the token is sent,
so an issued certificate always has its key on disk, and it never leaves this
process. The CA's root is pinned on first contact: checked against
``ca_fingerprint`` when given, and saved as ``ca.pem`` for every later renewal.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mtlskit.certs import (
    Fingerprint,
    KeyType,
    PrivateKey,
    certificate_pem,
    generate_private_key,
    load_certificates,
    load_private_key,
    private_key_pem,
)
from mtlskit.client._http import CaRefused, fetch_root, get_json, post_json, verified_context
from mtlskit.errors import InputError
from mtlskit.files import read_bytes, write_public, write_secret
from mtlskit.issue import general_name, parse_identity, signature_hash

__all__ = ["Enrolled", "build_csr", "enroll"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Enrolled:
    """The outcome: issued (``serial`` set, files written) or still pending approval."""

    status: str  # "issued" | "pending"
    directory: Path
    serial: str | None = None
    identity: str | None = None
    not_after: str | None = None
    request_id: str | None = None
    root_fingerprint: str = ""
    dropped: tuple[str, ...] = ()  # what the CA ignored from the CSR (names, extensions)

    def files(self) -> dict[str, str]:
        names = ("cert.pem", "chain.pem", "key.pem", "ca.pem")
        return {name: str(self.directory / name) for name in names}


def build_csr(key: PrivateKey, identity: str | None = None) -> x509.CertificateSigningRequest:
    """A CSR for ``key``; it names ``identity`` only if given (the token decides anyway)."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    if identity is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([general_name(parse_identity(identity))]), critical=False
        )
    return builder.sign(key, signature_hash(key))  # type: ignore[arg-type]


def _key(directory: Path, key_type: str) -> PrivateKey:
    """A new key, or the one a previous unfinished enrollment left (no cert.pem yet)."""
    path = directory / "key.pem"
    if path.exists():
        if (directory / "cert.pem").exists():
            raise InputError(
                "already holds an enrolled certificate; renew it, or choose another --out",
                source=str(directory),
            )
        return load_private_key(read_bytes(path, what="key"), source=str(path))
    key = generate_private_key(key_type)
    write_secret(path, private_key_pem(key))
    return key


def _write(directory: Path, document: dict[str, Any]) -> None:
    write_public(directory / "chain.pem", str(document["chain"]).encode())
    write_public(directory / "cert.pem", str(document["certificate"]).encode())


def enroll(
    url: str,
    token: str | None,
    out: str | Path,
    *,
    id_token: str | None = None,
    ca_fingerprint: str | Fingerprint | None = None,
    key_type: str = KeyType.EC_P256.value,
    identity: str | None = None,
    wait: float = 0.0,
    poll_interval: float = 2.0,
    request_id: str | None = None,
    on_pending: Callable[[str, int, int], None] | None = None,
) -> Enrolled:
    """Enroll at ``url`` (``https://host:port``) with a one-time ``token``, or with
    ``id_token`` (a workload-identity JWT the CA's ``[[provisioners]]`` trust: the
    provisioner's template decides the identity); write ``out``/.

    ``ca_fingerprint`` (``sha256:HEX`` of the CA root) is checked before the token is
    sent; without it, ``out/ca.pem`` from an earlier contact is used, else the root is
    trusted on first use. ``wait`` seconds are spent polling if approval is needed;
    ``request_id`` resumes polling a pending request with the key already in ``out``.
    Raises ``CaRefused`` (the CA's stable code) or ``CaUnavailable``.

    >>> enroll("https://ca.internal:8444", token, "client/",
    ...        ca_fingerprint="sha256:…")                                # doctest: +SKIP
    """
    if (token is None) == (id_token is None) and request_id is None:
        raise InputError("give a one-time token or an id token, exactly one", source="enroll")
    proof = {"token": token} if id_token is None else {"id_token": id_token.strip()}
    base = url.rstrip("/")
    directory = Path(out)
    pin = Fingerprint.parse(ca_fingerprint) if isinstance(ca_fingerprint, str) else ca_fingerprint
    pinned = directory / "ca.pem"
    if pin is None and pinned.exists():
        pin = Fingerprint.of(load_certificates(read_bytes(pinned), source=str(pinned))[-1])
    root = fetch_root(base, fingerprint=pin)
    context = verified_context(root)
    key = _key(directory, key_type)
    write_public(pinned, certificate_pem(root))
    if request_id is None:
        csr = build_csr(key, identity).public_bytes(serialization.Encoding.PEM).decode()
        status, document = post_json(f"{base}/v1/enroll", context, {**proof, "csr": csr})
    else:
        status, document = get_json(f"{base}/v1/requests/{request_id}", context)
    deadline = time.monotonic() + wait
    while status == 202:
        request_id = str(document["request_id"])
        if on_pending is not None:
            on_pending(request_id, int(document["approvals"]), int(document["required"]))
        if time.monotonic() >= deadline:
            return Enrolled(
                status="pending",
                directory=directory,
                request_id=request_id,
                root_fingerprint=str(Fingerprint.of(root)),
            )
        time.sleep(min(poll_interval, max(deadline - time.monotonic(), 0.05)))
        status, document = get_json(f"{base}/v1/requests/{request_id}", context)
    if document.get("status") != "issued":
        raise CaRefused("unexpected_response", f"HTTP {status}: {document}")
    issued = load_certificates(str(document["certificate"]).encode(), source="response")[0]
    if issued.public_key() != key.public_key():
        raise CaRefused("unexpected_response", "the CA returned a certificate for another key")
    _write(directory, document)
    return Enrolled(
        status="issued",
        directory=directory,
        serial=str(document["serial"]),
        identity=str(document["identity"]),
        not_after=str(document.get("not_after", "")),
        request_id=request_id,
        root_fingerprint=str(Fingerprint.of(root)),
        dropped=tuple(str(item) for item in document.get("dropped") or ()),
    )
