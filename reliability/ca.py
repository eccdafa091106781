"""CA durability under SIGKILL and concurrency on one SQLite store (issue 11, items 1 and 2).

Every certificate or revocation a client was told about (a line from
``reliability.ca_driver``, or an HTTP 200 from ``mtlskit ca serve``) must be in the
store after a crash; the audit chain must verify (checked with ``mtlskit ca audit
verify`` itself); no serial may repeat; the CA must open and issue again after each kill.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from reliability.report import Row

PASSPHRASE = "reliability passphrase"
_ENV = {**os.environ, "MTLSKIT_CA_PASSPHRASE": PASSPHRASE, "PYTHONUNBUFFERED": "1"}


def init_ca(directory: Path) -> Path:
    """A CA with an encrypted key (the default), allowing spiffe://acme.com/**."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "mtlskit",
            "ca",
            "init",
            str(directory),
            "--trust-domain",
            "acme.com",
        ],
        check=True,
        env=_ENV,
        capture_output=True,
        timeout=60,
    )
    return directory


@dataclass
class StoreState:
    """What the store holds, read after the fact through the library."""

    serials: set[int]
    revoked: set[int]
    issue_events: int
    audit_problem: str | None
    integrity: str


def read_store(directory: Path) -> StoreState:
    import sqlite3

    from mtlskit.issue import CertificateStatus, verify_audit_chain
    from mtlskit.store import SqlStore, database_url

    now = dt.datetime.now(dt.UTC)
    store = SqlStore.open(database_url(directory, "ca.db"))
    try:
        records = store.certificates(now=now)
        entries = store.audit_entries()
    finally:
        store.close()
    problem = verify_audit_chain(entries)
    with sqlite3.connect(directory / "ca.db") as raw:
        integrity = raw.execute("PRAGMA integrity_check").fetchone()[0]
    return StoreState(
        serials={record.serial for record in records},
        revoked={r.serial for r in records if r.status(now) is CertificateStatus.REVOKED},
        issue_events=sum(1 for entry in entries if entry.event == "issue"),
        audit_problem=str(problem) if problem else None,
        integrity=str(integrity),
    )


def audit_verify(directory: Path) -> tuple[bool, str]:
    """``mtlskit ca audit verify``: the operator's command, exit 0 when intact."""
    done = subprocess.run(
        [sys.executable, "-m", "mtlskit", "ca", "audit", "verify", str(directory)],
        check=False,
        env=_ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.returncode == 0, (done.stdout + done.stderr).strip()


@dataclass
class Acks:
    """Everything clients were told."""

    issued: list[int] = field(default_factory=list)
    revoked: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def take(self, output: str) -> None:
        for line in output.splitlines():
            kind, _, rest = line.partition(" ")
            if kind == "issued":
                self.issued.append(int(rest, 16))
            elif kind == "revoked":
                self.revoked.append(int(rest, 16))
            elif kind in ("error", "revoke-refused"):
                self.errors.append(rest)


def _driver(directory: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "reliability.ca_driver", str(directory), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_ENV,
    )


def durability_library(kills: int, seed: int = 11) -> Row:
    """Kill -9 an issuing/revoking driver ``kills`` times at random moments."""
    rng = random.Random(seed)
    acks = Acks()
    crashes = 0
    restart_failures = 0
    with tempfile.TemporaryDirectory(prefix="rel-ca-") as temp:
        directory = init_ca(Path(temp) / "ca")
        for _ in range(kills):
            process = _driver(directory, "--revoke-every", "5")
            assert process.stdout is not None
            first = process.stdout.readline()
            if first.strip() != b"ready":  # the CA did not restart cleanly
                restart_failures += 1
                process.kill()
                process.communicate(timeout=30)
                continue
            time.sleep(rng.uniform(0.05, 1.5))
            process.send_signal(signal.SIGKILL)
            out, err = process.communicate(timeout=30)
            acks.take(out.decode())
            if b"Traceback" in err:
                crashes += 1
        state = read_store(directory)
        audit_ok, audit_text = audit_verify(directory)
        # a final clean run proves the CA still issues after the last kill
        final = subprocess.run(
            [sys.executable, "-m", "reliability.ca_driver", str(directory), "--count", "3"],
            check=False,
            env=_ENV,
            capture_output=True,
            text=True,
            timeout=120,
        )
        restart_failures += final.returncode != 0 or "done" not in final.stdout
    lost = len(set(acks.issued) - state.serials)
    lost_revocations = len(set(acks.revoked) - state.revoked)
    repeats = len(acks.issued) - len(set(acks.issued))
    ok = (
        lost == 0
        and lost_revocations == 0
        and repeats == 0
        and audit_ok
        and state.integrity == "ok"
        and state.issue_events == len(state.serials)
        and restart_failures == 0
        and crashes == 0
        and not acks.errors
    )
    return Row(
        part="1 CA durability",
        test="kill -9 while issuing and revoking (library driver)",
        load=f"{kills} SIGKILLs at random 0.05–1.5 s into a loop of issue + every 5th a revoke; "
        "SQLite WAL, synchronous=FULL",
        observed=f"{len(acks.issued)} acknowledged certificates, all {len(state.serials)} "
        f"stored ({len(state.serials) - len(set(acks.issued))} committed but unacknowledged); "
        f"{len(acks.revoked)} acknowledged revocations, {lost_revocations} lost; "
        f"{repeats} repeated serials; audit verify: {audit_text.split(',')[0]}; "
        f"integrity_check {state.integrity}; {restart_failures} failed restarts",
        lost=lost + lost_revocations,
        crashes=crashes,
        ok=ok,
        notes=[f"errors reported to the client: {acks.errors[:3]}"] if acks.errors else [],
    )


def _serve(directory: Path) -> tuple[subprocess.Popen[str], str, str]:
    passphrase = directory.parent / "pass"
    passphrase.write_text(PASSPHRASE + "\n")
    passphrase.chmod(0o600)  # ca serve refuses a password file others may read
    errors = directory.parent / "serve.err"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mtlskit",
            "ca",
            "serve",
            str(directory),
            "--listen",
            "127.0.0.1:0",
            "--passphrase-file",
            str(passphrase),
            "--max-token-failures",
            "100000",
        ],
        stdout=subprocess.PIPE,
        stderr=errors.open("a"),
        text=True,
        env=_ENV,
    )
    assert process.stdout is not None
    first, second = process.stdout.readline(), process.stdout.readline()
    if not first.startswith("serving CA"):
        process.kill()
        process.wait()
        said = errors.read_text().strip().splitlines()[-1:] or [first]
        raise RuntimeError(f"ca serve did not start: {said[0]!r}")
    return process, first.split()[-1], second.split()[-1]


def _tokens(directory: Path, count: int) -> list[str]:
    from mtlskit.issue import new_token, parse_identity
    from mtlskit.store import SqlStore, database_url

    now = dt.datetime.now(dt.UTC)
    store = SqlStore.open(database_url(directory, "ca.db"))
    out = []
    try:
        for number in range(count):
            identity = parse_identity(f"spiffe://acme.com/serve/client-{number}")
            token, record = new_token(identity, now=now, ttl=dt.timedelta(hours=1))
            store.add_token(record)
            out.append(token)
    finally:
        store.close()
    return out


def durability_serve(kills: int, clients: int = 8, seed: int = 12) -> Row:
    """``ca serve`` under ``clients`` concurrent enrollments, SIGKILLed ``kills`` times."""
    from mtlskit.client import CaRefused, CaUnavailable, enroll

    rng = random.Random(seed)
    issued: list[int] = []
    failures: dict[str, int] = {}
    lock = threading.Lock()
    restart_failures = 0
    with tempfile.TemporaryDirectory(prefix="rel-serve-") as temp:
        directory = init_ca(Path(temp) / "ca")
        tokens = _tokens(directory, 200 * (kills + 1))
        queue = list(reversed(tokens))
        for round_number in range(kills + 1):
            try:
                process, url, fingerprint = _serve(directory)
            except RuntimeError:
                restart_failures += 1
                continue
            stop = threading.Event()

            def client(
                worker: int,
                url: str = url,
                fingerprint: str = fingerprint,
                stop: threading.Event = stop,
                rnd: int = round_number,
            ) -> None:
                count = 0
                while not stop.is_set():
                    with lock:
                        if not queue:
                            return
                        token = queue.pop()
                    count += 1
                    out = Path(temp, f"c-{rnd}-{worker}-{count}")
                    try:
                        got = enroll(url, token, out, ca_fingerprint=fingerprint)
                    except (CaRefused, CaUnavailable) as exc:
                        with lock:
                            name = getattr(exc, "code", type(exc).__name__)
                            failures[name] = failures.get(name, 0) + 1
                        continue
                    with lock:
                        issued.append(int(got.serial or "0", 16))

            with concurrent.futures.ThreadPoolExecutor(clients) as pool:
                futures = [pool.submit(client, worker) for worker in range(clients)]
                if round_number < kills:
                    time.sleep(rng.uniform(0.5, 2.5))
                    process.send_signal(signal.SIGKILL)
                else:
                    time.sleep(2.0)
                    process.terminate()
                stop.set()
                for future in futures:
                    future.result(timeout=60)
            process.wait(timeout=30)
            if process.stdout is not None:
                process.stdout.close()
        state = read_store(directory)
        audit_ok, audit_text = audit_verify(directory)
    lost = len(set(issued) - state.serials)
    repeats = len(issued) - len(set(issued))
    ok = lost == 0 and repeats == 0 and audit_ok and state.integrity == "ok"
    ok = ok and restart_failures == 0
    return Row(
        part="1 CA durability",
        test="kill -9 `mtlskit ca serve` under enrollment load",
        load=f"{clients} concurrent HTTPS enroll clients (one token each), {kills} SIGKILLs of "
        "the server at random 0.5–2.5 s, restart after each",
        observed=f"{len(issued)} certificates returned with HTTP 200, all in the store "
        f"({len(state.serials) - len(set(issued))} committed but not delivered); "
        f"{repeats} repeated serials; client errors while down: "
        f"{sum(failures.values())} ({', '.join(f'{k} {v}' for k, v in sorted(failures.items()))}); "
        f"audit verify: {audit_text.split(',')[0]}; {restart_failures} failed restarts",
        lost=lost,
        ok=ok,
        notes=[
            "a certificate committed while the server died before answering leaves its token "
            "used and its client without a certificate: the client needs a new token (no "
            "retry with the same token is possible; nothing is issued twice)"
        ],
    )


def concurrency(processes: int, per_process: int) -> Row:
    """``processes`` drivers issuing ``per_process`` each against one SQLite file."""
    acks = Acks()
    stderr_text = ""
    with tempfile.TemporaryDirectory(prefix="rel-conc-") as temp:
        directory = init_ca(Path(temp) / "ca")
        started = time.monotonic()
        drivers = [_driver(directory, "--count", str(per_process)) for _ in range(processes)]
        crashes = 0
        for process in drivers:
            out, err = process.communicate(timeout=900)
            acks.take(out.decode())
            stderr_text += err.decode()
            crashes += process.returncode != 0
        seconds = time.monotonic() - started
        state = read_store(directory)
        audit_ok, audit_text = audit_verify(directory)
    expected = processes * per_process
    locked = sum("database is locked" in text for text in [*acks.errors, stderr_text])
    lost = len(set(acks.issued) - state.serials)
    ok = (
        len(set(acks.issued)) == expected
        and len(state.serials) == expected
        and lost == 0
        and not acks.errors
        and locked == 0
        and audit_ok
        and crashes == 0
    )
    return Row(
        part="2 Concurrency",
        test=f"{processes} processes × {per_process} issuances, one SQLite store",
        load=f"{processes} OS processes issuing concurrently (BEGIN IMMEDIATE, WAL, FULL)",
        observed=f"{len(set(acks.issued))} distinct serials acknowledged of {expected}, "
        f"{len(state.serials)} stored; errors reaching a user: {len(acks.errors)} "
        f"('database is locked': {locked}); audit verify: {audit_text.split(',')[0]}; "
        f"{expected / seconds:.0f} issuances/s overall",
        lost=lost + (expected - len(set(acks.issued))),
        crashes=crashes,
        ok=ok,
        notes=[f"first errors: {acks.errors[:3]}"] if acks.errors else [],
    )


def run(quick: bool) -> list[Row]:
    rows = [durability_library(kills=5 if quick else 20)]
    rows.append(durability_serve(kills=2 if quick else 20))
    rows.append(concurrency(*((4, 100) if quick else (8, 500))))
    return rows
