"""``mtlskit selfsigned``: a key and a self-signed client certificate for services that pin it."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import click

from mtlskit.certs import (
    Fingerprint,
    KeyType,
    certificate_pem,
    generate_private_key,
    private_key_pem,
)
from mtlskit.errors import InputError
from mtlskit.files import write_public, write_secret
from mtlskit.issue import BACKDATE, CLIENT_AUTH, build_self_signed, lint_errors, parse_identity


@click.command("selfsigned")
@click.option("--id", "identity", required=True, help="spiffe://…, a URI, an email or a DNS name.")
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for cert.pem and key.pem (0600).",
)
@click.option(
    "--key-type",
    type=click.Choice([kind.value for kind in KeyType]),
    default=KeyType.EC_P256.value,
    show_default=True,
    help="P-256 is accepted by every peer (GCP and AWS load balancers included).",
)
@click.option(
    "--days",
    type=click.IntRange(1, 3650),
    default=90,
    show_default=True,
    help="Lifetime. 90 keeps lint clean; a pinned certificate cannot be revoked, only unpinned.",
)
def command(identity: str, out: Path, key_type: str, days: int) -> None:
    """Create a key and a self-signed client certificate (client-auth profile).

    The certificate is CA:FALSE with keyUsage digitalSignature (critical), EKU clientAuth
    only, the identity as its SAN, and SKI/AKI so path validators accept it. The service
    pins it by its SHA-256 fingerprint; that pin is only as good as the way the
    fingerprint reached the service, so compare it over a second channel.

    \b
    Example:
      mtlskit selfsigned --id spiffe://acme.com/billing/payments --out client/
    """
    target = parse_identity(identity)
    key_path, cert_path = out / "key.pem", out / "cert.pem"
    if key_path.exists():
        raise InputError("already exists; remove it or choose another --out", source=str(key_path))
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    key = generate_private_key(key_type)
    cert = build_self_signed(
        key=key,
        identity=target,
        profile=CLIENT_AUTH,
        not_before=now - BACKDATE,
        not_after=now - BACKDATE + dt.timedelta(days=days),  # exactly --days, backdate included
    )
    errors = lint_errors((cert,), CLIENT_AUTH, now)
    if errors:  # a bug in the builder, never the user's fault: fail loudly, write nothing
        raise RuntimeError("self-signed certificate fails lint: " + "; ".join(errors))
    write_secret(key_path, private_key_pem(key))
    write_public(cert_path, certificate_pem(cert))
    fingerprint = Fingerprint.of(cert)
    click.echo(f"wrote {cert_path} and {key_path} (0600) for {target.value}")
    click.echo(f"valid until {cert.not_valid_after_utc.isoformat()}")
    click.echo(f"SHA-256 fingerprint: {fingerprint}")
    click.echo(f"                     {fingerprint.colon_hex}")
    click.echo(
        "Before a service pins it, check it out of band: the operator runs\n"
        f"  openssl x509 -in {cert_path.name} -noout -fingerprint -sha256\n"
        "on the copy they received and compares the result with the value above over a\n"
        "different channel (a call, a signed message); a copy swapped in transit would be\n"
        "pinned just as readily."
    )
    # The TLS servers need the certificate file itself: OpenSSL checks the client's
    # certificate against its verify locations before mtlskit compares any fingerprint.
    # The fingerprint beside the file makes the service refuse a swapped file.
    pin_line = json.dumps([str(cert_path.resolve()), str(fingerprint)])
    click.echo(
        "Pin it (the path of the copy on the service's host), in gateway.toml or authz.toml\n"
        f"[client_auth]:\n  pins = {pin_line}\n"
        f"and for mtlskit verify: --pin {fingerprint}"
    )
