"""Workload-identity provisioners: an OIDC/JWT token a platform issued, turned into an identity.

Pure: the token text, the issuer's key set (a JWKS document the shell fetched) and the
clock come in; a ``VerifiedToken`` (the identity the CA will issue, the ``jti`` to burn)
or a ``TokenRefused`` with a stable code comes out. Signatures are joserfc's; only the
asymmetric algorithms a platform signs with are accepted (``none`` and HMAC never: an
HMAC "key" would be the issuer's public key, which everybody has). The identity is a
template over claims, and a claim value that a SPIFFE path segment cannot hold is
refused, never escaped: an escaped ``../`` is still somebody else's name.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from mtlskit.errors import InputError
from mtlskit.issue._enroll import EnrollmentRefused
from mtlskit.issue._profile import parse_identity

__all__ = [
    "ALGORITHMS",
    "MAX_SKEW",
    "IdentityTemplate",
    "OidcProvisioner",
    "TokenIdStore",
    "TokenRefused",
    "UnknownKeyId",
    "VerifiedToken",
    "fetchable",
    "peek_token",
    "select_provisioner",
    "verify_token",
]

# Algorithm → the JWK key type that must carry it (a key of another type never verifies).
# Ed25519 is RFC 9864's fully-specified name for what EdDSA signs with an Ed25519 key.
_KEY_TYPES: Final = {"RS256": "RSA", "ES256": "EC", "EdDSA": "OKP", "Ed25519": "OKP"}
ALGORITHMS: Final = tuple(_KEY_TYPES)
MAX_SKEW: Final = dt.timedelta(minutes=5)  # clock_skew above this is a config error
MAX_TOKEN: Final = 16 * 1024  # real platform tokens are 1-2 KiB
_SEGMENT: Final = re.compile(r"[A-Za-z0-9._-]+")
_PLACEHOLDER: Final = re.compile(r"\{([^{}]*)\}")

# code → (HTTP status, what the client is told; operators read the detail in the audit log)
_CODES: Final = {
    "token_invalid": (401, "the id token is not a well-formed JWT"),
    "token_signature_invalid": (401, "the id token's signature does not verify"),
    "token_audience_mismatch": (401, "the id token is not meant for this CA"),
    "token_expired": (401, "the id token has expired or is too old"),
    "token_not_yet_valid": (401, "the id token is not valid yet"),
    "token_replayed": (409, "the id token was already used"),
    "token_issuer_unknown": (401, "no provisioner trusts the id token's issuer"),
    "claims_not_allowed": (403, "the id token's claims are not allowed by the provisioner"),
    "template_value_invalid": (403, "a claim cannot form the identity"),
}


class TokenRefused(EnrollmentRefused):
    """An id token refused: ``code`` and a fixed message for the client, ``detail`` (what
    exactly was wrong, with claim values) for the audit log only."""

    def __init__(self, code: str, detail: str) -> None:
        status, message = _CODES[code]
        super().__init__(code, message, status=status)
        self.detail = detail


class UnknownKeyId(Exception):
    """The token names a ``kid`` the key set lacks: the shell may refetch the JWKS once."""

    def __init__(self, kid: str) -> None:
        super().__init__(f"no key with kid {kid!r}")
        self.kid = kid


class TokenIdStore(Protocol):
    """Where used ``jti`` values are kept (the CA database, shared by every node)."""

    def use_token_id(
        self,
        issuer: str,
        jti: str,
        *,
        expires_at: dt.datetime,
        at: dt.datetime,
        detail: Mapping[str, Any],
    ) -> None:
        """Record ``jti`` as used, or raise ``TokenRefused("token_replayed", …)``."""
        ...


def fetchable(url: str) -> bool:
    """Whether issuer keys may be fetched from ``url``: https, or http to a loopback address
    (a test or a sidecar issuer). Keys in clear text from elsewhere would let anyone on
    the path mint identities."""
    if url.startswith("https://"):
        return True
    if not url.startswith("http://"):
        return False
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _resolve(claims: Mapping[str, Any], path: str) -> Any:
    """A dotted path into nested claims. Claim names may hold dots themselves
    (``kubernetes.io``), so at each level the longest name that exists wins."""
    parts, node = path.split("."), claims
    while parts:
        if not isinstance(node, Mapping):
            return None
        for size in range(len(parts), 0, -1):
            name = ".".join(parts[:size])
            if name in node:
                node, parts = node[name], parts[size:]
                break
        else:
            return None
    return node


def _flatten(table: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """``{"kubernetes": {"io": {"namespace": "x"}}}`` → ``[("kubernetes.io.namespace", "x")]``:
    TOML's dotted and quoted keys both end up as one path for ``_resolve``."""
    out: list[tuple[str, Any]] = []
    for key, value in table.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out += _flatten(value, f"{path}.")
        else:
            out.append((path, value))
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class IdentityTemplate:
    """``spiffe://acme.com/ns/{kubernetes.io.namespace}/sa/{sub}``: literal text and claim paths."""

    text: str
    paths: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> IdentityTemplate:
        paths = tuple(_PLACEHOLDER.findall(text))
        rest = _PLACEHOLDER.sub("x", text)
        if "{" in rest or "}" in rest:
            raise InputError(f"identity template {text!r} has an unbalanced brace")
        if any(not path or any(not part for part in path.split(".")) for path in paths):
            raise InputError(f"identity template {text!r} has an empty claim path")
        try:
            parse_identity(rest)
        except InputError as exc:
            raise InputError(f"identity template {text!r} is no identity: {exc.detail}") from None
        return cls(text=text, paths=paths)

    def render(self, claims: Mapping[str, Any]) -> str:
        """The identity, or ``template_value_invalid`` naming the claim that cannot be used."""

        def value(match: re.Match[str]) -> str:
            path = match.group(1)
            found = _resolve(claims, path)
            if isinstance(found, bool) or not isinstance(found, str | int):
                shown = repr(found)[:200]
                raise TokenRefused(
                    "template_value_invalid", f"claim {path!r} is {shown}, not a string"
                )
            text = str(found)
            if not _SEGMENT.fullmatch(text) or text in {".", ".."}:
                raise TokenRefused(
                    "template_value_invalid",
                    f"claim {path!r} = {text!r} is not one SPIFFE path segment "
                    "([A-Za-z0-9._-], not '.' or '..')",
                )
            return text

        identity = _PLACEHOLDER.sub(value, self.text)
        try:  # a claim in the trust domain may still break it (upper case, say)
            parse_identity(identity)
        except InputError as exc:
            raise TokenRefused("template_value_invalid", f"{identity!r}: {exc.detail}") from None
        return identity


@dataclass(frozen=True, slots=True, kw_only=True)
class OidcProvisioner:
    """One ``[[provisioners]]`` entry of kind ``oidc``: whose tokens, for whom, naming what."""

    name: str
    issuer: str
    audience: str
    identity: IdentityTemplate
    max_token_age: dt.timedelta
    clock_skew: dt.timedelta = dt.timedelta(seconds=60)
    jwks: str | None = None  # a static JWKS file (relative to the CA directory); else discovery
    require: tuple[tuple[str, Any], ...] = ()  # claim path → the value it must equal

    @staticmethod
    def requirements(table: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
        return tuple(_flatten(table))


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifiedToken:
    """A token whose signature and claims passed; what the CA issues and records for it."""

    provisioner: str
    issuer: str
    identity: str
    subject: str
    jti: str | None
    expires_at: dt.datetime


def _b64json(part: str) -> dict[str, Any]:
    padded = part + "=" * (-len(part) % 4)
    document = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    if not isinstance(document, dict):
        raise ValueError("not a JSON object")
    return document


def peek_token(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(header, claims) read WITHOUT verification: only to pick the provisioner and key."""
    parts = token.strip().split(".")
    if len(token) > MAX_TOKEN or len(parts) != 3:
        raise TokenRefused("token_invalid", f"not a JWS compact token ({len(parts)} parts)")
    try:
        return _b64json(parts[0]), _b64json(parts[1])
    except (ValueError, UnicodeError) as exc:
        detail = f"header or payload is not base64url JSON: {exc}"
        raise TokenRefused("token_invalid", detail) from None


def _audiences(claims: Mapping[str, Any]) -> list[str]:
    aud = claims.get("aud")
    if isinstance(aud, str):
        return [aud]
    if isinstance(aud, list):
        return [item for item in aud if isinstance(item, str)]
    return []


def select_provisioner(
    provisioners: Sequence[OidcProvisioner], token: str
) -> tuple[OidcProvisioner, dict[str, Any]]:
    """The provisioner for this token's ``iss`` (and ``aud``, when one issuer has several),
    with the token's header. Unverified: ``verify_token`` checks both again."""
    header, claims = peek_token(token)
    issuer = claims.get("iss")
    mine = [p for p in provisioners if p.issuer == issuer]
    if not mine:
        raise TokenRefused("token_issuer_unknown", f"iss {issuer!r} has no provisioner")
    audiences = _audiences(claims)
    for provisioner in mine:
        if provisioner.audience in audiences:
            return provisioner, header
    raise TokenRefused(
        "token_audience_mismatch",
        f"aud {claims.get('aud')!r}; provisioner(s) {[p.name for p in mine]} want "
        f"{[p.audience for p in mine]}",
    )


def _keys(jwks: Mapping[str, Any], header: Mapping[str, Any]) -> list[Any]:
    """The JWKs the header's ``alg`` and ``kid`` point to (all of that type when no kid)."""
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in _KEY_TYPES:
        raise TokenRefused(
            "token_signature_invalid", f"alg {alg!r} is not accepted ({', '.join(ALGORITHMS)})"
        )
    kid = header.get("kid")
    wanted = []
    for entry in jwks.get("keys") or ():
        # Only signing keys of the alg's type, each on its own: an issuer's set may also
        # hold keys of other types or for encryption, which must not spoil the rest.
        if not isinstance(entry, Mapping) or entry.get("kty") != _KEY_TYPES[alg]:
            continue
        if entry.get("use", "sig") != "sig" or (kid is not None and entry.get("kid") != kid):
            continue
        try:
            wanted.extend(KeySet.import_key_set({"keys": [dict(entry)]}).keys)  # type: ignore[list-item]
        except (JoseError, ValueError, TypeError, KeyError):
            continue
    if not wanted and kid is not None:
        raise UnknownKeyId(str(kid))
    if not wanted:
        raise TokenRefused("token_signature_invalid", f"the JWKS has no {alg} key")
    return wanted


def _instant(claims: Mapping[str, Any], name: str) -> dt.datetime | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenRefused("token_invalid", f"claim {name!r} is {value!r}, not a NumericDate")
    try:
        return dt.datetime.fromtimestamp(value, dt.UTC)
    except (OverflowError, OSError, ValueError):
        raise TokenRefused("token_invalid", f"claim {name!r} = {value!r} is out of range") from None


def _check_times(p: OidcProvisioner, claims: Mapping[str, Any], now: dt.datetime) -> dt.datetime:
    skew = p.clock_skew
    exp, nbf, iat = (_instant(claims, name) for name in ("exp", "nbf", "iat"))
    if exp is None:
        raise TokenRefused("token_invalid", "the token has no exp")
    if exp + skew <= now:
        raise TokenRefused("token_expired", f"exp {exp.isoformat()} (now {now.isoformat()})")
    if nbf is not None and nbf - skew > now:
        raise TokenRefused("token_not_yet_valid", f"nbf {nbf.isoformat()}")
    if iat is not None and iat - skew > now:
        raise TokenRefused("token_not_yet_valid", f"iat {iat.isoformat()} is in the future")
    born = iat or nbf
    if born is None:
        raise TokenRefused("token_invalid", "the token has neither iat nor nbf")
    if now - born > p.max_token_age + skew:
        raise TokenRefused(
            "token_expired",
            f"issued {born.isoformat()}, older than max_token_age {p.max_token_age}",
        )
    return exp


def verify_token(
    p: OidcProvisioner, token: str, jwks: Mapping[str, Any], *, now: dt.datetime
) -> VerifiedToken:
    """Signature against ``jwks``, then iss, aud, times, ``require``, the identity template.

    Raises ``UnknownKeyId`` when the token's ``kid`` is not in ``jwks`` (refetch, call
    again), ``TokenRefused`` for everything the token holder got wrong."""
    header, _ = peek_token(token)
    verified = None
    for key in _keys(jwks, header):
        try:
            verified = jwt.decode(token.strip(), key, algorithms=[header["alg"]])
            break
        except JoseError:
            continue
    if verified is None:
        raise TokenRefused(
            "token_signature_invalid", f"no {header['alg']} key of the issuer verifies it"
        )
    claims = verified.claims
    if claims.get("iss") != p.issuer:
        raise TokenRefused("token_issuer_unknown", f"iss {claims.get('iss')!r}")
    if p.audience not in _audiences(claims):
        raise TokenRefused("token_audience_mismatch", f"aud {claims.get('aud')!r}")
    exp = _check_times(p, claims, now)
    for path, wanted in p.require:
        found = _resolve(claims, path)
        if found != wanted or isinstance(found, bool) != isinstance(wanted, bool):
            raise TokenRefused(
                "claims_not_allowed", f"{p.name}: claim {path!r} is {found!r}, not {wanted!r}"
            )
    jti = claims.get("jti")
    if jti is not None and (not isinstance(jti, str) or not jti or len(jti) > 256):
        raise TokenRefused("token_invalid", f"jti {jti!r} is not a short string")
    subject = claims.get("sub")
    return VerifiedToken(
        provisioner=p.name,
        issuer=p.issuer,
        identity=p.identity.render(claims),
        subject=subject if isinstance(subject, str) else "",
        jti=jti,
        expires_at=exp + p.clock_skew,
    )
