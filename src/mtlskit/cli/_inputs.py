"""Reading certificates and keys named on the command line, with passwords resolved the same way
by every command: ``--password-file``, then ``MTLSKIT_PKCS12_PASSWORD``, then a prompt on a TTY."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509

from mtlskit.certs import PrivateKey, is_pkcs12, load_certificates, load_private_key
from mtlskit.files import check_secret_permissions, read_bytes, read_password

PASSWORD_ENV = "MTLSKIT_PKCS12_PASSWORD"


def _password_for(data: bytes, path: str, password_file: Path | None) -> bytes | None:
    if password_file is None and not is_pkcs12(data):
        return None
    return read_password(file=password_file, env=PASSWORD_ENV, prompt=f"Password for {path}: ")


def read_certificates(path: str, *, password_file: Path | None = None) -> list[x509.Certificate]:
    data = read_bytes(path, what="certificate file")
    return load_certificates(data, source=path, password=_password_for(data, path, password_file))


def read_private_key(path: str, *, password_file: Path | None = None) -> PrivateKey:
    """The key, refused if group or others may read the file (``check_secret_permissions``):
    the same rule for every command, as for server and CA keys."""
    check_secret_permissions(path, what="private key")
    data = read_bytes(path, what="key file")
    return load_private_key(data, source=path, password=_password_for(data, path, password_file))
