"""The ``mtlskit`` command's start-up and text rendering, beside the openssl CLI in the same run.

Every figure is the wall time of a real process (``subprocess.run``) with stdout piped,
as a script or ``| grep`` sees it: what a user waits for, interpreter start and imports
included. The peers are ``openssl version`` (start-up alone) and ``openssl x509 -noout
-text`` (parse and print one certificate), and the same over 1,000 files in a shell loop.
Goals from issue 21: ``--help`` ≤ 0.25 s, ``inspect``/``lint`` of one file ≤ 0.25 s, and
text output of 1,000 lint results ≤ 1.3× the ``--json`` run over the same files.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from bench.lint import build_certificates
from bench.report import Goal, Section, machine, table

LOOP_FILES = 100  # openssl's shell loop pays ~20 ms a process: 100 files, scaled to the count
START_GOAL = 0.25  # seconds, --help and inspect/lint of one file
TEXT_GOAL = 1.3  # text / --json over 1,000 files


def _mtlskit() -> list[str]:
    """The console script installed beside this interpreter (what users run), else ``-m``."""
    script = Path(sys.executable).with_name("mtlskit")
    return [str(script)] if script.exists() else [sys.executable, "-m", "mtlskit"]


def _seconds(argv: Sequence[str], *, repeats: int) -> tuple[float, float, float]:
    """Median, min and max wall time of a process; stdout piped and read, as a pipe would."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, check=False)
        times.append(time.perf_counter() - start)
        if done.returncode not in (0, 1):
            message = done.stderr.decode(errors="replace").strip()
            raise RuntimeError(f"{' '.join(argv[:3])} exited {done.returncode}: {message}")
    return statistics.median(times), min(times), max(times)


def _write_files(directory: Path, count: int) -> list[Path]:
    paths = []
    for index, der in enumerate(build_certificates(count)):
        path = directory / f"cert{index:04d}.pem"
        path.write_bytes(x509.load_der_x509_certificate(der).public_bytes(Encoding.PEM))
        paths.append(path)
    return paths


def run(quick: bool) -> Section:
    count, repeats = (200, 3) if quick else (1000, 7)
    mtlskit = _mtlskit()
    with tempfile.TemporaryDirectory(prefix="mtlskit-bench-cli-") as work:
        files = _write_files(Path(work), count)
        one = str(files[0])
        names = [str(path) for path in files]
        loop = ["sh", "-c", 'for f in "$@"; do openssl x509 -noout -text -in "$f"; done', "sh"]
        looped = min(count, LOOP_FILES)
        commands = {
            "mtlskit --help": [*mtlskit, "--help"],
            "mtlskit --version": [*mtlskit, "--version"],
            "mtlskit inspect one.pem": [*mtlskit, "inspect", one],
            "mtlskit lint one.pem": [*mtlskit, "lint", one],
            f"mtlskit lint {count} files (text)": [*mtlskit, "lint", *names],
            f"mtlskit lint {count} files --json": [*mtlskit, "lint", "--json", *names],
            "openssl version": ["openssl", "version"],
            "openssl x509 -noout -text one.pem": ["openssl", "x509", "-noout", "-text", "-in", one],
            f"openssl x509 -noout -text, {looped} files in a shell loop": [*loop, *names[:looped]],
        }
        for argv in commands.values():  # warm-up: page cache, .pyc files
            _seconds(argv, repeats=1)
        runs: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(repeats):  # interleaved, so drift in machine load hits all alike
            for name, argv in commands.items():
                runs[name].append(_seconds(argv, repeats=1)[0])
    median = {name: statistics.median(values) for name, values in runs.items()}
    start_peer = median["openssl version"]
    one_peer = median["openssl x509 -noout -text one.pem"]
    many_peer = (
        median[f"openssl x509 -noout -text, {looped} files in a shell loop"] * count / looped
    )
    text = median[f"mtlskit lint {count} files (text)"]
    as_json = median[f"mtlskit lint {count} files --json"]
    peer_of = {
        "mtlskit --help": start_peer,
        "mtlskit --version": start_peer,
        "mtlskit inspect one.pem": one_peer,
        "mtlskit lint one.pem": one_peer,
        f"mtlskit lint {count} files (text)": many_peer,
        f"mtlskit lint {count} files --json": many_peer,
    }
    rows = [
        [
            f"`{name}`",
            f"{median[name]:.3f}",
            f"{min(runs[name]):.3f}–{max(runs[name]):.3f}",
            f"{median[name] / peer_of[name]:.3g}×" if name in peer_of else "peer",
        ]
        for name in commands
    ]
    ratio = text / as_json
    start_names = ["mtlskit --help", "mtlskit inspect one.pem", "mtlskit lint one.pem"]
    goals = [
        Goal(
            name=f"`{name}` wall time",
            target=f"≤ {START_GOAL} s",
            measured=f"{median[name]:.3f} s ({median[name] / peer_of[name]:.1f}× openssl)",
            met=median[name] <= START_GOAL,
            issue="#21",
        )
        for name in start_names
    ]
    goals.append(
        Goal(
            name=f"`mtlskit lint` text vs --json, {count} files",
            target=f"≤ {TEXT_GOAL}×",
            measured=f"{ratio:.2f}× ({text:.2f} s vs {as_json:.2f} s)",
            met=ratio <= TEXT_GOAL,
            issue="#21",
        )
    )
    body = "\n".join(
        [
            f"Wall time of real processes, stdout piped (median of {repeats} interleaved runs "
            f"after a warm-up). {count} varied leaf certificates as PEM files (those of "
            "bench/lint, one in two with a defect); `one.pem` is the first, a clean SPIFFE "
            "client certificate. The last column compares with the openssl CLI doing the "
            "nearest job: `openssl version` for start-up, `openssl x509 -noout -text` for one "
            f"certificate, and the same in a shell loop over {looped} files (a process each), "
            f"scaled to {count} for the ratio.",
            "",
            table(["command", "seconds (median)", "range", "vs openssl"], rows),
            "",
            f"**Text vs --json over {count} files: {ratio:.2f}×** (goal ≤ {TEXT_GOAL}×).",
            "",
            f"Machine: {machine()}.",
        ]
    )
    return Section(
        title="CLI: start-up and text rendering vs the openssl CLI",
        body=body,
        goals=goals,
        peer="openssl CLI (`version`, `x509 -noout -text`, a shell loop over the files)",
        method=f"real processes, stdout piped, median of {repeats} interleaved runs, {count} files",
    )
