"""The report as a rich table (one row per case, verdict in colour) or as plain lines.

``report_lines`` is what a pipe gets: each case on one line that starts with its id,
so ``grep foreign_key`` finds the whole row.
"""

from __future__ import annotations

from typing import Final

from rich.table import Table

from mtlskit.probe._cases import Expect, ProbeReport, Verdict

__all__ = ["report_lines", "report_table"]

_EXPECT_TEXT: Final = {
    Expect.REFUSE: "refuse",
    Expect.SHOULD_REFUSE: "should refuse",
    Expect.ACCEPT: "accept",
    Expect.INFO: "(policy)",
}
_STYLE: Final = {
    Verdict.PASS: "green",
    Verdict.FAIL: "bold red",
    Verdict.FINDING: "yellow",
    Verdict.INFO: "cyan",
    Verdict.SKIPPED: "dim",
    Verdict.ERROR: "magenta",
}


def report_table(report: ProbeReport) -> Table:
    title = f"mtlskit probe {report.target}" + (
        f" (SNI {report.server_name})" if report.server_name else ""
    )
    table = Table("case", "expected", "observed", "TLS", "verdict", title=title)
    for result in report.results:
        verdict = result.verdict
        table.add_row(
            result.case.title,
            _EXPECT_TEXT[result.case.expect],
            result.observation.summary(),
            result.observation.tls_version or "",
            f"[{_STYLE[verdict]}]{verdict.value}[/]",
        )
    return table


def report_lines(report: ProbeReport) -> list[str]:
    """``ID: TITLE: expected E, observed O[, TLS V]: VERDICT`` per case, control characters
    (a server's alert text or HTTP reason) flattened to spaces."""
    lines = []
    for result in report.results:
        observed = " ".join(result.observation.summary().split())
        tls = f", {result.observation.tls_version}" if result.observation.tls_version else ""
        lines.append(
            f"{result.case.id}: {result.case.title}: expected {_EXPECT_TEXT[result.case.expect]}, "
            f"observed {observed}{tls}: {result.verdict.value}"
        )
    return lines
