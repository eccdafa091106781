"""RFC 7512 PKCS#11 URIs: the name ca.toml gives a key that lives in a token.

Pure: text in, ``Pkcs11Uri`` out and back. Only the path attributes mtlskit uses
(``token``, ``object``, ``id``, ``type``) are read; any other one is refused rather
than ignored, so a URI never selects a different key from the one its author meant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final
from urllib.parse import quote, unquote, unquote_to_bytes

from mtlskit.errors import InputError

__all__ = ["Pkcs11Uri"]

_SCHEME: Final = "pkcs11:"
_KNOWN: Final = frozenset({"token", "object", "id", "type"})
_SAFE: Final = "-._~!$&'()*+,=:@"  # RFC 7512 pk11-pchar without ';' and '%'


@dataclass(frozen=True, slots=True, kw_only=True)
class Pkcs11Uri:
    """``pkcs11:token=LABEL;object=LABEL;type=private``: one private key in one token."""

    token: str
    object: str
    id: bytes | None = None

    @classmethod
    def parse(cls, text: str, *, source: str = "PKCS#11 URI") -> Pkcs11Uri:
        if not text.startswith(_SCHEME):
            raise InputError(f"{text!r} is not a PKCS#11 URI (pkcs11:...)", source=source)
        path = text[len(_SCHEME) :].split("?", 1)[0]  # query attributes (pin-value) unused
        if "pin-value=" in text or "pin-source=" in text:
            raise InputError("a PKCS#11 URI here never carries the PIN", source=source)
        fields: dict[str, str] = {}
        raw: dict[str, str] = {}
        for part in filter(None, path.split(";")):
            name, sep, value = part.partition("=")
            if not sep or name not in _KNOWN:
                raise InputError(
                    f"unsupported attribute {name!r} in {text!r} "
                    f"(known: {', '.join(sorted(_KNOWN))})",
                    source=source,
                )
            if name in fields:
                raise InputError(f"{name!r} given twice in {text!r}", source=source)
            raw[name] = value
            fields[name] = unquote(value, errors="strict")
        if fields.get("type", "private") != "private":
            raise InputError(f"{text!r} must name a private key (type=private)", source=source)
        if not fields.get("token") or not fields.get("object"):
            raise InputError(f"{text!r} needs both token= and object=", source=source)
        key_id = unquote_to_bytes(raw["id"]) if "id" in raw else None
        return cls(token=fields["token"], object=fields["object"], id=key_id)

    def __str__(self) -> str:
        parts = [
            f"token={quote(self.token, safe=_SAFE)}",
            f"object={quote(self.object, safe=_SAFE)}",
        ]
        if self.id is not None:
            parts.append("id=" + "".join(f"%{byte:02x}" for byte in self.id))
        return _SCHEME + ";".join([*parts, "type=private"])
