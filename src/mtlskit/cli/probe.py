"""``mtlskit probe HOST:PORT``: attack an mTLS endpoint's client authentication, report per case.

Argument handling only: the battery is ``mtlskit.probe.run_probe``. Exit 0 when no
must-refuse case was accepted (findings allowed), 1 when one was (or a control was
refused), 2 on unusable input or when a case could not run at all.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from mtlskit.cadir import PASSPHRASE_ENV
from mtlskit.cli._inputs import read_certificates, read_private_key
from mtlskit.cli._output import echo_lines, rich_output
from mtlskit.errors import InputError
from mtlskit.files import read_password
from mtlskit.probe import Case, ProbeReport, Verdict, report_lines, report_table, run_probe


def _after_crl(command_line: str | None) -> Callable[[], None] | None:
    if command_line is None:
        return None
    argv = shlex.split(command_line)
    if not argv:
        raise InputError("is empty", source="--after-crl")

    def run() -> None:
        try:
            done = subprocess.run(argv, capture_output=True, timeout=60, check=False)
        except OSError as exc:
            raise InputError(f"cannot run: {exc}", source="--after-crl") from None
        if done.returncode != 0:
            error = done.stderr.decode(errors="replace").strip()
            raise InputError(f"exited {done.returncode}: {error}", source="--after-crl")

    return run


def _plain(report: ProbeReport) -> None:
    counts = ", ".join(
        f"{report.count(verdict)} {verdict.value}" for verdict in Verdict if report.count(verdict)
    )
    verdict = "WEAK" if report.count(Verdict.FAIL) else "OK"
    echo_lines([*report_lines(report), *(f"note: {note}" for note in report.notes)])
    click.echo(f"{verdict}  {counts}")


def _print(report: ProbeReport, console: Console) -> None:
    console.print(report_table(report))
    for note in report.notes:
        console.print(f"note: {note}", highlight=False)
    counts = ", ".join(
        f"{report.count(verdict)} {verdict.value}" for verdict in Verdict if report.count(verdict)
    )
    fails = report.count(Verdict.FAIL)
    verdict = "[bold red]WEAK[/]" if fails else "[bold green]OK[/]"
    console.print(f"{verdict}  {counts}")


@click.command("probe")
@click.argument("target", metavar="HOST:PORT")
@click.option(
    "--cert",
    "cert_path",
    required=True,
    help="The legitimate client's certificate (chain, leaf first). Public: no key needed.",
)
@click.option("--key", "key_path", help="Its private key: enables the control and spoofing cases.")
@click.option(
    "--ca-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="A `mtlskit ca init` directory the endpoint trusts: enables the defective-certificate "
    "cases, which are signed with its key OUTSIDE its lint gate (a test CA, not production).",
)
@click.option(
    "--passphrase-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"CA key passphrase (first line); else ${PASSPHRASE_ENV}.",
)
@click.option(
    "--crl-out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where the endpoint reads its CRL: the revoked case's CRL is written here.",
)
@click.option(
    "--after-crl",
    "after_crl",
    metavar="COMMAND",
    help="Run after writing the CRL, e.g. 'nginx -s reload' (the revoked case runs last).",
)
@click.option("--server-name", help="SNI and Host header (default: HOST unless an IP).")
@click.option("--path", "request_path", default="/", show_default=True, help="Request path.")
@click.option(
    "--echo",
    is_flag=True,
    help="The backend echoes request headers: check spoofed identity headers do not arrive.",
)
@click.option("--timeout", default=5.0, show_default=True, help="Seconds per network step.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def command(  # noqa: PLR0917 - click passes every option by keyword
    target: str,
    cert_path: str,
    key_path: str | None,
    ca_dir: Path | None,
    passphrase_file: Path | None,
    crl_out: Path | None,
    after_crl: str | None,
    server_name: str | None,
    request_path: str,
    echo: bool,
    timeout: float,
    as_json: bool,
) -> int:
    """Run an attack battery against HOST:PORT's client-certificate authentication.

    Cases: no certificate; the real certificate with a foreign key (TLS 1.2 and 1.3,
    via tlslite-ng); impostors from an unknown CA and self-signed; with --ca-dir:
    expired, not yet valid, serverAuth-only, no EKU, CA:TRUE leaf, no SAN, two SPIFFE
    IDs, foreign trust domain, RSA-1024, SHA-1, revoked; with --key and --echo:
    spoofed identity headers. Each case is expected to be refused, accepted, or is a
    policy choice reported as information; a "should refuse" case that is accepted is
    a finding, a "refuse" case that is accepted fails the probe (exit 1).

    \b
    Example:
      MTLSKIT_CA_PASSPHRASE=... mtlskit probe 127.0.0.1:8443 --cert client/chain.pem \\
          --key client/key.pem --ca-dir ca/ --crl-out ca/crl.pem --echo
    """
    if crl_out is not None and ca_dir is None:
        raise click.UsageError("--crl-out needs --ca-dir")
    chain = read_certificates(cert_path)
    key = read_private_key(key_path) if key_path is not None else None
    passphrase = None
    if ca_dir is not None:
        passphrase = read_password(file=passphrase_file, env=PASSPHRASE_ENV, prompt=None)
    hook = _after_crl(after_crl)
    console = Console(stderr=as_json)
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        # quiet as well: rich 13 writes a blank line even for a disabled bar
        console=(bar_console := Console(stderr=True, quiet=not sys.stderr.isatty())),
        transient=True,
        disable=not bar_console.is_terminal,  # piped, a transient bar leaves a blank line
    ) as bar:
        task = bar.add_task("preparing certificates", total=None)

        def progress(case: Case, index: int, total: int) -> None:
            bar.update(task, description=case.title, completed=index, total=total)

        report = run_probe(
            target,
            chain=chain,
            key=key,
            ca_dir=ca_dir,
            passphrase=passphrase,
            crl_out=crl_out,
            after_crl=hook,
            server_name=server_name,
            path=request_path,
            echo=echo,
            timeout=timeout,
            progress=progress,
        )
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    elif rich_output():
        _print(report, console)
    else:
        _plain(report)
    return report.exit_code
