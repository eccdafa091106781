"""``mtlskit inspect FILE...``: what a certificate says, and who it says the client is."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from mtlskit.certinfo import CertificateSummary, summarize
from mtlskit.cli._inputs import read_certificates
from mtlskit.cli._output import echo_lines, one_line, rich_output

if TYPE_CHECKING:
    from rich.table import Table


def _lines(path: str, summary: CertificateSummary, now: dt.datetime) -> list[str]:
    """``PATH [INDEX]`` then one indented ``Field: value`` line per row, as openssl prints."""
    return [
        f"{one_line(path)} [{summary.index}]",
        *(f"  {field}: {one_line(value)}" for field, value, _ in summary.rows(now)),
    ]


def _table(path: str, summary: CertificateSummary, now: dt.datetime) -> Table:
    from rich.markup import escape
    from rich.table import Table

    table = Table(
        title=f"{escape(path)} [{summary.index}]", show_header=False, title_justify="left"
    )
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for field, value, style in summary.rows(now):
        text = escape(value.replace(", ", "\n") if field == "Subject alt names" else value)
        table.add_row(field, f"[{style}]{text}[/]" if style else text)
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
    if not rich_output():
        echo_lines(line for path, summary in summaries for line in _lines(path, summary, now))
        return
    from rich.console import Console

    console = Console()
    for path, summary in summaries:
        console.print(_table(path, summary, now))
