"""``mtlskit enroll``: argument handling over ``mtlskit.client.enroll``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from mtlskit.certs import KeyType
from mtlskit.errors import InputError
from mtlskit.files import read_bytes


def _id_token(token: str | None, file: Path | None, env: str | None) -> str | None:
    """The id token from --id-token-file or --id-token-env; exactly one way to prove who we are."""
    given = [
        name
        for name, value in (("--token", token), ("--id-token-file", file), ("--id-token-env", env))
        if value is not None
    ]
    if len(given) != 1:
        raise InputError(
            "give exactly one of --token, --id-token-file, --id-token-env"
            + (f" (got {', '.join(given)})" if given else ""),
            source="enroll",
        )
    if file is not None:
        try:
            text = read_bytes(file, what="id token file").decode("ascii").strip()
        except UnicodeDecodeError:
            raise InputError("is not an id token (not ASCII)", source=str(file)) from None
        if not text:
            raise InputError("is empty, expected an id token (a JWT)", source=str(file))
        return text
    if env is not None:
        text = os.environ.get(env, "").strip()
        if not text:
            raise InputError(f"${env} is unset or empty", source="--id-token-env")
        return text
    return None


@click.command("enroll")
@click.argument("url")
@click.option("--token", help="One-time token from `mtlskit ca token`.")
@click.option(
    "--id-token-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A workload-identity JWT (e.g. a Kubernetes projected service-account token) that "
    "a [[provisioners]] entry of the CA trusts, instead of --token. Re-read each run.",
)
@click.option(
    "--id-token-env", metavar="VAR", help="Like --id-token-file, from environment variable VAR."
)
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--ca-fingerprint",
    help="sha256:HEX of the CA root, checked before the token is sent (else trust on first use).",
)
@click.option(
    "--key-type",
    type=click.Choice([kind.value for kind in KeyType]),
    default=KeyType.EC_P256.value,
    show_default=True,
)
@click.option("--wait", default=600.0, show_default=True, help="Seconds to wait for approval.")
@click.option("--request", "request_id", help="Resume polling this pending request.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def command(  # noqa: PLR0917
    url: str,
    token: str | None,
    id_token_file: Path | None,
    id_token_env: str | None,
    out: Path,
    ca_fingerprint: str | None,
    key_type: str,
    wait: float,
    request_id: str | None,
    as_json: bool,
) -> None:
    """Enroll with a CA server: make a key here, redeem a token, write cert/chain/key/ca.pem.

    The token is a one-time --token, or a workload-identity token (--id-token-file,
    --id-token-env) from which the CA's provisioner derives the identity.

    The key never leaves this machine. OUT gets key.pem (0600, written first),
    cert.pem, chain.pem (what to present) and ca.pem (the pinned CA root). Exit 1
    when the CA refuses (the stable code is printed), 2 when it cannot be reached or
    rate-limits this address (the message says when to retry).

    \b
    Example:
      mtlskit enroll https://ca.internal:8444 --token mtk1_… --out svc/ \\
        --ca-fingerprint sha256:…
      mtlskit enroll https://ca.internal:8444 --out svc/ --ca-fingerprint sha256:… \\
        --id-token-file /var/run/secrets/tokens/mtlskit
    """
    from mtlskit.client import CaRateLimited, CaRefused, CaUnavailable, enroll

    def pending(request: str, approvals: int, required: int) -> None:
        click.echo(f"waiting for approval of request {request}: {approvals}/{required}", err=True)

    id_token = _id_token(token, id_token_file, id_token_env) if request_id is None else None
    first_use = ca_fingerprint is None and not (out / "ca.pem").exists()
    try:
        result = enroll(
            url,
            token,
            out,
            id_token=id_token,
            ca_fingerprint=ca_fingerprint,
            key_type=key_type,
            wait=wait,
            request_id=request_id,
            on_pending=pending,
        )
    except CaRefused as exc:
        click.echo(f"mtlskit: {exc}", err=True)
        raise click.exceptions.Exit(1) from None
    except CaRateLimited as exc:  # not an outage: this address must wait, and it says how long
        click.echo(f"mtlskit: error: {exc}", err=True)
        raise click.exceptions.Exit(2) from None
    except CaUnavailable as exc:
        click.echo(f"mtlskit: error: CA unavailable: {exc}", err=True)
        raise click.exceptions.Exit(2) from None
    if first_use:  # said once the CA answered, so a failure stays the one line
        click.echo(
            f"warning: no --ca-fingerprint: trusted the CA on first use"
            f" ({result.root_fingerprint})",
            err=True,
        )
    if as_json:
        document = {
            "status": result.status,
            "serial": result.serial,
            "identity": result.identity,
            "not_after": result.not_after,
            "request_id": result.request_id,
            "ca_fingerprint": result.root_fingerprint,
            "files": result.files() if result.status == "issued" else {},
        }
        click.echo(json.dumps(document, indent=2))
    elif result.status == "pending":
        click.echo(
            f"request {result.request_id} still waits for approval; resume with "
            f"`mtlskit enroll {url} --out {out} --request {result.request_id}`"
        )
    else:
        click.echo(f"enrolled {result.identity}: serial {result.serial}, until {result.not_after}")
        click.echo(f"CA root pinned: {result.root_fingerprint}")
        for path in result.files().values():
            click.echo(f"  {path}")
    if result.status == "pending":
        raise click.exceptions.Exit(1)
