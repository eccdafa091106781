"""CA keys inside a PKCS#11 token (an HSM, or SoftHSM2 in tests), through python-pkcs11.

IO shell. cryptography's builders sign only with its own key classes, so a token key
signs the narrowest honest way: the builder signs once with a stand-in key of the same
algorithm and hash (so the TBS carries the right signatureAlgorithm), the token signs
those TBS bytes, and asn1crypto puts the TBS, the algorithm and the token's signature
together (no hand-written DER). The result is loaded back with cryptography and its
signature verified against the token's public key before it is returned, so a TBS or
encoding mismatch can never leave this module as a certificate.

Any token failure (absent, session lost, library finalized) is ``KeyUnavailable``:
the session is dropped and the next signature opens a fresh one (after
``C_Finalize``/``C_Initialize`` if needed), so a token that returns is used again
without a restart.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from asn1crypto import crl as asn1_crl
from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from asn1crypto.core import OctetString
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding

from mtlskit.certs import KeyType, PublicKey
from mtlskit.errors import InputError
from mtlskit.issue import KeyUnavailable, signature_hash
from mtlskit.keystore._uri import Pkcs11Uri

if TYPE_CHECKING:
    import pkcs11

__all__ = ["PIN_ENV", "TOKEN_KEY_TYPES", "TokenKey", "generate_token_key", "open_token_key"]

PIN_ENV: Final = "MTLSKIT_PKCS11_PIN"
# What a token is asked to generate; EdDSA is left out (few tokens implement CKM_EDDSA).
TOKEN_KEY_TYPES: Final = (
    KeyType.EC_P256,
    KeyType.EC_P384,
    KeyType.RSA_2048,
    KeyType.RSA_3072,
    KeyType.RSA_4096,
)
_CURVES: Final = {KeyType.EC_P256: "secp256r1", KeyType.EC_P384: "secp384r1"}
_CURVE_CLASSES: Final = {"secp256r1": ec.SECP256R1(), "secp384r1": ec.SECP384R1()}
_lock = threading.Lock()  # python-pkcs11 loads one library per process; reinit is global


def _library(module: str) -> pkcs11.lib:
    import pkcs11

    if not Path(module).is_file():
        raise InputError("no such PKCS#11 module", source=module)
    from pkcs11.exceptions import PKCS11Error

    try:
        return pkcs11.lib(module)  # loaded once per process; C_Initialize again if finalized
    except PKCS11Error as exc:  # loaded, but C_Initialize failed (its token store is gone)
        raise KeyUnavailable(
            f"the PKCS#11 module did not initialise: {_reason(exc)}", source=module
        ) from None
    except (RuntimeError, OSError) as exc:
        raise InputError(f"cannot load the PKCS#11 module: {exc}", source=module) from None


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return type(exc).__name__ + (f": {text}" if text else "")


def _open_session(lib: pkcs11.lib, uri: Pkcs11Uri, pin: bytes, *, rw: bool = False) -> Any:
    """A logged-in session on the URI's token; ``InputError`` for a wrong PIN or no token
    (operator input, never retried: a real token locks after a few wrong PINs)."""
    import pkcs11.exceptions as errors

    try:
        token = lib.get_token(token_label=uri.token)
    except errors.NoSuchToken:
        raise KeyUnavailable(f"no token labelled {uri.token!r}", source=str(uri)) from None
    except errors.MultipleTokensReturned:
        raise InputError(f"several tokens are labelled {uri.token!r}", source=str(uri)) from None
    try:
        return token.open(user_pin=pin.decode(), rw=rw)
    except errors.UserAlreadyLoggedIn:  # login is per token: another session of ours has it
        return token.open(rw=rw)
    except (errors.PinIncorrect, errors.PinInvalid, errors.PinLenRange):
        raise InputError(
            f"wrong PIN for token {uri.token!r} (${PIN_ENV} or the PIN file)", source=str(uri)
        ) from None
    except errors.PinLocked:
        raise InputError(f"the PIN of token {uri.token!r} is locked", source=str(uri)) from None


def _public_key(session: Any, uri: Pkcs11Uri) -> PublicKey:
    """The public half, read from the token's public key object with the same label."""
    from pkcs11 import Attribute, ObjectClass
    from pkcs11 import KeyType as P11KeyType
    from pkcs11.exceptions import MultipleObjectsReturned, NoSuchKey

    try:
        public = session.get_key(object_class=ObjectClass.PUBLIC_KEY, label=uri.object, id=uri.id)
    except NoSuchKey:
        raise InputError(f"the token has no public key {uri.object!r}", source=str(uri)) from None
    except MultipleObjectsReturned:
        raise InputError(f"several keys are labelled {uri.object!r}", source=str(uri)) from None
    if public.key_type == P11KeyType.RSA:
        numbers = rsa.RSAPublicNumbers(
            int.from_bytes(public[Attribute.PUBLIC_EXPONENT], "big"),
            int.from_bytes(public[Attribute.MODULUS], "big"),
        )
        return numbers.public_key()
    if public.key_type == P11KeyType.EC:
        params = asn1_keys.ECDomainParameters.load(public[Attribute.EC_PARAMS])
        curve = _CURVE_CLASSES.get(str(params.chosen.native))
        if curve is None:
            raise InputError(f"unsupported curve {params.chosen.native}", source=str(uri))
        point = OctetString.load(public[Attribute.EC_POINT]).native
        return ec.EllipticCurvePublicKey.from_encoded_point(curve, point)
    raise InputError(f"unsupported key type {public.key_type.name}", source=str(uri))


@dataclass(slots=True, kw_only=True)
class TokenKey:
    """A CA private key that stays in its token; an ``ExternalKey`` for ``mtlskit.issue``.

    Mutable only in its session (opened lazily, dropped on failure, reopened next time).
    """

    module: str
    uri: Pkcs11Uri
    pin: bytes = field(repr=False)
    public: PublicKey
    _stand_in: Any = field(init=False, repr=False)
    _hash: hashes.HashAlgorithm = field(init=False, repr=False)
    _session: Any = field(default=None, init=False, repr=False)
    _private: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        digest = signature_hash(self.public)
        assert digest is not None  # RSA and EC only (TOKEN_KEY_TYPES)
        self._hash = digest
        # The stand-in only decides signatureAlgorithm: ECDSA or RSA PKCS#1 v1.5 with
        # this hash. Its size does not show in the TBS, so the cheapest of each kind.
        if isinstance(self.public, rsa.RSAPublicKey):
            self._stand_in = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            self._stand_in = ec.generate_private_key(ec.SECP256R1())

    def public_key(self) -> PublicKey:
        return self.public

    def close(self) -> None:
        session, self._session, self._private = self._session, None, None
        if session is not None:
            with contextlib.suppress(Exception):
                session.close()

    def destroy(self) -> None:
        """Delete this key pair from the token: ``ca init`` undoing what it generated when
        it fails later, so no orphan keeps the labels and a rerun is not refused. Only for
        keys ``generate_token_key`` made (it refuses a label in use, so every object with
        this label is that pair); raises ``KeyUnavailable`` if the token cannot do it."""
        import pkcs11.exceptions as errors
        from pkcs11 import Attribute

        self.close()
        query: dict[Any, Any] = {Attribute.LABEL: self.uri.object}
        if self.uri.id is not None:
            query[Attribute.ID] = self.uri.id
        with _lock:
            try:
                session = _open_session(_library(self.module), self.uri, self.pin, rw=True)
                try:
                    for obj in list(session.get_objects(query)):
                        obj.destroy()
                finally:
                    session.close()
            except errors.PKCS11Error as exc:
                raise KeyUnavailable(
                    f"cannot delete the key from the token: {_reason(exc)}", source=str(self.uri)
                ) from None

    def _key(self) -> Any:
        from pkcs11 import ObjectClass

        if self._private is None:
            lib = _library(self.module)
            self._session = _open_session(lib, self.uri, self.pin)
            self._private = self._session.get_key(
                object_class=ObjectClass.PRIVATE_KEY, label=self.uri.object, id=self.uri.id
            )
        return self._private

    def _sign_raw(self, data: bytes, *, pss: bool = False) -> bytes:
        """The token's signature over ``data``, as cryptography would encode it (DER for
        ECDSA; RSA PKCS#1 v1.5, or with ``pss`` RSA-PSS SHA-256 salt 32). One retry after
        a library re-initialisation: a returned token shows only after ``C_Initialize``."""
        import pkcs11.exceptions as errors
        from pkcs11 import MGF, Mechanism

        ecdsa = isinstance(self.public, ec.EllipticCurvePublicKey)
        param: Any = None
        if ecdsa:
            digest = hashes.Hash(self._hash)
            digest.update(data)
            message, mechanism = digest.finalize(), Mechanism.ECDSA
        elif pss:
            message, mechanism = data, Mechanism.SHA256_RSA_PKCS_PSS
            param = (Mechanism.SHA256, MGF.SHA256, 32)
        else:
            mechanism = {"sha256": Mechanism.SHA256_RSA_PKCS, "sha384": Mechanism.SHA384_RSA_PKCS}[
                self._hash.name
            ]
            message = data
        with _lock:
            for attempt in range(2):
                try:
                    raw = self._key().sign(message, mechanism=mechanism, mechanism_param=param)
                    break
                except (errors.PKCS11Error, KeyUnavailable) as exc:
                    self.close()
                    if attempt:
                        raise KeyUnavailable(
                            f"the token cannot sign: {_reason(exc)}", source=str(self.uri)
                        ) from None
                    try:
                        _library(self.module).reinitialize()
                    except errors.PKCS11Error as again:
                        raise KeyUnavailable(
                            f"the token cannot sign: {_reason(again)}", source=str(self.uri)
                        ) from None
        if not ecdsa:
            return bytes(raw)
        half = len(raw) // 2
        return encode_dss_signature(
            int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
        )

    def _check(self, signature: bytes, tbs: bytes) -> None:
        try:
            if isinstance(self.public, ec.EllipticCurvePublicKey):
                self.public.verify(signature, tbs, ec.ECDSA(self._hash))
            else:
                assert isinstance(self.public, rsa.RSAPublicKey)
                self.public.verify(signature, tbs, padding.PKCS1v15(), self._hash)
        except InvalidSignature:
            raise KeyUnavailable(
                "the token's signature does not verify with its public key", source=str(self.uri)
            ) from None

    def sign_data(self, data: bytes) -> bytes:
        """A signature over ``data`` as the CA's approver records carry one: ECDSA with the
        key's hash, RSA-PSS (SHA-256, salt 32); verified before it is returned."""
        if isinstance(self.public, ec.EllipticCurvePublicKey):
            signature = self._sign_raw(data)
            self._check(signature, data)
            return signature
        signature = self._sign_raw(data, pss=True)
        assert isinstance(self.public, rsa.RSAPublicKey)
        try:
            self.public.verify(
                signature,
                data,
                padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
                hashes.SHA256(),
            )
        except InvalidSignature:
            raise KeyUnavailable(
                "the token's signature does not verify with its public key", source=str(self.uri)
            ) from None
        return signature

    def sign_certificate(self, builder: x509.CertificateBuilder) -> x509.Certificate:
        der = self._resign(builder, asn1_x509.Certificate, "tbs_certificate", "signature_value")
        cert = x509.load_der_x509_certificate(der)
        self._check(cert.signature, cert.tbs_certificate_bytes)
        return cert

    def sign_crl(
        self, builder: x509.CertificateRevocationListBuilder
    ) -> x509.CertificateRevocationList:
        der = self._resign(builder, asn1_crl.CertificateList, "tbs_cert_list", "signature")
        crl = x509.load_der_x509_crl(der)
        self._check(crl.signature, crl.tbs_certlist_bytes)
        return crl

    def _resign(
        self,
        builder: x509.CertificateBuilder | x509.CertificateRevocationListBuilder,
        structure: type[Any],
        tbs_field: str,
        signature_field: str,
    ) -> bytes:
        """The builder's DER, signed by the stand-in (so the TBS names the right
        algorithm), with its signature replaced by the token's over that TBS."""
        draft = structure.load(builder.sign(self._stand_in, self._hash).public_bytes(Encoding.DER))
        signed = structure(
            {
                tbs_field: draft[tbs_field],
                "signature_algorithm": draft["signature_algorithm"],
                signature_field: self._sign_raw(draft[tbs_field].dump()),
            }
        )
        return signed.dump()


def open_token_key(
    module: str, uri: Pkcs11Uri, pin: bytes, *, require_unexportable: bool = False
) -> TokenKey:
    """The key ``uri`` names (a wrong PIN or absent token fails here). With
    ``require_unexportable`` (``ca init --import-key``) a private key that is not
    sensitive, or is extractable, is refused: it could have left the token."""
    import pkcs11.exceptions as errors
    from pkcs11 import Attribute, ObjectClass

    lib = _library(module)
    with _lock:
        try:
            session = _open_session(lib, uri, pin)
        except errors.PKCS11Error as exc:
            raise KeyUnavailable(
                f"cannot open the token: {_reason(exc)}", source=str(uri)
            ) from None
        try:
            public = _public_key(session, uri)
            if require_unexportable:
                private = session.get_key(
                    object_class=ObjectClass.PRIVATE_KEY, label=uri.object, id=uri.id
                )
                if private[Attribute.EXTRACTABLE] or not private[Attribute.SENSITIVE]:
                    raise InputError(
                        "the private key is extractable or not sensitive: it may exist outside "
                        "the token; generate one in the token instead",
                        source=str(uri),
                    )
        except errors.NoSuchKey:
            raise InputError(
                f"the token has no private key {uri.object!r}", source=str(uri)
            ) from None
        except errors.PKCS11Error as exc:
            raise KeyUnavailable(f"cannot read the key: {_reason(exc)}", source=str(uri)) from None
        finally:
            session.close()
    return TokenKey(module=module, uri=uri, pin=pin, public=public)


def generate_token_key(module: str, uri: Pkcs11Uri, pin: bytes, key_type: KeyType) -> TokenKey:
    """A new key pair generated inside the token: private half sensitive and never
    extractable, so it cannot leave the token even wrapped. Refuses a label in use."""
    import pkcs11.exceptions as errors
    from pkcs11 import Attribute, ObjectClass
    from pkcs11 import KeyType as P11KeyType
    from pkcs11.util.ec import encode_named_curve_parameters

    if key_type not in TOKEN_KEY_TYPES:
        raise InputError(
            f"{key_type.value} keys are not generated in a token "
            f"(use {', '.join(kind.value for kind in TOKEN_KEY_TYPES)})",
            source="--key-type",
        )
    lib = _library(module)
    private_template = {
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False,
        Attribute.SIGN: True,
        Attribute.DECRYPT: False,
        Attribute.UNWRAP: False,
        Attribute.DERIVE: False,
    }
    with _lock:
        try:
            session = _open_session(lib, uri, pin, rw=True)
        except errors.PKCS11Error as exc:
            raise KeyUnavailable(
                f"cannot open the token: {_reason(exc)}", source=str(uri)
            ) from None
        try:
            existing = list(session.get_objects({Attribute.LABEL: uri.object}))
            if existing:
                raise InputError(
                    f"the token already holds an object labelled {uri.object!r}", source=str(uri)
                )
            common: dict[str, Any] = {"store": True, "label": uri.object, "id": uri.id}
            if key_type in _CURVES:
                params = session.create_domain_parameters(
                    P11KeyType.EC,
                    {Attribute.EC_PARAMS: encode_named_curve_parameters(_CURVES[key_type])},
                    local=True,
                )
                params.generate_keypair(private_template=private_template, **common)
            else:
                bits = int(key_type.value.split("-")[1])
                session.generate_keypair(
                    P11KeyType.RSA, bits, private_template=private_template, **common
                )
            private = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=uri.object)
            if private[Attribute.EXTRACTABLE] or not private[Attribute.SENSITIVE]:
                raise InputError("the token made the key extractable; refusing it", source=str(uri))
            public = _public_key(session, uri)
        except errors.PKCS11Error as exc:
            raise KeyUnavailable(
                f"cannot generate a key in the token: {_reason(exc)}", source=str(uri)
            ) from None
        finally:
            session.close()
    return TokenKey(module=module, uri=uri, pin=pin, public=public)
