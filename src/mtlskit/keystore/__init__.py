"""``keystore``: CA keys that live outside the CA directory, in a PKCS#11 token.

IO shell over python-pkcs11. A ``TokenKey`` is what ``mtlskit.issue`` calls an
``ExternalKey``: it signs certificate and CRL builders in the token, and raises
``KeyUnavailable`` when it cannot. ca.toml names the key by an RFC 7512 URI
(``Pkcs11Uri``); the PIN comes from ``$MTLSKIT_PKCS11_PIN`` or a file, never ca.toml.
"""

from mtlskit.keystore._token import (
    PIN_ENV,
    TOKEN_KEY_TYPES,
    TokenKey,
    generate_token_key,
    open_token_key,
)
from mtlskit.keystore._uri import Pkcs11Uri

__all__ = [
    "PIN_ENV",
    "TOKEN_KEY_TYPES",
    "Pkcs11Uri",
    "TokenKey",
    "generate_token_key",
    "open_token_key",
]
