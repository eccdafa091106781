"""``mtlskit inspect FILE...``: what a certificate says, and who it says the client is."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from mtlskit.certinfo import CertificateSummary, IssuerClass, summarize
from mtlskit.cli._inputs import read_certificates

_CLASS_STYLE = {
    IssuerClass.SELF_SIGNED: "yellow",
    IssuerClass.PRIVATE: "green",
    IssuerClass.PUBLIC: "bold red",
    IssuerClass.UNKNOWN: "dim",
}


def _format_left(delta: dt.timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 0:
        return f"[red]expired {_span(-seconds)} ago[/red]"
    return f"{_span(seconds)} left"


def _span(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    if days:
        return f"{days}d {hours}h"
    return f"{hours}h {rest // 60}m"


def _table(path: str, summary: CertificateSummary, now: dt.datetime) -> Table:
    table = Table(title=f"{path} [{summary.index}]", show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    identity = (
        f"{summary.identity.kind.value}: {summary.identity.value}"
        + (" [yellow](legacy: subject CN)[/yellow]" if summary.identity.legacy else "")
        if summary.identity
        else f"[red]none[/red] ({summary.identity_error})"
    )
    rows = [
        ("Identity", identity),
        ("Subject", summary.subject),
        ("Issuer", summary.issuer),
        ("Issuer class", f"[{_CLASS_STYLE[summary.issuer_class]}]{summary.issuer_class}[/]"),
        ("Serial", summary.serial),
        ("Not before", summary.not_before.isoformat()),
        ("Not after", f"{summary.not_after.isoformat()}  ({_format_left(summary.time_left(now))})"),
        ("Key", summary.key),
        ("Signature", summary.signature_algorithm),
        ("Basic constraints", summary.basic_constraints or "[dim]absent[/dim]"),
        (
            "Key usage",
            (", ".join(summary.key_usage) + (" (critical)" if summary.key_usage_critical else ""))
            if summary.key_usage is not None
            else "[dim]absent[/dim]",
        ),
        (
            "Extended key usage",
            ", ".join(f"{name} ({oid})" for name, oid in summary.eku)
            if summary.eku is not None
            else "[dim]absent[/dim]",
        ),
        ("Subject alt names", "\n".join(summary.san) or "[dim]none[/dim]"),
        ("SHA-256", f"{summary.fingerprint.colon_hex}\nbase64: {summary.fingerprint.base64}"),
    ]
    if summary.extensions_error:
        rows.insert(1, ("Extensions", f"[red]unreadable[/red] ({summary.extensions_error})"))
    for field, value in rows:
        table.add_row(field, value)
    return table


@click.command("inspect")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
@click.option(
    "--password-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="PKCS#12 password (first line); else $MTLSKIT_PKCS12_PASSWORD or a prompt.",
)
def command(files: tuple[str, ...], as_json: bool, password_file: Path | None) -> None:
    """Show subject, issuer, validity, key, extensions, SANs, identity and fingerprint.

    Reads PEM (any number of certificates), DER or PKCS#12. The issuer class says who
    signed it: self-signed, a private CA, or a publicly trusted CA (a Mozilla root).

    \b
    Example:
      mtlskit inspect client.pem
      mtlskit inspect --json chain.pem | jq '.results[0].identity'
    """
    now = dt.datetime.now(dt.UTC)
    loaded = [(path, read_certificates(path, password_file=password_file)) for path in files]
    summaries = [
        (path, summarize(chain, index)) for path, chain in loaded for index in range(len(chain))
    ]
    if as_json:
        results = [{"path": path} | summary.as_dict(now) for path, summary in summaries]
        click.echo(json.dumps({"results": results}, indent=2))
        return
    console = Console()
    for path, summary in summaries:
        console.print(_table(path, summary, now))
