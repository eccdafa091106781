"""TLS facts for the gateway: the server context, why a handshake failed, the peer chain.

The handshake itself is driven by the connection over ``ssl.MemoryBIO``, one
``mtlskit.handshake.step`` at a time (so a refused client gets its alert and the gateway
gets OpenSSL's verify code, see DESIGN.md §4); this module holds the parts that are
plain functions of their inputs.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Final

from mtlskit.handshake import TLS12_CIPHERS
from mtlskit.verify import NO_INTERMEDIATE, Code

__all__ = [
    "TLS12_CIPHERS",
    "HandshakeFailure",
    "classify_handshake_error",
    "peer_chain",
    "server_context",
]

_VERSIONS: Final = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}

# OpenSSL X509_V_ERR_* → the stable code of the nearest mtlskit check.
_VERIFY_CODES: Final[dict[int, Code]] = {
    2: Code.CHAIN_UNTRUSTED,  # unable to get issuer certificate
    7: Code.CHAIN_UNTRUSTED,  # certificate signature failure
    9: Code.CERT_NOT_YET_VALID,
    10: Code.CERT_EXPIRED,
    18: Code.CHAIN_UNTRUSTED,  # self-signed certificate (not pinned)
    19: Code.CHAIN_UNTRUSTED,  # self-signed certificate in chain
    20: Code.CHAIN_UNTRUSTED,  # unable to get local issuer certificate
    21: Code.CHAIN_UNTRUSTED,  # unable to verify the first certificate
    22: Code.CHAIN_TOO_DEEP,
    23: Code.CERT_REVOKED,
    24: Code.CHAIN_UNTRUSTED,  # invalid CA certificate
    25: Code.CHAIN_TOO_DEEP,  # path length constraint exceeded
    26: Code.EKU_MISSING_CLIENT_AUTH,  # unsupported certificate purpose
    28: Code.CHAIN_UNTRUSTED,  # certificate rejected
    47: Code.CHAIN_UNTRUSTED,  # permitted subtree violation
    66: Code.KEY_TOO_WEAK,  # EE key too small
    67: Code.KEY_TOO_WEAK,  # CA key too small
    68: Code.SIGNATURE_ALGORITHM_WEAK,  # CA md too weak
}
# X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT(_LOCALLY): the issuer is neither sent nor trusted.
_ISSUER_NOT_FOUND: Final = frozenset({2, 20})
_OR_LAST_INTERMEDIATE: Final = " (or the issuer of the last intermediate it sent is not one)"


@dataclass(frozen=True, slots=True, kw_only=True)
class HandshakeFailure:
    """Why a handshake failed, for the connection log and the metrics.

    ``code`` is a stable mtlskit code when the failure is about the client
    certificate (``None`` for plain TLS trouble: version, cipher, garbage).
    """

    code: Code | None
    detail: str  # OpenSSL's words: "unable to get local issuer certificate", "BAD_SIGNATURE"
    verify_code: int | None = None

    @property
    def label(self) -> str:
        return self.code.value if self.code is not None else "tls_error"


def classify_handshake_error(exc: ssl.SSLError) -> HandshakeFailure:
    """OpenSSL's error → a stable code, by its numeric verify code or its reason name.

    "Unable to get (local) issuer certificate" is most often a client that sent its leaf
    alone (``s_client -cert`` without ``-cert_chain``), so the detail names that cause;
    the code stays chain_untrusted. OpenSSL keeps no chain from a refused handshake, so
    the gateway cannot count what was sent and names the other case too.
    """
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = _VERIFY_CODES.get(exc.verify_code, Code.CHAIN_UNTRUSTED)
        detail = str(exc.verify_message)
        if exc.verify_code in _ISSUER_NOT_FOUND:
            detail = f"{detail}: {NO_INTERMEDIATE}{_OR_LAST_INTERMEDIATE}"
        return HandshakeFailure(code=code, detail=detail, verify_code=exc.verify_code)
    reason = getattr(exc, "reason", None) or ""
    if reason == "BAD_SIGNATURE":
        # The CertificateVerify signature does not match the certificate's key: the
        # client holds a copy of someone's certificate but not its private key.
        return HandshakeFailure(code=Code.PROOF_OF_POSSESSION_FAILED, detail=reason)
    if reason in ("PEER_DID_NOT_RETURN_A_CERTIFICATE", "NO_CERTIFICATE_RETURNED"):
        return HandshakeFailure(code=Code.CERT_NOT_PROVIDED, detail=reason)
    return HandshakeFailure(code=None, detail=reason or str(exc))


def server_context(
    *,
    cert: str,
    key: str,
    trust_pem: bytes,
    require_client_cert: bool,
    versions: tuple[str, ...] = ("1.2", "1.3"),
) -> ssl.SSLContext:
    """The TLS server context: TLS 1.2/1.3 only, the client trust as OpenSSL's first gate.

    ``trust_pem`` holds anchors, SPIFFE bundle CAs and pinned self-signed client
    certificates (OpenSSL accepts a pinned self-signed leaf that is in its verify
    locations). Without ``require_client_cert`` a client may send none, but one it
    does send must still pass OpenSSL — Python's ``ssl`` has no verify callback.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    wanted = sorted(_VERSIONS[v] for v in versions)
    context.minimum_version = wanted[0]
    context.maximum_version = wanted[-1]
    context.set_ciphers(TLS12_CIPHERS)
    context.load_cert_chain(cert, key)
    context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    if trust_pem:
        context.load_verify_locations(cadata=trust_pem.decode("ascii"))
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.set_alpn_protocols(["http/1.1"])
    # One TLS 1.3 session ticket per handshake, not OpenSSL's two: a client resumes with
    # one (and gets a fresh one each time); the second cost ~0.4 KiB of session state per
    # connection held and a ticket encryption per handshake (issue 6: idle memory).
    context.num_tickets = 1
    return context


def peer_chain(ssl_object: ssl.SSLObject) -> tuple[tuple[bytes, ...], bool]:
    """(chain as presented, DER, leaf first; resumed?).

    On a resumed session OpenSSL (Python 3.11) returns no chain, only the leaf via
    ``getpeercert``; the caller then looks the chain up by the leaf's fingerprint.
    """
    inner = getattr(ssl_object, "_sslobj", None)
    getter = getattr(inner, "get_unverified_chain", None)
    chain = [cert for cert in (getter() or ()) if cert is not None] if getter else []
    if chain:
        return tuple(cert.public_bytes(2) for cert in chain), False
    leaf = ssl_object.getpeercert(binary_form=True)
    if not leaf:
        return (), ssl_object.session_reused
    return (leaf,), ssl_object.session_reused
