"""``mtlskit ca``: a private CA in a directory: init, issue, sign, revoke, crl, list, audit,
and enrollment: token, requests, serve.

Argument handling only: the decisions are ``mtlskit.issue.CertificateAuthority``'s,
the records ``mtlskit.store.SqlStore``'s. Every input (config, passphrase, CSR) is
read and checked before the store is opened, so a bad one changes nothing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import click
from cryptography import x509

from mtlskit.cadir import CONFIG, DB_URL_ENV, PASSPHRASE_ENV, CaDirectory
from mtlskit.certs import (
    Fingerprint,
    KeyType,
    certificate_pem,
    chain_pem,
    generate_private_key,
    load_certificates,
    load_private_key,
    private_key_pem,
)
from mtlskit.errors import InputError
from mtlskit.files import (
    check_secret_permissions,
    make_private_directory,
    read_bytes,
    read_password,
    write_public,
    write_secret,
)
from mtlskit.identity import ClientIdentity, SpiffeIdError, TrustDomain
from mtlskit.issue import (
    PROFILES,
    REVOCATION_REASONS,
    ApprovalRefused,
    CertificateStatus,
    IssuanceRefused,
    Issued,
    Issuer,
    RequestStatus,
    build_ca_certificate,
    build_crl,
    check_approval,
    check_not_counted,
    load_csr,
    new_token,
    parse_duration,
    parse_identity,
    parse_server_hosts,
    register_approver,
    render_ca_config,
    required_approvals,
    revoked_by,
    sign_approval,
    validate_ca_config,
    verify_audit_chain,
)

if TYPE_CHECKING:
    import socket
    import ssl
    from collections.abc import Callable

    from click.decorators import FC

    from mtlskit.caserver import ConfigWatch
    from mtlskit.issue import CaConfig

ROOT_VALIDITY: Final = dt.timedelta(days=3650)
ISSUING_VALIDITY: Final = dt.timedelta(days=1825)
# A token object label per CA key: PREFIX-root, PREFIX-issuing (plain, so URIs need no quoting).
_KEY_LABEL: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

_passphrase_option = click.option(
    "--passphrase-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"CA key passphrase (first line); else ${PASSPHRASE_ENV}, else a prompt on a TTY.",
)
_dir_argument = click.argument("directory", type=click.Path(file_okay=False, path_type=Path))


def _cert_and_key_options(*, cert: str, key: str) -> Callable[[FC], FC]:
    """--cert and --key as file paths (``cert_path``, ``key_path``), with each command's help."""

    def option(name: str, dest: str, text: str) -> Callable[[FC], FC]:
        return click.option(name, dest, type=click.Path(dir_okay=False, path_type=Path), help=text)

    return lambda function: option("--cert", "cert_path", cert)(
        option("--key", "key_path", key)(function)
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _refused(refused: IssuanceRefused) -> None:
    """A CA refusal is a negative verdict: one line, exit 1."""
    click.echo(f"mtlskit: {refused}", err=True)
    raise click.exceptions.Exit(1)


# --- reading a CA directory --------------------------------------------------------


def _issuer(
    ca_dir: CaDirectory, passphrase_file: Path | None, *, stem: str | None = None
) -> Issuer:
    """The issuing CA (or the root) with its key decrypted; the passphrase asked only if needed.

    With the keys in a PKCS#11 token, --passphrase-file (or $MTLSKIT_PKCS11_PIN) is its PIN."""
    password = None
    if ca_dir.config.pkcs11 is not None:
        from mtlskit.keystore import PIN_ENV

        password = read_password(file=passphrase_file, env=PIN_ENV, prompt="Token PIN: ")
    elif ca_dir.key_is_encrypted(stem=stem):
        password = read_password(
            file=passphrase_file, env=PASSPHRASE_ENV, prompt="CA key passphrase: "
        )
    return ca_dir.issuer(password, stem=stem)


def _without_password(url: str) -> tuple[str, bool]:
    """(URL to record in ca.toml, whether a password was taken out of it)."""
    from sqlalchemy.engine import URL, make_url
    from sqlalchemy.exc import ArgumentError

    if "://" not in url:
        return url, False
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise InputError("not a database URL", source="--db") from None
    if parsed.password is None:
        return url, False
    bare = URL.create(  # URL.set(password=None) keeps the password
        parsed.drivername,
        username=parsed.username,
        host=parsed.host,
        port=parsed.port,
        database=parsed.database,
        query=parsed.query,
    )
    return bare.render_as_string(hide_password=False), True


def _ttl(text: str | None) -> dt.timedelta | None:
    return parse_duration(text, source="--ttl") if text is not None else None


def _report(issued: Issued, files: dict[str, str], as_json: bool) -> None:
    cert = issued.cert
    if as_json:
        click.echo(
            json.dumps(
                {
                    "serial": f"{cert.serial_number:x}",
                    "fingerprint": str(issued.fingerprint),
                    "not_after": cert.not_valid_after_utc.isoformat(),
                    "files": files,
                    "dropped": list(issued.dropped),
                },
                indent=2,
            )
        )
        return
    click.echo(f"issued serial {cert.serial_number:x}, valid until {cert.not_valid_after_utc}")
    click.echo(f"SHA-256 fingerprint: {issued.fingerprint}")
    for what, path in files.items():
        click.echo(f"  {what}: {path}")
    for item in issued.dropped:
        click.echo(f"dropped from the CSR: {item}")


# --- the group ---------------------------------------------------------------------


@click.group("ca")
def command() -> None:
    """A private CA that checks identity and decides every attribute itself.

    Files in DIR: ca.toml (policy), root.pem (the trust anchor to hand to services),
    chain.pem (issuing CA up to the root), the encrypted CA keys, and ca.db (records and
    a hash-chained audit log) — or, with `ca init --db postgresql://...`, that store in
    PostgreSQL, shared by several `ca serve` nodes (docs/ca-ha.md; the password comes from
    $MTLSKIT_DB_URL, database_password_file or ~/.pgpass, never from ca.toml).
    """


@command.command("init")
@_dir_argument
@click.option(
    "--name", help="CA name, used in the CA certificates' subjects (default: DIR's name)."
)
@click.option("--trust-domain", help="SPIFFE trust domain; allows spiffe://TD/** by default.")
@click.option("--no-intermediate", is_flag=True, help="One tier: the root signs leaves itself.")
@click.option(
    "--key-type",
    type=click.Choice([kind.value for kind in KeyType]),
    default=KeyType.EC_P256.value,
    show_default=True,
    help="For the CA keys.",
)
@click.option(
    "--profile",
    type=click.Choice(sorted(PROFILES)),
    default="client-auth",
    show_default=True,
    help="client-auth: EKU clientAuth only; spiffe: X509-SVID (serverAuth + clientAuth).",
)
@click.option(
    "--allow",
    "allowed",
    multiple=True,
    help="Allowed identity pattern ('*' one segment, '**' any depth); repeatable.",
)
@click.option("--max-ttl", default="7d", show_default=True, help="Longest lifetime issued.")
@click.option("--default-ttl", default="24h", show_default=True, help="Lifetime without --ttl.")
@click.option(
    "--db",
    help="Store URL: postgresql://USER@HOST:PORT/DB for several nodes (default: SQLite ca.db "
    f"in DIR; else ${DB_URL_ENV}). A password in it is used but never written to ca.toml.",
)
@click.option(
    "--db-password-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File whose first line is the database password; its path goes into ca.toml.",
)
@click.option(
    "--name-constraints",
    is_flag=True,
    help="Constrain the issuing CA to the trust domain as a DNS name. Opt-in: it does not "
    "constrain URI SANs (SPIFFE IDs); see --name-constraints-uri.",
)
@click.option(
    "--name-constraints-uri",
    is_flag=True,
    help="Also add a URI name constraint for the trust domain. Chains with it are REJECTED "
    "by pyca/cryptography's verifier (and so by `mtlskit verify`): 'unsupported name "
    "constraint'. Only for verifiers known to enforce it (OpenSSL does).",
)
@_passphrase_option
@click.option(
    "--insecure-no-passphrase",
    is_flag=True,
    help="Store the CA keys UNENCRYPTED. For throwaway test CAs only.",
)
@click.option(
    "--key-store",
    type=click.Choice(["file", "pkcs11"]),
    default="file",
    show_default=True,
    help="file: encrypted root.key/issuing.key in DIR; pkcs11: keys generated inside a "
    "PKCS#11 token (HSM, SoftHSM2), sensitive and never extractable (docs/hsm.md).",
)
@click.option(
    "--pkcs11-module",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The token's PKCS#11 library, e.g. /usr/lib/softhsm/libsofthsm2.so.",
)
@click.option("--token-label", help="Label of the (initialised) token to generate the keys in.")
@click.option(
    "--key-label",
    metavar="PREFIX",
    help="Label prefix of the CA's keys in the token: PREFIX-root and PREFIX-issuing "
    "(default mtlskit), so several CAs can share one token. Recorded in ca.toml's URIs.",
)
@click.option(
    "--pin-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Token user PIN (first line); else $MTLSKIT_PKCS11_PIN, else a prompt on a TTY.",
)
@click.option(
    "--import-key",
    is_flag=True,
    help="Use key pairs already in the token, labelled PREFIX-root and PREFIX-issuing "
    "(sensitive, not extractable), instead of generating them.",
)
def init_command(  # noqa: PLR0917 - click passes every option by keyword
    directory: Path,
    name: str | None,
    trust_domain: str | None,
    no_intermediate: bool,
    key_type: str,
    profile: str,
    allowed: tuple[str, ...],
    max_ttl: str,
    default_ttl: str,
    db: str | None,
    db_password_file: Path | None,
    name_constraints: bool,
    name_constraints_uri: bool,
    passphrase_file: Path | None,
    insecure_no_passphrase: bool,
    key_store: str,
    pkcs11_module: Path | None,
    token_label: str | None,
    key_label: str | None,
    pin_file: Path | None,
    import_key: bool,
) -> None:
    """Create a root CA, an issuing intermediate (default) and the CA's store and policy.

    The CA keys are encrypted at rest with a passphrase from --passphrase-file or
    $MTLSKIT_CA_PASSPHRASE; without one, init refuses unless --insecure-no-passphrase.
    With no --allow and no --trust-domain nobody may get a certificate (default deny).

    \b
    Example:
      MTLSKIT_CA_PASSPHRASE=... mtlskit ca init ca/ --trust-domain acme.com
    """
    if (directory / CONFIG).exists():
        raise InputError(f"is already a CA directory ({CONFIG} exists)", source=str(directory))
    try:
        domain = TrustDomain.parse(trust_domain).name if trust_domain else None
    except SpiffeIdError as exc:
        raise InputError(str(exc), source="--trust-domain") from None
    patterns = list(allowed) or ([f"spiffe://{domain}/**"] if domain else [])
    db = db or os.environ.get(DB_URL_ENV)
    recorded, stripped = _without_password(db or "ca.db")
    settings: dict[str, object] = {
        "name": name or directory.resolve().name,
        "profile": profile,
        "intermediate": not no_intermediate,
        "default_ttl": default_ttl,
        "max_ttl": max_ttl,
        "allowed_ids": patterns,
        "database": recorded,
    }
    if db_password_file is not None:
        check_secret_permissions(db_password_file, what="database password file")
        read_bytes(db_password_file, what="database password file")  # readable now, not later
        settings["database_password_file"] = str(db_password_file.resolve())
    if domain:
        settings["trust_domain"] = domain
    token = _token_settings(
        key_store,
        pkcs11_module,
        token_label,
        key_label,
        intermediate=not no_intermediate,
        import_key=import_key,
    )
    if token is not None:
        settings["pkcs11"] = token
    config = validate_ca_config(settings, source="ca init options")
    config_text = render_ca_config(config)
    constraints = None
    if name_constraints or name_constraints_uri:
        if domain is None:
            raise InputError("--name-constraints needs --trust-domain")
        if no_intermediate:
            raise InputError("--name-constraints needs the intermediate (roots are not checked)")
        permitted: list[x509.GeneralName] = [x509.DNSName(domain)]
        if name_constraints_uri:
            permitted.append(x509.UniformResourceIdentifier(domain))
        constraints = x509.NameConstraints(permitted_subtrees=permitted, excluded_subtrees=None)
    if token is not None:
        root_key, issuing_key = _token_keys(
            token, pin_file, key_type, intermediate=not no_intermediate, existing=import_key
        )
        password = None
    else:
        root_key = generate_private_key(key_type)
        issuing_key = None if no_intermediate else generate_private_key(key_type)
        password = read_password(
            file=passphrase_file, env=PASSPHRASE_ENV, prompt="New CA key passphrase: "
        )
    try:  # from here a failure deletes the token keys it generated: no orphan holds a label
        if token is None and password is None and not insecure_no_passphrase:
            raise InputError(
                f"no passphrase for the CA keys: give --passphrase-file, set ${PASSPHRASE_ENV}, "
                "or (test CAs only) --insecure-no-passphrase"
            )
        if password == b"":
            raise InputError("the CA key passphrase is empty")
        ca_dir = CaDirectory(path=directory, config=config)
        now = _now()
        root_cert = build_ca_certificate(
            common_name=f"{config.name} root CA",
            key=root_key,
            signer=None,
            not_before=now - dt.timedelta(hours=1),
            not_after=now + ROOT_VALIDITY,
            path_length=0 if no_intermediate else 1,  # root → issuing CA → leaves, no deeper
        )
        root = Issuer(cert=root_cert, key=root_key, chain=(root_cert,))
        keys = {"root": root_key}
        chain: tuple[x509.Certificate, ...] = (root_cert,)
        if issuing_key is not None:
            issuing_cert = build_ca_certificate(
                common_name=f"{config.name} issuing CA",
                key=issuing_key,
                signer=root,
                not_before=now - dt.timedelta(hours=1),
                not_after=now + ISSUING_VALIDITY,
                path_length=0,
                name_constraints=constraints,
            )
            keys["issuing"] = issuing_key
            chain = (issuing_cert, root_cert)
        make_private_directory(directory)  # 0700 whatever the umask: ca.toml decides issuance
        store = ca_dir.store(create=True, url=ca_dir.database_url(db))
        try:
            for stem, key in keys.items():
                if token is None:  # a token key never leaves its token
                    write_secret(directory / f"{stem}.key", private_key_pem(key, password))  # type: ignore[arg-type]
            write_public(directory / "root.pem", certificate_pem(root_cert))
            if not no_intermediate:
                write_public(directory / "issuing.pem", certificate_pem(chain[0]))
            write_public(directory / "chain.pem", chain_pem(list(chain)))
            store.record_event(
                "init",
                {
                    "name": config.name,
                    "root": str(Fingerprint.of(root_cert)),
                    "issuer": str(Fingerprint.of(chain[0])),
                    "encrypted": password is not None,
                    "key_store": key_store,
                },
                at=now,
            )
        finally:
            store.close()
        write_public(directory / CONFIG, config_text.encode())
    except BaseException:
        if token is not None and not import_key:
            _discard_token_keys(root_key, issuing_key)
        raise
    click.echo(f"created CA {config.name!r} in {directory} (profile {config.profile})")
    click.echo(f"trust anchor for services: {directory / 'root.pem'}")
    click.echo(f"root SHA-256: {Fingerprint.of(root_cert)}")
    if token is not None:
        uris = [value for name, value in token.items() if name != "module"]
        click.echo(f"CA keys in PKCS#11 token {token_label!r}: {', '.join(uris)}")
    elif password is None:
        click.echo("WARNING: CA keys are stored unencrypted (--insecure-no-passphrase)", err=True)
    if stripped and db_password_file is None:
        click.echo(
            f"note: the database password was not written to {CONFIG}; give later commands "
            f"${DB_URL_ENV}, database_password_file or ~/.pgpass",
            err=True,
        )
    if not patterns:
        click.echo(
            f"note: no identity is allowed yet; add patterns to allowed_ids in {directory / CONFIG}"
        )


def _issue_target(
    identity: str | None, server: bool, dns: tuple[str, ...], ips: tuple[str, ...]
) -> ClientIdentity | tuple[str, ...]:
    """What ``ca issue`` was asked for: a client identity, or a server's host names."""
    if server:
        if identity is not None:
            raise InputError(
                "a server certificate names hosts (--dns/--ip), not a client --id; "
                "issue them separately",
                source="--server",
            )
        return parse_server_hosts(dns, ips)
    if dns or ips:
        raise InputError("--dns and --ip name a server: add --server", source="--dns/--ip")
    if identity is None:
        raise InputError("missing --id (or --server with --dns/--ip)", source="ca issue")
    return parse_identity(identity)


def _token_settings(
    key_store: str,
    module: Path | None,
    label: str | None,
    prefix: str | None,
    *,
    intermediate: bool,
    import_key: bool = False,
) -> dict[str, str] | None:
    """ca.toml's ``[pkcs11]`` for ``--key-store pkcs11`` (None for file keys): the keys'
    URIs carry their labels, so nothing else records ``--key-label``."""
    if key_store == "file":
        if import_key:
            raise InputError("needs --key-store pkcs11", source="--import-key")
        if prefix is not None:
            raise InputError("needs --key-store pkcs11", source="--key-label")
        if module is not None or label is not None:
            raise InputError("needs --key-store pkcs11", source="--pkcs11-module/--token-label")
        return None
    from mtlskit.keystore import Pkcs11Uri

    if module is None:
        raise InputError("--key-store pkcs11 needs --pkcs11-module (the token's library)")
    if not label:
        raise InputError("--key-store pkcs11 needs --token-label")
    prefix = "mtlskit" if prefix is None else prefix
    if not _KEY_LABEL.fullmatch(prefix):
        raise InputError(
            f"{prefix!r} is not a key label prefix (letters, digits, '.', '_', '-'; "
            "at most 64, starting with a letter or digit)",
            source="--key-label",
        )
    if not module.is_file():
        raise InputError("no such PKCS#11 module", source=str(module))
    settings = {
        "module": str(module.absolute()),
        "root": str(Pkcs11Uri(token=label, object=f"{prefix}-root")),
    }
    if intermediate:
        settings["issuing"] = str(Pkcs11Uri(token=label, object=f"{prefix}-issuing"))
    return settings


def _token_keys(
    token: dict[str, str],
    pin_file: Path | None,
    key_type: str,
    *,
    intermediate: bool,
    existing: bool,
) -> tuple[Any, Any]:
    """Root and issuing keys generated inside the token, or with ``existing``
    (--import-key) the ones already there; the issuing one None without an intermediate.
    The PIN from --pin-file or $MTLSKIT_PKCS11_PIN."""
    from mtlskit.keystore import PIN_ENV, Pkcs11Uri, generate_token_key, open_token_key

    pin = read_password(file=pin_file, env=PIN_ENV, prompt="Token PIN: ")
    if not pin:
        raise InputError(f"no PIN for the token: give --pin-file or set ${PIN_ENV}")
    kind = KeyType(key_type)
    uris = [Pkcs11Uri.parse(token["root"])]
    if intermediate:
        uris.append(Pkcs11Uri.parse(token["issuing"]))
    keys = []
    for uri in uris:
        if existing:
            keys.append(open_token_key(token["module"], uri, pin, require_unexportable=True))
            continue
        try:
            keys.append(generate_token_key(token["module"], uri, pin, kind))
        except BaseException:
            _discard_token_keys(*keys)  # the root pair, when the issuing one is refused
            raise
    return keys[0], keys[1] if intermediate else None


def _discard_token_keys(*keys: Any) -> None:
    """Delete key pairs ``ca init`` generated in the token, as it fails: else they keep
    their labels and a rerun is refused. Best effort: the first error is the one
    reported; a token gone by now leaves them (docs/hsm.md: deleting them by hand)."""
    for key in keys:
        if key is not None:
            with contextlib.suppress(Exception):
                key.destroy()


@command.command("issue")
@_dir_argument
@click.option("--id", "identity", help="The client identity to issue for.")
@click.option(
    "--server",
    is_flag=True,
    help="A TLS server certificate (EKU serverAuth only) for --dns/--ip instead of a client's.",
)
@click.option("--dns", multiple=True, help="With --server: a DNS name it serves (repeatable).")
@click.option("--ip", "ips", multiple=True, help="With --server: an IP address (repeatable).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--ttl", help="Lifetime, e.g. 15m, 24h (default: ca.toml's default_ttl).")
@click.option(
    "--key-type",
    type=click.Choice([kind.value for kind in KeyType]),
    default=KeyType.EC_P256.value,
    show_default=True,
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@_passphrase_option
def issue_command(  # noqa: PLR0917
    directory: Path,
    identity: str | None,
    server: bool,
    dns: tuple[str, ...],
    ips: tuple[str, ...],
    out: Path,
    ttl: str | None,
    key_type: str,
    as_json: bool,
    passphrase_file: Path | None,
) -> None:
    """Generate a key here and issue a certificate for it (key.pem is written 0600).

    OUTDIR gets cert.pem (the leaf), chain.pem (leaf + intermediate: what the client
    presents), key.pem and ca.pem (the root, for the client to check servers with).

    With --server it is the TLS server certificate of a gateway, nginx or any service
    (EKU serverAuth only, SAN = every --dns and --ip; no client can present it). Its
    chain.pem is what the server presents (nginx ssl_certificate, gateway.toml
    listen.cert), and clients trust ca.pem. allowed_ids do not apply (they name
    clients); max_ttl and key_types do. It is recorded: ca list shows it, ca revoke
    revokes it.

    \b
    Example:
      mtlskit ca issue ca/ --id spiffe://acme.com/billing/payments --out client/ --ttl 24h
      mtlskit ca issue ca/ --server --dns localhost --ip 127.0.0.1 --out server/
    """
    target = _issue_target(identity, server, dns, ips)
    ca_dir = CaDirectory.open(directory)
    lifetime = _ttl(ttl)
    if (out / "key.pem").exists():
        raise InputError(
            "already exists; remove it or choose another --out", source=str(out / "key.pem")
        )
    issuer = _issuer(ca_dir, passphrase_file)
    key = generate_private_key(key_type)
    store = ca_dir.store()
    try:
        authority = ca_dir.authority(issuer, store)
        if isinstance(target, ClientIdentity):
            issued = authority.issue(target, key.public_key(), now=_now(), ttl=lifetime)
        else:
            issued = authority.issue_server(target, key.public_key(), now=_now(), ttl=lifetime)
    except IssuanceRefused as refused:
        _refused(refused)
        return
    finally:
        store.close()
    files = {
        "certificate": str(write_public(out / "cert.pem", certificate_pem(issued.cert))),
        "chain": str(write_public(out / "chain.pem", chain_pem(list(issued.chain[:-1])))),
        "key": str(write_secret(out / "key.pem", private_key_pem(key))),
        "root": str(write_public(out / "ca.pem", certificate_pem(issued.chain[-1]))),
    }
    _report(issued, files, as_json)


@command.command("sign")
@_dir_argument
@click.argument("csr", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--id", "identity", required=True, help="The identity to issue for.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Leaf + chain, PEM.")
@click.option("--ttl", help="Lifetime, e.g. 15m, 24h (default: ca.toml's default_ttl).")
@click.option("--dry-run", is_flag=True, help="Print the exact certificate; record nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@_passphrase_option
def sign_command(  # noqa: PLR0917
    directory: Path,
    csr: Path,
    identity: str,
    out: Path | None,
    ttl: str | None,
    dry_run: bool,
    as_json: bool,
    passphrase_file: Path | None,
) -> None:
    """Issue a certificate for a CSR's key. The CA decides every extension.

    Only the CSR's public key is used (its signature must verify), and its requested SAN
    only when it equals --id. Every other request (CA:TRUE, serverAuth, other names,
    extensions the profile lacks) is dropped and listed.

    \b
    Example:
      mtlskit ca sign ca/ client.csr --id spiffe://acme.com/billing/payments --out client.pem
    """
    if out is None and not dry_run:
        raise click.UsageError("--out is required unless --dry-run")
    ca_dir = CaDirectory.open(directory)
    target = parse_identity(identity)
    lifetime = _ttl(ttl)
    request = load_csr(read_bytes(csr, what="CSR"), source=str(csr))
    issuer = _issuer(ca_dir, passphrase_file)
    store = ca_dir.store()
    try:
        issued = ca_dir.authority(issuer, store).sign(
            request, target, now=_now(), ttl=lifetime, dry_run=dry_run, source=str(csr)
        )
    except IssuanceRefused as refused:
        _refused(refused)
        return
    finally:
        store.close()
    if dry_run:
        from mtlskit.certinfo import summarize

        summary = summarize(list(issued.chain)).as_dict(_now())
        click.echo(json.dumps(summary | {"dropped": list(issued.dropped)}, indent=2))
        click.echo(certificate_pem(issued.cert).decode(), nl=False)
        click.echo("dry run: nothing was recorded or written", err=True)
        return
    assert out is not None
    path = write_public(out, chain_pem(list(issued.chain[:-1])))
    _report(issued, {"certificate": str(path)}, as_json)


def _parse_serial(text: str) -> int:
    cleaned = text.strip().lower().removeprefix("0x").replace(":", "")
    try:
        return int(cleaned, 16)
    except ValueError:
        raise InputError(f"not a serial number: {text!r} (expected hex)", source="SERIAL") from None


@command.command("revoke")
@_dir_argument
@click.argument("serial", required=False)
@click.option("--cert", "cert_path", type=click.Path(dir_okay=False), help="Revoke this cert.")
@click.option(
    "--reason",
    type=click.Choice(REVOCATION_REASONS, case_sensitive=False),
    default="unspecified",
    show_default=True,
    help="RFC 5280 §5.3.1 reason code.",
)
def revoke_command(directory: Path, serial: str | None, cert_path: str | None, reason: str) -> None:
    """Revoke by serial (hex, as `ca list` shows it) or by certificate file; then run `ca crl`.

    \b
    Example:
      mtlskit ca revoke ca/ 3f2a... --reason keyCompromise
    """
    if (serial is None) == (cert_path is None):
        raise click.UsageError("give either SERIAL or --cert")
    ca_dir = CaDirectory.open(directory)
    fingerprint = None
    if cert_path is not None:
        cert = load_certificates(read_bytes(cert_path, what="certificate"), source=cert_path)[0]
        number, fingerprint = cert.serial_number, str(Fingerprint.of(cert))
    else:
        number = _parse_serial(serial or "")
    flag = next(item for item in x509.ReasonFlags if item.value.lower() == reason.lower())
    store = ca_dir.store()
    try:
        if fingerprint is not None:
            record = store.get(number)
            if record is None or record.fingerprint != fingerprint:
                raise InputError("was not issued by this CA", source=cert_path)
        record = store.revoke(number, reason=flag, at=_now())
    finally:
        store.close()
    click.echo(f"revoked {number:x} ({record.identity}), reason {flag.value}")


def publish_crl(
    ca_dir: CaDirectory,
    issuer: Issuer,
    root: Issuer | None,
    store: Any,
    out: Path,
    *,
    now: dt.datetime,
) -> x509.CertificateRevocationList:
    """Write ``out``: the issuing CA's fresh CRL (next CRL number), then, with ``root``,
    the root's over the intermediate with the same number (``ca crl``; the console's
    revocations write the same file the same way). Returns the issuing CA's CRL."""
    from cryptography.hazmat.primitives import serialization

    authority = ca_dir.authority(issuer, store)
    crl = authority.crl(now=now)
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    crls = [crl]
    if root is not None:
        crls.append(
            build_crl(
                issuer=root,
                revoked=(),
                number=number,
                this_update=now,
                next_update=now + authority.crl_validity,
            )
        )
    write_public(out, b"".join(item.public_bytes(serialization.Encoding.PEM) for item in crls))
    return crl


@command.command("crl")
@_dir_argument
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--issuer-only",
    is_flag=True,
    help="Only the issuing CA's CRL; by default the root's CRL (over the intermediate) "
    "follows it, because nginx checks CRLs for every CA in the chain.",
)
@_passphrase_option
def crl_command(
    directory: Path, out: Path, issuer_only: bool, passphrase_file: Path | None
) -> None:
    """Write a fresh CRL (PEM) signed by the issuing CA, with the next CRL number.

    With an intermediate, the file holds two CRLs: the issuing CA's (listing revoked
    client certificates) first, then the root's (over the intermediate), both with the
    same CRL number. nginx's ssl_crl (OpenSSL CRL_CHECK_ALL) fails every client with
    "unable to get certificate CRL" unless each CA in the chain has one.

    \b
    Example:
      mtlskit ca crl ca/ --out ca/crl.pem     # then reload nginx (ssl_crl) or the gateway
    """
    ca_dir = CaDirectory.open(directory)
    issuer = _issuer(ca_dir, passphrase_file)
    root = None
    if ca_dir.config.intermediate and not issuer_only:
        root = _issuer(ca_dir, passphrase_file, stem="root")
    store = ca_dir.store()
    try:
        crl = publish_crl(ca_dir, issuer, root, store, out, now=_now())
    finally:
        store.close()
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    click.echo(
        f"wrote {out}: CRL number {number}, {len(crl)} revoked, next update {crl.next_update_utc}"
        + (" (+ the root's CRL)" if root is not None else "")
    )


@command.command("list")
@_dir_argument
@click.option("--status", type=click.Choice([status.value for status in CertificateStatus]))
@click.option(
    "--expiring",
    help="Only unrevoked certificates that expire within this window (e.g. 12h, 7d, 30m), "
    "soonest first.",
)
@click.option("--json", "as_json", is_flag=True)
def list_command(directory: Path, status: str | None, expiring: str | None, as_json: bool) -> None:
    """The certificates this CA issued, with their status now.

    \b
    Example:
      mtlskit ca list ca/ --expiring 7d     # what must be renewed this week
    """
    window = parse_duration(expiring, source="--expiring") if expiring is not None else None
    ca_dir = CaDirectory.open(directory)
    now = _now()
    store = ca_dir.store()
    try:
        records = store.certificates(status=CertificateStatus(status) if status else None, now=now)
    finally:
        store.close()
    if window is not None:  # already expired ones are past the window's start: not "expiring"
        records = sorted(
            (
                r
                for r in records
                if r.status(now) is CertificateStatus.VALID and r.not_after <= now + window
            ),
            key=lambda r: r.not_after,
        )
    if as_json:
        click.echo(json.dumps({"certificates": [r.as_dict(now) for r in records]}, indent=2))
        return
    from mtlskit.cli._output import aligned, echo_lines, rich_output

    header = ("serial", "identity", "status", "not after", "fingerprint")
    rows = [
        (
            f"{record.serial:x}",
            record.identity,
            record.status(now).value,
            record.not_after.isoformat(),
            record.fingerprint,
        )
        for record in records
    ]
    if not rich_output():  # one line per certificate, the whole fingerprint
        echo_lines(aligned(header, rows))
        return
    from rich.console import Console
    from rich.table import Table

    # `ca revoke` takes the serial as printed: it is never cut, it pushes the other columns
    # narrower instead, and the identity folds rather than losing its tail.
    serial_width = max((len(row[0]) for row in rows), default=len(header[0]))
    table = Table()
    table.add_column(header[0], no_wrap=True, min_width=serial_width, overflow="fold")
    table.add_column(header[1], overflow="fold")
    for name in header[2:]:
        table.add_column(name)
    for row in rows:
        table.add_row(*row[:-1], row[-1][:23] + "…")
    Console().print(table)


@command.group("audit")
def audit_group() -> None:
    """The hash-chained audit log: verify it, export it."""


@audit_group.command("verify")
@_dir_argument
def audit_verify_command(directory: Path) -> None:
    """Recompute every entry's hash and link; exit 1 naming the first tampered entry."""
    ca_dir = CaDirectory.open(directory)
    store = ca_dir.store()
    try:
        entries = store.audit_entries()
    finally:
        store.close()
    problem = verify_audit_chain(entries)
    if problem is not None:
        click.echo(f"audit log TAMPERED: {problem}")
        raise click.exceptions.Exit(1)
    head = entries[-1].hash if entries else "(empty)"
    click.echo(f"audit log intact: {len(entries)} entries, head {head}")


@audit_group.command("export")
@_dir_argument
@click.option("--json", "as_json", is_flag=True, required=True, help="JSON (the only format).")
def audit_export_command(directory: Path, as_json: bool) -> None:
    """Print every audit entry as JSON, with the head hash to keep elsewhere."""
    ca_dir = CaDirectory.open(directory)
    store = ca_dir.store()
    try:
        entries = store.audit_entries()
    finally:
        store.close()
    problem = verify_audit_chain(entries)
    document: dict[str, Any] = {
        "entries": [entry.as_dict() for entry in entries],
        "head": entries[-1].hash if entries else None,
        "intact": problem is None,
    }
    click.echo(json.dumps(document, indent=2))


# --- enrollment: tokens, the approval queue, the HTTPS API ---------------------------


@command.command("token")
@_dir_argument
@click.option("--id", "identity", help="The one identity this token enrolls.")
@click.option(
    "--from",
    "id_file",
    type=click.Path(path_type=Path),
    help="Mint one token per identity in this file (one per line; blank and # lines skipped).",
)
@click.option("--ttl", default="15m", show_default=True, help="How long the token is redeemable.")
@click.option("--json", "as_json", is_flag=True, help="Print the token and its details as JSON.")
def token_command(
    directory: Path, identity: str | None, id_file: Path | None, ttl: str, as_json: bool
) -> None:
    """Print a one-time enrollment token bound to exactly one identity.

    The token is shown once: the CA keeps only its SHA-256. It is redeemed once (by
    `mtlskit enroll`), expires after --ttl, and enrolls only --id. Hand it to the
    client over a channel you trust. With --from, every identity in the file is checked
    first and one bad line mints nothing; the output is IDENTITY<TAB>TOKEN per line
    (--json: a list).

    \b
    Example:
      mtlskit ca token ca/ --id spiffe://acme.com/billing/payments --ttl 15m
      mtlskit ca token ca/ --from ids.txt --json > tokens.json
    """
    if (identity is None) == (id_file is None):
        raise InputError("give exactly one of --id and --from", source="ca token")
    lifetime = parse_duration(ttl, source="--ttl")
    ca_dir = CaDirectory.open(directory)
    if id_file is None:
        targets = [(str(identity), parse_identity(str(identity)))]
    else:
        targets = _identities_in(id_file)
    patterns = ca_dir.config.policy().allowed_ids
    for where, target in targets:
        if not any(pattern.matches(target.value) for pattern in patterns):
            _refused(
                IssuanceRefused(
                    "allowed_ids",
                    f"{where if id_file else 'identity'} {target.value} matches no allowed "
                    f"pattern ({', '.join(str(p) for p in patterns) or 'none configured'})"
                    + ("; no token minted" if id_file else ""),
                )
            )
            return
    now = _now()
    rules = ca_dir.config.approval_rules()
    minted = [(target, *new_token(target, now=now, ttl=lifetime)) for _, target in targets]
    store = ca_dir.store()
    try:
        for _, _, record in minted:
            store.add_token(record)
    finally:
        store.close()
    shown = [
        {
            "token": token,
            "identity": target.value,
            "expires_at": record.expires_at.isoformat(),
            "approvers_required": required_approvals(rules, target.value),
        }
        for target, token, record in minted
    ]
    if id_file is not None:
        if as_json:
            click.echo(json.dumps(shown, indent=2))
        else:
            for entry in shown:
                click.echo(f"{entry['identity']}\t{entry['token']}")
            click.echo(
                f"{len(shown)} one-time tokens, valid until {shown[0]['expires_at']}"
                if shown
                else "no identities in the file: no token minted",
                err=True,
            )
        return
    (entry,) = shown
    if as_json:
        click.echo(json.dumps(entry, indent=2))
        return
    click.echo(entry["token"])
    required = entry["approvers_required"]
    note = f"; then {required} approver(s) must approve" if required else ""
    click.echo(
        f"one-time token for {entry['identity']}, valid until {entry['expires_at']}{note}",
        err=True,
    )


def _identities_in(path: Path) -> list[tuple[str, ClientIdentity]]:
    """Every identity of an ids file with where it is ('ids.txt line 3'); one bad line fails all."""
    try:
        text = read_bytes(path, what="identity list").decode()
    except UnicodeDecodeError:
        raise InputError("not UTF-8 text", source=str(path)) from None
    found: list[tuple[str, ClientIdentity]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        candidate = line.strip()
        if not candidate or candidate.startswith("#"):
            continue
        where = f"{path} line {number}"
        try:
            found.append((where, parse_identity(candidate)))
        except InputError as exc:
            raise InputError(f"{exc.detail}; no token minted", source=where) from None
    return found


@command.group("requests")
def requests_group() -> None:
    """The approval queue: enrollment requests waiting for N distinct approvers.

    Approvers are registered certificates (`ca approvers add`); each approves with their
    own --cert and --key, and is counted once by verified identity.
    """


@requests_group.command("list")
@_dir_argument
@click.option("--status", type=click.Choice([status.value for status in RequestStatus]))
@click.option("--json", "as_json", is_flag=True)
def requests_list_command(directory: Path, status: str | None, as_json: bool) -> None:
    """Requests with their identity, CSR hash and approvers (pending ones by default)."""
    ca_dir = CaDirectory.open(directory)
    store = ca_dir.store()
    try:
        found = store.requests(status=RequestStatus(status) if status else None)
    finally:
        store.close()
    if status is None:
        found = [r for r in found if r.status in {RequestStatus.PENDING, RequestStatus.APPROVED}]
    if as_json:
        click.echo(json.dumps({"requests": [r.as_dict() for r in found]}, indent=2))
        return
    from mtlskit.cli._output import aligned, echo_lines, rich_output

    header = ("id", "identity", "status", "approvals", "csr sha256", "client")
    rows = [
        (
            request.id,
            request.identity,
            request.status.value,
            f"{len(request.approved_by)}/{request.required} {', '.join(request.approved_by)}",
            request.csr_sha256,
            request.client,
        )
        for request in found
    ]
    if not rich_output():  # one line per request
        echo_lines(aligned(header, rows))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(*header)
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def _refused_approval(refused: ApprovalRefused) -> None:
    """An approval that does not count is a negative verdict: one line, exit 1."""
    click.echo(f"mtlskit: {refused.code}: {refused.message}", err=True)
    raise click.exceptions.Exit(1)


@requests_group.command("approve")
@_dir_argument
@click.argument("request_id", metavar="ID")
@_cert_and_key_options(
    cert="Your approver certificate (registered with `ca approvers add`).",
    key="Its private key (0600), which signs the approval.",
)
@click.option(
    "--csr-sha256",
    help="The CSR hash you reviewed (from `ca requests list`); refused if it differs.",
)
@click.option("--approver", hidden=True, help="Removed: approvals are signed (--cert/--key).")
def requests_approve_command(  # noqa: PLR0917
    directory: Path,
    request_id: str,
    cert_path: Path | None,
    key_path: Path | None,
    csr_sha256: str | None,
    approver: str | None,
) -> None:
    """Approve a request with your own key; with enough distinct approvers its client gets
    the certificate.

    The approval is a signature by --key over the request id and its CSR hash, so it
    cannot be reused for another key, and it counts for the verified identity of your
    registered certificate: the same person twice (another key, another spelling) counts
    once, and the identity the request is for cannot approve it. `ca serve` checks every
    signature again before it signs. Refusals exit 1 with a stable code
    (approver_unregistered, approval_signature_invalid, approver_is_requester,
    approver_already_counted, approver_cert_expired, approver_cert_revoked).

    \b
    Example:
      mtlskit ca requests approve ca/ REQUEST_ID --cert alice.pem --key alice.key
    """
    ca_dir = CaDirectory.open(directory)
    if cert_path is None or key_path is None:
        raise InputError(
            "an approval is signed: give --cert and --key of an approver registered with "
            "`mtlskit ca approvers add`"
            + (" (--approver NAME is no longer accepted)" if approver else ""),
            source="--cert",
        )
    cert = load_certificates(read_bytes(cert_path, what="certificate"), source=str(cert_path))[0]
    check_secret_permissions(key_path, what="approver key")
    key = load_private_key(read_bytes(key_path, what="private key"), source=str(key_path))
    issuer_cert = ca_dir.issuer_certificate()
    now = _now()
    store = ca_dir.store()
    try:
        request = store.get_request(request_id)
        if request is None:
            raise InputError(f"no enrollment request {request_id!r}", source="ID")
        reviewed = (csr_sha256 or request.csr_sha256).lower().removeprefix("sha256:")
        if reviewed != request.csr_sha256:
            raise InputError(
                f"request {request_id} is for CSR sha256 {request.csr_sha256}, "
                f"not {reviewed}: approve what you reviewed",
                source="--csr-sha256",
            )
        fingerprint, signature = sign_approval(request.id, reviewed, cert=cert, key=key)
        records = {record.fingerprint: record for record in store.approvers()}
        try:
            identity = check_approval(
                request,
                records.get(fingerprint),
                fingerprint=fingerprint,
                signature=signature,
                at=now,
                ca_public_key=issuer_cert.public_key(),
                revoked=revoked_by(issuer_cert, store),
            )
            new = check_not_counted(request, identity, fingerprint)
        except ApprovalRefused as refused:
            store.record_event(
                "approve_refused",
                {"request": request.id, "fingerprint": fingerprint, "code": refused.code},
                at=now,
            )
            _refused_approval(refused)
            return
        updated, added = store.approve_request(
            request_id,
            approver=identity,
            csr_sha256=reviewed,
            at=now,
            fingerprint=fingerprint,
            signature=signature,
        )
    finally:
        store.close()
    counted = len(updated.approved_by)
    if not (added and new):
        click.echo(f"{identity} had already approved {request_id}; it still counts once")
    click.echo(
        f"request {request_id} ({updated.identity}): {counted} of {updated.required} approvals, "
        f"status {updated.status.value}"
    )


@requests_group.command("deny")
@_dir_argument
@click.argument("request_id", metavar="ID")
@click.option("--approver", required=True, help="Who denies (recorded in the audit log).")
@click.option("--reason", default="", help="Why, for the audit log.")
def requests_deny_command(directory: Path, request_id: str, approver: str, reason: str) -> None:
    """Deny a request: its client is told `request_denied`; the token stays used."""
    ca_dir = CaDirectory.open(directory)
    store = ca_dir.store()
    try:
        updated = store.deny_request(request_id, approver=approver, reason=reason, at=_now())
    finally:
        store.close()
    click.echo(f"request {request_id} ({updated.identity}) denied")


@command.group("approvers")
def approvers_group() -> None:
    """Who may approve enrollment requests: certificates registered with the CA's key.

    An approver approves with their own certificate and key (`ca requests approve --cert
    --key`); the CA counts each verified identity once. Registering one needs the CA
    passphrase, so the database alone cannot make an approver.
    """


@approvers_group.command("add")
@_dir_argument
@click.option(
    "--cert",
    "cert_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The approver's certificate (from this CA, or any other: it is pinned by key).",
)
@_passphrase_option
def approvers_add_command(directory: Path, cert_path: Path, passphrase_file: Path | None) -> None:
    """Register an approver: the CA's key signs their key fingerprint and identity (SAN).

    \b
    Example:
      mtlskit ca approvers add ca/ --cert alice.pem
    """
    ca_dir = CaDirectory.open(directory)
    cert = load_certificates(read_bytes(cert_path, what="certificate"), source=str(cert_path))[0]
    issuer = _issuer(ca_dir, passphrase_file)
    now = _now()
    store = ca_dir.store()
    try:
        try:
            record = register_approver(cert, ca_key=issuer.key, now=now)
            if revoked_by(issuer.cert, store)(cert):
                raise ApprovalRefused(
                    "approver_cert_revoked", "this CA revoked (or never recorded) this certificate"
                )
        except ApprovalRefused as refused:
            _refused_approval(refused)
            return
        store.add_approver(record)
    finally:
        store.close()
    click.echo(f"registered approver {record.identity} (key {record.fingerprint})")


@approvers_group.command("list")
@_dir_argument
@click.option("--json", "as_json", is_flag=True)
def approvers_list_command(directory: Path, as_json: bool) -> None:
    """The registered approvers: identity, key fingerprint, certificate expiry."""
    ca_dir = CaDirectory.open(directory)
    store = ca_dir.store()
    try:
        records = store.approvers()
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps({"approvers": [r.as_dict() for r in records]}, indent=2))
        return
    for record in records:
        item = record.as_dict()
        click.echo(f"{item['identity']}  {item['fingerprint']}  until {item['not_after']}")


@approvers_group.command("remove")
@_dir_argument
@click.argument("fingerprint", metavar="FINGERPRINT")
def approvers_remove_command(directory: Path, fingerprint: str) -> None:
    """Unregister an approver by key fingerprint (`ca approvers list`); their approvals of
    requests not yet issued stop counting."""
    ca_dir = CaDirectory.open(directory)
    store = ca_dir.store()
    try:
        identity = store.remove_approver(fingerprint.strip().lower(), at=_now())
    finally:
        store.close()
    click.echo(f"removed approver {identity} ({fingerprint})")


def _listen_options(default: str) -> Callable[[FC], FC]:
    """--listen and --hostname of a server this CA runs (``ca serve``, ``ca console``)."""
    listen = click.option(
        "--listen", default=default, show_default=True, help="HOST:PORT (0: any)."
    )
    hostname = click.option(
        "--hostname",
        "hostnames",
        multiple=True,
        help="Name or address in the server certificate (default: the listen host and localhost).",
    )
    return lambda function: listen(hostname(function))


def _hold_sighup(directory: Path) -> bytes:
    """ca.toml's digest, taken before it is read, with SIGHUP ignored until ``reload_on``.

    The port accepts before ``reload_on`` is in place; a SIGHUP then must not kill the
    server. Ignoring it loses nothing: ca.toml is checked against this digest before every
    request, so an edit made meanwhile shows."""
    import signal

    from mtlskit.caserver import ConfigWatch

    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    return ConfigWatch.digest_of(directory / CONFIG)


def _config_watch(
    ca_dir: CaDirectory,
    digest: bytes,
    build: Callable[[CaConfig], Any],
    log: Callable[[str], None],
) -> ConfigWatch[Any]:
    """The ConfigWatch re-reading ``ca_dir``'s ca.toml (as ``CaDirectory.open`` checks it)."""
    from mtlskit.caserver import ConfigWatch

    directory = ca_dir.path
    return ConfigWatch(
        path=directory / CONFIG,
        load=lambda: CaDirectory.open(directory).config,
        build=build,
        config=ca_dir.config,
        digest=digest,
        log=log,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class _Https:
    """A bound --listen socket and the TLS context that serves it."""

    sock: socket.socket
    context: ssl.SSLContext
    certificate: x509.Certificate

    @property
    def address(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"{host}:{port}"

    @property
    def url(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"

    def audit(self) -> dict[str, str]:
        """What the start's audit event records of the server."""
        return {"listen": self.address, "server_certificate": str(Fingerprint.of(self.certificate))}

    def run(self, app: Any, *, close: Callable[[], None], **options: Any) -> None:
        """Serve ``app`` until stopped (stdout flushed first: tests wait for its lines)."""
        import sys

        from mtlskit.caserver import uvicorn_server

        sys.stdout.flush()
        try:
            uvicorn_server(app, self.context, **options).run(sockets=[self.sock])
        finally:
            close()
            self.sock.close()


def _https(
    listen: str, hostnames: tuple[str, ...], issuer: Issuer, *, now: dt.datetime, **tls: Any
) -> _Https:
    """Bind --listen and make its TLS context (``server_context``; ``tls``: its options);
    the certificate names --hostname, else the listen host and localhost."""
    from mtlskit.caserver import bind, server_context

    try:
        sock = bind(listen)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot listen: {exc}", source="--listen") from None
    host = sock.getsockname()[0]
    context, certificate = server_context(
        issuer, hosts=hostnames or tuple(dict.fromkeys((host, "localhost"))), now=now, **tls
    )
    return _Https(sock=sock, context=context, certificate=certificate)


@command.command("serve")
@_dir_argument
@_listen_options("127.0.0.1:8444")
@click.option(
    "--max-token-failures",
    default=10,
    show_default=True,
    type=click.IntRange(min=1),
    help="Failed token attempts per client address per --failure-window before 429.",
)
@click.option("--failure-window", default="1m", show_default=True, help="e.g. 1m, 1h.")
@click.option(
    "--trusted-proxy",
    "trusted_proxies",
    multiple=True,
    help="Address or network (e.g. 10.0.0.5, 10.0.0.0/24) of a reverse proxy whose "
    "X-Forwarded-For names the client; repeatable. Default none: the header is ignored "
    "and the TCP peer is the client (for the token-failure limit and the audit log).",
)
@click.option(
    "--db",
    help=f"Store URL instead of ca.toml's (or ${DB_URL_ENV}): nodes sharing one PostgreSQL "
    "database and the CA's key files serve one CA.",
)
@_passphrase_option
def serve_command(  # noqa: PLR0917
    directory: Path,
    listen: str,
    hostnames: tuple[str, ...],
    max_token_failures: int,
    failure_window: str,
    trusted_proxies: tuple[str, ...],
    db: str | None,
    passphrase_file: Path | None,
) -> None:
    """Serve the CA's HTTPS API: enroll with a token, poll approvals, renew over mTLS, CRL, bundle.

    The server certificate is issued by this CA at start (serverAuth, 30 days or less),
    so clients pin the CA's root: `mtlskit enroll URL --ca-fingerprint` with the root
    SHA-256 printed here. The OpenAPI document is at /openapi.json.

    \b
    Example:
      MTLSKIT_CA_PASSPHRASE=... mtlskit ca serve ca/ --listen 127.0.0.1:8444
    """
    import signal

    from mtlskit.caserver import CaServer, FailureLimiter
    from mtlskit.caserver._jwks import JwksCache
    from mtlskit.issue import RegistrationAuthority

    digest = _hold_sighup(directory)
    ca_dir = CaDirectory.open(directory)
    window = parse_duration(failure_window, source="--failure-window")
    if ":" not in listen:
        raise InputError("expected HOST:PORT", source="--listen")
    for proxy in trusted_proxies:
        try:
            ipaddress.ip_network(proxy)
        except ValueError:
            raise InputError(
                f"{proxy!r} is not an IP address or network", source="--trusted-proxy"
            ) from None
    issuer = _issuer(ca_dir, passphrase_file)
    now = _now()
    https = _https(listen, hostnames, issuer, now=now)
    server_cert = https.certificate
    store = ca_dir.store(db=db)
    store.record_event(
        "serve",
        {
            **https.audit(),
            "serial": f"{server_cert.serial_number:x}",
            "not_after": server_cert.not_valid_after_utc.isoformat(),
        },
        at=now,
    )

    def authority_for(config: CaConfig) -> RegistrationAuthority:
        policy_dir = CaDirectory(path=ca_dir.path, config=config)
        return RegistrationAuthority(
            authority=policy_dir.authority(issuer, store),
            records=store,
            approval=config.approval_rules(),
            provisioners=config.oidc_provisioners(),
            labels=config.est_labels(),
        )

    watch = _config_watch(
        ca_dir,
        digest,
        authority_for,
        lambda line: click.echo(f"mtlskit ca serve: {line}", err=True),
    )
    server = CaServer(
        authority_for(ca_dir.config),
        name=ca_dir.config.name,
        trust_domain=ca_dir.config.trust_domain,
        limiter=FailureLimiter(limit=max_token_failures, window=window.total_seconds()),
        close=store.close,
        watch=watch,
        jwks=JwksCache(base=ca_dir.path),
    )
    server.reload_on(signal.SIGHUP)  # before saying it serves: a SIGHUP after that reloads
    click.echo(f"serving CA {ca_dir.config.name!r} on {https.url}")
    click.echo(f"root SHA-256: {Fingerprint.of(issuer.chain[-1])}", nl=True)
    https.run(server.app, close=server.close, trusted_proxies=trusted_proxies)


def _console_anchors(ca_dir: CaDirectory, issuer: Issuer) -> str:
    """The PEM trust anchors for the console's client certificates: ``[console]
    trust_anchors`` (relative to the CA directory), else the CA's own chain."""
    names = ca_dir.config.console.trust_anchors
    if not names:
        return chain_pem(list(issuer.chain)).decode()
    found: list[x509.Certificate] = []
    for name in names:
        path = ca_dir.path / name
        found += load_certificates(read_bytes(path, what="console trust anchor"), source=str(path))
    return chain_pem(found).decode()


@command.command("console")
@_dir_argument
@_listen_options("127.0.0.1:8445")
@click.option("--db", help=f"Store URL instead of ca.toml's (or ${DB_URL_ENV}).")
@_cert_and_key_options(
    cert="Serve this certificate chain (PEM) instead of one this CA issues at start.",
    key="The private key of --cert (0600).",
)
@_passphrase_option
def console_command(  # noqa: PLR0917
    directory: Path,
    listen: str,
    hostnames: tuple[str, ...],
    db: str | None,
    cert_path: Path | None,
    key_path: Path | None,
    passphrase_file: Path | None,
) -> None:
    """Serve the operator console: approve requests, search and revoke certificates, audit.

    A browser UI on its own HTTPS port, for the people in ca.toml's [console] approvers
    (approve, deny, revoke) and viewers (read-only), who sign in with their own client
    certificates over mTLS: one that does not chain to [console] trust_anchors (default:
    this CA) fails the handshake, one whose identity is in neither list gets a 403. An
    approver must also be registered (`ca approvers add`); the CA's key countersigns
    their approval, which `ca serve` counts like a signed one. Revocations write the CRL
    to [console] crl_file (default crl.pem in DIR), as `ca crl --out` does. ca.toml is
    re-read when it changes (checked before every request) and on SIGHUP, as `ca serve`
    does: a person removed from [console] is refused from their next request on.
    [console] trust_anchors (the TLS handshake's) need a restart.

    \b
    Example:
      MTLSKIT_CA_PASSPHRASE=... mtlskit ca console ca/ --listen 127.0.0.1:8445
    """
    import signal

    from mtlskit.caserver import reload_on
    from mtlskit.console import Console

    digest = _hold_sighup(directory)
    if ":" not in listen:
        raise InputError("expected HOST:PORT", source="--listen")
    if (cert_path is None) != (key_path is None):
        raise InputError("give both --cert and --key, or neither", source="--cert/--key")
    if key_path is not None:
        check_secret_permissions(key_path, what="server key")
    ca_dir = CaDirectory.open(directory)
    settings = ca_dir.config.console
    if not settings.approvers and not settings.viewers:
        raise InputError(
            "no [console] approvers or viewers: nobody could use the console",
            source=str(directory / CONFIG),
        )
    issuer = _issuer(ca_dir, passphrase_file)
    root = None
    if ca_dir.config.intermediate:
        root = _issuer(ca_dir, passphrase_file, stem="root")
    anchors = _console_anchors(ca_dir, issuer)
    now = _now()
    https = _https(
        listen,
        hostnames,
        issuer,
        now=now,
        required_clients=anchors,
        cert_files=(cert_path, key_path) if cert_path and key_path else None,
    )
    store = ca_dir.store(db=db)
    store.record_event(
        "console",
        {
            **https.audit(),
            "approvers": list(settings.approvers),
            "viewers": list(settings.viewers),
        },
        at=now,
    )
    pkcs11 = ca_dir.config.pkcs11

    def log(line: str) -> None:
        click.echo(f"mtlskit ca console: {line}", err=True)

    def console_dir(config: CaConfig) -> CaDirectory:
        """The CA directory under a re-read ca.toml; the handshake keeps its anchors."""
        running = settings.trust_anchors
        if config.console.trust_anchors != running:
            log("restart needed: console.trust_anchors (the handshake keeps the running ones)")
            kept = config.console.model_copy(update={"trust_anchors": running})
            config = config.model_copy(update={"console": kept})
        return CaDirectory(path=ca_dir.path, config=config)

    watch = _config_watch(ca_dir, digest, console_dir, log)
    console = Console(
        ca_dir=ca_dir,
        issuer=issuer,
        store=store,
        publish_crl=lambda running, at: publish_crl(
            running, issuer, root, store, running.path / running.config.console.crl_file, now=at
        ),
        key_store=f"PKCS#11 token ({pkcs11.issuing or pkcs11.root})" if pkcs11 else "file",
        watch=watch,
    )
    reload_on(signal.SIGHUP, console.reload)  # before saying it listens
    click.echo(
        f"console listening on {https.url} (fingerprint {Fingerprint.of(https.certificate)})"
    )
    https.run(console.app, close=console.close)


@command.command("migrate")
@_dir_argument
@click.option("--db", help=f"Store URL instead of ca.toml's (or ${DB_URL_ENV}).")
def migrate_command(directory: Path, db: str | None) -> None:
    """Upgrade the CA store's schema to this mtlskit's (Alembic revisions, one transaction).

    Run once after upgrading mtlskit, before starting the new `ca serve` nodes. SQLite
    stores are also upgraded when first opened; a shared PostgreSQL store is refused
    by every command until it is migrated. Stores from before Alembic (schema
    version 1 or 2) are recognised and upgraded too.

    \b
    Example:
      MTLSKIT_DB_URL=postgresql://ca:SECRET@db.internal/ca mtlskit ca migrate ca/
    """
    from mtlskit.store import migrate

    ca_dir = CaDirectory.open(directory)
    before, after = migrate(ca_dir.database_url(db))
    if before == after:
        click.echo(f"the CA store is already at schema revision {after}")
    else:
        click.echo(f"migrated the CA store from schema revision {before or '(none)'} to {after}")
