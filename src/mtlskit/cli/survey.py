"""``mtlskit survey HOST[:PORT]...``: which servers' certificates still carry clientAuth?"""

from __future__ import annotations

import asyncio
import json

import click

from mtlskit.cli._output import echo_lines, one_line, rich_output
from mtlskit.publicca import ClientAuthStatus
from mtlskit.survey import SurveyResult, Target, survey

_STATUS_STYLE = {
    ClientAuthStatus.NOT_CLIENT_AUTH: "green",
    ClientAuthStatus.ALLOWED: "yellow",
    ClientAuthStatus.PHASING_OUT: "yellow",
    ClientAuthStatus.NO_LONGER_ISSUED: "red",
}


def _lines(results: list[SurveyResult]) -> list[str]:
    """One line per server: ``TARGET: EKU …; issuer …; class …; issued …; clientAuth: …``."""
    lines = []
    for result in results:
        if result.error:
            lines.append(f"{result.target}: error: {one_line(result.error)}")
            continue
        eku = ", ".join(result.eku) if result.eku is not None else "(none: any purpose)"
        verdict = result.client_auth
        status = verdict.explain() if verdict else "n/a (not publicly trusted)"
        lines.append(
            f"{result.target}: EKU {one_line(eku)}; issuer {one_line(result.issuer)}; "
            f"class {result.issuer_class}; issued {result.chain[0].not_valid_before_utc:%Y-%m-%d}; "
            f"clientAuth: {status}"
        )
    return lines


def _render(results: list[SurveyResult]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="clientAuth survey", title_justify="left")
    for header in ("server", "EKU", "issuer", "class", "issued", "clientAuth status"):
        table.add_column(header, overflow="fold")
    for result in results:
        if result.error:
            table.add_row(str(result.target), f"[red]{result.error}[/red]", "", "", "", "")
            continue
        eku = ", ".join(result.eku) if result.eku is not None else "(none: any purpose)"
        verdict = result.client_auth
        status = (
            f"[{_STATUS_STYLE[verdict.status]}]{verdict.explain()}[/]"
            if verdict
            else "n/a (not publicly trusted)"
        )
        table.add_row(
            str(result.target),
            eku,
            result.issuer,
            str(result.issuer_class),
            f"{result.chain[0].not_valid_before_utc:%Y-%m-%d}",
            status,
        )
    console.print(table)


@click.command("survey")
@click.argument("targets", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--timeout", default=5.0, show_default=True, help="Seconds per server.")
@click.option("--concurrency", default=16, show_default=True, help="Servers surveyed at once.")
def command(targets: tuple[str, ...], as_json: bool, timeout: float, concurrency: int) -> int:
    """Fetch each server's certificate and report its EKUs, issuer, and clientAuth status.

    A publicly trusted certificate is judged at its notBefore against the root-program
    timeline (Chrome Root Program Policy v1.8 §1.3.2, Let's Encrypt's 2026 profile
    changes). Exit 1 if a public certificate was issued with clientAuth after a final
    cut-off; 2 if no server could be reached at all.

    \b
    Examples:
      mtlskit survey example.com github.com:443
      mtlskit survey --json 127.0.0.1:8443
    """
    from rich.console import Console
    from rich.progress import Progress

    parsed = [Target.parse(text) for text in targets]
    console = Console(stderr=True)
    # A bar only on a terminal: piped, even a transient one leaves a blank stderr line (and
    # rich 13 writes one even for a disabled bar, hence quiet).
    bar_off = as_json or not console.is_terminal
    console.quiet = bar_off
    with Progress(console=console, transient=True, disable=bar_off) as progress:
        task = progress.add_task("surveying", total=len(parsed))
        results = asyncio.run(
            survey(
                parsed,
                timeout=timeout,
                concurrency=concurrency,
                on_done=lambda _: progress.advance(task),
            )
        )
    if as_json:
        click.echo(json.dumps({"results": [r.as_dict() for r in results]}, indent=2))
    elif rich_output():
        _render(results)
    else:
        echo_lines(_lines(results))
    if all(result.error for result in results):
        click.echo(f"mtlskit: error: no server could be reached ({results[0].error})", err=True)
        return 2
    return 0 if all(result.compliant for result in results) else 1
