"""The trust a verifier works from: anchors, SPIFFE bundles, pins, CRLs, built once.

A ``TrustStore`` is immutable. Reloading builds a new one (with a new generation
number) and swaps it in whole, so a verification never sees half of an update and
a cache keyed by the generation forgets the old trust by itself. Everything comes
in as bytes or objects; reading files is the caller's job.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import itertools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.verification import Store

from mtlskit.certinfo import is_self_signed
from mtlskit.certs import Fingerprint, load_certificates
from mtlskit.errors import ConfigError, InputError
from mtlskit.identity import SpiffeIdError, TrustDomain
from mtlskit.publicca import find_public_root

__all__ = ["RevocationList", "TrustStore", "load_crl", "parse_spiffe_bundle"]

_GENERATIONS: Final = itertools.count(1)


def parse_spiffe_bundle(data: bytes, *, source: str = "<bundle>") -> tuple[x509.Certificate, ...]:
    """The X.509 authorities of a SPIFFE bundle: JWK Set JSON, or PEM/DER certificates.

    In a JWK Set only keys with ``use: "x509-svid"`` count, each with an ``x5c`` of
    exactly one CA certificate (SPIFFE Trust Domain and Bundle spec §4); JWT keys
    are skipped, since they never vouch for an X.509 client.
    """
    if data.lstrip()[:1] != b"{":
        return tuple(load_certificates(data, source=source))
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"is not valid SPIFFE bundle JSON: {exc}", source=source) from None
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list):
        raise InputError('SPIFFE bundle JSON has no "keys" list', source=source)
    authorities: list[x509.Certificate] = []
    for index, key in enumerate(keys):
        if not isinstance(key, dict) or key.get("use") != "x509-svid":
            continue
        x5c = key.get("x5c")
        if not isinstance(x5c, list) or len(x5c) != 1 or not isinstance(x5c[0], str):
            raise InputError(
                f"keys[{index}]: an x509-svid entry must have an x5c of exactly one certificate",
                source=source,
            )
        try:
            der = base64.b64decode(x5c[0], validate=True)
            authorities.append(x509.load_der_x509_certificate(der))
        except (binascii.Error, ValueError):
            raise InputError(
                f"keys[{index}].x5c[0] is not a base64 DER certificate", source=source
            ) from None
    if not authorities:
        raise InputError("SPIFFE bundle holds no x509-svid authority", source=source)
    return tuple(authorities)


def load_crl(data: bytes, *, source: str = "<crl>") -> x509.CertificateRevocationList:
    """A CRL from PEM or DER, or an ``InputError`` naming the file."""
    try:
        if b"-----BEGIN X509 CRL-----" in data:
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError:
        raise InputError(
            "is not a certificate revocation list (PEM or DER)", source=source
        ) from None


@dataclass(frozen=True, slots=True, kw_only=True)
class RevocationList:
    """One CRL reduced to what verification needs: issuer, revoked serials, freshness.

    ``serials`` maps each revoked serial to its entry's position in ``crl``, so that
    both "is it revoked?" and "since when?" are O(1) per request; cryptography's
    ``get_revoked_certificate_by_serial_number`` scans every entry (50 ms per revoked
    client on a million-entry CRL).
    """

    crl: x509.CertificateRevocationList
    issuer: bytes  # raw DER of the issuer name, the lookup key
    serials: Mapping[int, int]  # revoked serial -> position of its entry in ``crl``
    this_update: dt.datetime
    next_update: dt.datetime | None

    @classmethod
    def of(cls, crl: x509.CertificateRevocationList) -> RevocationList:
        serials = {entry.serial_number: position for position, entry in enumerate(crl)}
        if serials:
            # cryptography parses the entry list on the first indexed access: pay for that
            # here, at load time, rather than on the first revoked client after a reload.
            crl[0]
        return cls(
            crl=crl,
            issuer=crl.issuer.public_bytes(),
            serials=serials,
            this_update=crl.last_update_utc,
            next_update=crl.next_update_utc,
        )

    def entry(self, serial: int) -> x509.RevokedCertificate | None:
        """The CRL entry revoking ``serial``, or ``None``; O(1)."""
        position = self.serials.get(serial)
        return None if position is None else self.crl[position]

    def stale_at(self, at: dt.datetime) -> bool:
        """No nextUpdate means the issuer promised nothing: treat as stale (fail closed)."""
        return self.next_update is None or at > self.next_update


@dataclass(frozen=True, slots=True, kw_only=True)
class TrustStore:
    """Immutable trust for client certificates; build with ``TrustStore.build``.

    - ``anchors`` vouch for any client identity except SPIFFE IDs of a trust
      domain that has its own bundle; a certificate that appears in a bundle is
      never a general anchor, so a CA bound to ``acme.com`` cannot vouch for
      ``spiffe://evil.com/...``.
    - ``bundles`` map a trust domain to the only CAs that may sign its SVIDs.
    - ``pins`` are SHA-256 fingerprints of accepted self-signed client certificates.
    - ``refused_public`` are anchors left out because they are publicly trusted
      roots and ``allow_public_roots`` was not set.
    """

    generation: int
    anchors: tuple[x509.Certificate, ...] = ()
    bundles: Mapping[TrustDomain, tuple[x509.Certificate, ...]] = field(default_factory=dict)
    pins: frozenset[Fingerprint] = frozenset()
    crls: Mapping[bytes, RevocationList] = field(default_factory=dict)
    refused_public: tuple[x509.Certificate, ...] = ()
    allow_public_roots: bool = False
    allow_stale_crls: bool = False
    _store: Store | None = field(default=None, repr=False, compare=False)
    _bundle_stores: Mapping[TrustDomain, Store] = field(
        default_factory=dict, repr=False, compare=False
    )
    # Memo of CRL signature checks by (issuer name DER, issuer fingerprint): the
    # issuing CA usually arrives in the presented chain, so it is checked on first use.
    _public_bundle: str | None = field(default=None, repr=False, compare=False)
    _crl_signatures: dict[tuple[bytes, bytes], bool] = field(
        default_factory=dict, repr=False, compare=False
    )

    @classmethod
    def build(
        cls,
        *,
        anchors: Iterable[x509.Certificate] = (),
        spiffe_bundles: Mapping[TrustDomain | str, Iterable[x509.Certificate]] | None = None,
        pins: Iterable[Fingerprint | str] = (),
        crls: Iterable[x509.CertificateRevocationList] = (),
        allow_public_roots: bool = False,
        allow_stale_crls: bool = False,
        public_bundle: str | None = None,
    ) -> TrustStore:
        """Check and index the inputs; ``ConfigError`` for a configuration that cannot be right.

        Public roots are certifi's Mozilla roots plus ``public_bundle`` (default:
        ``$MTLSKIT_EXTRA_PUBLIC_ROOTS``), as ``mtlskit.publicca`` defines them.
        ``allow_public_roots`` is a dangerous switch: a public CA signs for anyone who
        controls a domain, so the verifier insists on an identity policy beside it.
        """
        bundles: dict[TrustDomain, tuple[x509.Certificate, ...]] = {}
        for name, certs in (spiffe_bundles or {}).items():
            try:
                domain = name if isinstance(name, TrustDomain) else TrustDomain.parse(name)
            except SpiffeIdError as exc:
                raise ConfigError(str(exc), source="spiffe bundle") from None
            bundle = tuple(certs)
            if not bundle:
                raise ConfigError(
                    f"the bundle for trust domain {domain} is empty", source="spiffe bundle"
                )
            bundles[domain] = _dedupe(bundles.get(domain, ()) + bundle)
        bound = {Fingerprint.of(cert) for certs in bundles.values() for cert in certs}
        usable: list[x509.Certificate] = []
        refused: list[x509.Certificate] = []
        for cert in _dedupe(tuple(anchors)):
            if Fingerprint.of(cert) in bound:
                continue  # bound to a trust domain: never a general anchor
            if (
                find_public_root([cert], bundle=public_bundle) is not None
                and not allow_public_roots
            ):
                refused.append(cert)
            else:
                usable.append(cert)
        for domain, certs in bundles.items():
            public = [c for c in certs if find_public_root([c], bundle=public_bundle) is not None]
            if public and not allow_public_roots:
                raise ConfigError(
                    f"the bundle for trust domain {domain} contains the public root "
                    f"{public[0].subject.rfc4514_string()}; SPIFFE bundles hold private CAs",
                    source="spiffe bundle",
                )
        revocation: dict[bytes, RevocationList] = {}
        for crl in crls:
            entry = RevocationList.of(crl)
            previous = revocation.get(entry.issuer)
            if previous is None or entry.this_update > previous.this_update:
                revocation[entry.issuer] = entry  # the newest CRL per issuer wins
        return cls(
            generation=next(_GENERATIONS),
            anchors=tuple(usable),
            bundles=bundles,
            pins=frozenset(
                pin if isinstance(pin, Fingerprint) else Fingerprint.parse(pin) for pin in pins
            ),
            crls=revocation,
            refused_public=tuple(refused),
            allow_public_roots=allow_public_roots,
            allow_stale_crls=allow_stale_crls,
            _store=Store(usable) if usable else None,
            _bundle_stores={domain: Store(list(certs)) for domain, certs in bundles.items()},
            _public_bundle=public_bundle,
        )

    @property
    def empty(self) -> bool:
        return not (self.anchors or self.bundles or self.pins)

    def store_for(self, trust_domain: TrustDomain | None) -> Store | None:
        """Who may vouch: the domain's own bundle if it has one, else the general anchors."""
        stores = self._bundle_stores
        if trust_domain is not None and stores:  # no bundles: no need to hash the domain
            return stores.get(trust_domain, self._store)
        return self._store

    def other_bundle_stores(
        self, trust_domain: TrustDomain | None
    ) -> list[tuple[TrustDomain, Store]]:
        return [
            (domain, store)
            for domain, store in self._bundle_stores.items()
            if domain != trust_domain
        ]

    def crl_signed_by(self, revocation: RevocationList, issuer: x509.Certificate) -> bool:
        key = (revocation.issuer, Fingerprint.of(issuer).digest)
        known = self._crl_signatures.get(key)
        if known is None:
            try:
                known = revocation.crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
            except (TypeError, ValueError):
                known = False
            self._crl_signatures[key] = known
        return known

    def public_root_of(self, cert: x509.Certificate) -> x509.Certificate | None:
        """The public root that is ``cert`` or directly signed it (refused anchors included)."""
        return self.refused_issuer_of(cert) or find_public_root([cert], bundle=self._public_bundle)

    def refused_issuer_of(self, cert: x509.Certificate) -> x509.Certificate | None:
        """The refused public anchor that is ``cert`` or signed it, if any."""
        for root in self.refused_public:
            if root == cert:
                return root
            if root.subject == cert.issuer and not is_self_signed(cert):
                try:
                    cert.verify_directly_issued_by(root)
                except (ValueError, TypeError, InvalidSignature):
                    continue
                return root
        return None


def _dedupe(certs: tuple[x509.Certificate, ...]) -> tuple[x509.Certificate, ...]:
    seen: set[x509.Certificate] = set()
    out: list[x509.Certificate] = []
    for cert in certs:
        if cert not in seen:
            seen.add(cert)
            out.append(cert)
    return tuple(out)
