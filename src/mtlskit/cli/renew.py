"""``mtlskit renew``: argument handling over ``mtlskit.client.renew`` / ``renew_forever``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click


@click.command("renew")
@click.argument("url")
@click.option("--cert", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--key", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--ca",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The pinned CA root (default: ca.pem beside --cert, as enroll writes it).",
)
@click.option("--rekey", is_flag=True, help="New key each renewal (see the note on readers).")
@click.option("--daemon", is_flag=True, help="Keep renewing at ~2/3 of each lifetime.")
@click.option("--exec", "exec_command", help="Shell command run after each renewal.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (one-shot).")
def command(  # noqa: PLR0917
    url: str,
    cert: Path,
    key: Path,
    ca: Path | None,
    rekey: bool,
    daemon: bool,
    exec_command: str | None,
    as_json: bool,
) -> None:
    """Renew CERT at URL, proving possession of KEY in the TLS handshake.

    Same identity, new serial; files are replaced atomically and only by a newer
    certificate, never deleted. With --daemon it sleeps until ~2/3 of the lifetime
    (± jitter), renews, runs --exec, and backs off through CA outages; it exits 1
    when the CA refuses (revoked, unknown, expired).

    \b
    Examples:
      mtlskit renew https://ca.internal:8444 --cert svc/cert.pem --key svc/key.pem
      mtlskit renew https://ca.internal:8444 --cert svc/cert.pem --key svc/key.pem \\
        --daemon --exec 'systemctl reload nginx'
    """
    import subprocess

    from mtlskit.client import (
        CaRateLimited,
        CaRefused,
        CaUnavailable,
        Renewed,
        renew,
        renew_forever,
    )
    from mtlskit.files import check_secret_permissions

    check_secret_permissions(key, what="private key")  # as every command that reads one

    def report(renewed: Renewed) -> None:
        if as_json:
            click.echo(
                json.dumps(
                    {
                        "old_serial": renewed.old_serial,
                        "serial": renewed.serial,
                        "identity": renewed.identity,
                        "not_after": renewed.not_after.isoformat(),
                    }
                )
            )
        else:
            click.echo(
                f"renewed {renewed.identity}: serial {renewed.old_serial} → {renewed.serial}, "
                f"until {renewed.not_after.isoformat()}"
            )

    try:
        if daemon:
            logging.basicConfig(level=logging.INFO, format="mtlskit renew: %(message)s")
            renew_forever(
                url, cert, key, ca=ca, rekey=rekey, exec_command=exec_command, on_renewed=report
            )
            return
        renewed = renew(url, cert, key, ca=ca, rekey=rekey)
    except CaRefused as exc:
        click.echo(f"mtlskit: {exc}", err=True)
        raise click.exceptions.Exit(1) from None
    except CaRateLimited as exc:  # not an outage: this address must wait, and it says how long
        click.echo(f"mtlskit: error: {exc}", err=True)
        raise click.exceptions.Exit(2) from None
    except CaUnavailable as exc:
        click.echo(f"mtlskit: error: CA unavailable: {exc}", err=True)
        raise click.exceptions.Exit(2) from None
    report(renewed)
    if exec_command:
        subprocess.run(exec_command, shell=True, check=False)
