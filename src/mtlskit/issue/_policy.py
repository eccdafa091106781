"""Who a CA may issue to, for how long, and for which keys: the rules a request must pass.

Pure. A refusal is an ``IssuanceRefused`` that names the rule broken (``allowed_ids``,
``max_ttl``, ``key_types``, ...) so an operator knows which line of ``ca.toml`` said no.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from mtlskit.certs import DSA_KEY_TYPES, PublicKey
from mtlskit.errors import InputError, MtlskitError
from mtlskit.identity import ClientIdentity

__all__ = [
    "IdentityPattern",
    "IdentityPolicy",
    "IssuanceRefused",
    "format_duration",
    "key_type_name",
    "parse_duration",
]

_DURATION: Final = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


class IssuanceRefused(MtlskitError):
    """The CA said no (a negative verdict, exit 1); ``rule`` is the policy key that refused."""

    def __init__(self, rule: str, reason: str) -> None:
        self.rule = rule
        self.reason = reason
        super().__init__(f"refused by rule {rule}: {reason}")


def parse_duration(text: str, *, source: str | None = None) -> dt.timedelta:
    """``15m``, ``24h``, ``7d``, ``1h30m``: as people type them; bare numbers have no unit."""
    match = _DURATION.fullmatch(text.strip())
    if not text.strip() or match is None:
        raise InputError(
            f"invalid duration {text!r}: use e.g. 15m, 24h, 7d or 1h30m", source=source
        )
    days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
    duration = dt.timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    if duration <= dt.timedelta(0):
        raise InputError(f"duration {text!r} must be longer than zero", source=source)
    return duration


def format_duration(duration: dt.timedelta) -> str:
    """The inverse of ``parse_duration``, largest units first (``90000s`` → ``1d1h``)."""
    seconds = int(duration.total_seconds())
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def key_type_name(key: PublicKey) -> str:
    """The ``--key-type`` spelling of a public key (``ec-p256``, ``rsa-2048``, ``ed25519``)."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        return {"secp256r1": "ec-p256", "secp384r1": "ec-p384", "secp521r1": "ec-p521"}.get(
            key.curve.name, f"ec-{key.curve.name}"
        )
    if isinstance(key, rsa.RSAPublicKey):
        return f"rsa-{key.key_size}"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "ed25519"
    if isinstance(key, ed448.Ed448PublicKey):
        return "ed448"
    if isinstance(key, DSA_KEY_TYPES):
        return f"dsa-{key.key_size}"  # type: ignore[attr-defined]
    return type(key).__name__


@dataclass(frozen=True, slots=True)
class IdentityPattern:
    """An allowed identity: exact, or with ``*`` (one segment) and ``**`` (any depth).

    Segments are split on ``/`` for URIs and SPIFFE IDs, on ``.`` for DNS names, and an
    email's local part may be ``*``; wildcards are whole segments only, so
    ``spiffe://acme.com/bill*`` is an error rather than a surprise. ``**`` alone allows
    every identity and says so loudly in ``ca.toml``.
    """

    text: str
    regex: re.Pattern[str]

    @classmethod
    def parse(cls, text: str, *, source: str | None = None) -> IdentityPattern:
        if text in {"*", "**"}:
            return cls(text, re.compile(r".+", re.DOTALL))
        if "://" in text or text.startswith(("spiffe:", "urn:")):
            separator = "/"
        elif "@" in text:
            separator = "@"
        else:
            separator = "."
        parts = []
        for part in text.split(separator):
            if part == "**":
                parts.append(".+")
            elif part == "*":
                parts.append(f"[^{re.escape(separator)}]+")
            elif "*" in part:
                raise InputError(
                    f"pattern {text!r}: a wildcard must be a whole segment ('*' or '**')",
                    source=source,
                )
            else:
                parts.append(re.escape(part))
        return cls(text, re.compile(re.escape(separator).join(parts)))

    def matches(self, identity: str) -> bool:
        return self.regex.fullmatch(identity) is not None

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True, slots=True, kw_only=True)
class IdentityPolicy:
    """The CA's issuance rules. Default deny: no ``allowed_ids`` means nobody gets a certificate."""

    allowed_ids: tuple[IdentityPattern, ...]
    max_ttl: dt.timedelta
    key_types: frozenset[str]

    def check(self, identity: ClientIdentity, key: PublicKey, ttl: dt.timedelta) -> None:
        """Raise ``IssuanceRefused`` naming the first rule the request breaks."""
        if not any(pattern.matches(identity.value) for pattern in self.allowed_ids):
            allowed = ", ".join(str(p) for p in self.allowed_ids) or "none configured"
            raise IssuanceRefused(
                "allowed_ids", f"identity {identity.value} matches no allowed pattern ({allowed})"
            )
        self.check_lifetime_and_key(key, ttl)

    def check_lifetime_and_key(self, key: PublicKey, ttl: dt.timedelta) -> None:
        """The rules that hold for every certificate, server ones too (``allowed_ids`` say
        which clients may have one; a server certificate names hosts, not a client)."""
        if ttl > self.max_ttl:
            raise IssuanceRefused(
                "max_ttl",
                f"requested TTL {format_duration(ttl)} exceeds the maximum "
                f"{format_duration(self.max_ttl)}",
            )
        name = key_type_name(key)
        if name not in self.key_types:
            raise IssuanceRefused(
                "key_types",
                f"key type {name} is not accepted (accepted: {', '.join(sorted(self.key_types))})",
            )
