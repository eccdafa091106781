"""The facts every rule reads, taken from a certificate once.

pyca parses each extension on access; a rule set of thirty checks would otherwise
look up the same extension thirty times. ``CertView`` reads each once, and turns
parser failures (a malformed extension) into a field a rule reports instead of an
exception that would stop the whole lint.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.x509.oid import SignatureAlgorithmOID

from mtlskit.certs import UNREADABLE_EXTENSIONS, KeyInfo, key_info
from mtlskit.identity import ClientIdentity, IdentityError
from mtlskit.publicca import find_public_root

__all__ = ["CertView", "LintContext"]

_SIGNATURE_KEY_TYPES: Final = {
    SignatureAlgorithmOID.RSA_WITH_MD5: "RSA",
    SignatureAlgorithmOID.RSA_WITH_SHA1: "RSA",
    SignatureAlgorithmOID.RSA_WITH_SHA224: "RSA",
    SignatureAlgorithmOID.RSA_WITH_SHA256: "RSA",
    SignatureAlgorithmOID.RSA_WITH_SHA384: "RSA",
    SignatureAlgorithmOID.RSA_WITH_SHA512: "RSA",
    SignatureAlgorithmOID.RSA_WITH_SHA3_224: "RSA",
    SignatureAlgorithmOID.RSA_WITH_SHA3_256: "RSA",
    SignatureAlgorithmOID.RSA_WITH_SHA3_384: "RSA",
    SignatureAlgorithmOID.RSA_WITH_SHA3_512: "RSA",
    SignatureAlgorithmOID.RSASSA_PSS: "RSA-PSS",
    SignatureAlgorithmOID.ECDSA_WITH_SHA1: "ECDSA",
    SignatureAlgorithmOID.ECDSA_WITH_SHA224: "ECDSA",
    SignatureAlgorithmOID.ECDSA_WITH_SHA256: "ECDSA",
    SignatureAlgorithmOID.ECDSA_WITH_SHA384: "ECDSA",
    SignatureAlgorithmOID.ECDSA_WITH_SHA512: "ECDSA",
    SignatureAlgorithmOID.ECDSA_WITH_SHA3_224: "ECDSA",
    SignatureAlgorithmOID.ECDSA_WITH_SHA3_256: "ECDSA",
    SignatureAlgorithmOID.ECDSA_WITH_SHA3_384: "ECDSA",
    SignatureAlgorithmOID.ECDSA_WITH_SHA3_512: "ECDSA",
    SignatureAlgorithmOID.ED25519: "Ed25519",
    SignatureAlgorithmOID.ED448: "Ed448",
    SignatureAlgorithmOID.DSA_WITH_SHA1: "DSA",
    SignatureAlgorithmOID.DSA_WITH_SHA224: "DSA",
    SignatureAlgorithmOID.DSA_WITH_SHA256: "DSA",
    SignatureAlgorithmOID.DSA_WITH_SHA384: "DSA",
    SignatureAlgorithmOID.DSA_WITH_SHA512: "DSA",
}


# Memos for CA certificates, which recur on every chain (bounded: cleared when full).
_MEMO_LIMIT = 1024
_CA_VIEWS: dict[tuple[bytes, int], CertView] = {}
_CA_LINKS: dict[tuple[bytes, bytes], tuple[x509.Certificate, x509.Certificate, bool]] = {}


@dataclass(frozen=True, slots=True, kw_only=True)
class CertView:
    """One certificate of the chain, with the parts lint rules look at already extracted."""

    cert: x509.Certificate
    index: int
    subject: str
    extensions_error: str | None
    basic: x509.BasicConstraints | None
    key_usage: x509.KeyUsage | None
    key_usage_critical: bool
    eku: tuple[x509.ObjectIdentifier, ...] | None
    san: tuple[x509.GeneralName, ...] | None
    ski: bytes | None
    aki: bytes | None
    identity: ClientIdentity | None
    identity_error: IdentityError | None
    key: KeyInfo
    signature_key_type: str  # "RSA", "RSA-PSS", "ECDSA", "Ed25519", ... or the dotted OID
    signature_hash: str | None  # "sha256", ...; None for EdDSA or an unknown algorithm
    not_before: dt.datetime
    not_after: dt.datetime
    self_issued: bool  # issuer name == subject name (RFC 5280 §6.1: not counted in path length)

    @classmethod
    def of(cls, cert: x509.Certificate, index: int) -> CertView:
        """The view of ``cert`` at ``index``; CA certificates recur, so their views are kept."""
        if index == 0:
            return cls._build(cert, index)
        key = (cert.signature, index)
        cached = _CA_VIEWS.get(key)
        if cached is not None and cached.cert == cert:
            return cached
        if len(_CA_VIEWS) >= _MEMO_LIMIT:
            _CA_VIEWS.clear()
        view = _CA_VIEWS[key] = cls._build(cert, index)
        return view

    @classmethod
    def _build(cls, cert: x509.Certificate, index: int) -> CertView:
        extensions_error: str | None = None
        try:
            extensions = cert.extensions
        except UNREADABLE_EXTENSIONS as exc:
            extensions_error = str(exc)
            extensions = x509.Extensions([])
        found: dict[type, x509.Extension[x509.ExtensionType]] = {
            type(extension.value): extension for extension in extensions
        }
        basic = found.get(x509.BasicConstraints)
        usage = found.get(x509.KeyUsage)
        eku = found.get(x509.ExtendedKeyUsage)
        san = found.get(x509.SubjectAlternativeName)
        ski = found.get(x509.SubjectKeyIdentifier)
        aki = found.get(x509.AuthorityKeyIdentifier)
        identity: ClientIdentity | None = None
        identity_error: IdentityError | None = None
        if extensions_error is None:
            try:
                identity = ClientIdentity.from_certificate(cert)
            except IdentityError as exc:
                identity_error = exc
        else:
            identity_error = IdentityError("extensions_malformed", extensions_error)
        try:
            hash_algorithm = cert.signature_hash_algorithm
        except UnsupportedAlgorithm:
            hash_algorithm = None
        oid = cert.signature_algorithm_oid
        try:
            public_key = cert.public_key()
        except (ValueError, UnsupportedAlgorithm):
            public_key = None
        return cls(
            cert=cert,
            index=index,
            subject=cert.subject.rfc4514_string() or "(empty)",
            extensions_error=extensions_error,
            basic=basic.value if basic else None,  # type: ignore[arg-type]
            key_usage=usage.value if usage else None,  # type: ignore[arg-type]
            key_usage_critical=bool(usage and usage.critical),
            eku=tuple(eku.value) if eku else None,  # type: ignore[arg-type]
            san=tuple(san.value) if san else None,  # type: ignore[arg-type]
            ski=ski.value.digest if ski else None,  # type: ignore[attr-defined]
            aki=aki.value.key_identifier if aki else None,  # type: ignore[attr-defined]
            identity=identity,
            identity_error=identity_error,
            key=KeyInfo(algorithm="unparseable", size=0)
            if public_key is None
            else key_info(public_key),
            signature_key_type=_SIGNATURE_KEY_TYPES.get(oid, oid.dotted_string),
            signature_hash=hash_algorithm.name if hash_algorithm else None,
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            self_issued=cert.issuer == cert.subject,
        )

    @property
    def is_ca(self) -> bool:
        return bool(self.basic and self.basic.ca)

    @property
    def lifetime(self) -> dt.timedelta:
        return self.not_after - self.not_before

    def signed_by(self, issuer: CertView) -> bool:
        """Whether ``issuer`` issued this: the names match and its key verifies the signature.

        Links between CA certificates recur on every chain a CA issues, so their answers
        are kept (keyed by both signatures, confirmed by equality); a leaf's are not.
        """
        if self.index == 0:
            return self._verify_signature(issuer)
        key = (self.cert.signature, issuer.cert.signature)
        cached = _CA_LINKS.get(key)
        if cached is not None and cached[0] == self.cert and cached[1] == issuer.cert:
            return cached[2]
        if len(_CA_LINKS) >= _MEMO_LIMIT:
            _CA_LINKS.clear()
        answer = self._verify_signature(issuer)
        _CA_LINKS[key] = (self.cert, issuer.cert, answer)
        return answer

    def _verify_signature(self, issuer: CertView) -> bool:
        try:
            self.cert.verify_directly_issued_by(issuer.cert)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
            return False  # ValueError: the names differ, which the chain rules report apart
        return True

    def is_self_signed(self) -> bool:
        return self.self_issued and self.signed_by(self)


class LintContext:
    """The whole chain plus what several rules share: the instant, the public root (lazily)."""

    __slots__ = (
        "_public_root",
        "_public_root_known",
        "at",
        "certs",
        "leaf_signature_vouched",
        "public_bundle",
    )

    def __init__(
        self,
        certs: tuple[CertView, ...],
        *,
        at: dt.datetime,
        public_bundle: str | None,
        leaf_signature_vouched: bool = False,
    ) -> None:
        self.certs = certs
        self.at = at
        self.public_bundle = public_bundle
        self.leaf_signature_vouched = leaf_signature_vouched  # see lint_chain
        self._public_root: x509.Certificate | None = None
        self._public_root_known = False

    @property
    def public_root(self) -> x509.Certificate | None:
        """The certifi (or ``public_bundle``) root the chain ends in; computed on first use."""
        if not self._public_root_known:
            chain = [view.cert for view in self.certs]
            self._public_root = find_public_root(chain, bundle=self.public_bundle)
            self._public_root_known = True
        return self._public_root

    @property
    def path_length(self) -> int:
        """Certificates in the path a verifier builds: the given chain, plus the root if absent."""
        top = self.certs[-1]
        return len(self.certs) + (0 if top.self_issued else 1)
