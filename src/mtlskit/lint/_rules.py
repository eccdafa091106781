"""Every lint rule: a stable code, a severity, a reference, advice, and a small check function.

A check returns ``None`` when the certificate passes and otherwise one sentence
saying what it found; the rule appends what to do about it. Codes never change
meaning once released; where DESIGN.md §5 already names a rejection
(``leaf_is_ca``, ``cert_expired``, ...) lint uses the same code.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Final

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mtlskit.certinfo import EKU_NAMES
from mtlskit.identity import IdentityKind, SpiffeId, SpiffeIdError, san_text_problem
from mtlskit.lint._finding import Finding, Severity
from mtlskit.lint._view import CertView, LintContext
from mtlskit.publicca import CLIENT_AUTH_TIMELINE, ClientAuthStatus, client_auth_status

__all__ = ["CertRule", "ChainRule"]

CertCheck = Callable[[CertView, LintContext], str | None]
ChainCheck = Callable[[LintContext], Iterable[tuple[int, str]]]

CLIENT_AUTH: Final = ExtendedKeyUsageOID.CLIENT_AUTH
SERVER_AUTH: Final = ExtendedKeyUsageOID.SERVER_AUTH
ANY_EKU: Final = ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE

# --- references ---------------------------------------------------------------------
RFC5280_BC: Final = "RFC 5280 §4.2.1.9 (basicConstraints)"
RFC5280_KU: Final = "RFC 5280 §4.2.1.3 (keyUsage)"
RFC5280_EKU: Final = "RFC 5280 §4.2.1.12 (extKeyUsage)"
RFC5280_SAN: Final = "RFC 5280 §4.2.1.6 (subjectAltName)"
RFC5280_VALIDITY: Final = "RFC 5280 §4.1.2.5 (validity)"
RFC5280_KEY_IDS: Final = "RFC 5280 §4.2.1.1-2 (authority/subject key identifier)"
RFC5280_PATH: Final = "RFC 5280 §6.1.3-4 (basic path processing)"
RFC8813_EC_KU: Final = (
    "RFC 8813 §3 (keyUsage for id-ecPublicKey, updating RFC 5480 §3): keyEncipherment and "
    "dataEncipherment MUST NOT be present"
)
CABF_CS_EKU: Final = (
    "CA/B Forum Code Signing Baseline Requirements §7.1.2.3 (a code-signing leaf's EKU is "
    "codeSigning; other purposes SHOULD NOT be present)"
)
RFC8446_CV: Final = "RFC 8446 §4.4.2.2 (digitalSignature for TLS certificates); " + RFC5280_KU
NIST_KEYS: Final = "NIST SP 800-57 Part 1 Rev. 5 §5.6.1; NIST SP 800-131A Rev. 2"
NIST_HASH: Final = "NIST SP 800-131A Rev. 2 §9 (SHA-1 disallowed for signatures)"
CABF_398: Final = "CA/B Forum Baseline Requirements §6.3.2 (398-day maximum)"
CABF_SC081: Final = "CA/B Forum ballot SC-081 (maximum lifetime falls to 47 days by 2029)"
CHROME_SPLIT: Final = "Chrome Root Program Policy v1.8 §1.3.2 (serverAuth-only PKI hierarchies)"
SPIFFE_ID: Final = "SPIFFE-ID §2 (SPIFFE identity)"
SVID_URI: Final = "SPIFFE X509-SVID §2 (exactly one URI SAN)"
SVID_LEAF: Final = "SPIFFE X509-SVID §4.1, §5.2 (leaf validation)"
SVID_KU: Final = "SPIFFE X509-SVID §4.3 (key usage)"
SVID_EKU: Final = "SPIFFE X509-SVID §4.4 (extended key usage)"
SVID_SIGNING: Final = "SPIFFE X509-SVID §3 (signing certificates)"
GCP_MTLS: Final = (
    "Google Cloud, Mutual TLS overview: certificate requirements "
    "(https://cloud.google.com/load-balancing/docs/mtls)"
)
AWS_MTLS: Final = (
    "AWS, Mutual authentication with TLS in Application Load Balancer: certificate requirements "
    "(https://docs.aws.amazon.com/elasticloadbalancing/latest/application/mutual-authentication.html)"
)
LETS_ENCRYPT: Final = (
    "Let's Encrypt, 'Ending TLS Client Authentication Certificate Support in 2026'"
)
PUBLIC_DV: Final = "CA/B Forum Baseline Requirements §3.2.2.4 (public CAs validate domains)"


@dataclass(frozen=True, slots=True, kw_only=True)
class CertRule:
    """A rule about one certificate; a profile applies it to the leaf or to the CAs above it."""

    code: str
    severity: Severity
    reference: str
    advice: str
    check: CertCheck
    # False for rules that read no extension: they still run when extensions do not parse,
    # while the others stay quiet rather than report "absent" for "unreadable".
    needs_extensions: bool = True

    def finding(self, found: str) -> Finding:
        """The finding for what ``check`` returned (``lint_chain`` runs the checks)."""
        return Finding(
            code=self.code,
            severity=self.severity,
            message=_sentence(found, self.advice),
            reference=self.reference,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainRule:
    """A rule across the chain; each hit names the index of the certificate it is about."""

    code: str
    severity: Severity
    reference: str
    advice: str
    check: ChainCheck

    def apply(self, ctx: LintContext) -> Iterator[tuple[int, Finding]]:
        for index, found in self.check(ctx):
            yield (
                index,
                Finding(
                    code=self.code,
                    severity=self.severity,
                    message=_sentence(found, self.advice),
                    reference=self.reference,
                ),
            )


def _sentence(found: str, advice: str) -> str:
    """What was found, then what to do, as two sentences (camelCase names keep their case)."""
    first = found.split(" ", 1)[0]
    if not any(char.isupper() for char in first[1:]):
        found = found[:1].upper() + found[1:]
    return f"{found}. {advice}."


def _eku_names(oids: Iterable[x509.ObjectIdentifier]) -> str:
    return ", ".join(EKU_NAMES.get(oid, oid.dotted_string) for oid in oids) or "nothing"


def _when(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


# --- basicConstraints, keyUsage --------------------------------------------------------


def _leaf_is_ca(view: CertView, ctx: LintContext) -> str | None:
    return "basicConstraints says CA:TRUE on a client (leaf) certificate" if view.is_ca else None


LEAF_IS_CA = CertRule(
    code="leaf_is_ca",
    severity=Severity.ERROR,
    reference=RFC5280_BC + "; " + GCP_MTLS,
    advice="Reissue it with CA:FALSE: a CA certificate can mint more clients, and pyca's "
    "verifier and GCP's load balancer reject it as a client certificate",
    check=_leaf_is_ca,
)


def _key_usage_missing(view: CertView, ctx: LintContext) -> str | None:
    return "keyUsage is absent" if view.key_usage is None else None


KEY_USAGE_MISSING = CertRule(
    code="key_usage_missing",
    severity=Severity.WARNING,
    reference=RFC5280_KU,
    advice="Add keyUsage, critical, with digitalSignature, so the key is only good for "
    "signing the TLS handshake",
    check=_key_usage_missing,
)


def _key_usage_flags(usage: x509.KeyUsage) -> str:
    names = [
        name
        for name, on in (
            ("digitalSignature", usage.digital_signature),
            ("nonRepudiation", usage.content_commitment),
            ("keyEncipherment", usage.key_encipherment),
            ("dataEncipherment", usage.data_encipherment),
            ("keyAgreement", usage.key_agreement),
            ("keyCertSign", usage.key_cert_sign),
            ("cRLSign", usage.crl_sign),
        )
        if on
    ]
    return ", ".join(names) or "nothing"


def _no_digital_signature(view: CertView, ctx: LintContext) -> str | None:
    usage = view.key_usage
    if usage is None or usage.digital_signature:
        return None
    return f"keyUsage lacks digitalSignature (it has {_key_usage_flags(usage)})"


KEY_USAGE_NO_DIGITAL_SIGNATURE = CertRule(
    code="key_usage_missing_digital_signature",
    severity=Severity.ERROR,
    reference=RFC8446_CV,
    advice="Add digitalSignature: a TLS client proves possession of its key by signing "
    "CertificateVerify, which TLS 1.3 allows only with this bit when keyUsage is present",
    check=_no_digital_signature,
)


def _leaf_ca_bits(view: CertView, ctx: LintContext) -> str | None:
    usage = view.key_usage
    if usage is None or not (usage.key_cert_sign or usage.crl_sign):
        return None
    return f"keyUsage of a client certificate includes CA bits ({_key_usage_flags(usage)})"


LEAF_KEY_USAGE_CA_BITS = CertRule(
    code="leaf_key_usage_ca_bits",
    severity=Severity.ERROR,
    reference=RFC5280_KU,
    advice="Remove keyCertSign and cRLSign: only a CA signs certificates or CRLs",
    check=_leaf_ca_bits,
)


def _ec_key_encipherment(view: CertView, ctx: LintContext) -> str | None:
    usage = view.key_usage
    if usage is None or view.key.algorithm != "EC":
        return None
    bits = [
        name
        for name, on in (
            ("keyEncipherment", usage.key_encipherment),
            ("dataEncipherment", usage.data_encipherment),
        )
        if on
    ]
    return f"keyUsage of an EC key asserts {' and '.join(bits)}" if bits else None


KEY_USAGE_EC_ENCIPHERMENT = CertRule(
    code="key_usage_ec_encipherment",
    severity=Severity.WARNING,
    reference=RFC8813_EC_KU,
    advice="Drop keyEncipherment (and dataEncipherment): an ECDSA key cannot encrypt, so the "
    "bit is meaningless (it is for RSA key transport, which TLS 1.3 removed); verifiers "
    "ignore it today, but the certificate breaks the RFC's MUST NOT",
    check=_ec_key_encipherment,
)


# --- extendedKeyUsage ------------------------------------------------------------------


def _eku_missing(view: CertView, ctx: LintContext) -> str | None:
    return "extendedKeyUsage is absent" if view.eku is None else None


EKU_MISSING = CertRule(
    code="eku_missing",
    severity=Severity.ERROR,
    reference=RFC5280_EKU + "; " + GCP_MTLS,
    advice="Add extendedKeyUsage with clientAuth: GCP's load balancer rejects a client "
    "certificate without it, and so does mtlskit's verifier by default",
    check=_eku_missing,
)


def _eku_any_only(view: CertView, ctx: LintContext) -> str | None:
    if view.eku is None or not view.eku or set(view.eku) != {ANY_EKU}:
        return None
    return "extendedKeyUsage is anyExtendedKeyUsage alone"


EKU_ANY_ONLY = CertRule(
    code="eku_any_only",
    severity=Severity.ERROR,
    reference=RFC5280_EKU,
    advice="List clientAuth explicitly: OpenSSL and pyca both refuse a client certificate "
    "whose only EKU is anyExtendedKeyUsage",
    check=_eku_any_only,
)


def _eku_no_client_auth(view: CertView, ctx: LintContext) -> str | None:
    if view.eku is None or CLIENT_AUTH in view.eku or set(view.eku) == {ANY_EKU}:
        return None
    return f"extendedKeyUsage lacks clientAuth (it has {_eku_names(view.eku)})"


EKU_MISSING_CLIENT_AUTH = CertRule(
    code="eku_missing_client_auth",
    severity=Severity.ERROR,
    reference=RFC5280_EKU + "; " + GCP_MTLS,
    advice="Add clientAuth (1.3.6.1.5.5.7.3.2): OpenSSL, pyca and the cloud load balancers "
    "refuse it as a client certificate otherwise",
    check=_eku_no_client_auth,
)


def _eku_server_auth(view: CertView, ctx: LintContext) -> str | None:
    if view.eku is None or CLIENT_AUTH not in view.eku or SERVER_AUTH not in view.eku:
        return None
    return "extendedKeyUsage has serverAuth as well as clientAuth"


EKU_SERVER_AUTH_PRESENT = CertRule(
    code="eku_server_auth_present",
    severity=Severity.NOTICE,
    reference=CHROME_SPLIT,
    advice="Prefer clientAuth alone in client certificates: the root programs are splitting "
    "the two purposes (Chrome: serverAuth-only hierarchies from 2026-06-15, serverAuth-only "
    "leaves from 2027-03-15), and a dual-use key lets a client pose as a server. "
    "(SPIFFE expects both in an SVID that carries EKU: see the spiffe profile)",
    check=_eku_server_auth,
)


def _eku_code_signing(view: CertView, ctx: LintContext) -> str | None:
    if view.eku is None or ExtendedKeyUsageOID.CODE_SIGNING not in view.eku:
        return None
    names = _eku_names(view.eku)
    return f"extendedKeyUsage of a client certificate includes codeSigning (it has {names})"


EKU_CODE_SIGNING_PRESENT = CertRule(
    code="eku_code_signing_present",
    severity=Severity.WARNING,
    reference=RFC5280_EKU + "; " + CABF_CS_EKU,
    advice="Remove codeSigning: TLS clients accept it, but a key that authenticates "
    "connections should not also sign software that code-signing verifiers would trust; "
    "keep one purpose per key",
    check=_eku_code_signing,
)


# --- subjectAltName and identity -------------------------------------------------------


def _san_missing(view: CertView, ctx: LintContext) -> str | None:
    if view.san is None:
        return "there is no subjectAltName extension"
    return "subjectAltName is empty" if not view.san else None


SAN_MISSING = CertRule(
    code="san_missing",
    severity=Severity.ERROR,
    reference=RFC5280_SAN,
    advice="Put the client's identity in subjectAltName (a URI such as a SPIFFE ID, a DNS "
    "name or an email address); pyca's verifier requires it and the subject CN is no "
    "standard identity",
    check=_san_missing,
)

_UNUSUAL_SAN: Final = (x509.IPAddress, x509.DirectoryName, x509.OtherName, x509.RegisteredID)


def _san_describe(name: x509.GeneralName) -> str:
    if isinstance(name, x509.IPAddress):
        return f"IP:{name.value}"
    if isinstance(name, x509.DirectoryName):
        return f"dirName:{name.value.rfc4514_string()}"
    if isinstance(name, x509.OtherName):
        return f"otherName:{name.type_id.dotted_string}"
    if isinstance(name, x509.RegisteredID):
        return f"RID:{name.value.dotted_string}"
    return f"{type(name).__name__}:{name.value}"


_TEXT_SAN_KINDS: Final = {x509.DNSName: IdentityKind.DNS, x509.RFC822Name: IdentityKind.EMAIL}


def _san_malformed(view: CertView, ctx: LintContext) -> str | None:
    found = []
    for name in view.san or ():
        kind = _TEXT_SAN_KINDS.get(type(name))
        problem = san_text_problem(kind, name.value) if kind is not None else None
        if problem:
            found.append(problem)
    return "; ".join(found) if found else None


SAN_MALFORMED = CertRule(
    code="san_malformed",
    severity=Severity.ERROR,
    reference=RFC5280_SAN,
    advice="A DNS SAN must be a host name and an email SAN a mailbox: one that reads as a "
    "URI (e.g. 'spiffe://acme.com/admin') can pose as another identity to a rule that "
    "compares text; put a URI in a URI SAN",
    check=_san_malformed,
)


def _identity_missing(view: CertView, ctx: LintContext) -> str | None:
    error = view.identity_error
    if not view.san or error is None or error.code != "san_missing":
        return None
    entries = ", ".join(_san_describe(name) for name in view.san)
    return f"subjectAltName has no URI, DNS or email entry to name the client (it has {entries})"


IDENTITY_MISSING = CertRule(
    code="identity_missing",
    severity=Severity.ERROR,
    reference=RFC5280_SAN,
    advice="Add the client's identity as a URI (e.g. a SPIFFE ID), DNS or email SAN",
    check=_identity_missing,
)


def _identity_error(code: str) -> CertCheck:
    def check(view: CertView, ctx: LintContext) -> str | None:
        error = view.identity_error
        return str(error) if error is not None and error.code == code else None

    return check


SPIFFE_ID_INVALID = CertRule(
    code="spiffe_id_invalid",
    severity=Severity.ERROR,
    reference=SPIFFE_ID,
    advice="Make the URI a valid SPIFFE ID: lowercase trust domain, path segments of letters, "
    "digits, '.', '-' and '_', no empty, '.' or '..' segment, no trailing slash, no query",
    check=_identity_error("spiffe_id_invalid"),
)

SPIFFE_MULTIPLE_URI_SANS = CertRule(
    code="spiffe_multiple_uri_sans",
    severity=Severity.ERROR,
    reference=SVID_URI,
    advice="Issue exactly one URI SAN: SVID verifiers must reject more, since which one is "
    "the identity would be a guess",
    check=_identity_error("spiffe_multiple_uri_sans"),
)


def _cn_only(view: CertView, ctx: LintContext) -> str | None:
    error = view.identity_error
    if view.identity is not None or error is None or error.code != "san_missing":
        return None
    names = view.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names or not names[0].value:
        return None
    return f"the only identity is the subject CN {names[0].value!r}"


IDENTITY_CN_ONLY = CertRule(
    code="identity_cn_only",
    severity=Severity.WARNING,
    reference="RFC 6125 §6.4.4 (CN is a legacy fallback); " + RFC5280_SAN,
    advice="Move the identity into a SAN; mtlskit reads the CN only when told to, and then "
    "flags it as legacy",
    check=_cn_only,
)


def _unusual_san(view: CertView, ctx: LintContext) -> str | None:
    unusual = [_san_describe(n) for n in view.san or () if isinstance(n, _UNUSUAL_SAN)]
    return f"subjectAltName has {', '.join(unusual)}" if unusual else None


SAN_UNUSUAL_TYPE = CertRule(
    code="san_unusual_type",
    severity=Severity.INFO,
    reference=RFC5280_SAN,
    advice="mtlskit takes no identity from IP, directory, otherName or registeredID entries; "
    "authorize on URI, DNS or email entries",
    check=_unusual_san,
)


# --- time ------------------------------------------------------------------------------


def _expired(view: CertView, ctx: LintContext) -> str | None:
    if ctx.at <= view.not_after:
        return None
    return f"it expired at {_when(view.not_after)} (checked at {_when(ctx.at)})"


CERT_EXPIRED = CertRule(
    code="cert_expired",
    severity=Severity.ERROR,
    reference=RFC5280_VALIDITY,
    advice="Renew it, and automate renewal so short lifetimes do not cause outages",
    check=_expired,
    needs_extensions=False,
)


def _not_yet_valid(view: CertView, ctx: LintContext) -> str | None:
    if ctx.at >= view.not_before:
        return None
    return f"it is valid only from {_when(view.not_before)} (checked at {_when(ctx.at)})"


CERT_NOT_YET_VALID = CertRule(
    code="cert_not_yet_valid",
    severity=Severity.ERROR,
    reference=RFC5280_VALIDITY,
    advice="Check the issuing CA's clock, or wait: verifiers reject it until then",
    check=_not_yet_valid,
    needs_extensions=False,
)

_398_DAYS: Final = dt.timedelta(days=398)
_90_DAYS: Final = dt.timedelta(days=90)


def _over_398(view: CertView, ctx: LintContext) -> str | None:
    days = view.lifetime.total_seconds() / 86400
    return f"it is valid for {days:.0f} days" if view.lifetime > _398_DAYS else None


VALIDITY_OVER_398_DAYS = CertRule(
    code="validity_over_398_days",
    severity=Severity.WARNING,
    reference=CABF_398,
    advice="Issue client certificates for 90 days or less and renew automatically: a leaked "
    "key stays usable until expiry wherever revocation is not checked",
    check=_over_398,
    needs_extensions=False,
)


def _over_90(view: CertView, ctx: LintContext) -> str | None:
    days = view.lifetime.total_seconds() / 86400
    return f"it is valid for {days:.0f} days" if _90_DAYS < view.lifetime <= _398_DAYS else None


VALIDITY_OVER_90_DAYS = CertRule(
    code="validity_over_90_days",
    severity=Severity.NOTICE,
    reference=CABF_SC081,
    advice="Consider 90 days or less with automated renewal; shorter lifetimes limit what a "
    "stolen key is worth",
    check=_over_90,
    needs_extensions=False,
)


# --- keys and signatures ---------------------------------------------------------------

_GOOD_CURVES: Final = {"secp256r1", "secp384r1", "secp521r1"}
_STRONG_HASHES: Final = {"sha256", "sha384", "sha512", "sha3-256", "sha3-384", "sha3-512"}
_EDDSA: Final = {"Ed25519", "Ed448"}


def _too_weak(view: CertView, ctx: LintContext) -> str | None:
    key = view.key
    if key.algorithm in {"RSA", "DSA"} and key.size < 2048:
        return f"the key is {key.algorithm} {key.size}"
    if key.algorithm == "EC" and key.size < 256:
        return f"the key is EC on {key.curve} ({key.size} bits)"
    return None


KEY_TOO_WEAK = CertRule(
    code="key_too_weak",
    severity=Severity.ERROR,
    reference=NIST_KEYS,
    advice="Use EC P-256 (or RSA of 2048 bits or more); smaller keys are below 112-bit "
    "security and refused by OpenSSL's default security level",
    check=_too_weak,
    needs_extensions=False,
)


def _unusual_key(view: CertView, ctx: LintContext) -> str | None:
    key = view.key
    if key.algorithm == "EC" and key.size >= 256 and key.curve not in _GOOD_CURVES:
        return f"the key is on curve {key.curve}"
    if key.algorithm in {"Ed448"} or (key.algorithm == "DSA" and key.size >= 2048):
        return f"the key is {key.algorithm}"
    if key.algorithm not in {"RSA", "EC", "Ed25519", "Ed448", "DSA"}:
        return f"the key type {key.algorithm} is not one TLS stacks accept"
    return None


KEY_TYPE_UNSUPPORTED = CertRule(
    code="key_type_unsupported",
    severity=Severity.WARNING,
    reference=NIST_KEYS + "; RFC 8446 §4.2.3 (signature schemes)",
    advice="Use EC P-256/P-384/P-521, RSA of 2048 bits or more, or Ed25519; TLS libraries "
    "and load balancers do not agree on anything else",
    check=_unusual_key,
    needs_extensions=False,
)


def _weak_signature(view: CertView, ctx: LintContext) -> str | None:
    if view.signature_key_type in _EDDSA or view.signature_hash in _STRONG_HASHES:
        return None
    if view.index > 0 and view.self_issued and view.is_self_signed():
        return None  # a root's self-signature is never checked by a verifier
    hash_name = view.signature_hash or "an unknown hash"
    return f"it is signed with {view.signature_key_type} and {hash_name}"


SIGNATURE_ALGORITHM_WEAK = CertRule(
    code="signature_algorithm_weak",
    severity=Severity.ERROR,
    reference=NIST_HASH,
    advice="Reissue it signed with SHA-256 or stronger: SHA-1 and MD5 collisions are "
    "practical and current TLS stacks refuse such signatures",
    check=_weak_signature,
    needs_extensions=False,
)


# --- CA certificates in the chain -------------------------------------------------------


def _not_ca(view: CertView, ctx: LintContext) -> str | None:
    if view.is_ca:
        return None
    state = "CA:FALSE" if view.basic is not None else "no basicConstraints"
    return f"certificate {view.index} sits above the leaf but has {state}"


ISSUER_NOT_CA = CertRule(
    code="issuer_not_ca",
    severity=Severity.ERROR,
    reference=RFC5280_BC + "; RFC 5280 §6.1.4(k)",
    advice="Only a CA:TRUE certificate may issue others: put the right issuing CA in the "
    "chain, or drop this certificate from the file",
    check=_not_ca,
)


def _ca_no_cert_sign(view: CertView, ctx: LintContext) -> str | None:
    if not view.is_ca:
        return None
    if view.key_usage is None:
        return f"CA certificate {view.index} has no keyUsage"
    if view.key_usage.key_cert_sign:
        return None
    flags = _key_usage_flags(view.key_usage)
    return f"CA certificate {view.index} has keyUsage without keyCertSign ({flags})"


CA_KEY_USAGE_MISSING_CERT_SIGN = CertRule(
    code="ca_key_usage_missing_cert_sign",
    severity=Severity.ERROR,
    reference=RFC5280_KU + "; " + GCP_MTLS,
    advice="Give the CA keyUsage keyCertSign (and cRLSign); verifiers refuse certificates "
    "signed by a key not allowed to sign them",
    check=_ca_no_cert_sign,
)


def _ca_eku_excludes(view: CertView, ctx: LintContext) -> str | None:
    if view.eku is None or CLIENT_AUTH in view.eku or ANY_EKU in view.eku:
        return None
    return f"CA certificate {view.index} restricts extendedKeyUsage to {_eku_names(view.eku)}"


CA_EKU_EXCLUDES_CLIENT_AUTH = CertRule(
    code="ca_eku_excludes_client_auth",
    severity=Severity.ERROR,
    reference=RFC5280_EKU + "; " + GCP_MTLS + " (error client_cert_chain_invalid_eku)",
    advice="Verifiers that nest EKU (OpenSSL's sslclient purpose, GCP) reject every client "
    "certificate below it; issue clients from a CA without EKU or with clientAuth",
    check=_ca_eku_excludes,
)


# --- chain -----------------------------------------------------------------------------


def _links(ctx: LintContext) -> Iterator[tuple[CertView, CertView]]:
    return itertools.pairwise(ctx.certs)


def _issuer_elsewhere(ctx: LintContext, child: CertView) -> int | None:
    for other in ctx.certs:
        if other.index not in {child.index, child.index + 1} and (
            other.cert.subject == child.cert.issuer
        ):
            return other.index
    return None


def _order(ctx: LintContext) -> Iterator[tuple[int, str]]:
    for child, parent in _links(ctx):
        if child.self_issued or child.cert.issuer == parent.cert.subject:
            continue  # a root issues itself: nothing above it to be out of order
        elsewhere = _issuer_elsewhere(ctx, child)
        if elsewhere is not None:
            yield (
                child.index,
                (
                    f"certificate {child.index}'s issuer is certificate {elsewhere}, "
                    f"not the next one ({parent.index})"
                ),
            )


CHAIN_ORDER = ChainRule(
    code="chain_order",
    severity=Severity.WARNING,
    reference="RFC 8446 §4.4.2 (certificate_list order); RFC 5246 §7.4.2",
    advice="Order the file leaf first, each certificate followed by the one that issued it; "
    "TLS 1.2 peers require that order and clients send the file as given",
    check=_order,
)


def _issuer_mismatch(ctx: LintContext) -> Iterator[tuple[int, str]]:
    for child, parent in _links(ctx):
        if child.self_issued or child.cert.issuer == parent.cert.subject:
            continue
        if _issuer_elsewhere(ctx, child) is not None:
            continue  # chain_order reports it
        yield (
            child.index,
            (
                f"certificate {child.index} names issuer {child.cert.issuer.rfc4514_string()!r}, "
                f"but the next certificate is {parent.subject!r}"
            ),
        )


CHAIN_ISSUER_MISMATCH = ChainRule(
    code="chain_issuer_mismatch",
    severity=Severity.ERROR,
    reference=RFC5280_PATH + " (a)(4) issuer name chaining",
    advice="Include the certificate that issued it, and remove unrelated certificates from "
    "the file",
    check=_issuer_mismatch,
)


def _signature(ctx: LintContext) -> Iterator[tuple[int, str]]:
    for child, parent in _links(ctx):
        if child.index == 0 and ctx.leaf_signature_vouched:
            continue  # the caller signed it with this key and proved the pairing (lint_chain)
        if child.cert.issuer == parent.cert.subject and not child.signed_by(parent):
            yield (
                child.index,
                (
                    f"certificate {child.index} names certificate {parent.index} as its issuer, "
                    "but that certificate's key did not sign it"
                ),
            )


CHAIN_SIGNATURE_INVALID = ChainRule(
    code="chain_signature_invalid",
    severity=Severity.ERROR,
    reference=RFC5280_PATH + " (a)(1) signature verification",
    advice="The file holds a different CA with the same name (re-keyed, or an impostor); "
    "include the CA whose key actually signed it",
    check=_signature,
)


def _key_ids(ctx: LintContext) -> Iterator[tuple[int, str]]:
    for child, parent in _links(ctx):
        if child.aki is not None and parent.ski is not None and child.aki != parent.ski:
            found = (
                f"certificate {child.index}'s authorityKeyIdentifier {child.aki.hex()} does "
                f"not match certificate {parent.index}'s subjectKeyIdentifier {parent.ski.hex()}"
            )
            yield child.index, found


CHAIN_KEY_ID_MISMATCH = ChainRule(
    code="chain_key_id_mismatch",
    severity=Severity.WARNING,
    reference=RFC5280_KEY_IDS,
    advice="Path builders pick issuers by key identifier, so this link may not be found; "
    "reissue with the issuer's subjectKeyIdentifier as the authorityKeyIdentifier",
    check=_key_ids,
)


def _path_length(ctx: LintContext) -> Iterator[tuple[int, str]]:
    for ca in ctx.certs[1:]:
        if ca.basic is None or not ca.basic.ca or ca.basic.path_length is None:
            continue
        below = sum(1 for view in ctx.certs[1 : ca.index] if not view.self_issued)
        if below > ca.basic.path_length:
            yield (
                ca.index,
                (
                    f"CA certificate {ca.index} allows pathLenConstraint {ca.basic.path_length}, "
                    f"but {below} intermediate CA(s) sit below it"
                ),
            )


CHAIN_PATH_LENGTH_EXCEEDED = ChainRule(
    code="chain_path_length_exceeded",
    severity=Severity.ERROR,
    reference=RFC5280_BC + "; RFC 5280 §6.1.4(l)-(m)",
    advice="Verifiers reject the path: issue the client from a CA within the allowed depth, "
    "or reissue the upper CA with a larger pathLenConstraint",
    check=_path_length,
)


def chain_too_deep(limit: int, *, reference: str, who: str) -> ChainRule:
    """``chain_too_deep`` for a peer that accepts at most ``limit`` certificates in a path."""

    def check(ctx: LintContext) -> Iterator[tuple[int, str]]:
        if ctx.path_length > limit:
            yield (
                0,
                (
                    f"the path from this client to its root holds {ctx.path_length} certificates; "
                    f"{who} accepts at most {limit}"
                ),
            )

    return ChainRule(
        code="chain_too_deep",
        severity=Severity.ERROR,
        reference=reference,
        advice="Issue the client from a CA closer to the root, or upload the intermediates "
        "as trust anchors",
        check=check,
    )


# --- SPIFFE X509-SVID ------------------------------------------------------------------


def _svid_uris(view: CertView) -> list[str]:
    return [n.value for n in view.san or () if isinstance(n, x509.UniformResourceIdentifier)]


def _svid_uri_missing(view: CertView, ctx: LintContext) -> str | None:
    uris = _svid_uris(view)
    if any(SpiffeId.is_spiffe_uri(uri) for uri in uris):
        return None
    listed = f"; URIs: {', '.join(uris)}" if uris else ""
    return f"there is no SPIFFE ID (spiffe:// URI SAN){listed}"


SPIFFE_ID_MISSING = CertRule(
    code="spiffe_id_missing",
    severity=Severity.ERROR,
    reference=SVID_URI,
    advice="An X509-SVID carries its SPIFFE ID as exactly one URI SAN, e.g. "
    "spiffe://example.org/service",
    check=_svid_uri_missing,
)


def _svid_root_path(view: CertView, ctx: LintContext) -> str | None:
    spiffe_id = view.identity.spiffe_id if view.identity is not None else None
    if spiffe_id is None or spiffe_id.path:
        return None
    return f"the leaf's SPIFFE ID {spiffe_id} has no path (it names the trust domain itself)"


SPIFFE_LEAF_ROOT_PATH = CertRule(
    code="spiffe_leaf_root_path",
    severity=Severity.ERROR,
    reference=SVID_LEAF,
    advice="Give the workload a path, e.g. spiffe://example.org/service; the bare trust "
    "domain ID is reserved for the trust domain",
    check=_svid_root_path,
)


def _svid_key_usage_missing(view: CertView, ctx: LintContext) -> str | None:
    return "keyUsage is absent" if view.key_usage is None else None


SPIFFE_KEY_USAGE_MISSING = CertRule(
    code="spiffe_key_usage_missing",
    severity=Severity.ERROR,
    reference=SVID_KU,
    advice="An X509-SVID must carry keyUsage, marked critical, with digitalSignature",
    check=_svid_key_usage_missing,
)


def _svid_key_usage_critical(view: CertView, ctx: LintContext) -> str | None:
    if view.key_usage is None or view.key_usage_critical:
        return None
    return "keyUsage is not marked critical"


SPIFFE_KEY_USAGE_NOT_CRITICAL = CertRule(
    code="spiffe_key_usage_not_critical",
    severity=Severity.ERROR,
    reference=SVID_KU,
    advice="Mark keyUsage critical: the X509-SVID spec requires it",
    check=_svid_key_usage_critical,
)


def _svid_eku(view: CertView, ctx: LintContext) -> str | None:
    if view.eku is None or SERVER_AUTH in view.eku or CLIENT_AUTH not in view.eku:
        return None
    return f"extendedKeyUsage has {_eku_names(view.eku)} but not serverAuth"


SPIFFE_EKU_MISSING_SERVER_AUTH = CertRule(
    code="spiffe_eku_missing_server_auth",
    severity=Severity.NOTICE,
    reference=SVID_EKU + "; " + CHROME_SPLIT,
    advice="The X509-SVID spec expects serverAuth and clientAuth when EKU is present, while "
    "the client-auth profile prefers clientAuth alone; SPIFFE verifiers accept either, so "
    "choose serverAuth+clientAuth only if the same SVID also serves TLS",
    check=_svid_eku,
)


def _ca_spiffe_path(view: CertView, ctx: LintContext) -> str | None:
    for uri in _svid_uris(view):
        if not SpiffeId.is_spiffe_uri(uri):
            continue
        try:
            spiffe_id = SpiffeId.parse(uri)
        except SpiffeIdError as exc:
            return f"CA certificate {view.index} carries an invalid SPIFFE ID: {exc}"
        if spiffe_id.path:
            return f"CA certificate {view.index} carries SPIFFE ID {spiffe_id}, which has a path"
    return None


SPIFFE_CA_ID_HAS_PATH = CertRule(
    code="spiffe_ca_id_has_path",
    severity=Severity.ERROR,
    reference=SVID_SIGNING,
    advice="A signing certificate may carry only the trust domain's SPIFFE ID "
    "(spiffe://example.org, no path); move workload IDs to leaves",
    check=_ca_spiffe_path,
)


# --- cloud load balancers --------------------------------------------------------------


def _key_allowed(allowed_rsa: set[int], allowed_curves: set[str], who: str) -> CertCheck:
    def check(view: CertView, ctx: LintContext) -> str | None:
        key = view.key
        if key.algorithm == "RSA" and key.size in allowed_rsa:
            return None
        if key.algorithm == "EC" and key.curve in allowed_curves:
            return None
        return f"certificate {view.index} has a {key} key, which {who} does not accept"

    return check


GCP_KEY_TYPE = CertRule(
    code="gcp_key_type_unsupported",
    severity=Severity.ERROR,
    reference=GCP_MTLS,
    advice="GCP's load balancer accepts RSA 2048/3072/4096 and ECDSA P-256/P-384 keys only",
    check=_key_allowed({2048, 3072, 4096}, {"secp256r1", "secp384r1"}, "GCP's load balancer"),
    needs_extensions=False,
)

AWS_KEY_TYPE = CertRule(
    code="aws_key_type_unsupported",
    severity=Severity.ERROR,
    reference=AWS_MTLS,
    advice="AWS ALB accepts RSA keys of 2048 to 8192 bits and ECDSA secp256r1, secp384r1 "
    "and secp521r1 keys only",
    check=_key_allowed(set(range(2048, 8193)), {"secp256r1", "secp384r1", "secp521r1"}, "AWS ALB"),
    needs_extensions=False,
)


def _signature_allowed(who: str) -> CertCheck:
    def check(view: CertView, ctx: LintContext) -> str | None:
        if view.signature_key_type in {"RSA", "RSA-PSS", "ECDSA"} and view.signature_hash in {
            "sha256",
            "sha384",
            "sha512",
        }:
            return None
        hash_name = f" with {view.signature_hash}" if view.signature_hash else ""
        return (
            f"certificate {view.index} is signed with {view.signature_key_type}{hash_name}, "
            f"which {who} does not accept"
        )

    return check


GCP_SIGNATURE = CertRule(
    code="gcp_signature_algorithm_unsupported",
    severity=Severity.ERROR,
    reference=GCP_MTLS,
    advice="Sign with RSA or ECDSA and SHA-256, SHA-384 or SHA-512",
    check=_signature_allowed("GCP's load balancer"),
    needs_extensions=False,
)

AWS_SIGNATURE = CertRule(
    code="aws_signature_algorithm_unsupported",
    severity=Severity.ERROR,
    reference=AWS_MTLS,
    advice="Sign with RSA, RSASSA-PSS or ECDSA and SHA-256, SHA-384 or SHA-512",
    check=_signature_allowed("AWS ALB"),
    needs_extensions=False,
)


def _v1(view: CertView, ctx: LintContext) -> str | None:
    if view.cert.version is x509.Version.v3:
        return None
    return f"certificate {view.index} is X.509 {view.cert.version.name}"


X509_V1 = CertRule(
    code="x509_version_unsupported",
    severity=Severity.ERROR,
    reference=AWS_MTLS,
    advice="AWS ALB accepts X.509v3 certificates only; reissue it as v3 with extensions",
    check=_v1,
    needs_extensions=False,
)

GCP_CHAIN_TOO_DEEP = chain_too_deep(10, reference=GCP_MTLS, who="GCP's load balancer")
AWS_CHAIN_TOO_DEEP = chain_too_deep(4, reference=AWS_MTLS, who="AWS ALB")


# --- publicly trusted issuers ----------------------------------------------------------


def _public_issuer(view: CertView, ctx: LintContext) -> str | None:
    root = ctx.public_root
    if root is None:
        return None
    return f"the chain ends in the publicly trusted root {root.subject.rfc4514_string()!r}"


PUBLIC_CA_ISSUER = CertRule(
    code="public_ca_issuer",
    severity=Severity.WARNING,
    reference=PUBLIC_DV,
    advice="A public CA checks control of a domain, not who a client is, and trusting it "
    "admits anyone who can get a certificate from it; issue client certificates from a "
    "private CA",
    check=_public_issuer,
)


def _client_auth_status(status: ClientAuthStatus, *, is_ca: bool) -> CertCheck:
    """A check that fires when a publicly trusted cert's clientAuth verdict is ``status``."""

    def check(view: CertView, ctx: LintContext) -> str | None:
        if ctx.public_root is None or (is_ca and view.self_issued):
            return None
        verdict = client_auth_status(view.cert, is_ca=is_ca)
        if verdict.status is not status:
            return None
        what = f"CA certificate {view.index}" if is_ca else "this publicly trusted leaf"
        issued = view.not_before.date().isoformat()
        if verdict.events:
            return f"{what}, issued {issued}, allows clientAuth and is {verdict.explain()}"
        ahead = "; ".join(
            f"{e.date}: {e.rule}" for e in CLIENT_AUTH_TIMELINE if e.applies_to == "leaf"
        )
        return f"{what}, issued {issued}, allows clientAuth; dates ahead: {ahead}"

    return check


PUBLIC_CA_CLIENT_AUTH_NO_LONGER_ISSUED = CertRule(
    code="public_ca_client_auth_no_longer_issued",
    severity=Severity.ERROR,
    reference=CHROME_SPLIT + "; " + LETS_ENCRYPT,
    advice="It was issued after the final cut-off, so its issuer is out of policy and the "
    "certificate may be distrusted; use a private CA for client certificates",
    check=_client_auth_status(ClientAuthStatus.NO_LONGER_ISSUED, is_ca=False),
)

PUBLIC_CA_CLIENT_AUTH_PHASING_OUT = CertRule(
    code="public_ca_client_auth_phasing_out",
    severity=Severity.WARNING,
    reference=CHROME_SPLIT + "; " + LETS_ENCRYPT,
    advice="Public CAs are dropping clientAuth and its renewal will likely lack it; move "
    "client authentication to a private CA now",
    check=_client_auth_status(ClientAuthStatus.PHASING_OUT, is_ca=False),
)

PUBLIC_CA_CLIENT_AUTH_ALLOWED = CertRule(
    code="public_ca_client_auth_ending",
    severity=Severity.NOTICE,
    reference=CHROME_SPLIT,
    advice="It works today, but public certificates issued after those dates will lack "
    "clientAuth; plan a private CA before renewal",
    check=_client_auth_status(ClientAuthStatus.ALLOWED, is_ca=False),
)

PUBLIC_CA_INTERMEDIATE_CLIENT_AUTH = CertRule(
    code="public_ca_intermediate_client_auth",
    severity=Severity.WARNING,
    reference=CHROME_SPLIT,
    advice="Chrome requires public intermediates disclosed from that date to be "
    "serverAuth-only; expect this hierarchy to stop issuing client certificates",
    check=_client_auth_status(ClientAuthStatus.NO_LONGER_ISSUED, is_ca=True),
)


def _extensions_malformed(view: CertView, ctx: LintContext) -> str | None:
    if view.extensions_error is None:
        return None
    return f"extensions cannot be parsed: {view.extensions_error}"


EXTENSIONS_MALFORMED = CertRule(
    code="extensions_malformed",
    severity=Severity.ERROR,
    reference="RFC 5280 §4.2 (certificate extensions)",
    advice="Verifiers reject a certificate whose extensions do not parse (duplicates, bad "
    "DER); reissue it",
    check=_extensions_malformed,
    needs_extensions=False,
)
