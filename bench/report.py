"""The shared shape of a benchmark result and the machine facts every report states."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMG_DIR = ROOT / "docs" / "img"


@dataclass
class Section:
    """One benchmark's part of docs/benchmarks.md: a title and Markdown below it."""

    title: str
    body: str
    images: list[Path] = field(default_factory=list)


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


def rate(work: Callable[[], object], count: int, *, repeats: int = 5) -> float:
    """Median operations per second of ``work`` called ``count`` times, over ``repeats`` runs."""
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(count):
            work()
        rates.append(count / (time.perf_counter() - start))
    return statistics.median(rates)


def table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
