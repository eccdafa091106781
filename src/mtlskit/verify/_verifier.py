"""Verify a presented client chain against a ``TrustStore``: every failed check, with a code.

Path building and signature checks are ``cryptography``'s client verifier (never
hand-written). mtlskit runs its own explicit checks beside it (identity, EKU,
CA flag, key usage for SVIDs, key strength, signature hash, validity, depth,
revocation, trust-domain binding, pins) so that a rejection lists *every*
problem with a precise code instead of pyca's first error string.

pyca's leaf extension policy is relaxed for the checks mtlskit reports itself
(SAN, EKU, basicConstraints, keyUsage may be anything to pyca): an
``ExtensionPolicy`` callback fails by raising, which stops path building at the
first leaf defect and would hide whether the chain is trusted at all. The
relaxation is safe because the explicit checks below reject those defects.
"""

from __future__ import annotations

import datetime as dt
import itertools
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, NamedTuple

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from mtlskit.certs import DSA_KEY_TYPES, UNREADABLE_EXTENSIONS, Fingerprint, key_info
from mtlskit.errors import ConfigError
from mtlskit.identity import ClientIdentity, IdentityError, IdentityKind
from mtlskit.verify._decision import NO_INTERMEDIATE, Code, Decision, Reason, Verdict
from mtlskit.verify._trust import TrustStore

__all__ = ["Authorize", "Verifier"]

Authorize = Callable[[Decision], Decision]
"""An authorization step run on accepted decisions (``mtlskit.authz.Policy.authorize`` fits)."""

_CA_POLICY: Final = ExtensionPolicy.webpki_defaults_ca()
_EE_POLICY: Final = (
    ExtensionPolicy.webpki_defaults_ee()
    .may_be_present(x509.SubjectAlternativeName, Criticality.AGNOSTIC, None)
    .may_be_present(x509.ExtendedKeyUsage, Criticality.AGNOSTIC, None)
    .may_be_present(x509.BasicConstraints, Criticality.AGNOSTIC, None)
    .may_be_present(x509.KeyUsage, Criticality.AGNOSTIC, None)
)
_WEAK_HASHES: Final = (hashes.MD5, hashes.SHA1, hashes.SHA224)
_MIN_RSA_BITS: Final = 2048
_MIN_EC_BITS: Final = 256
_SERIALS: Final = itertools.count(1)


_MEMO_LIMIT: Final = 4096
_SHA256: Final = hashes.SHA256()
_FINGERPRINT: Final = operator.attrgetter("fingerprint")
_NOT_BEFORE: Final = operator.attrgetter("not_before")
_NOT_AFTER: Final = operator.attrgetter("not_after")
_FLAWED: Final = operator.attrgetter("flawed")


class _Facts(NamedTuple):
    """What the per-certificate checks need; computed once per CA certificate (a tuple: cheap)."""

    fingerprint: Fingerprint
    not_before: dt.datetime
    not_after: dt.datetime
    weak_key: str | None  # "RSA 1024" when too weak, else None
    weak_hash: str | None  # "SHA1" when too weak, else None
    self_issued: bool
    flawed: bool  # a weak key or hash: only validity is checked by the fast path

    @classmethod
    def of(cls, cert: x509.Certificate, *, leaf: bool = False) -> _Facts:
        """``leaf=True`` skips the issuer==subject comparison nobody asks of a leaf on success."""
        key = cert.public_key()
        kind = _KEY_KINDS.get(type(key)) or _key_kind(key)
        if kind is ec.EllipticCurvePublicKey:
            weak = key.curve.key_size < _MIN_EC_BITS  # type: ignore[union-attr]
        elif kind is rsa.RSAPublicKey:
            weak = key.key_size < _MIN_RSA_BITS  # type: ignore[union-attr]
        else:
            weak = kind in DSA_KEY_TYPES
        try:
            algorithm = cert.signature_hash_algorithm
        except UnsupportedAlgorithm:
            weak_hash = f"an unsupported algorithm ({cert.signature_algorithm_oid.dotted_string})"
        else:
            names, kind = _WEAK_HASH_NAMES, type(algorithm)
            weak_hash = names[kind] if kind in names else _weak_hash(algorithm)
        # A SHA-256 digest is 32 bytes by construction: skip Fingerprint's length check, and
        # the generated ``__new__`` of both types (two Python calls per handshake fewer).
        fingerprint = object.__new__(Fingerprint)
        object.__setattr__(fingerprint, "digest", cert.fingerprint(_SHA256))
        return tuple.__new__(
            cls,
            (
                fingerprint,
                cert.not_valid_before_utc,
                cert.not_valid_after_utc,
                str(key_info(key)) if weak else None,
                weak_hash,
                False if leaf else cert.issuer == cert.subject,
                weak or weak_hash is not None,
            ),
        )


# Key and hash classes are few and recur on every call: each is classified once with the
# ABC ``isinstance`` checks (about 0.3 µs apiece), then found by its exact type.
_KEY_KINDS: Final[dict[type, type]] = {}
_WEAK_HASH_NAMES: Final[dict[type, str | None]] = {}


def _key_kind(key: object) -> type:
    """The public-key ABC ``key`` implements (``object`` for any other kind)."""
    kinds = (ec.EllipticCurvePublicKey, rsa.RSAPublicKey, *DSA_KEY_TYPES)
    kind = next((abc for abc in kinds if isinstance(key, abc)), object)
    _KEY_KINDS[type(key)] = kind
    return kind


def _weak_hash(algorithm: hashes.HashAlgorithm | None) -> str | None:
    """``"SHA1"`` when ``algorithm`` is below SHA-256, else ``None``."""
    name = algorithm.name.upper() if isinstance(algorithm, _WEAK_HASHES) else None
    _WEAK_HASH_NAMES[type(algorithm)] = name
    return name


def _leaf_extensions(
    leaf: x509.Certificate,
) -> tuple[
    x509.SubjectAlternativeName | None,
    x509.BasicConstraints | None,
    x509.ExtendedKeyUsage | None,
    x509.KeyUsage | None,
]:
    """The leaf extensions mtlskit judges, in one pass (a lookup by OID is a scan each).

    cryptography builds exactly one value class per extension OID, so the value's
    type identifies the extension (and ``.oid`` is one Python property call more).
    Unreadable extensions raise here (``UNREADABLE_EXTENSIONS``); ``verify`` rejects them.
    """
    san = basic = eku = usage = None
    for extension in leaf.extensions:
        value = extension.value
        kind = type(value)
        if kind is x509.SubjectAlternativeName:
            san = value
        elif kind is x509.BasicConstraints:
            basic = value
        elif kind is x509.ExtendedKeyUsage:
            eku = value
        elif kind is x509.KeyUsage:
            usage = value
    return san, basic, eku, usage


def _name(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "(empty subject)"


@dataclass(frozen=True, slots=True, kw_only=True)
class Verifier:
    """The client-certificate verifier: trust, policy switches, and an optional authorizer.

    Build one per trust generation and share it; it holds no per-call state. The
    clock is always a parameter of ``verify``.

    - ``allow_missing_eku``: accept a leaf with no extendedKeyUsage at all (RFC 5280
      reads absence as "any purpose"; off by default because every peer gateway
      demands clientAuth).
    - ``max_chain_depth``: most intermediates between leaf and anchor (pyca's
      meaning; 8 is pyca's default, AWS ALB allows 4, GCP 10 certificates).
    - ``authorize``: run on every accepted decision; required when the trust store
      allows public roots, because "any certificate from a public CA" is never a
      valid client policy.
    """

    trust: TrustStore
    allow_missing_eku: bool = False
    max_chain_depth: int = 8
    authorize: Authorize | None = None
    serial: int = field(default_factory=lambda: next(_SERIALS), compare=False)
    # CA certificates recur on every connection: their facts are computed once. Keyed by
    # signature bytes (cheap to hash) and confirmed by full equality of the certificate.
    _ca_facts: dict[bytes, tuple[x509.Certificate, _Facts]] = field(
        default_factory=dict, repr=False, compare=False
    )
    _builders: dict[int, PolicyBuilder] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.trust.allow_public_roots and self.authorize is None:
            raise ConfigError(
                "allow_public_roots needs an identity policy: a public CA certifies anyone who "
                "controls a domain, so 'any certificate from a public CA' is never a valid "
                "client policy"
            )
        if self.max_chain_depth < 0:
            raise ConfigError(f"max_chain_depth must be >= 0, not {self.max_chain_depth}")

    @property
    def cache_key(self) -> tuple[int, int]:
        """(trust-store generation, verifier serial): what a cached verdict depends on."""
        return (self.trust.generation, self.serial)

    def verify(self, chain: Sequence[x509.Certificate], *, at: dt.datetime) -> Decision:
        """Judge ``chain`` (leaf first, as presented) at ``at``; never raises for a bad chain."""
        if not chain:
            return Decision(
                verdict=Verdict.REJECT,
                reasons=(
                    Reason(
                        code=Code.CERT_NOT_PROVIDED,
                        message="the client presented no certificate",
                        depth=None,
                    ),
                ),
            )
        if at.tzinfo is None:
            raise ValueError("verification time must be timezone-aware")
        try:
            return self._judge(chain, at)
        except UNREADABLE_EXTENSIONS as exc:  # cryptography cannot parse a certificate (hostile)
            return Decision(
                verdict=Verdict.REJECT,
                reasons=(
                    Reason(
                        code=Code.CHAIN_UNTRUSTED,
                        message=f"a certificate in the chain cannot be parsed: {exc}",
                        depth=None,
                    ),
                ),
            )

    def _judge(self, chain: Sequence[x509.Certificate], at: dt.datetime) -> Decision:
        leaf = chain[0]
        reasons: list[Reason] = []
        san, basic, eku, usage = _leaf_extensions(leaf)
        identity: ClientIdentity | None
        try:
            identity = ClientIdentity.from_subject_alt_name(san)
        except IdentityError as exc:
            reasons.append(Reason(code=Code(exc.code), message=str(exc), depth=0))
            identity = None
        self._leaf_policy(basic, eku, usage, identity, reasons)
        leaf_facts = _Facts.of(leaf, leaf=True)
        presented = self._facts([leaf_facts], chain[1:])
        if len(presented) - 1 > self.max_chain_depth:
            self._depth(presented, reasons)
        pins = self.trust.pins
        pinned = bool(pins) and leaf_facts.fingerprint in pins
        verified: Sequence[x509.Certificate] | None
        verified = (leaf,) if pinned else self._path(chain, presented, identity, at, reasons)
        checked = verified if verified is not None else chain
        if checked is chain:
            facts = presented
        elif len(checked) >= len(chain) and all(map(operator.is_, checked, chain)):
            # pyca's path starts with the very objects presented: look up only the rest
            # (the anchor), not the intermediates again (a fresh one costs a full comparison).
            facts = self._facts(presented.copy(), checked[len(chain) :])
        else:
            facts = self._facts([leaf_facts], checked[1:])
        valid_until = _certificates(
            checked, facts, at, reasons, anchored=verified is not None and not pinned, pinned=pinned
        )
        if verified is not None and not pinned and self.trust.crls:
            valid_until = self._revocation(verified, at, reasons, valid_until)

        fingerprints = tuple(map(_FINGERPRINT, facts))
        if reasons:
            return Decision(
                verdict=Verdict.REJECT,
                identity=identity,
                chain=fingerprints,
                reasons=tuple(sorted(reasons, key=_depth_order)),
                pinned=pinned,
                valid_until=valid_until,
            )
        decision = Decision.accept(
            identity=identity, chain=fingerprints, pinned=pinned, valid_until=valid_until
        )
        return decision if self.authorize is None else self.authorize(decision)

    def _facts(self, facts: list[_Facts], cas: Sequence[x509.Certificate]) -> list[_Facts]:
        """``facts`` extended by those of each CA in ``cas``, computed once per CA certificate."""
        memo = self._ca_facts
        for cert in cas:
            signature = cert.signature
            known = memo.get(signature)
            # pyca hands back the very objects it was given (and the store's), so identity
            # settles almost every lookup before the byte-wise comparison.
            if known is not None and (known[0] is cert or known[0] == cert):
                facts.append(known[1])
                continue
            if len(memo) >= _MEMO_LIMIT:
                memo.clear()
            fact = _Facts.of(cert)
            memo[signature] = (cert, fact)
            facts.append(fact)
        return facts

    # --- the leaf ----------------------------------------------------------------

    def _leaf_policy(
        self,
        basic: x509.BasicConstraints | None,
        eku: x509.ExtendedKeyUsage | None,
        usage: x509.KeyUsage | None,
        identity: ClientIdentity | None,
        reasons: list[Reason],
    ) -> None:
        if basic is not None and basic.ca:
            reasons.append(
                Reason(
                    code=Code.LEAF_IS_CA,
                    message="the client certificate is a CA (basicConstraints CA:TRUE); "
                    "a client must present an end-entity certificate",
                )
            )
        if eku is None:
            if not self.allow_missing_eku:
                reasons.append(
                    Reason(
                        code=Code.EKU_MISSING_CLIENT_AUTH,
                        message="no extendedKeyUsage extension; clientAuth is required "
                        "(allow a missing EKU explicitly with allow_missing_eku)",
                    )
                )
        elif ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
            names = ", ".join(oid._name for oid in eku) or "nothing"
            reasons.append(
                Reason(
                    code=Code.EKU_MISSING_CLIENT_AUTH,
                    message=f"extendedKeyUsage lists {names} but not clientAuth",
                )
            )
        if identity is not None and identity.kind is IdentityKind.SPIFFE:
            if usage is None or not usage.digital_signature:
                reasons.append(
                    Reason(
                        code=Code.KEY_USAGE_INVALID,
                        message="an X509-SVID leaf must have keyUsage with digitalSignature",
                    )
                )
            elif usage.key_cert_sign or usage.crl_sign:
                reasons.append(
                    Reason(
                        code=Code.KEY_USAGE_INVALID,
                        message="an X509-SVID leaf must not have keyCertSign or cRLSign",
                    )
                )

    def _depth(self, presented: Sequence[_Facts], reasons: list[Reason]) -> None:
        """Only asked when more certificates than allowed came: self-issued ones do not count."""
        intermediates = sum(1 for fact in presented[1:] if not fact.self_issued)
        if intermediates > self.max_chain_depth:
            reasons.append(
                Reason(
                    code=Code.CHAIN_TOO_DEEP,
                    message=f"{intermediates} intermediate CAs presented; at most "
                    f"{self.max_chain_depth} are allowed",
                    depth=len(presented) - 1,
                )
            )

    # --- the path ----------------------------------------------------------------

    def _path(
        self,
        chain: Sequence[x509.Certificate],
        presented: Sequence[_Facts],
        identity: ClientIdentity | None,
        at: dt.datetime,
        reasons: list[Reason],
    ) -> Sequence[x509.Certificate] | None:
        """The validated path leaf→anchor, or ``None`` with the reasons why not."""
        trust = self.trust
        domain = identity.spiffe_id.trust_domain if identity and identity.spiffe_id else None
        store = trust.store_for(domain)
        top = len(chain) - 1
        when = _inside_validity(presented, at)
        if store is not None:
            verified, error = self._pyca(store, chain, when)
            if verified is not None:
                return verified
            failure = _pyca_reason(error or "", top)
            if (
                failure.code is Code.CHAIN_UNTRUSTED
                and top == 0
                and chain[0].issuer != chain[0].subject
            ):
                failure = Reason(code=Code.CHAIN_UNTRUSTED, message=NO_INTERMEDIATE, depth=0)
            timely = all(fact.not_before <= at <= fact.not_after for fact in presented)
            if failure.code is Code.CERT_EXPIRED and not timely:
                pass  # no common validity window: the per-certificate checks say which expired
            elif not any(r.code is failure.code for r in reasons):
                reasons.append(failure)
        elif trust.pins and not trust.anchors and not trust.bundles:
            pass  # pins only: handled below as a pin mismatch
        elif domain is not None and trust.bundles:
            bound = ", ".join(sorted(str(d) for d in trust.bundles))
            reasons.append(
                Reason(
                    code=Code.TRUST_DOMAIN_MISMATCH,
                    message=f"no trust bundle for trust domain {domain} (bundles are configured "
                    f"for {bound}); a CA of one trust domain never vouches for another",
                )
            )
        else:
            reasons.append(
                Reason(
                    code=Code.CHAIN_UNTRUSTED,
                    message="the trust store holds no anchor that may vouch for this certificate",
                    depth=top,
                )
            )
        if domain is not None:
            for other, other_store in trust.other_bundle_stores(domain):
                if self._pyca(other_store, chain, when)[0] is not None:
                    _replace(
                        reasons,
                        Reason(
                            code=Code.TRUST_DOMAIN_MISMATCH,
                            message=f"signed by a CA of the bundle for trust domain {other}, "
                            f"which cannot vouch for {domain}",
                        ),
                    )
                    break
        leaf = chain[0]
        if trust.pins and (store is None or leaf.issuer == leaf.subject):
            _replace(
                reasons,
                Reason(
                    code=Code.PIN_MISMATCH,
                    message=f"{Fingerprint.of(leaf)} is not one of the {len(trust.pins)} pinned "
                    "certificates (same names with another key are an impostor)",
                ),
            )
        if not trust.allow_public_roots:
            public = trust.public_root_of(chain[-1])
            if public is not None:
                _replace(
                    reasons,
                    Reason(
                        code=Code.PUBLIC_CA_NOT_ALLOWED,
                        message=f"the chain ends at the publicly trusted root {_name(public)}; "
                        "a public CA validates domains, not clients (set allow_public_roots "
                        "together with an identity policy to permit it)",
                        depth=top,
                    ),
                )
            elif trust.refused_public and store is None:
                names = ", ".join(_name(cert) for cert in trust.refused_public[:3])
                _replace(
                    reasons,
                    Reason(
                        code=Code.PUBLIC_CA_NOT_ALLOWED,
                        message=f"the trust store's anchors are public roots ({names}) and were "
                        "refused: allow_public_roots is not set",
                        depth=None,
                    ),
                )
        return None

    def _pyca(
        self, store: Store, chain: Sequence[x509.Certificate], when: dt.datetime
    ) -> tuple[list[x509.Certificate] | None, str | None]:
        builder = self._builders.get(id(store))
        if builder is None:
            # Builders are immutable: everything but the time is set once per store.
            builder = self._builders[id(store)] = (
                PolicyBuilder()
                .store(store)
                .max_chain_depth(self.max_chain_depth)
                .extension_policies(ca_policy=_CA_POLICY, ee_policy=_EE_POLICY)
            )
        verifier = builder.time(when).build_client_verifier()
        try:
            return verifier.verify(chain[0], list(chain[1:])).chain, None
        except VerificationError as exc:
            return None, str(exc)

    def _revocation(
        self,
        chain: Sequence[x509.Certificate],
        at: dt.datetime,
        reasons: list[Reason],
        valid_until: dt.datetime,
    ) -> dt.datetime:
        trust = self.trust
        for depth in range(len(chain) - 1):
            cert, issuer = chain[depth], chain[depth + 1]
            revocation = trust.crls.get(cert.issuer.public_bytes())
            if revocation is None:
                continue
            if not trust.crl_signed_by(revocation, issuer):
                reasons.append(
                    Reason(
                        code=Code.CRL_INVALID,
                        message=f"the CRL for issuer {_name(issuer)} is not signed by "
                        "that issuer's key",
                        depth=depth,
                    )
                )
                continue
            if revocation.stale_at(at) and not trust.allow_stale_crls:
                when = (
                    revocation.next_update.isoformat()
                    if revocation.next_update
                    else "(no nextUpdate)"
                )
                reasons.append(
                    Reason(
                        code=Code.CRL_STALE,
                        message=f"the CRL of {_name(issuer)} is out of date (nextUpdate {when}); "
                        "revocation status unknown, failing closed",
                        depth=depth,
                    )
                )
            entry = revocation.entry(cert.serial_number)
            if entry is not None:
                since = entry.revocation_date_utc.isoformat()
                reasons.append(
                    Reason(
                        code=Code.CERT_REVOKED,
                        message=f"{_role(cert, depth)} (serial {cert.serial_number:x}) is "
                        f"revoked since {since} by the CRL of {_name(issuer)}",
                        depth=depth,
                    )
                )
            if revocation.next_update is not None:
                valid_until = min(valid_until, revocation.next_update)
        return valid_until


def _certificates(
    chain: Sequence[x509.Certificate],
    facts: Sequence[_Facts],
    at: dt.datetime,
    reasons: list[Reason],
    *,
    anchored: bool,
    pinned: bool,
) -> dt.datetime:
    """Validity, key strength and signature hash of each certificate; returns the first notAfter."""
    valid_until = min(map(_NOT_AFTER, facts))
    if max(map(_NOT_BEFORE, facts)) <= at <= valid_until and not any(map(_FLAWED, facts)):
        return valid_until  # the usual case, without a Python-level loop: nothing to report
    last = len(chain) - 1
    for depth, (cert, fact) in enumerate(zip(chain, facts, strict=True)):
        _, not_before, not_after, weak_key, weak_hash, self_issued, _ = fact
        if not_after < at:
            reasons.append(
                Reason(
                    code=Code.CERT_EXPIRED,
                    message=f"{_role(cert, depth)} expired at {not_after.isoformat()}",
                    depth=depth,
                )
            )
        elif not_before > at:
            reasons.append(
                Reason(
                    code=Code.CERT_NOT_YET_VALID,
                    message=f"{_role(cert, depth)} is not valid before {not_before.isoformat()}",
                    depth=depth,
                )
            )
        if weak_key is not None:
            reasons.append(
                Reason(
                    code=Code.KEY_TOO_WEAK,
                    message=f"{_role(cert, depth)} has a {weak_key} key; at least "
                    f"RSA {_MIN_RSA_BITS} or EC P-256 is required",
                    depth=depth,
                )
            )
        if weak_hash is None:
            continue
        # An anchor's or a pinned leaf's own signature carries no trust: skip it.
        if (anchored and depth == last) or (pinned and depth == 0):
            continue
        if not anchored and depth > 0 and self_issued:
            continue
        reasons.append(
            Reason(
                code=Code.SIGNATURE_ALGORITHM_WEAK,
                message=f"{_role(cert, depth)} is signed with {weak_hash}; "
                "SHA-256 or stronger is required",
                depth=depth,
            )
        )
    return valid_until


def _role(cert: x509.Certificate, depth: int) -> str:
    return "client certificate" if depth == 0 else f"CA {_name(cert)}"


def _depth_order(reason: Reason) -> int:
    return -1 if reason.depth is None else reason.depth


def _replace(reasons: list[Reason], reason: Reason) -> None:
    """Put ``reason`` in place of a generic chain_untrusted, or add it."""
    for index, existing in enumerate(reasons):
        if existing.code is Code.CHAIN_UNTRUSTED:
            reasons[index] = reason
            return
    if not any(existing.code is reason.code for existing in reasons):
        reasons.append(reason)


def _inside_validity(facts: Sequence[_Facts], at: dt.datetime) -> dt.datetime:
    """``at`` moved into the presented certificates' common validity window, if it has one.

    Validity is reported by mtlskit's own check; asking pyca at a time when every
    presented certificate is valid lets it answer the separate question "is this
    path trusted?", so an expired certificate from an unknown CA gets both reasons.
    """
    start = max(map(_NOT_BEFORE, facts))
    end = min(map(_NOT_AFTER, facts))
    if start > end or start <= at <= end:
        return at
    return start if at < start else end


def _pyca_reason(message: str, top: int) -> Reason:
    """pyca's error string → a stable code; the explicit checks cover the rest."""
    if "unsupported name constraint" in message:
        return Reason(
            code=Code.CHAIN_UNTRUSTED,
            message="a CA in the path carries a URI name constraint, which cryptography's "
            "verifier does not support, so the chain cannot be validated; bind SPIFFE trust "
            "domains with a bundle per domain (--spiffe-bundle) instead",
            depth=top,
        )
    if "name constraint" in message:
        return Reason(
            code=Code.CHAIN_UNTRUSTED,
            message="the issuing CA's name constraints do not permit this certificate's "
            "subjectAltName: the CA signed outside the names it may certify",
            depth=top,
        )
    if "exceeds max depth" in message:
        return Reason(
            code=Code.CHAIN_TOO_DEEP,
            message="no path to an anchor within the allowed number of intermediates",
            depth=top,
        )
    if "not valid at validation time" in message:
        return Reason(
            code=Code.CERT_EXPIRED,
            message="a certificate in the path (the anchor or a store intermediate) is outside "
            "its validity period",
            depth=None,
        )
    if "no interior errors" in message:
        return Reason(
            code=Code.CHAIN_UNTRUSTED,
            message="no path from this certificate to a trusted anchor: its issuer is not in "
            "the trust store and no presented intermediate leads to one",
            depth=top,
        )
    return Reason(
        code=Code.CHAIN_UNTRUSTED,
        message=f"path validation failed: {message.removeprefix('validation failed: ')}",
        depth=top,
    )
