"""The certificates the probe presents: impostors and defective variants of one client's names.

Pure builders (keys and certificates in, certificates out; the clock is a parameter).
Every variant copies the legitimate certificate's names — subject CN, URI, DNS and
email SANs — so a refusal can only come from the defect under test, not from an
unfamiliar identity. CA variants are signed with the CA directory's issuing key
directly, bypassing the CA's lint gate on purpose: that gate would (rightly)
refuse every one of them. SHA-1 is the exception: cryptography refuses to sign
with it, so ``sha1_request`` builds a CSR for the ``openssl`` CLI to sign.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID

from mtlskit.certs import PrivateKey, generate_private_key
from mtlskit.issue import Issuer
from mtlskit.testca import CLIENT_AUTH, SERVER_AUTH, LeafSpec, TestCA, build_leaf

__all__ = [
    "FOREIGN_TRUST_DOMAIN",
    "Credential",
    "Names",
    "ca_variants",
    "foreign_key_for",
    "self_signed_impostor",
    "sha1_request",
    "unknown_ca_impostor",
]

FOREIGN_TRUST_DOMAIN: Final = "probe-foreign.invalid"  # .invalid: can never be a real domain
LIFETIME: Final = dt.timedelta(hours=2)  # short: the revoked one leaves the CRL soon after
BACKDATE: Final = dt.timedelta(minutes=5)


@dataclass(frozen=True, slots=True, kw_only=True)
class Credential:
    """What a probing client presents: its chain (leaf first, no root) and the key it signs with."""

    chain: tuple[x509.Certificate, ...]
    key: PrivateKey

    @property
    def leaf(self) -> x509.Certificate:
        return self.chain[0]


@dataclass(frozen=True, slots=True, kw_only=True)
class Names:
    """The names copied from the legitimate certificate."""

    common_name: str | None
    uris: tuple[str, ...]
    dns: tuple[str, ...]
    emails: tuple[str, ...]

    @classmethod
    def of(cls, cert: x509.Certificate) -> Names:
        cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            san = None  # not an empty SubjectAlternativeName: cryptography 51 refuses one
        return cls(
            common_name=str(cns[0].value) if cns else None,
            uris=tuple(san.get_values_for_type(x509.UniformResourceIdentifier)) if san else (),
            dns=tuple(san.get_values_for_type(x509.DNSName)) if san else (),
            emails=tuple(san.get_values_for_type(x509.RFC822Name)) if san else (),
        )

    @property
    def spiffe_id(self) -> str | None:
        return next((uri for uri in self.uris if uri.startswith("spiffe://")), None)

    def spec(self, now: dt.datetime, **changes: object) -> LeafSpec:
        """A clean client-auth leaf spec with these names, valid from a few minutes ago."""
        base = LeafSpec(
            uris=self.uris,
            dns=self.dns,
            emails=self.emails,
            # pyca refuses an empty subject *and* no SAN; keep a CN when the SAN goes
            common_name=self.common_name,
            not_before=now - BACKDATE,
            lifetime=LIFETIME,
        )
        return base.replace(**changes)


def foreign_key_for(cert: x509.Certificate) -> PrivateKey:
    """A fresh key of the same type as the certificate's: the attacker's own key."""
    public = cert.public_key()
    if isinstance(public, ec.EllipticCurvePublicKey):
        return ec.generate_private_key(public.curve)
    if isinstance(public, rsa.RSAPublicKey):
        return rsa.generate_private_key(public_exponent=65537, key_size=public.key_size)
    if isinstance(public, ed25519.Ed25519PublicKey):
        return ed25519.Ed25519PrivateKey.generate()
    if isinstance(public, ed448.Ed448PublicKey):
        return ed448.Ed448PrivateKey.generate()
    raise ValueError(f"unsupported client key type {type(public).__name__}")


def unknown_ca_impostor(names: Names, now: dt.datetime) -> Credential:
    """The same names, signed by a CA nobody trusts (made up on the spot)."""
    stranger = TestCA(name="mtlskit probe stranger", intermediate=False)
    issued = stranger.issue(names.spec(now))
    return Credential(chain=(issued.cert,), key=issued.key)


def self_signed_impostor(names: Names, now: dt.datetime) -> Credential:
    """The same names, self-signed: what anyone can make with one openssl command."""
    key = generate_private_key()
    cert = build_leaf(names.spec(now, self_signed=True), key, signer=key, issuer=None)
    return Credential(chain=(cert,), key=key)


def _spiffe_in(trust_domain: str, spiffe_id: str) -> str:
    path = spiffe_id.removeprefix("spiffe://").partition("/")[2]
    return f"spiffe://{trust_domain}/{path}" if path else f"spiffe://{trust_domain}/probe"


def ca_variants(names: Names, issuer: Issuer, now: dt.datetime) -> dict[str, Credential | str]:
    """Each CA case's credential signed by ``issuer``, or the reason it cannot be built.

    ``revoked`` is a clean certificate: the shell records and revokes it in the CA's
    store. ``sha1`` is not here (see ``sha1_request``).
    """
    specs: dict[str, LeafSpec | str] = {
        "ca-control": names.spec(now),
        "revoked": names.spec(now),
        "expired": names.spec(
            now, not_before=now - dt.timedelta(days=2), not_after=now - dt.timedelta(days=1)
        ),
        "not-yet-valid": names.spec(now, not_before=now + dt.timedelta(days=1)),
        "server-auth-only": names.spec(now, eku=(SERVER_AUTH,)),
        "no-eku": names.spec(now, eku=None),
        "ca-true-leaf": names.spec(
            now, ca=True, key_usage=frozenset({"digital_signature", "key_cert_sign"})
        ),
        "no-san": names.spec(now, include_san=False, common_name=names.common_name or "probe"),
        "rsa-1024": names.spec(now, key_type="rsa-1024"),
    }
    spiffe_id = names.spiffe_id
    if spiffe_id is None:
        reason = "--cert has no SPIFFE ID"
        specs["two-spiffe-ids"] = specs["foreign-trust-domain"] = reason
    else:
        trust_domain = spiffe_id.removeprefix("spiffe://").partition("/")[0]
        others = tuple(uri for uri in names.uris if uri != spiffe_id)
        specs["two-spiffe-ids"] = names.spec(
            now, uris=(spiffe_id, f"spiffe://{trust_domain}/mtlskit-probe/second", *others)
        )
        specs["foreign-trust-domain"] = names.spec(
            now, uris=(_spiffe_in(FOREIGN_TRUST_DOMAIN, spiffe_id), *others)
        )
    above = issuer.chain[:-1] if len(issuer.chain) > 1 else ()  # the root stays home
    out: dict[str, Credential | str] = {}
    for case_id, spec in specs.items():
        if isinstance(spec, str):
            out[case_id] = spec
            continue
        key = generate_private_key() if spec.key_type == "ec-p256" else _weak_key(spec.key_type)
        cert = build_leaf(spec, key, signer=issuer.key, issuer=issuer.cert)
        out[case_id] = Credential(chain=(cert, *above), key=key)
    return out


def _weak_key(key_type: str) -> PrivateKey:
    if key_type == "rsa-1024":
        return rsa.generate_private_key(public_exponent=65537, key_size=1024)
    return generate_private_key(key_type)


def sha1_request(
    names: Names, now: dt.datetime
) -> tuple[x509.CertificateSigningRequest, PrivateKey]:
    """A CSR with a clean client-auth profile for ``openssl x509 -req -sha1 -copy_extensions``."""
    key = generate_private_key()
    spec = names.spec(now)  # only its names: openssl sets the validity
    general: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in spec.uris]
    general += [x509.DNSName(d) for d in spec.dns]
    general += [x509.RFC822Name(e) for e in spec.emails]
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, spec.common_name)] if spec.common_name else []
    )
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([CLIENT_AUTH]), critical=False)
    )
    if general:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(general), critical=not spec.common_name
        )
    return builder.sign(key, hashes.SHA256()), key  # type: ignore[arg-type]
