"""Re-create the comparison table in docs/probe.md from real probe runs.

Runs the probe tests against mtlskit's gateway, nginx (without and with ``ssl_crl``)
and HAProxy (``verify required`` with ``crl-file``) — the same endpoints and
configurations ``tests/test_probe.py`` starts — with ``MTLSKIT_PROBE_REPORTS`` set, so
each test saves its ``ProbeReport`` as JSON; then rewrites the part of
docs/probe.md between the ``probe-table`` markers.

    .venv/bin/python docs/probe_compare.py            # rewrite docs/probe.md
    .venv/bin/python docs/probe_compare.py --print    # print the table only
"""

from __future__ import annotations

import argparse
import json
import os
import re
import ssl
import subprocess
import sys
import tempfile
from pathlib import Path

from mtlskit.probe import SPOOF_HEADERS

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "probe.md"
START, END = "<!-- probe-table:start -->", "<!-- probe-table:end -->"
COLUMNS = {
    "gateway": "mtlskit gateway",
    "nginx": "nginx, no `ssl_crl`",
    "nginx-crl": "nginx + `ssl_crl`",
    "haproxy-crl": "HAProxy + `crl-file`",
}
MARK = {"pass": "✅", "FAIL": "❌", "finding": "⚠️", "info": "ℹ️", "skipped": "–", "error": "💥"}
EXPECT = {
    "refuse": "refuse",
    "should_refuse": "should refuse",
    "accept": "accept",
    "info": "policy",
}


def _version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "not installed"
    text = (done.stdout + done.stderr).strip().splitlines()
    return text[0] if text else "?"


def _run(folder: Path) -> None:
    tests = [
        "tests/test_probe.py::test_probe_against_the_gateway_refuses_everything_it_must",
        "tests/test_probe.py::test_nginx_without_ssl_crl_accepts_the_revoked_client",
        "tests/test_probe.py::test_nginx_with_ssl_crl_refuses_the_revoked_client",
        "tests/test_probe.py::test_haproxy_verify_required",
    ]
    env = {**os.environ, "MTLSKIT_PROBE_REPORTS": str(folder)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
        cwd=ROOT,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"the probe tests failed (exit {done.returncode}); table not written")


def _cell(case: dict) -> str:
    observed = case["observed"]
    if case["verdict"] == "skipped":
        text = "not run"
    elif observed["alert"]:
        text = f"alert `{observed['alert']}`"
    elif observed["http_status"] is not None:
        text = f"HTTP {observed['http_status']}"
    else:
        text = observed["outcome"]
    if case["id"] == "header-spoofing" and observed["outcome"] == "refused":
        text = f"all {len(SPOOF_HEADERS)} stripped"
    elif case["id"] == "header-spoofing" and observed["outcome"] == "accepted":
        arrived = observed["detail"].removeprefix("arrived at the backend: ").split(", ")
        kept = [name for name in SPOOF_HEADERS if name not in arrived]
        text = f"{len(arrived)} of {len(SPOOF_HEADERS)} arrived"
        text += f" (not {', '.join(f'`{name}`' for name in kept)})" if kept else ""
    return f"{MARK[case['verdict']]} {text}"


def table(reports: dict[str, dict]) -> str:
    names = [name for name in COLUMNS if name in reports]
    lines = [
        "| case | expected | " + " | ".join(COLUMNS[name] for name in names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    first = reports[names[0]]
    for index, case in enumerate(first["cases"]):
        cells = [_cell(reports[name]["cases"][index]) for name in names]
        lines.append(f"| {case['title']} | {EXPECT[case['expect']]} | " + " | ".join(cells) + " |")
    lines.append(
        "| **exit code** | | " + " | ".join(f"**{reports[n]['exit_code']}**" for n in names) + " |"
    )
    versions = (
        f"Measured with {_version(['nginx', '-v'])}, {_version(['haproxy', '-v'])}, "
        f"Python {sys.version.split()[0]} with {ssl.OPENSSL_VERSION}; "
        "re-create with `.venv/bin/python docs/probe_compare.py`."
    )
    legend = (
        "✅ as expected · ❌ FAIL (a must-refuse case accepted: exit 1) · ⚠️ finding "
        "(a should-refuse case accepted) · ℹ️ policy choice, reported"
    )
    return "\n".join([*lines, "", legend, "", versions])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--print", action="store_true", help="print the table, leave the doc")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mtlskit-probe-reports-") as work:
        folder = Path(work)
        _run(folder)
        reports = {
            path.stem: json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))
        }
    rendered = table(reports)
    if args.print:
        print(rendered)
        return 0
    text = DOC.read_text()
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    DOC.write_text(pattern.sub(lambda _: f"{START}\n{rendered}\n{END}", text))
    print(f"rewrote the table in {DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
