"""The file-system edge: read inputs with errors that name the file, write secrets 0600.

Every shell reads and writes through here so that "no such file", "is a directory"
and "permission denied" read the same everywhere, and so that no key is ever
written world-readable, not even for an instant.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from mtlskit.errors import InputError

__all__ = [
    "INSECURE_KEYS_ENV",
    "check_not_writable_by_others",
    "check_secret_permissions",
    "make_private_directory",
    "read_bytes",
    "read_password",
    "write_public",
    "write_secret",
]

INSECURE_KEYS_ENV = "MTLSKIT_ALLOW_INSECURE_KEY_PERMISSIONS"

MAX_INPUT_BYTES = 64 * 1024 * 1024  # a CRL of a million serials is ~40 MB; beyond that is a mistake


def read_bytes(path: str | os.PathLike[str], *, what: str = "file") -> bytes:
    """The whole file, or an ``InputError`` that names it and says why it cannot be read."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as handle:
            data = handle.read(MAX_INPUT_BYTES + 1)
    except FileNotFoundError:
        raise InputError(f"no such {what}", source=name) from None
    except IsADirectoryError:
        raise InputError(f"is a directory, expected a {what}", source=name) from None
    except PermissionError:
        raise InputError("permission denied", source=name) from None
    except OSError as exc:
        raise InputError(f"cannot be read: {exc.strerror or exc}", source=name) from None
    if len(data) > MAX_INPUT_BYTES:
        raise InputError(f"is larger than {MAX_INPUT_BYTES // 2**20} MiB", source=name)
    return data


def check_secret_permissions(path: str | os.PathLike[str], *, what: str = "private key") -> None:
    """Refuse a key file that group or others may read: it has already leaked to them.

    ``$MTLSKIT_ALLOW_INSECURE_KEY_PERMISSIONS=1`` is the explicit escape hatch, for
    keys on file systems without Unix modes.
    """
    name = os.fspath(path)
    try:
        mode = os.stat(name).st_mode & 0o777
    except OSError:
        return  # reading it reports the real problem (missing, permission denied)
    if mode & 0o077 and os.environ.get(INSECURE_KEYS_ENV) != "1":
        raise InputError(
            f"{what} is readable by group or others (mode {mode:04o}): chmod 600 it, or set "
            f"{INSECURE_KEYS_ENV}=1 to accept that",
            source=name,
        )


def check_not_writable_by_others(path: str | os.PathLike[str], *, what: str) -> None:
    """Refuse a directory or file that group or others may write: whoever can replace it
    decides what the command does (a rewritten ca.toml raises ``max_ttl`` for the next
    issuance). The same escape hatch as for keys, for file systems without Unix modes."""
    name = os.fspath(path)
    try:
        mode = os.stat(name).st_mode & 0o777
    except OSError:
        return  # reading it reports the real problem
    if mode & 0o022 and os.environ.get(INSECURE_KEYS_ENV) != "1":
        raise InputError(
            f"{what} is writable by group or others (mode {mode:04o}): chmod go-w it",
            source=name,
        )


def make_private_directory(path: str | os.PathLike[str]) -> Path:
    """Create (or take over) a directory as 0700 whatever the umask: a CA's or a client's."""
    target = Path(path)
    target.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(target, 0o700)  # mkdir's mode passes through the umask; an existing one keeps its
    return target


def read_password(
    *, file: str | os.PathLike[str] | None, env: str, prompt: str | None
) -> bytes | None:
    """A password from a file (first line), an environment variable, or an interactive prompt.

    The prompt is only used when standard input is a terminal; with none of the
    three the result is ``None`` and the caller decides whether that is an error.
    """
    if file is not None:
        check_secret_permissions(file, what="password file")  # as for the key it protects
        lines = read_bytes(file, what="password file").splitlines()
        return lines[0] if lines else b""
    if env in os.environ:
        return os.environ[env].encode()
    if prompt is not None and os.isatty(0):
        import getpass

        return getpass.getpass(prompt).encode()
    return None


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def write_secret(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write a private key or password: mode 0600 from creation, replaced atomically."""
    target = Path(path)
    _write_atomic(target, data, 0o600)
    return target


def write_public(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write a certificate, CRL or report: mode 0644, replaced atomically."""
    target = Path(path)
    _write_atomic(target, data, 0o644)
    return target
