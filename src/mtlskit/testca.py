"""A throwaway CA that mints clean client certificates and deliberately broken ones.

Like trustme, but it can also build every defect that lint, verify and probe must
catch: expired, CA:TRUE leaf, serverAuth-only EKU, no SAN, two SPIFFE URIs, RSA-1024,
a SHA-224 signature (cryptography ≥ 46 refuses to sign with SHA-1; tests that need a
SHA-1 certificate make it with the openssl CLI). Never use it for real clients: keys
live in memory and the CA checks nothing before it signs. Everything is reached through ``TestCA``:

>>> ca = TestCA(name="demo")
>>> leaf = ca.issue(LeafSpec(uris=("spiffe://acme.com/billing/payments",)))
>>> leaf.chain[-1] == ca.root.cert
True
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from typing import Final, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID, ObjectIdentifier

from mtlskit.certs import PrivateKey, chain_pem, generate_private_key, private_key_pem

__all__ = ["CLIENT_AUTH", "SERVER_AUTH", "IssuedCert", "LeafSpec", "TestCA"]

CLIENT_AUTH: Final = ExtendedKeyUsageOID.CLIENT_AUTH
SERVER_AUTH: Final = ExtendedKeyUsageOID.SERVER_AUTH

KeyUsageName = Literal[
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
]
HashName = Literal["sha256", "sha384", "sha512", "sha1", "sha224"]
_HASHES: Final = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
    "sha1": hashes.SHA1,
    "sha224": hashes.SHA224,  # below SHA-256, yet still signable with pyca (SHA-1 is not)
}


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


@dataclass(frozen=True, slots=True, kw_only=True)
class LeafSpec:
    """Everything about a leaf a test may want wrong; the defaults make a clean client cert.

    ``None`` for an extension means "leave it out". ``key_type`` also takes
    ``rsa-1024``, which no production path generates.
    """

    uris: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()
    common_name: str | None = None
    include_san: bool = True
    ca: bool | None = False  # None: no basicConstraints at all
    path_length: int | None = None
    key_usage: frozenset[KeyUsageName] | None = frozenset({"digital_signature"})
    key_usage_critical: bool = True
    eku: tuple[ObjectIdentifier, ...] | None = (CLIENT_AUTH,)
    not_before: dt.datetime | None = None  # default: an hour ago
    not_after: dt.datetime | None = None  # default: 24 hours from not_before + 1h
    lifetime: dt.timedelta = dt.timedelta(hours=25)
    key_type: str = "ec-p256"
    signature_hash: HashName = "sha256"
    key_identifiers: bool = True
    self_signed: bool = False
    extra_extensions: tuple[tuple[x509.ExtensionType, bool], ...] = ()

    def replace(self, **changes: object) -> LeafSpec:
        return replace(self, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class IssuedCert:
    """A certificate with its key and its chain up to (and including) the root."""

    cert: x509.Certificate
    key: PrivateKey
    chain: tuple[x509.Certificate, ...] = field(default=())

    @property
    def cert_pem(self) -> bytes:
        return chain_pem([self.cert])

    @property
    def chain_pem(self) -> bytes:
        """Leaf and intermediates, without the root: what a client sends in the handshake."""
        return chain_pem(list(self.chain[:-1]) or [self.cert])

    @property
    def key_pem(self) -> bytes:
        return private_key_pem(self.key)


def _key(key_type: str) -> PrivateKey:
    if key_type == "rsa-1024":
        return rsa.generate_private_key(public_exponent=65537, key_size=1024)
    return generate_private_key(key_type)


def _sign_hash(key: PrivateKey, name: HashName) -> hashes.HashAlgorithm | None:
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return None
    return _HASHES[name]()


def _extended_key_usage(usages: tuple[ObjectIdentifier, ...]) -> x509.ExtensionType:
    """An empty EKU is a defect to test with; cryptography 51 refuses to build one, so its
    DER (an empty SEQUENCE) goes in as an unrecognized extension of the EKU OID."""
    if usages:
        return x509.ExtendedKeyUsage(list(usages))
    return x509.UnrecognizedExtension(ExtensionOID.EXTENDED_KEY_USAGE, b"\x30\x00")


def _key_usage(names: frozenset[KeyUsageName]) -> x509.KeyUsage:
    flags = {name: name in names for name in KeyUsageName.__args__}  # type: ignore[attr-defined]
    return x509.KeyUsage(**flags, encipher_only=False, decipher_only=False)


class TestCA:
    """A root, optionally an intermediate under it, and a method to issue leaves.

    ``name_constraints`` puts permitted URI/DNS subtrees on the issuing CA, e.g.
    ``("spiffe://acme.com",)`` becomes a URI constraint for host ``acme.com``.
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        *,
        name: str = "mtlskit test",
        organization: str | None = None,
        intermediate: bool = True,
        key_type: str = "ec-p256",
        permitted_uri_hosts: tuple[str, ...] = (),
        permitted_dns: tuple[str, ...] = (),
    ) -> None:
        now = _now()
        root_key = _key(key_type)
        org = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization)] if organization else []
        root_name = x509.Name([*org, x509.NameAttribute(NameOID.COMMON_NAME, f"{name} root CA")])
        root = self._ca_cert(
            subject=root_name,
            key=root_key,
            issuer=root_name,
            signer=root_key,
            now=now,
            path_length=None,
            constraints=None,
        )
        self.root = IssuedCert(root, root_key, (root,))
        constraints = None
        if permitted_uri_hosts or permitted_dns:
            constraints = x509.NameConstraints(
                permitted_subtrees=[x509.UniformResourceIdentifier(h) for h in permitted_uri_hosts]
                + [x509.DNSName(d) for d in permitted_dns],
                excluded_subtrees=None,
            )
        if intermediate:
            key = _key(key_type)
            subject = x509.Name(
                [*org, x509.NameAttribute(NameOID.COMMON_NAME, f"{name} issuing CA")]
            )
            cert = self._ca_cert(
                subject=subject,
                key=key,
                issuer=root_name,
                signer=root_key,
                now=now,
                path_length=0,
                constraints=constraints,
            )
            self.issuer = IssuedCert(cert, key, (cert, root))
        else:
            if constraints is not None:
                raise ValueError(
                    "name constraints need an intermediate (a root's are not enforced)"
                )
            self.issuer = self.root

    @staticmethod
    def _ca_cert(
        *,
        subject: x509.Name,
        key: PrivateKey,
        issuer: x509.Name,
        signer: PrivateKey,
        now: dt.datetime,
        path_length: int | None,
        constraints: x509.NameConstraints | None,
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
            .add_extension(_key_usage(frozenset({"key_cert_sign", "crl_sign"})), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()),  # type: ignore[arg-type]
                critical=False,
            )
        )
        if constraints is not None:
            builder = builder.add_extension(constraints, critical=True)
        return builder.sign(signer, _sign_hash(signer, "sha256"))  # type: ignore[arg-type]

    @property
    def bundle_pem(self) -> bytes:
        """The root alone: what a service puts in its client trust store."""
        return self.root.cert_pem

    def crl(
        self,
        revoked: tuple[int, ...] = (),
        *,
        last_update: dt.datetime | None = None,
        next_update: dt.datetime | None = None,
    ) -> x509.CertificateRevocationList:
        """A CRL from the issuing CA listing ``revoked`` serials; fresh for a day by default."""
        last = last_update or _now() - dt.timedelta(minutes=5)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.issuer.cert.subject)
            .last_update(last)
            .next_update(next_update or last + dt.timedelta(days=1))
            .add_extension(x509.CRLNumber(1), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.issuer.key.public_key()),  # type: ignore[arg-type]
                critical=False,
            )
        )
        for serial in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(last).build()
            )
        return builder.sign(self.issuer.key, _sign_hash(self.issuer.key, "sha256"))  # type: ignore[arg-type]

    def issue(self, spec: LeafSpec | None = None, *, key: PrivateKey | None = None) -> IssuedCert:
        """A leaf built from ``spec`` (clean by default); ``key`` reuses an existing key pair."""
        spec = spec or LeafSpec()
        leaf_key = key or _key(spec.key_type)
        if spec.self_signed:
            signer, issuer_cert, chain_above = leaf_key, None, ()
        else:
            signer, issuer_cert, chain_above = self.issuer.key, self.issuer.cert, self.issuer.chain
        cert = build_leaf(spec, leaf_key, signer=signer, issuer=issuer_cert)
        return IssuedCert(cert, leaf_key, (cert, *chain_above) if chain_above else (cert,))


def build_leaf(
    spec: LeafSpec,
    key: PrivateKey,
    *,
    signer: PrivateKey,
    issuer: x509.Certificate | None,
) -> x509.Certificate:
    """Build and sign one leaf exactly as ``spec`` says, defects included."""
    not_before = spec.not_before or _now() - dt.timedelta(hours=1)
    not_after = spec.not_after or not_before + spec.lifetime
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, spec.common_name)] if spec.common_name else []
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    if spec.ca is not None:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=spec.ca, path_length=spec.path_length if spec.ca else None),
            critical=True,
        )
    if spec.key_usage is not None:
        builder = builder.add_extension(
            _key_usage(spec.key_usage), critical=spec.key_usage_critical
        )
    if spec.eku is not None:
        builder = builder.add_extension(_extended_key_usage(spec.eku), critical=False)
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in spec.uris]
    names += [x509.DNSName(d) for d in spec.dns]
    names += [x509.RFC822Name(e) for e in spec.emails]
    if spec.include_san and names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(names), critical=not spec.common_name
        )
    if spec.key_identifiers:
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
        signer_public = signer.public_key()
        if isinstance(
            signer_public, ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey
        ):
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(signer_public), critical=False
            )
    for extension, critical in spec.extra_extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(signer, _sign_hash(signer, spec.signature_hash))  # type: ignore[arg-type]
