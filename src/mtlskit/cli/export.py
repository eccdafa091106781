"""``mtlskit export pkcs12``: certificate, chain and key in one file for browsers and Java."""

from __future__ import annotations

from pathlib import Path

import click
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from mtlskit.cli._inputs import read_certificates, read_private_key
from mtlskit.errors import InputError
from mtlskit.files import read_password, write_secret
from mtlskit.identity import ClientIdentity, IdentityError

PASSWORD_ENV = "MTLSKIT_PKCS12_PASSWORD"
# A PKCS#12 is a key at rest that every client decrypts each time it starts; OWASP's 600,000
# (for a server's password table) cost 0.16 s in Python, 0.23 s in Node per load. 100,000 is
# Botan's "modern" profile, 10x Java's default and 50x OpenSSL 3's (docs/interop.md).
PBKDF2_ROUNDS = 100_000


@click.group("export")
def command() -> None:
    """Convert issued certificates and keys for other consumers."""


@command.command("pkcs12")
@click.option("--cert", "cert_path", required=True, help="Certificate, or chain leaf first (PEM).")
@click.option("--key", "key_path", required=True, help="The certificate's private key.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--password-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"Export password (first line); else ${PASSWORD_ENV} or a prompt. Never a default.",
)
@click.option(
    "--legacy",
    is_flag=True,
    help=(
        "3DES + SHA-1 MAC, for readers without PBES2/SHA-256: Go golang.org/x/crypto/pkcs12, "
        "Java before 8u301/11.0.12, Windows before 10 1709/Server 2019, macOS Keychain "
        "(reported failing on the default). See docs/interop.md."
    ),
)
@click.option("--name", "friendly_name", help="Friendly name (alias); default: the identity.")
def pkcs12_command(
    *,
    cert_path: str,
    key_path: str,
    out: Path,
    password_file: Path | None,
    legacy: bool,
    friendly_name: str | None,
) -> None:
    """Write a password-protected PKCS#12 (mode 0600).

    AES-256-CBC with PBKDF2-HMAC-SHA256 (100,000 iterations) and a SHA-256 MAC by default,
    which OpenSSL 1.1/3, Node, Python, Java 8u301/11.0.12+, Windows 10 1709+, Firefox and
    Go's software.sslmate.com/src/go-pkcs12 read; --legacy for Go's x/crypto/pkcs12, older
    Java and Windows, and macOS Keychain.

    \b
    Example:
      mtlskit export pkcs12 --cert client/chain.pem --key client/key.pem \\
          --out client.p12 --password-file p12.pass
    """
    chain = read_certificates(cert_path)
    key = read_private_key(key_path)
    if chain[0].public_key() != key.public_key():
        raise InputError(
            f"the key in {key_path} does not belong to this certificate", source=cert_path
        )
    password = read_password(
        file=password_file, env=PASSWORD_ENV, prompt=f"Export password for {out}: "
    )
    if not password:
        raise InputError(
            f"no export password: give --password-file or set ${PASSWORD_ENV}; "
            "mtlskit never writes a PKCS#12 with a default or empty password",
            source=str(out),
        )
    if friendly_name is None:
        try:
            friendly_name = ClientIdentity.from_certificate(chain[0], allow_cn=True).value
        except IdentityError:
            friendly_name = "client"
    builder = serialization.PrivateFormat.PKCS12.encryption_builder()
    if legacy:
        builder = builder.key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC).hmac_hash(
            hashes.SHA1()
        )
    else:
        builder = (
            builder.kdf_rounds(PBKDF2_ROUNDS)
            .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
            .hmac_hash(hashes.SHA256())
        )
    data = pkcs12.serialize_key_and_certificates(
        friendly_name.encode(),
        key,  # type: ignore[arg-type]
        chain[0],
        chain[1:] or None,
        builder.build(password),
    )
    write_secret(out, data)
    scheme = (
        "3DES/SHA-1 (legacy)"
        if legacy
        else f"AES-256-CBC, PBKDF2-SHA256 {PBKDF2_ROUNDS:,} iterations, SHA-256 MAC"
    )
    click.echo(f"wrote {out} (0600): {len(chain)} certificate(s) and the key, {scheme}")
