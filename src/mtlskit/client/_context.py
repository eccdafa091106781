"""Client-side ``SSLContext``s for httpx and requests: files, PKCS#12, memory, and rotation.

Python's ``ssl`` loads a client key only from a file path. For a key that is not
already a file (PKCS#12, bytes in memory) mtlskit writes one for the length of a
single ``load_cert_chain`` call, and makes that file useless to anyone else: the
key inside is encrypted with a random one-time password that never leaves this
process, the file is created 0600 with ``O_EXCL`` inside a fresh 0700 directory
(``mkdtemp``), on ``/dev/shm`` when it is writable (RAM, never reaches a disk)
else in the default temporary directory, and file and directory are removed
before the call returns (also on error).

``WatchingSSLContext`` follows renewal: before each new connection it compares
the certificate and key files' (inode, size, mtime) with what it loaded, and on
a change loads them into a fresh inner context that new connections use;
established connections keep theirs. ``mtlskit renew --daemon`` replaces both
files by rename, so a reader sees either the old pair or the new one; a
mismatched pair (a rekey caught between the two renames) is skipped until the
next connection, and the old certificate stays in use meanwhile.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import ssl
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from mtlskit.certs import load_certificates
from mtlskit.errors import InputError
from mtlskit.files import read_bytes

__all__ = ["WatchingSSLContext", "pkcs12_ssl_context", "ssl_context", "watching_ssl_context"]

PathLike = str | os.PathLike[str]
Trust = PathLike | Sequence[PathLike] | None
_SHM: Final = Path("/dev/shm")
_log = logging.getLogger("mtlskit.client")


def _base_context(trust: Trust) -> ssl.SSLContext:
    """TLS 1.2+ client context verifying the server against ``trust`` (system roots if None)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _configure(context, trust)
    return context


def _configure(context: ssl.SSLContext, trust: Trust) -> None:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    if trust is None:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
        return
    paths = [trust] if isinstance(trust, str | os.PathLike) else list(trust)
    for path in paths:
        data = read_bytes(path, what="trust file")  # a one-line error naming a bad file
        certs = load_certificates(data, source=os.fspath(path))
        pem = b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in certs)
        context.load_verify_locations(cadata=pem.decode("ascii"))


def _scratch_dir() -> str | None:
    return str(_SHM) if _SHM.is_dir() and os.access(_SHM, os.W_OK | os.X_OK) else None


def load_key_and_chain(
    context: ssl.SSLContext,
    key: Any,
    chain: Sequence[x509.Certificate],
) -> None:
    """``load_cert_chain`` for a key object held in memory (see the module docstring)."""
    secret = secrets.token_urlsafe(32).encode()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(secret),
    ) + b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in chain)
    directory = tempfile.mkdtemp(prefix="mtlskit-", dir=_scratch_dir())  # mode 0700
    path = os.path.join(directory, "client.pem")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        context.load_cert_chain(path, password=secret)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
        with contextlib.suppress(OSError):
            os.rmdir(directory)


def _private_key(data: bytes, password: bytes | None, source: str) -> Any:
    try:
        return serialization.load_pem_private_key(data, password)
    except (ValueError, TypeError) as exc:
        raise InputError(f"is not a usable PEM private key: {exc}", source=source) from None


def ssl_context(
    *,
    cert: PathLike | bytes,
    key: PathLike | bytes | None = None,
    trust: Trust = None,
    password: bytes | str | None = None,
) -> ssl.SSLContext:
    """A client ``SSLContext`` presenting ``cert`` (PEM chain, leaf first) with ``key``.

    ``cert``/``key`` are paths, or PEM bytes held in memory (loaded as the module
    docstring describes). ``key`` may be left out when ``cert`` holds the key too.
    ``trust``: PEM file(s) of the server's CA — for an internal CA, pass it, so a
    public CA cannot vouch for your server; ``None`` uses the system roots.
    Use with ``httpx.Client(verify=context)`` or ``SSLContextAdapter`` for requests.
    """
    context = _base_context(trust)
    secret = password.encode() if isinstance(password, str) else password
    if isinstance(cert, bytes) or isinstance(key, bytes):
        cert_pem = cert if isinstance(cert, bytes) else read_bytes(cert, what="certificate")
        key_src: PathLike | bytes = key if key is not None else cert_pem
        key_pem = key_src if isinstance(key_src, bytes) else read_bytes(key_src, what="key")
        chain = load_certificates(cert_pem, source="cert")
        load_key_and_chain(context, _private_key(key_pem, secret, "key"), chain)
        return context
    try:
        context.load_cert_chain(os.fspath(cert), os.fspath(key) if key else None, secret)
    except (ssl.SSLError, OSError) as exc:
        raise InputError(
            f"cannot load the client certificate and key: {exc}", source=os.fspath(cert)
        ) from None
    return context


def pkcs12_ssl_context(
    p12: PathLike | bytes,
    *,
    password: bytes | str | None,
    trust: Trust = None,
) -> ssl.SSLContext:
    """A client ``SSLContext`` from a PKCS#12 file or bytes (``mtlskit export pkcs12``).

    The key never touches a readable file (module docstring). ``password`` is the
    PKCS#12 password (``None`` only for an unencrypted file).
    """
    data = p12 if isinstance(p12, bytes) else read_bytes(p12, what="PKCS#12 file")
    source = "pkcs12" if isinstance(p12, bytes) else os.fspath(p12)
    secret = password.encode() if isinstance(password, str) else password
    try:
        key, cert, extra = pkcs12.load_key_and_certificates(data, secret)
    except (ValueError, TypeError) as exc:
        raise InputError(f"cannot be opened: {exc}", source=source) from None
    if key is None or cert is None:
        raise InputError("holds no private key and certificate", source=source)
    context = _base_context(trust)
    load_key_and_chain(context, key, [cert, *extra])
    return context


def _stamp(paths: Sequence[Path]) -> tuple[tuple[int, int, int], ...]:
    out = []
    for path in paths:
        try:
            info = os.stat(path)
        except OSError:
            out.append((-1, -1, -1))
            continue
        out.append((info.st_ino, info.st_size, info.st_mtime_ns))
    return tuple(out)


class WatchingSSLContext(ssl.SSLContext):
    """A client context whose certificate follows its files (see the module docstring).

    It is an ``ssl.SSLContext`` (so httpx's ``verify=`` and urllib3 accept it);
    ``wrap_socket``/``wrap_bio`` hand each new connection to the newest inner
    context. Settings a library applies to it later (ALPN, ``check_hostname``,
    ``verify_mode``) are carried over to the inner contexts.
    """

    def __new__(cls, *_: object, **__: object) -> WatchingSSLContext:
        return super().__new__(cls, ssl.PROTOCOL_TLS_CLIENT)

    def __init__(self, *, cert: PathLike, key: PathLike, trust: Trust = None) -> None:
        self._paths = (Path(cert), Path(key))
        self._trust = trust
        self._lock = threading.Lock()
        self._alpn: list[str] | None = None
        self._failed: tuple[tuple[int, int, int], ...] | None = None
        _configure(self, trust)
        stamp = _stamp(self._paths)
        self._inner = self._build()
        self._leaf = self._next_leaf
        self._stamp = stamp
        self.reloads = 0

    def _build(self) -> ssl.SSLContext:
        data = read_bytes(self._paths[0], what="certificate")
        inner = ssl_context(cert=self._paths[0], key=self._paths[1], trust=self._trust)
        self._next_leaf = load_certificates(data, source=str(self._paths[0]))[0]
        inner.check_hostname = self.check_hostname
        inner.verify_mode = self.verify_mode
        if self._alpn is not None:
            inner.set_alpn_protocols(self._alpn)
        return inner

    @property
    def certificate(self) -> x509.Certificate:
        """The leaf that new connections present now (after a reload check)."""
        self.current()
        return self._leaf

    def current(self) -> ssl.SSLContext:
        """The inner context for the next connection, reloaded first if the files changed."""
        stamp = _stamp(self._paths)
        if stamp not in (self._stamp, self._failed):
            with self._lock:
                if stamp != self._stamp:
                    try:
                        inner = self._build()
                    except InputError as exc:  # mid-rename, or broken: keep the old pair
                        self._failed = stamp
                        _log.warning("keeping the current client certificate: %s", exc)
                    else:
                        self._inner, self._stamp = inner, stamp
                        self._leaf = self._next_leaf
                        self.reloads += 1
        inner = self._inner
        if inner.check_hostname != self.check_hostname:
            inner.check_hostname = self.check_hostname
        if inner.verify_mode != self.verify_mode:
            inner.verify_mode = self.verify_mode
        return inner

    def set_alpn_protocols(self, alpn_protocols: Any) -> None:
        self._alpn = list(alpn_protocols)
        super().set_alpn_protocols(self._alpn)
        self._inner.set_alpn_protocols(self._alpn)

    def wrap_socket(self, sock: Any, *args: Any, **kwargs: Any) -> ssl.SSLSocket:  # type: ignore[override]
        return self.current().wrap_socket(sock, *args, **kwargs)

    def wrap_bio(self, incoming: Any, outgoing: Any, *args: Any, **kwargs: Any) -> ssl.SSLObject:  # type: ignore[override]
        return self.current().wrap_bio(incoming, outgoing, *args, **kwargs)


def watching_ssl_context(
    *, cert: PathLike, key: PathLike, trust: Trust = None
) -> WatchingSSLContext:
    """A ``WatchingSSLContext``: new connections present whatever ``cert``/``key`` hold now.

    Pair it with ``mtlskit renew --daemon`` writing the same files; no restart, no
    signal. Raises ``InputError`` if the files are unusable at start.
    """
    return WatchingSSLContext(cert=cert, key=key, trust=trust)
