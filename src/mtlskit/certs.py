"""Certificates, chains and keys in and out of PEM, DER and PKCS#12; fingerprints; key types.

Pure: every function takes bytes and returns objects. A failure is always an
``InputError`` whose message says what is wrong in words a user can act on
("truncated PEM: BEGIN CERTIFICATE without END"), never a parser's trace.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import warnings
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.utils import CryptographyDeprecationWarning

from mtlskit.errors import InputError

__all__ = [
    "DSA_KEY_TYPES",
    "UNREADABLE_EXTENSIONS",
    "CertificateKey",
    "Fingerprint",
    "KeyInfo",
    "KeyType",
    "PrivateKey",
    "PublicKey",
    "certificate_pem",
    "chain_pem",
    "generate_private_key",
    "is_pkcs12",
    "key_info",
    "load_certificates",
    "load_private_key",
    "private_key_pem",
]

PrivateKey = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
)
CertificateKey = PrivateKey  # the key types a certificate may be issued for
# What reading a certificate's (or CSR's) extensions raises when they cannot be read:
# malformed DER is a ValueError, but the same extension twice (DuplicateExtension) and
# an unknown GeneralName type are not ValueErrors. Fuzzing found the duplicate.
UNREADABLE_EXTENSIONS: Final = (
    ValueError,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)
# cryptography's own union: naming ``dsa.DSAPublicKey`` here warns on every import from 51 on.
PublicKey = CertificatePublicKeyTypes

# DSA's key classes under names that do not warn: cryptography 51 deprecates the public names
# (``dsa.DSAPublicKey`` emits CryptographyDeprecationWarning on access) and keeps quiet
# aliases; 46-50 have only the public names, which do not warn there. Empty once DSA is gone.
DSA_KEY_TYPES: Final[tuple[type, ...]] = tuple(
    kind
    for quiet, public in (("_DSAPublicKey", "DSAPublicKey"), ("_DSAPrivateKey", "DSAPrivateKey"))
    if (kind := getattr(dsa, quiet, None) or dsa.__dict__.get(public)) is not None
)

_PEM_BLOCK: Final = re.compile(
    rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END ([A-Z0-9 ]+)-----", re.DOTALL
)
_PEM_BEGIN: Final = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")
_CERT_LABELS: Final = {b"CERTIFICATE", b"X509 CERTIFICATE", b"TRUSTED CERTIFICATE"}
_KEY_LABELS: Final = {
    b"PRIVATE KEY",
    b"EC PRIVATE KEY",
    b"RSA PRIVATE KEY",
    b"ENCRYPTED PRIVATE KEY",
}
_WRONG_TYPE: Final = {
    b"CERTIFICATE REQUEST": "a certificate signing request (CSR)",
    b"NEW CERTIFICATE REQUEST": "a certificate signing request (CSR)",
    b"X509 CRL": "a certificate revocation list (CRL)",
    b"PUBLIC KEY": "a public key",
    b"PKCS7": "a PKCS#7 bundle",
}


# --- fingerprints -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """A SHA-256 certificate fingerprint; ``str()`` gives the ``sha256:hex`` form pins use."""

    digest: bytes

    def __post_init__(self) -> None:
        if len(self.digest) != 32:
            raise ValueError("a SHA-256 fingerprint is 32 bytes")

    @classmethod
    def of(cls, cert: x509.Certificate) -> Fingerprint:
        return cls(cert.fingerprint(hashes.SHA256()))

    @classmethod
    def of_der(cls, der: bytes) -> Fingerprint:
        return cls(hashlib.sha256(der).digest())

    @classmethod
    def parse(cls, text: str) -> Fingerprint:
        """Accept ``sha256:HEX``, bare hex, and colon-separated hex (openssl's form)."""
        value = text.strip()
        if value.lower().startswith("sha256:"):
            value = value[7:]
        elif ":" in value and len(value) != 95:
            raise InputError(f"not a SHA-256 fingerprint: {text!r} (expected sha256:HEX)")
        value = value.replace(":", "")
        try:
            digest = bytes.fromhex(value)
        except ValueError:
            raise InputError(f"not a SHA-256 fingerprint: {text!r} (expected sha256:HEX)") from None
        if len(digest) != 32:
            raise InputError(
                f"not a SHA-256 fingerprint: {text!r} has {len(digest)} bytes, expected 32"
            )
        return cls(digest)

    @property
    def hex(self) -> str:
        return self.digest.hex()

    @property
    def colon_hex(self) -> str:
        """Upper-case, colon-separated: what ``openssl x509 -fingerprint`` prints."""
        return ":".join(f"{b:02X}" for b in self.digest)

    @property
    def base64(self) -> str:
        """Standard base64, the form GCP's ``client_cert_sha256_fingerprint`` uses."""
        return base64.b64encode(self.digest).decode("ascii")

    def __str__(self) -> str:
        return f"sha256:{self.hex}"


# --- loading ----------------------------------------------------------------------


def load_certificates(
    data: bytes, *, source: str = "<input>", password: bytes | None = None
) -> list[x509.Certificate]:
    """Every certificate in ``data``: PEM (any number of blocks, text around them), DER or PKCS#12.

    The order is kept as given; a chain file is expected leaf first. PKCS#12 yields
    its key's certificate first, then the others.
    """
    if not data.strip():
        raise InputError("is empty", source=source)
    with warnings.catch_warnings():
        # Negative serials and the like are lint findings, not loader noise.
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        if _PEM_BEGIN.search(data):
            return _certificates_from_pem(data, source)
        return _certificates_from_binary(data, source, password)


def load_private_key(
    data: bytes, *, source: str = "<input>", password: bytes | None = None
) -> PrivateKey:
    """The private key in ``data`` (PEM, DER or PKCS#12), decrypted with ``password`` if needed."""
    if not data.strip():
        raise InputError("is empty", source=source)
    if _PEM_BEGIN.search(data):
        blocks = _pem_blocks(data, source)
        keys = [text for label, _, text in blocks if label in _KEY_LABELS]
        if not keys:
            found = ", ".join(sorted({label.decode() for label, _, _ in blocks}))
            raise InputError(f"contains no private key (found {found})", source=source)
        return _check_key_type(_load_key(keys[0], source, password), source)
    if is_pkcs12(data):
        key, _ = _open_pkcs12(data, source, password)
        if key is None:
            raise InputError("PKCS#12 file holds no private key", source=source)
        return key
    return _check_key_type(_load_key(data, source, password, der=True), source)


# cryptography raises InvalidVersion (not a ValueError) for a bad version field: found by
# fuzzing (reliability/fuzz.py); both mean "not a valid certificate".
_BAD_DER: Final = (ValueError, x509.InvalidVersion)


def _certificates_from_pem(data: bytes, source: str) -> list[x509.Certificate]:
    certs: list[x509.Certificate] = []
    other: list[bytes] = []
    for index, (label, raw, _) in enumerate(_pem_blocks(data, source)):
        if label in _CERT_LABELS:
            try:
                certs.append(x509.load_der_x509_certificate(raw))
            except _BAD_DER:
                raise InputError(
                    f"PEM block {index + 1} (CERTIFICATE) is not a valid X.509 certificate",
                    source=source,
                ) from None
        else:
            other.append(label)
    if not certs:
        raise InputError(f"contains no certificate: it holds {_describe(other[0])}", source=source)
    return certs


def _certificates_from_binary(
    data: bytes, source: str, password: bytes | None
) -> list[x509.Certificate]:
    try:
        return [x509.load_der_x509_certificate(data)]
    except _BAD_DER:
        pass
    if is_pkcs12(data):
        _, certs = _open_pkcs12(data, source, password)
        if not certs:
            raise InputError("PKCS#12 file holds no certificate", source=source)
        return certs
    try:
        x509.load_der_x509_csr(data)
    except _BAD_DER:
        pass
    else:
        raise InputError(
            "contains a certificate signing request (CSR), not a certificate", source=source
        )
    try:
        x509.load_der_x509_crl(data)
    except ValueError:
        pass
    else:
        raise InputError(
            "contains a certificate revocation list (CRL), not a certificate", source=source
        )
    if data[:1] == b"\x30":
        raise InputError("is not a valid DER certificate (truncated or corrupt)", source=source)
    raise InputError("is not a certificate: neither PEM, DER nor PKCS#12", source=source)


def _pem_blocks(data: bytes, source: str) -> list[tuple[bytes, bytes, bytes]]:
    """(label, DER, PEM text) for each block; a BEGIN without its END is a truncated file."""
    blocks: list[tuple[bytes, bytes, bytes]] = []
    position = 0
    for begin in _PEM_BEGIN.finditer(data):
        if begin.start() < position:
            continue
        match = _PEM_BLOCK.match(data, begin.start())
        label = begin.group(1)
        if match is None or match.group(3) != label or _PEM_BEGIN.search(match.group(2)):
            raise InputError(
                f"truncated PEM: BEGIN {label.decode()} without a matching END", source=source
            )
        body = match.group(2)
        if b":" in body.split(b"\n\n", 1)[0] and b"\n\n" in body:
            body = body.split(b"\n\n", 1)[1]  # RFC 1421 headers (Proc-Type, DEK-Info)
        try:
            raw = base64.b64decode(b"".join(body.split()), validate=True)
        except (binascii.Error, ValueError):
            raise InputError(
                f"PEM block {len(blocks) + 1} ({label.decode()}) has corrupt base64", source=source
            ) from None
        if not raw:
            raise InputError(
                f"PEM block {len(blocks) + 1} ({label.decode()}) is empty", source=source
            )
        blocks.append((label, raw, match.group(0)))
        position = match.end()
    return blocks


def _describe(label: bytes) -> str:
    return _WRONG_TYPE.get(label, f"a PEM block labelled {label.decode()}")


def is_pkcs12(data: bytes) -> bool:
    """A PFX is a SEQUENCE whose first element is INTEGER 3; peek, don't parse."""
    if len(data) < 8 or data[0] != 0x30:
        return False
    length_octets = data[1] & 0x7F if data[1] & 0x80 else 0
    offset = 2 + length_octets
    return data[offset : offset + 3] == b"\x02\x01\x03"


def _open_pkcs12(
    data: bytes, source: str, password: bytes | None
) -> tuple[PrivateKey | None, list[x509.Certificate]]:
    try:
        bundle = pkcs12.load_pkcs12(data, password)
    except ValueError:
        if password is None:
            raise InputError(
                "PKCS#12 file is password-protected; give the password "
                "(--password-file, MTLSKIT_PKCS12_PASSWORD or the prompt)",
                source=source,
            ) from None
        raise InputError(
            "wrong password for PKCS#12 file (or the file is corrupt)", source=source
        ) from None
    except UnsupportedAlgorithm as exc:
        raise InputError(
            f"PKCS#12 file uses an unsupported algorithm: {exc}", source=source
        ) from None
    certs = [bundle.cert.certificate] if bundle.cert else []
    certs += [extra.certificate for extra in bundle.additional_certs]
    key = bundle.key
    if key is not None:
        key = _check_key_type(key, source)
    return key, certs


def _load_key(raw: bytes, source: str, password: bytes | None, *, der: bool = False) -> object:
    loader = serialization.load_der_private_key if der else serialization.load_pem_private_key
    try:
        return loader(raw, password)
    except TypeError:
        if password is None:
            raise InputError(
                "private key is encrypted; a password is needed", source=source
            ) from None
        raise InputError(
            "private key is not encrypted, but a password was given", source=source
        ) from None
    except ValueError as exc:
        if password is not None and "password" in str(exc).lower():
            raise InputError("wrong password for the private key", source=source) from None
        if der:
            raise InputError(
                "is not a private key: neither PEM, DER nor PKCS#12", source=source
            ) from None
        raise InputError("private key is malformed or truncated", source=source) from None
    except UnsupportedAlgorithm as exc:
        raise InputError(
            f"private key uses an unsupported algorithm: {exc}", source=source
        ) from None


def _check_key_type(key: object, source: str) -> PrivateKey:
    if isinstance(
        key,
        rsa.RSAPrivateKey
        | ec.EllipticCurvePrivateKey
        | ed25519.Ed25519PrivateKey
        | ed448.Ed448PrivateKey,
    ):
        return key
    raise InputError(f"unsupported private key type {type(key).__name__}", source=source)


# --- key types --------------------------------------------------------------------


class KeyType(StrEnum):
    """Key types mtlskit generates; the default, P-256, is what every peer accepts."""

    EC_P256 = "ec-p256"
    EC_P384 = "ec-p384"
    RSA_2048 = "rsa-2048"
    RSA_3072 = "rsa-3072"
    RSA_4096 = "rsa-4096"
    ED25519 = "ed25519"


def generate_private_key(key_type: KeyType | str = KeyType.EC_P256) -> PrivateKey:
    kind = KeyType(key_type)
    if kind is KeyType.EC_P256:
        return ec.generate_private_key(ec.SECP256R1())
    if kind is KeyType.EC_P384:
        return ec.generate_private_key(ec.SECP384R1())
    if kind is KeyType.ED25519:
        return ed25519.Ed25519PrivateKey.generate()
    bits = int(kind.value.split("-")[1])
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyInfo:
    """What a public key is, in the terms the lint rules and inspect speak."""

    algorithm: str  # "RSA", "EC", "Ed25519", "Ed448", "DSA"
    size: int  # bits (curve size for EC)
    curve: str | None = None  # "secp256r1", ...

    def __str__(self) -> str:
        if self.algorithm == "EC":
            return f"EC {_CURVE_NAMES.get(self.curve or '', self.curve)}"
        if self.algorithm in {"Ed25519", "Ed448"}:
            return self.algorithm
        return f"{self.algorithm} {self.size}"


_CURVE_NAMES: Final = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}


def key_info(key: object) -> KeyInfo:
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        return KeyInfo(algorithm="RSA", size=key.key_size)
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        return KeyInfo(algorithm="EC", size=key.curve.key_size, curve=key.curve.name)
    if isinstance(key, ed25519.Ed25519PublicKey | ed25519.Ed25519PrivateKey):
        return KeyInfo(algorithm="Ed25519", size=256)
    if isinstance(key, ed448.Ed448PublicKey | ed448.Ed448PrivateKey):
        return KeyInfo(algorithm="Ed448", size=456)
    if isinstance(key, DSA_KEY_TYPES):
        return KeyInfo(algorithm="DSA", size=key.key_size)  # type: ignore[attr-defined]
    return KeyInfo(algorithm=type(key).__name__, size=0)


# --- output -----------------------------------------------------------------------


def certificate_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def chain_pem(chain: list[x509.Certificate]) -> bytes:
    return b"".join(certificate_pem(cert) for cert in chain)


def private_key_pem(key: PrivateKey, password: bytes | None = None) -> bytes:
    """PKCS#8 PEM; encrypted with the best available scheme when a password is given."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
