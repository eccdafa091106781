"""Read a CSR the way a CA must: prove possession, take the key, and report the rest as dropped.

Pure. A CSR is a request, not a template: only its public key is used (its signature
proves the requester holds the private key), and its requested SAN only when it is
exactly the identity being issued. Everything else it asks for is listed in
``CsrReview.dropped`` so the operator sees what was refused, instead of the silent
copying that mkcert and similar tools do.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from mtlskit.certs import UNREADABLE_EXTENSIONS, PublicKey
from mtlskit.errors import InputError
from mtlskit.identity import ClientIdentity
from mtlskit.issue._profile import CertificateProfile, general_name

__all__ = ["CsrReview", "load_csr", "review_csr"]

_EKU_NAMES = {
    ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
    ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
    ExtendedKeyUsageOID.CODE_SIGNING: "codeSigning",
    ExtendedKeyUsageOID.EMAIL_PROTECTION: "emailProtection",
    ExtendedKeyUsageOID.TIME_STAMPING: "timeStamping",
    ExtendedKeyUsageOID.OCSP_SIGNING: "OCSPSigning",
    ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE: "anyExtendedKeyUsage",
}
_USAGE_FLAGS = (
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class CsrReview:
    """What the CA takes from a CSR (the key) and what it refused, one line per request."""

    public_key: PublicKey
    dropped: tuple[str, ...]


def load_csr(data: bytes, *, source: str = "<csr>") -> x509.CertificateSigningRequest:
    """A CSR from PEM or DER; anything else is an ``InputError`` naming ``source``."""
    if not data.strip():
        raise InputError("is empty", source=source)
    try:
        if b"-----BEGIN" in data:
            if b"CERTIFICATE REQUEST-----" not in data:
                raise InputError("contains no PEM CERTIFICATE REQUEST block", source=source)
            return x509.load_pem_x509_csr(data)
        return x509.load_der_x509_csr(data)
    except (ValueError, x509.InvalidVersion):  # InvalidVersion is no ValueError: fuzzing found it
        raise InputError(
            "is not a valid certificate signing request (malformed or truncated)", source=source
        ) from None


def _name_text(name: x509.GeneralName) -> str:
    kind = {
        x509.UniformResourceIdentifier: "URI",
        x509.DNSName: "DNS",
        x509.RFC822Name: "email",
        x509.IPAddress: "IP",
    }.get(type(name), type(name).__name__)
    return f"{kind}:{name.value}"


def _signature_verifies(csr: x509.CertificateSigningRequest, key: object) -> bool:
    """``csr.is_signature_valid`` with the key already in hand: that property parses the
    key again (~7 µs a CSR). Only an EC key with an ECDSA signature, the usual CSR, takes
    this path; every other pairing is pyca's own check."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        params = csr.signature_algorithm_parameters
        if isinstance(params, ec.ECDSA):
            try:
                key.verify(csr.signature, csr.tbs_certrequest_bytes, params)
            except InvalidSignature:
                return False
            return True
    return csr.is_signature_valid


def review_csr(
    csr: x509.CertificateSigningRequest,
    *,
    identity: ClientIdentity,
    profile: CertificateProfile,
    source: str = "<csr>",
) -> CsrReview:
    """Check the CSR's signature and list every request the issued certificate will not honour."""
    try:
        public_key = csr.public_key()
        digest = csr.signature_hash_algorithm
        weak = digest.name if isinstance(digest, (hashes.SHA1, hashes.MD5)) else None
        valid = weak is None and _signature_verifies(csr, public_key)
    except (ValueError, TypeError, UnsupportedAlgorithm):  # an unknown key OID: fuzzing found it
        raise InputError(
            "CSR has an unsupported key or signature algorithm", source=source
        ) from None
    if weak is not None:  # pyca does not verify these: say so, not "does not verify"
        raise InputError(
            f"CSR is signed with {weak.upper()}, which is no proof "
            "of possession here: sign it with SHA-256 or stronger",
            source=source,
        )
    if not valid:
        raise InputError(
            "CSR signature does not verify: the requester has not proven it holds the key",
            source=source,
        )
    wanted = general_name(identity)
    dropped: list[str] = []
    subject = csr.subject  # pyca builds a new Name on every access to a CSR's subject
    if len(subject) and (text := subject.rfc4514_string()) != f"CN={identity.value}":
        dropped.append(f"subject {text} (the CA sets the subject)")
    try:
        extensions = list(csr.extensions)
    except UNREADABLE_EXTENSIONS:
        raise InputError("CSR requests malformed extensions", source=source) from None
    for extension in extensions:
        value = extension.value
        if isinstance(value, x509.SubjectAlternativeName):
            dropped += [
                f"subjectAltName {_name_text(name)} (not the identity being issued)"
                for name in value
                if name != wanted
            ]
        elif isinstance(value, x509.BasicConstraints):
            if value.ca:
                dropped.append("basicConstraints CA:TRUE (a client certificate is CA:FALSE)")
        elif isinstance(value, x509.ExtendedKeyUsage):
            dropped += [
                f"extendedKeyUsage {_EKU_NAMES.get(oid, oid.dotted_string)} "
                f"(profile {profile.name} does not allow it)"
                for oid in value
                if oid not in profile.eku
            ]
        elif isinstance(value, x509.KeyUsage):
            extra = [flag for flag in _USAGE_FLAGS if getattr(value, flag)]
            if extra:
                dropped.append(
                    f"keyUsage {', '.join(extra)} (a client certificate gets digitalSignature only)"
                )
        elif isinstance(value, x509.SubjectKeyIdentifier):
            continue  # the CA computes it from the key anyway
        else:
            name = extension.oid._name if extension.oid._name != "Unknown OID" else ""
            dropped.append(
                f"extension {name or extension.oid.dotted_string} "
                f"({extension.oid.dotted_string}; not in profile {profile.name})"
            )
    return CsrReview(public_key=public_key, dropped=tuple(dropped))  # type: ignore[arg-type]
