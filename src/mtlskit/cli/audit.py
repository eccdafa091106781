"""``mtlskit audit BUNDLE...``: what would this client trust store let in?"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import click

from mtlskit.audit import AuditReport, audit_trust_store
from mtlskit.certs import load_certificates
from mtlskit.cli._output import echo_lines, one_line, rich_output
from mtlskit.errors import ConfigError, InputError
from mtlskit.files import read_bytes
from mtlskit.lint import Finding, Severity
from mtlskit.tomlconfig import parse_toml

_STYLE = {
    Severity.ERROR: "red",
    Severity.WARNING: "yellow",
    Severity.NOTICE: "cyan",
    Severity.INFO: "dim",
}
_SUFFIXES = {".pem", ".crt", ".cer", ".der"}


def _bundle_files(path: Path) -> list[Path]:
    """A PEM/DER file, every certificate file in a directory, or a gateway config's trust list."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in _SUFFIXES and p.is_file())
        if not files:
            raise InputError("directory holds no .pem, .crt, .cer or .der file", source=str(path))
        return files
    if path.suffix == ".toml":
        config = parse_toml(read_bytes(path, what="config file"), source=str(path))
        trust = config.get("client_auth", {}).get("trust")
        if not isinstance(trust, list) or not trust:
            raise ConfigError("has no [client_auth] trust list to audit", source=str(path))
        return [f for entry in trust for f in _bundle_files(path.parent / str(entry))]
    return [path]


def _lines(report: AuditReport) -> list[str]:
    """One line per finding, ``SOURCE #INDEX SUBJECT (CA): SEVERITY CODE: MESSAGE (REFERENCE)``;
    ``ok`` for an entry without findings; the store's own findings; the verdict last."""
    lines = []
    for entry in report.entries:
        where = f"{one_line(entry.source)} #{entry.index} {one_line(entry.subject)}"
        where += " (CA)" if entry.is_ca else " (end-entity)"
        if not entry.findings:
            lines.append(f"{where}: ok")
        lines += [f"{where}: {_plain(finding)}" for finding in entry.findings]
    lines += [_plain(finding) for finding in report.findings]
    lines.append(f"verdict: {'FAIL' if report.has_errors else 'PASS'}")
    return lines


def _plain(finding: Finding) -> str:
    message, reference = one_line(finding.message), one_line(finding.reference)
    return f"{finding.severity.value} {finding.code}: {message} ({reference})"


def _render(report: AuditReport) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="client trust store audit", title_justify="left")
    for header in ("source", "#", "subject", "CA", "findings"):
        table.add_column(header, overflow="fold")
    for entry in report.entries:
        findings = "\n".join(_line(f) for f in entry.findings) or "[green]ok[/green]"
        table.add_row(
            entry.source, str(entry.index), entry.subject, "yes" if entry.is_ca else "no", findings
        )
    console.print(table)
    for finding in report.findings:
        console.print(_line(finding))
    verdict = "[red]FAIL[/red]" if report.has_errors else "[green]PASS[/green]"
    console.print(f"verdict: {verdict}")


def _line(finding: Finding) -> str:
    from rich.markup import escape

    style = _STYLE[finding.severity]
    label = f"[{style}]{finding.severity.value} {finding.code}[/{style}]"
    return f"{label}: {escape(finding.message)} [dim]({escape(finding.reference)})[/dim]"


@click.command("audit")
@click.argument("bundles", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def command(bundles: tuple[Path, ...], as_json: bool) -> int:
    """Audit client-auth trust stores: PEM bundles, directories, or a gateway config file.

    Flags public roots (anyone with a DV certificate becomes a client), expired or
    expiring anchors, weak keys, CAs whose EKU excludes clientAuth, chains deeper
    than GCP's or AWS's limits, duplicates; lists pinned end-entity certificates.
    Exit 1 if any finding is an error.

    \b
    Examples:
      mtlskit audit ca/root.pem
      mtlskit audit /etc/ssl/certs/ca-certificates.crt     # a system store: exits 1
      mtlskit audit gateway.toml --json
    """
    certificates = []
    for bundle in bundles:
        for file in _bundle_files(bundle):
            data = read_bytes(file, what="trust bundle")
            certificates += [
                (str(file), cert) for cert in load_certificates(data, source=str(file))
            ]
    report = audit_trust_store(certificates, now=dt.datetime.now(dt.UTC))
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    elif rich_output():
        _render(report)
    else:
        echo_lines(_lines(report))
    return 1 if report.has_errors else 0
