"""The operator console's certificate list over 10,000 issued certificates (issue 24).

A real CA directory (``mtlskit ca init``) is seeded through the CA's own issuance path
(``CertificateAuthority.issue``: sign, lint, insert + audit entry), in group commits at
synchronous=NORMAL: 10,000 real certificates with their own serials and fingerprints,
one key (key generation is not what is measured), lifetimes spread from 1 h to 7 days,
every tenth one revoked. Then a real ``mtlskit ca console`` process serves it and one
keep-alive mTLS client (httpx, the approver's certificate) fetches each page in turn:
the first page, one in the middle, a search, the revoked filter and the expiring filter.

Server time is the console's ``Server-Timing: app;dur=MS`` when it sends one; the
client's wall time per request (TLS records, HTTP parsing and the loopback included,
no handshake: the connection is kept) is reported beside it either way, and judges the
goal when there is no header: it is an upper bound of the server's time. The comparison
row, in the same run and on the same store, is ``mtlskit ca list --json`` (a process
that loads and prints every certificate): what an operator without the console runs.

``python -m bench console`` runs it with the others' conventions (``--quick``: 2,000
certificates); ``python -m bench.console`` alone prints the table and the goal.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import os
import re
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.report import OUT_DIR, Goal, Section, stop_process, table

PASSPHRASE = "bench console passphrase"
APPROVER = "spiffe://acme.com/people/bench-approver"
GOAL_MS = 200.0
ONE_KEY_TTL_HOURS = 168  # max_ttl 7d: lifetimes 1 h .. 7 d, so "expiring within 1 day" is ~1/7


def _cli(*args: str | Path) -> None:
    """``mtlskit ARGS`` in-process, its report kept off the benchmark's stdout."""
    from mtlskit.cli import main

    with contextlib.redirect_stdout(io.StringIO()):
        code = main([str(arg) for arg in args])
    if code != 0:
        raise RuntimeError(f"mtlskit {' '.join(map(str, args[:2]))} exited {code}")


def make_ca(work: Path) -> Path:
    """A CA directory with a registered console approver (bench-approver/chain.pem, key.pem)."""
    directory = work / "ca"
    passphrase = work / "ca.pass"
    passphrase.write_text(PASSPHRASE + "\n")
    passphrase.chmod(0o600)
    pass_args = ("--passphrase-file", passphrase)
    _cli("ca", "init", directory, "--trust-domain", "acme.com", "--max-ttl", "7d", *pass_args)
    with (directory / "ca.toml").open("a") as handle:
        handle.write(f'\n[console]\napprovers = ["{APPROVER}"]\n')
    person = work / "bench-approver"
    _cli("ca", "issue", directory, "--id", APPROVER, "--out", person, *pass_args)
    _cli("ca", "approvers", "add", directory, "--cert", person / "cert.pem", *pass_args)
    return directory


def seed(directory: Path, count: int) -> float:
    """``count`` certificates issued through ``CertificateAuthority.issue``; seconds taken."""
    from cryptography.x509 import ReasonFlags
    from rich.progress import Progress

    from mtlskit.cadir import CaDirectory
    from mtlskit.certs import generate_private_key
    from mtlskit.issue import parse_identity
    from mtlskit.store import SqlStore

    ca_dir = CaDirectory.open(directory)
    issuer = ca_dir.issuer(PASSPHRASE.encode())
    store = SqlStore.open(ca_dir.database_url(), synchronous="NORMAL")  # a bulk load
    key = generate_private_key().public_key()
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    started = time.perf_counter()
    try:
        authority = ca_dir.authority(issuer, store)
        with Progress(transient=True) as progress:
            task = progress.add_task(f"issuing {count:,} certificates", total=count)
            for first in range(0, count, 500):
                with store.group():
                    for index in range(first, min(first + 500, count)):
                        issued = authority.issue(
                            parse_identity(f"spiffe://acme.com/bench/svc-{index}"),
                            key,
                            now=now,
                            ttl=dt.timedelta(hours=1 + index % ONE_KEY_TTL_HOURS),
                        )
                        if index % 10 == 9:
                            store.revoke(
                                issued.cert.serial_number, reason=ReasonFlags.superseded, at=now
                            )
                progress.advance(task, min(500, count - first))
    finally:
        store.close()
    return time.perf_counter() - started


def start_console(directory: Path) -> tuple[subprocess.Popen[str], str]:
    """``mtlskit ca console`` on an ephemeral port; (process, https://127.0.0.1:PORT)."""
    passphrase = directory.parent / "ca.pass"
    command = [sys.executable, "-m", "mtlskit", "ca", "console", str(directory)]
    with (directory.parent / "console.log").open("a") as log:  # the child keeps its own
        process = subprocess.Popen(
            [*command, "--listen", "127.0.0.1:0", "--passphrase-file", str(passphrase)],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("console listening on https://"):
        stop_process(process)  # type: ignore[arg-type]
        errors = (directory.parent / "console.log").read_text()[-800:]
        raise RuntimeError(f"ca console did not start: {line}{errors}")
    return process, line.split()[3]


def _client(directory: Path):  # -> httpx.Client
    import httpx

    context = ssl.create_default_context(cafile=str(directory / "root.pem"))
    person = directory.parent / "bench-approver"
    context.load_cert_chain(person / "chain.pem", person / "key.pem")
    return httpx.Client(verify=context, timeout=30)


_SERVER_TIMING = re.compile(r"dur=([\d.]+)")


def measure(client, url: str, *, repeats: int) -> tuple[list[float], list[float]]:
    """(server ms from Server-Timing, client wall ms) of ``repeats`` GETs after 3 warm-ups."""
    server, wall = [], []
    for round_ in range(repeats + 3):
        began = time.perf_counter()
        response = client.get(url)
        elapsed = (time.perf_counter() - began) * 1000
        if response.status_code != 200:
            raise RuntimeError(f"GET {url}: {response.status_code} {response.text[:200]}")
        if round_ < 3:
            continue
        wall.append(elapsed)
        if found := _SERVER_TIMING.search(response.headers.get("server-timing", "")):
            server.append(float(found[1]))
    return server, wall


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def _ca_list_ms(directory: Path, *, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "mtlskit", "ca", "list", str(directory), "--json"],
            capture_output=True,
            check=False,
        )
        times.append((time.perf_counter() - began) * 1000)
        if done.returncode != 0:
            raise RuntimeError(f"ca list exited {done.returncode}: {done.stderr[-300:]!r}")
    return times


def pages(count: int) -> list[tuple[str, str]]:
    """(what, path) of the pages measured: 50 a page, so the middle one is count / 100."""
    return [
        ("first page", "/certificates"),
        (f"middle page ({max(count // 100, 1)})", f"/certificates?page={max(count // 100, 1)}"),
        (f"search `svc-{count // 2 + 42}`", f"/certificates?q=svc-{count // 2 + 42}"),
        ("filter revoked", "/certificates?status=revoked"),
        ("filter expiring within 1 day", "/certificates?status=expiring&days=1"),
    ]


def run(quick: bool) -> Section:
    count, repeats = (2_000, 10) if quick else (10_000, 40)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=OUT_DIR, prefix="console-"))
    rows: list[list[object]] = []
    worst = 0.0
    timed_by = "client wall"
    try:
        directory = make_ca(work)
        seconds = seed(directory, count)
        process, url = start_console(directory)
        try:
            with _client(directory) as client:
                for what, path in pages(count):
                    server, wall = measure(client, url + path, repeats=repeats)
                    if server:
                        timed_by = "Server-Timing"
                    basis = server or wall
                    worst = max(worst, _p95(basis))
                    rows.append(
                        [
                            f"console {what}",
                            f"{statistics.median(server):.1f}" if server else "—",
                            f"{_p95(server):.1f}" if server else "—",
                            f"{statistics.median(wall):.1f}",
                            f"{_p95(wall):.1f}",
                        ]
                    )
        finally:
            stop_process(process)  # type: ignore[arg-type]
            if process.stdout is not None:
                process.stdout.close()
        listed = _ca_list_ms(directory, repeats=3 if quick else 5)
        rows.append(
            [
                f"`mtlskit ca list --json` (all {count:,}, a process)",
                "—",
                "—",
                f"{statistics.median(listed):.1f}",
                f"{max(listed):.1f}",
            ]
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    body = "\n".join(
        [
            f"{count:,} certificates issued through the CA's own path in {seconds:.1f} s "
            f"({count / seconds:,.0f}/s, group commits of 500), every tenth revoked; one "
            f"keep-alive mTLS client, {repeats} requests a page after 3 warm-ups.",
            "",
            table(
                ["request", "server median ms", "server p95 ms", "wall median ms", "wall p95 ms"],
                rows,
            ),
        ]
    )
    return Section(
        title=f"console: the certificate list over {count:,} certificates",
        body=body,
        goals=[
            Goal(
                name=f"console certificate page, {count:,} certificates ({timed_by} p95)",
                target=f"< {GOAL_MS:.0f} ms",
                measured=f"{worst:.0f} ms",
                met=worst < GOAL_MS if count >= 10_000 else None,
                issue="#24",
            )
        ],
        peer="mtlskit ca list --json",
        method=f"{count:,} certificates, {repeats} requests per page, 5 pages",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.console")
    parser.add_argument("--quick", action="store_true", help="2,000 certificates, fewer requests")
    args = parser.parse_args(argv)
    section = run(args.quick)
    print(section.body)
    for goal in section.goals:
        print(f"{goal.name}: {goal.measured} (target {goal.target}: {goal.verdict})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
