"""A ``mtlskit ca init`` directory on disk: its config, its CA keys and certificates, its store.

The one place that knows the directory's layout, so that the ``ca`` commands, the
probe (which signs defective variants with the CA key) and the benchmarks open a CA
the same way. IO shell: reads files; the CA logic itself is in ``mtlskit.issue``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from mtlskit.certs import load_certificates, load_private_key
from mtlskit.errors import InputError
from mtlskit.files import check_not_writable_by_others, check_secret_permissions, read_bytes
from mtlskit.issue import PROFILES, CaConfig, CertificateAuthority, Issuer, parse_ca_config

if TYPE_CHECKING:
    from cryptography import x509

    from mtlskit.store import SqlStore

__all__ = ["CONFIG", "DB_URL_ENV", "PASSPHRASE_ENV", "CaDirectory"]

CONFIG: Final = "ca.toml"
PASSPHRASE_ENV: Final = "MTLSKIT_CA_PASSPHRASE"
DB_URL_ENV: Final = "MTLSKIT_DB_URL"  # the whole store URL, password included; never written


@dataclass(frozen=True, slots=True, kw_only=True)
class CaDirectory:
    path: Path
    config: CaConfig

    @classmethod
    def open(cls, directory: Path) -> CaDirectory:
        """Read ``ca.toml``; ``InputError`` if this is not a CA directory or the file is bad."""
        config_path = directory / CONFIG
        if not config_path.exists():
            raise InputError(
                f"is not a CA directory (no {CONFIG}; run `mtlskit ca init` first)",
                source=str(directory),
            )
        check_not_writable_by_others(directory, what="CA directory")
        check_not_writable_by_others(config_path, what="CA configuration")
        data = read_bytes(config_path, what="CA configuration")
        return cls(path=directory, config=parse_ca_config(data, source=str(config_path)))

    @property
    def issuer_stem(self) -> str:
        return "issuing" if self.config.intermediate else "root"

    def file(self, name: str) -> Path:
        return self.path / name

    def key_is_encrypted(self, *, stem: str | None = None) -> bool:
        """Whether using the key needs a secret: a passphrase, or a token key's PIN."""
        if self.config.pkcs11 is not None:
            return True
        key_path = self.file(f"{stem or self.issuer_stem}.key")
        return b"ENCRYPTED PRIVATE KEY" in read_bytes(key_path, what="CA key")

    def issuer(self, password: bytes | None, *, stem: str | None = None) -> Issuer:
        """The issuing CA (or, with ``stem="root"``, the root) with its key decrypted, or
        with ca.toml's ``[pkcs11]``, its key opened in the token (``password`` the PIN)."""
        stem = stem or self.issuer_stem
        if self.config.pkcs11 is not None:
            return self._token_issuer(password, stem)
        key_path = self.file(f"{stem}.key")
        check_secret_permissions(key_path, what="CA key")
        key_data = read_bytes(key_path, what="CA key")
        if b"ENCRYPTED PRIVATE KEY" in key_data and password is None:
            raise InputError(
                f"the CA key is encrypted: give --passphrase-file or set ${PASSPHRASE_ENV}",
                source=str(key_path),
            )
        try:
            key = load_private_key(key_data, source=str(key_path), password=password)
        except InputError as exc:
            if "wrong password" in exc.detail:
                raise InputError("wrong passphrase for the CA key", source=str(key_path)) from None
            raise
        chain_path = self.file("chain.pem" if stem == self.issuer_stem else f"{stem}.pem")
        chain = tuple(load_certificates(read_bytes(chain_path), source=str(chain_path)))
        if chain[0].public_key() != key.public_key():
            raise InputError(
                f"{key_path} does not belong to its certificate", source=str(chain_path)
            )
        return Issuer(cert=chain[0], key=key, chain=chain)

    def _token_issuer(self, pin: bytes | None, stem: str) -> Issuer:
        from mtlskit.keystore import PIN_ENV, Pkcs11Uri, open_token_key

        token = self.config.pkcs11
        assert token is not None
        if pin is None:
            raise InputError(
                f"the CA keys are in a PKCS#11 token: set ${PIN_ENV} or give a PIN file"
            )
        text = token.root if stem == "root" else token.issuing or token.root
        uri = Pkcs11Uri.parse(text, source=f"{self.file(CONFIG)}: pkcs11.{stem}")
        key = open_token_key(token.module, uri, pin)
        chain_path = self.file("chain.pem" if stem == self.issuer_stem else f"{stem}.pem")
        chain = tuple(load_certificates(read_bytes(chain_path), source=str(chain_path)))
        if chain[0].public_key() != key.public_key():
            raise InputError(f"{uri} does not belong to its certificate", source=str(chain_path))
        return Issuer(cert=chain[0], key=key, chain=chain)

    def issuer_certificate(self) -> x509.Certificate:
        """The issuing CA's certificate alone (no passphrase): what checks its signatures."""
        path = self.file("chain.pem")
        return load_certificates(read_bytes(path, what="CA chain"), source=str(path))[0]

    def database_url(self, override: str | None = None) -> str:
        """The store's URL with its password: ``override``, else $MTLSKIT_DB_URL, else
        ca.toml's ``database`` plus the first line of ``database_password_file``."""
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        from mtlskit.store import database_url

        url = database_url(
            self.path, override or os.environ.get(DB_URL_ENV) or self.config.database
        )
        secret_file = self.config.database_password_file
        if "://" not in url or secret_file is None or url.startswith("sqlite"):
            return url
        try:
            parsed = make_url(url)
        except ArgumentError:
            return url  # SqlStore.open names the bad URL
        if parsed.password is not None:
            return url
        path = self.path / secret_file
        check_secret_permissions(path, what="database password file")
        lines = read_bytes(path, what="database password file").splitlines()
        if not lines or not lines[0]:
            raise InputError("is empty (expected the database password)", source=str(path))
        password = lines[0].decode("utf-8", errors="strict")
        return parsed.set(password=password).render_as_string(hide_password=False)

    def store(
        self, *, create: bool = False, db: str | None = None, url: str | None = None
    ) -> SqlStore:
        from mtlskit.store import SqlStore  # SQLAlchemy loads only when a store is opened

        return SqlStore.open(
            url or self.database_url(db),
            create=create,
            synchronous="FULL" if self.config.durability == "full" else "NORMAL",
        )

    def authority(self, issuer: Issuer, store: SqlStore) -> CertificateAuthority:
        default_ttl, _, crl_validity = self.config.durations()
        return CertificateAuthority(
            issuer=issuer,
            profile=PROFILES[self.config.profile],
            policy=self.config.policy(),
            store=store,
            default_ttl=default_ttl,
            crl_validity=crl_validity,
            csr_names=self.config.csr_names,
        )
