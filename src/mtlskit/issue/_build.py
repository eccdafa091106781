"""Build and sign certificates: leaves from identity + key + profile, and the CA's own.

Pure, and the only place a leaf's extensions are chosen. The builder takes a public
key and an identity, never a CSR, so nothing a requester asks for can reach the
certificate unless the profile already says so.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass, field
from typing import Final, Protocol, TypeGuard, runtime_checkable

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID

from mtlskit.certs import PrivateKey, PublicKey
from mtlskit.identity import ClientIdentity
from mtlskit.issue._profile import SERVER_AUTH, CertificateProfile, general_name
from mtlskit.issue._store import StoreUnavailable

__all__ = [
    "BACKDATE",
    "CaKey",
    "ExternalKey",
    "Issuer",
    "KeyUnavailable",
    "build_ca_certificate",
    "build_leaf",
    "build_self_signed",
    "build_server_certificate",
    "is_external_key",
    "sign_certificate",
    "sign_crl",
    "signature_hash",
]

BACKDATE: Final = dt.timedelta(minutes=5)  # tolerate clients whose clock runs a little behind
_MAX_CN: Final = 64  # ub-common-name (RFC 5280 appendix A)
_LEAF_USAGE: Final = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)
_CA_USAGE: Final = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


class KeyUnavailable(StoreUnavailable):
    """The CA key could not sign (its token is absent, its session lost, the PIN refused).

    Nothing signed was returned, so nothing may be recorded from the attempt: a command
    exits 2, ``ca serve`` rolls the whole batch back and answers 503 ``key_unavailable``.
    """


@runtime_checkable
class ExternalKey(Protocol):
    """A CA key that signs elsewhere (a PKCS#11 token): mtlskit holds only its public half.

    cryptography's builders sign only with its own key classes, so the key signs a whole
    builder; it raises ``KeyUnavailable`` when it cannot, never returns a bad signature.
    """

    def public_key(self) -> PublicKey: ...

    def sign_data(self, data: bytes) -> bytes:
        """A signature over ``data`` as ``mtlskit.issue._approvers`` verifies one."""
        ...

    def sign_certificate(self, builder: x509.CertificateBuilder) -> x509.Certificate: ...

    def sign_crl(
        self, builder: x509.CertificateRevocationListBuilder
    ) -> x509.CertificateRevocationList: ...


CaKey = PrivateKey | ExternalKey  # what a CA signs with: a key in memory or one in a token
# Concrete classes, tested first: isinstance against a runtime Protocol costs ~10 µs, a
# tenth of a leaf's signature, and file keys sign thousands of leaves per second.
_IN_MEMORY: Final = (
    ec.EllipticCurvePrivateKey,
    rsa.RSAPrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
)


def is_external_key(key: CaKey) -> TypeGuard[ExternalKey]:
    """Whether the CA key signs elsewhere (a PKCS#11 token) rather than in memory: such a
    key can fail now (``KeyUnavailable``) while it loaded fine at start."""
    return not isinstance(key, _IN_MEMORY)


def sign_certificate(builder: x509.CertificateBuilder, key: CaKey) -> x509.Certificate:
    """The one place a certificate gets its CA signature (leaf, CA, server certificate)."""
    if isinstance(key, _IN_MEMORY):
        return builder.sign(key, signature_hash(key))  # type: ignore[arg-type]
    return key.sign_certificate(builder)


def sign_crl(
    builder: x509.CertificateRevocationListBuilder, key: CaKey
) -> x509.CertificateRevocationList:
    """The one place a CRL gets its CA signature."""
    if isinstance(key, _IN_MEMORY):
        return builder.sign(key, signature_hash(key))  # type: ignore[arg-type]
    return key.sign_crl(builder)


@dataclass(frozen=True, slots=True, kw_only=True)
class Issuer:
    """A signing CA: its certificate and key, and its chain up to and including the root."""

    cert: x509.Certificate
    key: CaKey
    chain: tuple[x509.Certificate, ...]
    # What every leaf it signs shares, worked out once (a CA signs thousands per second).
    leaf_base: x509.CertificateBuilder = field(init=False, repr=False, compare=False)
    authority_key_id: x509.AuthorityKeyIdentifier = field(init=False, repr=False, compare=False)
    hash_algorithm: hashes.HashAlgorithm | None = field(init=False, repr=False, compare=False)
    # Whether every leaf ``build_leaf`` signs verifies against ``chain[0]``, proven once
    # with a probe leaf: see ``_proves_leaf_signatures``.
    leaf_signatures_proven: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.cert.public_key() != self.key.public_key():
            raise ValueError("the issuer's key does not belong to its certificate")
        object.__setattr__(self, "leaf_base", _leaf_base(self.cert.subject))
        object.__setattr__(self, "authority_key_id", _authority_key_id(self.cert))
        object.__setattr__(self, "hash_algorithm", signature_hash(self.key))
        object.__setattr__(self, "leaf_signatures_proven", _proves_leaf_signatures(self))


def _proves_leaf_signatures(issuer: Issuer) -> bool:
    """Sign a probe leaf exactly as ``build_leaf`` signs (same base, so the same issuer name
    bytes; same key, hash and padding) and verify it against ``chain[0]`` as lint would.

    A leaf differs from the probe only in what the signature covers, so if the probe
    verifies, so does each leaf: the CA can vouch for that link instead of verifying a
    signature it has just made (a third of lint's cost per certificate). False when the
    chain does not start with ``cert``, or the CA certificate's subject is encoded
    differently from the builder's copy of it (verifiers would not chain the leaf):
    then lint verifies every leaf and reports the link.
    """
    if issuer.chain[:1] != (issuer.cert,):
        return False
    public_key = issuer.key.public_key()
    probe = (
        issuer.leaf_base.subject_name(x509.Name([]))
        .public_key(public_key)
        .serial_number(1)
        .not_valid_before(issuer.cert.not_valid_before_utc)
        .not_valid_after(issuer.cert.not_valid_after_utc)
        .add_extension(issuer.authority_key_id, critical=False)
    )
    probe = sign_certificate(probe, issuer.key)  # a token key that cannot sign raises here
    try:
        probe.verify_directly_issued_by(issuer.cert)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def signature_hash(key: CaKey | PublicKey) -> hashes.HashAlgorithm | None:
    """SHA-384 for P-384 and larger curves (matched strength), SHA-256 otherwise; EdDSA none.

    A public key gives its private key's answer (what a token key signs with)."""
    if isinstance(
        key,
        ed25519.Ed25519PrivateKey
        | ed448.Ed448PrivateKey
        | ed25519.Ed25519PublicKey
        | ed448.Ed448PublicKey,
    ):
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return hashes.SHA384() if key.curve.key_size >= 384 else hashes.SHA256()
    if isinstance(key, _IN_MEMORY) or not hasattr(key, "sign_certificate"):
        return hashes.SHA256()  # RSA (and DSA public keys, which no CA key here has)
    return signature_hash(key.public_key())  # an ExternalKey


def _subject(identity: ClientIdentity) -> x509.Name:
    """CN = the identity when it fits (logs and old tools show it); else an empty subject."""
    if len(identity.value) <= _MAX_CN:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity.value)])
    return x509.Name([])


def _authority_key_id(issuer_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_cert.public_key())  # type: ignore[arg-type]
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _leaf_base(issuer_name: x509.Name) -> x509.CertificateBuilder:
    """A leaf's first fields and extensions, the same for every leaf of one issuer."""
    return (
        x509.CertificateBuilder()
        .issuer_name(issuer_name)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_LEAF_USAGE, critical=True)
    )


def _leaf_builder(
    *,
    base: x509.CertificateBuilder,
    identity: ClientIdentity,
    subject: x509.Name,
    public_key: PublicKey,
    profile: CertificateProfile,
    not_before: dt.datetime,
    not_after: dt.datetime,
    serial: int,
) -> x509.CertificateBuilder:
    """``base`` (from ``_leaf_base``) completed: extensions in the order BC, KU, EKU, SAN, SKI."""
    return (
        base.subject_name(subject)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.ExtendedKeyUsage(list(profile.eku)), critical=False)
        .add_extension(
            # RFC 5280 §4.2.1.6: critical when the subject is empty.
            x509.SubjectAlternativeName([general_name(identity)]),
            critical=len(subject) == 0,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)  # type: ignore[arg-type]
    )


def build_leaf(
    *,
    issuer: Issuer,
    identity: ClientIdentity,
    public_key: PublicKey,
    profile: CertificateProfile,
    not_before: dt.datetime,
    not_after: dt.datetime,
    serial: int,
) -> x509.Certificate:
    """A client certificate signed by ``issuer``; every extension comes from ``profile``."""
    builder = _leaf_builder(
        base=issuer.leaf_base,
        identity=identity,
        subject=_subject(identity),
        public_key=public_key,
        profile=profile,
        not_before=not_before,
        not_after=not_after,
        serial=serial,
    ).add_extension(issuer.authority_key_id, critical=False)
    return sign_certificate(builder, issuer.key)


def build_self_signed(
    *,
    key: PrivateKey,
    identity: ClientIdentity,
    profile: CertificateProfile,
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> x509.Certificate:
    """A self-signed client certificate for pinning: CA:FALSE, with AKI = its own SKI
    (pyca's verifier rejects a self-signed leaf without AKI)."""
    public_key = key.public_key()
    subject = _subject(identity)
    builder = _leaf_builder(
        base=_leaf_base(subject),
        identity=identity,
        subject=subject,
        public_key=public_key,
        profile=profile,
        not_before=not_before,
        not_after=not_after,
        serial=x509.random_serial_number(),
    ).add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
            x509.SubjectKeyIdentifier.from_public_key(public_key)  # type: ignore[arg-type]
        ),
        critical=False,
    )
    return builder.sign(key, signature_hash(key))  # type: ignore[arg-type]


def build_ca_certificate(
    *,
    common_name: str,
    key: CaKey,
    signer: Issuer | None,
    not_before: dt.datetime,
    not_after: dt.datetime,
    path_length: int | None,
    name_constraints: x509.NameConstraints | None = None,
) -> x509.Certificate:
    """A root (``signer`` None: self-signed) or an intermediate signed by ``signer``."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    public_key = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(signer.cert.subject if signer else subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(_CA_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)  # type: ignore[arg-type]
    )
    if signer is not None:
        builder = builder.add_extension(_authority_key_id(signer.cert), critical=False)
    else:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key),  # type: ignore[arg-type]
            critical=False,
        )
    if name_constraints is not None:
        builder = builder.add_extension(name_constraints, critical=True)
    return sign_certificate(builder, signer.key if signer else key)


def build_server_certificate(
    *,
    issuer: Issuer,
    public_key: PublicKey,
    hosts: tuple[str, ...],
    not_before: dt.datetime,
    not_after: dt.datetime,
    serial: int | None = None,
) -> x509.Certificate:
    """A TLS server certificate (profile ``SERVER_AUTH``): EKU serverAuth only, SAN = its
    DNS names and IPs (a host that parses as an IP address is an IP SAN).

    ``mtlskit ca serve`` makes its own with this, and ``ca issue --server`` the ones for a
    gateway or nginx. Client certificates never get serverAuth from the client-auth
    profile, and a client cannot present this one (OpenSSL refuses a serverAuth-only
    certificate as a client). ``serial`` None: a random one.
    """
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    if not names:
        raise ValueError("a server certificate needs at least one host name or address")
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0][:_MAX_CN])]))
        .issuer_name(issuer.cert.subject)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_LEAF_USAGE, critical=True)
        .add_extension(x509.ExtendedKeyUsage(list(SERVER_AUTH.eku)), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)  # type: ignore[arg-type]
        .add_extension(_authority_key_id(issuer.cert), critical=False)
    )
    return sign_certificate(builder, issuer.key)
