"""The shared shape of a benchmark result, the machine facts every report states, and the writer.

A benchmark module returns a ``Section``: Markdown, the PNG plots it drew, and the
``Goal``s the issues set for it with what this run measured. ``write_report`` puts
the sections together with the machine, the versions and one goals table on top, so
every claim in ``docs/benchmarks.md`` sits beside the run that made it.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import platform
import shutil
import socket
import sqlite3
import ssl
import statistics
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import trustme

from mtlskit.testca import LeafSpec, TestCA

ROOT = Path(__file__).resolve().parent.parent
IMG_DIR = ROOT / "docs" / "img"
OUT_DIR = ROOT / "bench" / "out"  # git-ignored: caches and quick-mode reports


@dataclass(frozen=True, slots=True, kw_only=True)
class Goal:
    """One target an issue set, and what this run measured against it.

    ``met`` is ``None`` when nothing was measured (the benchmark does not exist yet
    or was skipped), so the table says "pending" instead of guessing.
    """

    name: str
    target: str
    measured: str
    met: bool | None
    issue: str = ""

    @property
    def verdict(self) -> str:
        return {True: "met", False: "**not met**", None: "pending"}[self.met]


@dataclass
class Section:
    """One benchmark's part of docs/benchmarks.md: a title, Markdown, plots and goals."""

    title: str
    body: str
    images: list[Path] = field(default_factory=list)
    goals: list[Goal] = field(default_factory=list)
    peer: str = ""  # what mtlskit is measured beside, for the overview table
    method: str = ""  # one line: sizes, repeats, what is timed
    seconds: float | None = None  # wall time of the run, filled in by the runner


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> str:
    return f"{os.cpu_count()} cores, {cpu_model()}, Python {platform.python_version()}"


def _command_version(args: list[str]) -> str:
    if shutil.which(args[0]) is None:
        return "not installed"
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unavailable"
    return (
        (done.stdout or done.stderr).strip().splitlines()[0]
        if (done.stdout or done.stderr)
        else "?"
    )


def _package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def versions() -> dict[str, str]:
    """What the figures depend on: the interpreter, the crypto stack and the peers' builds."""
    from cryptography.hazmat.backends.openssl import backend

    return {
        "Python": f"{platform.python_version()} ({platform.python_implementation()})",
        "cryptography": f"{_package_version('cryptography')} "
        f"(linked {backend.openssl_version_text()})",
        "Python ssl": ssl.OPENSSL_VERSION,
        "openssl CLI (peer)": _command_version(["openssl", "version"]),
        "pkilint (peer)": _package_version("pkilint"),
        "nginx (peer)": _command_version(["nginx", "-v"]).removeprefix("nginx version: "),
        "SQLite": sqlite3.sqlite_version,
        "SQLAlchemy": _package_version("SQLAlchemy"),
        "matplotlib": _package_version("matplotlib"),
        "mtlskit": _package_version("mtlskit"),
    }


def rate(work: Callable[[], object], count: int, *, repeats: int = 5) -> float:
    """Median operations per second of ``work`` called ``count`` times, over ``repeats`` runs."""
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(count):
            work()
        rates.append(count / (time.perf_counter() - start))
    return statistics.median(rates)


def per_call(work: Callable[[], int], *, repeats: int) -> float:
    """Median seconds per operation; ``work`` runs a batch and returns how many it did."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        done = work()
        times.append((time.perf_counter() - start) / max(done, 1))
    return statistics.median(times)


def table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


# --- curves -----------------------------------------------------------------------


def image_dir(quick: bool) -> Path:
    """Full runs draw into docs/img (committed); quick runs into bench/out/img, never over them."""
    return OUT_DIR / "img" if quick else IMG_DIR


def log_slope(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of log(cost) over log(size): 0 is flat, 1 is linear.

    O(log n) over 1..10^6 fits a slope well below 0.2, so anything above that is
    growth a per-request path should not have.
    """
    usable = [(math.log(x), math.log(y)) for x, y in points if x > 0 and y > 0]
    if len(usable) < 2:
        return 0.0
    mean_x = statistics.fmean(x for x, _ in usable)
    mean_y = statistics.fmean(y for _, y in usable)
    spread = sum((x - mean_x) ** 2 for x, _ in usable)
    if spread == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in usable) / spread


FLAT_SLOPE = 0.2


def tail_slope(points: Sequence[tuple[float, float]]) -> float:
    """Log-log slope between the two largest sizes: where a linear term shows past the constant.

    A fixed per-call cost hides an O(n) term at small sizes, flattening the overall
    fit; between the two largest sizes the O(n) term dominates if there is one.
    """
    return log_slope(points[-2:]) if len(points) >= 2 else 0.0


NOISE_FACTOR = 2.0


def grows_slowly(points: Sequence[tuple[float, float]]) -> bool:
    """Flat slopes, or less than 2× growth over the whole range.

    On a shared 2-core machine one noisy point can tilt the last step's slope; a real
    O(n) term over these ranges (10^4 to 10^6) grows the cost far more than 2×.
    """
    if log_slope(points) < FLAT_SLOPE and tail_slope(points) < FLAT_SLOPE:
        return True
    first, last = points[0][1], points[-1][1]
    return first > 0 and last / first < NOISE_FACTOR


def shape(points: Sequence[tuple[float, float]]) -> str:
    """A one-line description of how a curve grows, for tables and the goals list."""
    first, last = points[0], points[-1]
    factor = last[1] / first[1] if first[1] else float("inf")
    slope, tail = log_slope(points), tail_slope(points)
    kind = "flat (≤ O(log n))" if grows_slowly(points) else f"grows ~n^{max(slope, tail):.2f}"
    return (
        f"{kind}: {factor:.2f}× from {first[0]:,.0f} to {last[0]:,.0f} "
        f"(log-log slope {slope:.2f}, {tail:.2f} over the last step)"
    )


def flat_goal(name: str, points: Sequence[tuple[float, float]], issue: str = "#10") -> Goal:
    """Issue 10's "no worse than O(log n)" for one per-request curve, judged by its slopes."""
    return Goal(
        name=name,
        target="≤ O(log n) per request",
        measured=shape(points),
        met=grows_slowly(points),
        issue=issue,
    )


def plot(
    name: str,
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    series: Mapping[str, Sequence[tuple[float, float]]],
    quick: bool,
    logx: bool = True,
    logy: bool = False,
) -> Path:
    """Draw ``series`` (label → [(x, y)]) as lines with markers into ``<image dir>/<name>.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory = image_dir(quick)
    directory.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(figsize=(7, 4.2), dpi=110)
    for label, points in series.items():
        xs = [x for x, _ in points]
        ys = [y for _, y in points]
        axes.plot(xs, ys, marker="o", label=label)
    if logx:
        axes.set_xscale("log")
    if logy:
        axes.set_yscale("log")
    else:
        axes.set_ylim(bottom=0)
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(True, which="major", alpha=0.4)
    axes.legend()
    figure.tight_layout()
    path = directory / f"{name}.png"
    figure.savefig(path)
    plt.close(figure)
    return path


def image_link(path: Path, report: Path) -> str:
    return f"![{path.stem}]({os.path.relpath(path, report.parent)})"


# --- the report -------------------------------------------------------------------

SHARED_MACHINE_NOTE = (
    "The machine is shared: other engineers run tests on the same {cores} cores while this "
    "runs, so every figure is a median over several runs, and peers are measured interleaved "
    "with mtlskit in the same run so that load hits both alike. Ratios are steadier than "
    "absolute numbers."
)


def goals_table(sections: Sequence[Section]) -> str:
    rows = [
        [goal.name, goal.issue, goal.target, goal.measured, goal.verdict]
        for section in sections
        for goal in section.goals
    ]
    if not rows:
        return "_No benchmark reported a goal._"
    return table(["goal", "issue", "target", "measured", "verdict"], rows)


def render_report(
    sections: Sequence[Section],
    *,
    report: Path,
    generated: dt.datetime,
    quick: bool,
    elapsed: float | None = None,
    versions_of: Mapping[str, str] | None = None,
) -> str:
    """The whole Markdown document: header, versions, goals table, then each section."""
    facts = versions_of if versions_of is not None else versions()
    stamp = generated.strftime("%Y-%m-%d %H:%M UTC")
    took = f" in {elapsed / 60:.1f} minutes" if elapsed is not None else ""
    mode = " (`--quick`: small sizes, for CI — not the published figures)" if quick else ""
    load = (
        ", ".join(f"{value:.2f}" for value in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    )
    parts = [
        "# Benchmarks",
        "",
        f"Generated by `make bench`{mode} on {stamp}{took}.",
        "",
        f"**Machine:** {os.cpu_count()} cores, {cpu_model()}; load average at the end of the "
        f"run {load}.",
        "",
        SHARED_MACHINE_NOTE.format(cores=os.cpu_count()),
        "",
        table(["component", "version"], [[name, value] for name, value in facts.items()]),
        "",
        "## Goals",
        "",
        "Every target the issues set, with this run's measurement. Scaling goals come from "
        "issue 10: per-request work may not grow faster than O(log n) in the size of the "
        "trust store, rule set, CRL or certificate store.",
        "",
        goals_table(sections),
        "",
        "## Benchmarks at a glance",
        "",
        table(
            ["benchmark", "peer", "method", "run time"],
            [
                [
                    section.title,
                    section.peer or "—",
                    section.method or "see section",
                    f"{section.seconds:.0f} s" if section.seconds is not None else "—",
                ]
                for section in sections
            ],
        ),
        "",
    ]
    for section in sections:
        parts += [f"## {section.title}", "", section.body.rstrip(), ""]
        parts += [image_link(image, report) for image in section.images]
        if section.images:
            parts.append("")
    return "\n".join(parts)


def write_report(sections: Sequence[Section], report: Path, **kwargs: object) -> Path:
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(render_report(sections, report=report, **kwargs))  # type: ignore[arg-type]
    return report


def free_port() -> int:
    """An ephemeral port on 127.0.0.1 for a server the benchmark starts."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def mtls_files(d: Path) -> None:
    """The certificates every mTLS benchmark uses, written into ``d``.

    A one-tier test CA (``trust.pem``) and its client leaf ``spiffe://acme.com/bench``
    (``client.pem`` chain, ``client.key``, and ``client-full.pem`` with both, the form
    ``ab -E`` and ``curl --cert`` take); a trustme server certificate for 127.0.0.1
    (``server.pem``, ``server.key``, ``server-ca.pem``). Keys are 0600: the gateway
    refuses keys others may read. ab and s_time send the leaf only, hence one tier.
    """
    ca = TestCA(name="bench", intermediate=False)
    client = ca.issue(LeafSpec(uris=("spiffe://acme.com/bench",)))
    (d / "client.pem").write_bytes(client.chain_pem)
    (d / "client.key").write_bytes(client.key_pem)
    (d / "client-full.pem").write_bytes(client.chain_pem + client.key_pem)
    (d / "trust.pem").write_bytes(ca.bundle_pem)
    server_ca = trustme.CA()
    server_ca.cert_pem.write_to_path(str(d / "server-ca.pem"))
    server = server_ca.issue_cert("127.0.0.1", "localhost")
    server.cert_chain_pems[0].write_to_path(str(d / "server.pem"))
    server.private_key_pem.write_to_path(str(d / "server.key"))
    for key in ("server.key", "client.key", "client-full.pem"):
        (d / key).chmod(0o600)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 10 s, for a server the benchmark started."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def wait_for_port(port: int, process: subprocess.Popen[bytes], *, seconds: float = 15) -> None:
    """Until ``port`` accepts; ``RuntimeError`` if the process exits or nothing listens."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server on {port} exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")
