"""``mtlskit lint FILE...``: is this certificate fit for TLS client authentication?"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from mtlskit.cli._inputs import read_certificates
from mtlskit.cli._output import echo_lines, one_line, rich_output
from mtlskit.lint import DEFAULT_PROFILE, PROFILES, CertificateReport, Severity, lint_chain

if TYPE_CHECKING:
    from rich.table import Table

_STYLE = {
    Severity.ERROR: "bold red",
    Severity.WARNING: "yellow",
    Severity.NOTICE: "cyan",
    Severity.INFO: "dim",
}


def _parse_at(ctx: click.Context, param: click.Parameter, value: str | None) -> dt.datetime:
    """``--at``: ISO 8601; without a zone it means UTC. Absent: now."""
    if value is None:
        return dt.datetime.now(dt.UTC)
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an ISO 8601 date or time (e.g. 2026-07-01T12:00:00Z)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _table(path: str, report: CertificateReport) -> Table:
    from rich.markup import escape
    from rich.table import Table

    role = "leaf" if report.index == 0 else "CA"
    table = Table(
        title=f"{escape(path)} [{report.index}] {role}: {escape(report.subject)}",
        title_justify="left",
        show_lines=True,
    )
    table.add_column("severity")
    table.add_column("code", style="bold")
    table.add_column("finding", overflow="fold", ratio=3)
    table.add_column("reference", style="dim", overflow="fold", ratio=1)
    for finding in report.findings:
        style = _STYLE[finding.severity]
        table.add_row(
            f"[{style}]{finding.severity}[/]",
            finding.code,
            escape(finding.message),
            escape(finding.reference),
        )
    return table


def _lines(results: list[tuple[str, CertificateReport]]) -> list[str]:
    """One line per finding (``PATH [INDEX] ROLE SUBJECT: SEVERITY CODE: MESSAGE (REFERENCE)``),
    one ``clean`` line per certificate without any: the shape ``grep CODE`` wants."""
    lines = []
    for path, report in results:
        where = f"{one_line(path)} [{report.index}] {'leaf' if report.index == 0 else 'CA'} "
        where += one_line(report.subject)
        if not report.findings:
            lines.append(f"{where}: clean")
        lines += [
            f"{where}: {finding.severity} {finding.code}: {one_line(finding.message)}"
            f" ({one_line(finding.reference)})"
            for finding in report.findings
        ]
    return lines


_PROFILE_HELP = "; ".join(f"{name}: {profile.summary}" for name, profile in PROFILES.items())


@click.command("lint")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=str))
@click.option(
    "--profile",
    "profiles",
    multiple=True,
    type=click.Choice(list(PROFILES)),
    help=f"Rule set(s) to apply; repeatable; default {DEFAULT_PROFILE}. {_PROFILE_HELP}.",
)
@click.option(
    "--at",
    "at",
    callback=_parse_at,
    metavar="ISO8601",
    help="Judge validity at this instant instead of now (no zone means UTC).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
@click.option(
    "--password-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="PKCS#12 password (first line); else $MTLSKIT_PKCS12_PASSWORD or a prompt.",
)
def command(
    files: tuple[str, ...],
    profiles: tuple[str, ...],
    at: dt.datetime,
    as_json: bool,
    password_file: Path | None,
) -> int:
    """Check certificates against client-authentication profiles; exit 1 on any error finding.

    Each FILE is one chain, leaf first (PEM, DER or PKCS#12): leaf rules apply to the
    first certificate, CA rules to the others, chain rules across them.

    \b
    Example:
      mtlskit lint client.pem
      mtlskit lint --profile client-auth --profile gcp-lb chain.pem
      mtlskit lint --at 2027-04-01 --json client.pem | jq '.results[].findings'
    """
    loaded = [(path, read_certificates(path, password_file=password_file)) for path in files]
    chosen = profiles or (DEFAULT_PROFILE,)
    results = [
        (path, report) for path, chain in loaded for report in lint_chain(chain, chosen, at=at)
    ]
    failed = any(report.has_errors for _, report in results)
    if as_json:
        body = [{"path": path} | report.as_dict() for path, report in results]
        click.echo(json.dumps({"results": body}, indent=2))
        return 1 if failed else 0
    counts = dict.fromkeys(Severity, 0)
    for _, report in results:
        for finding in report.findings:
            counts[finding.severity] += 1
    summary = ", ".join(f"{severity}: {count}" for severity, count in counts.items())
    if not rich_output():
        echo_lines(_lines(results))
        click.echo(f"{'FAIL' if failed else 'PASS'} ({', '.join(chosen)}): {summary}")
        return 1 if failed else 0
    from rich.console import Console
    from rich.markup import escape

    console = Console()
    for path, report in results:
        if report.findings:
            console.print(_table(path, report))
        else:
            role = "leaf" if report.index == 0 else "CA"
            console.print(
                f"{escape(path)} [{report.index}] {role}: {escape(report.subject)}  [green]clean[/]"
            )
    verdict = "[bold red]FAIL[/]" if failed else "[green]PASS[/]"
    console.print(f"{verdict} ({', '.join(chosen)}): {summary}")
    return 1 if failed else 0
