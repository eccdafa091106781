"""The benchmark report writer on synthetic sections: goals table, slot, plots, curve shapes.

No timing here: the figures are the benchmarks' business; these tests only prove
that whatever they measure reaches docs/benchmarks.md in the promised shape.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import pytest

# bench/ is a top-level package of the repository, not of the installed distribution.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.__main__ import gateway_slot
from bench.report import (
    Goal,
    Section,
    flat_goal,
    log_slope,
    plot,
    render_report,
    tail_slope,
    write_report,
)

VERSIONS = {"Python": "3.11", "cryptography": "50"}


def _section(images: list[Path] | None = None) -> Section:
    return Section(
        title="lint: certificates per second vs pkilint",
        body="| linter | certs/s |\n|---|---|\n| mtlskit | 10 |",
        images=images or [],
        goals=[
            Goal(name="lint vs pkilint", target="≥ 4×", measured="5.0×", met=True, issue="#2"),
            Goal(name="cache hits", target="≥ 200,000/s", measured="1,000/s", met=False),
        ],
        peer="pkilint",
        method="100 certificates",
        seconds=1.5,
    )


def test_report_has_versions_goals_and_sections(tmp_path: Path) -> None:
    text = render_report(
        [_section(), gateway_slot()],
        report=tmp_path / "benchmarks.md",
        generated=dt.datetime(2026, 1, 2, 3, 4, tzinfo=dt.UTC),
        quick=True,
        versions_of=VERSIONS,
    )
    assert "| cryptography | 50 |" in text
    assert "| lint vs pkilint | #2 | ≥ 4× | 5.0× | met |" in text
    assert "| cache hits |  | ≥ 200,000/s | 1,000/s | **not met** |" in text
    assert "pending" in text and "bench/gateway.py" in text
    assert "| gateway memory, 10,000 idle TLS connections | #6 |" in text
    assert "| lint: certificates per second vs pkilint | pkilint | 100 certificates | 2 s |" in text
    assert text.index("## Goals") < text.index("## lint: certificates per second vs pkilint")


def test_gateway_slot_keeps_only_what_the_gateway_benchmark_does_not_report() -> None:
    measured = Section(
        title="Gateway vs nginx",
        body="",
        goals=[
            Goal(
                name="gateway full-handshake req/s vs nginx",
                target="≥ 0.8×",
                measured="0.9×",
                met=True,
            )
        ],
    )
    slot = gateway_slot(measured)
    assert slot is not None
    assert [goal.name for goal in slot.goals] == [
        "gateway keep-alive req/s vs nginx",
        "gateway memory, 10,000 idle TLS connections",
    ]
    measured.images.append(Path("gateway-clients.png"))
    assert gateway_slot(measured) is None


def test_plot_is_written_and_linked_relative_to_the_report(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("matplotlib")
    monkeypatch.setattr("bench.report.OUT_DIR", tmp_path / "out")
    image = plot(
        "curve",
        title="t",
        xlabel="n",
        ylabel="µs",
        series={"a": [(1, 1.0), (10, 1.1), (100, 1.2)]},
        quick=True,
    )
    assert image == tmp_path / "out" / "img" / "curve.png"
    assert image.read_bytes().startswith(b"\x89PNG")
    report = write_report(
        [_section([image])],
        tmp_path / "out" / "benchmarks.md",
        generated=dt.datetime.now(dt.UTC),
        quick=True,
        versions_of=VERSIONS,
    )
    assert "![curve](img/curve.png)" in report.read_text()


@pytest.mark.parametrize(
    ("points", "flat"),
    [
        ([(1, 5.0), (1_000, 5.1), (1_000_000, 5.0)], True),
        ([(10, 1.0), (100, 1.3), (1_000, 1.6), (10_000, 1.9)], True),  # logarithmic
        ([(10, 1.0), (100, 10.0), (1_000, 100.0)], False),  # linear
        ([(1, 100.0), (100, 101.0), (10_000, 150.0), (1_000_000, 5_000.0)], False),  # c + n
    ],
)
def test_flat_goal_tells_log_from_linear(points, flat) -> None:
    goal = flat_goal("curve", points)
    assert goal.met is flat
    assert (max(log_slope(points), tail_slope(points)) > 0.5) is (not flat)


def test_one_noisy_last_point_under_2x_is_not_growth() -> None:
    noisy = [(1, 100.0), (1_000, 98.0), (10_000, 101.0), (100_000, 99.0), (1_000_000, 160.0)]
    assert tail_slope(noisy) > 0.2  # the last step alone looks like growth...
    assert flat_goal("curve", noisy).met  # ...but 1.6x over six decades is noise
