"""Run every benchmark in bench/ and write one report (``make bench``; ``--quick`` for CI).

Full runs write ``docs/benchmarks.md`` and ``docs/img/*.png``; quick runs write
``bench/out/benchmarks.md`` and ``bench/out/img/`` so CI never overwrites the
published figures. A benchmark that crashes becomes a section saying so (the others
still run) and makes the exit code 1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import pkgutil
import sys
import time
import traceback

from bench.report import OUT_DIR, ROOT, Goal, Section, write_report

SKIP = {"report"}
# Report order: the feature benchmarks the issues name, then the scaling curves.
ORDER = ["lint", "cli", "verify", "authz", "issue", "enroll", "gateway"]


def _order(name: str) -> tuple[int, str]:
    return (ORDER.index(name) if name in ORDER else len(ORDER), name)


GATEWAY_CURVES = (
    "requests/s and p99 latency vs concurrent clients (1 to 256), mtlskit gateway beside nginx "
    "(`ssl_verify_client on`, `proxy_pass` to the same backend), full handshake and keep-alive",
    "resident memory vs open idle TLS connections (up to 10,000)",
)
GATEWAY_GOALS = (
    ("gateway full-handshake req/s vs nginx", "≥ 0.8×"),
    ("gateway keep-alive req/s vs nginx", "≥ 0.6×"),
    ("gateway memory, 10,000 idle TLS connections", "< 300 MB RSS"),
)


def gateway_slot(reported: Section | None = None) -> Section | None:
    """The marked place for the gateway's scaling curves until ``bench/gateway.py`` draws them.

    ``bench/gateway.py`` (another engineer's) is run like every benchmark; once its
    section carries plots (``Section.images``) the slot disappears. Goals of issue 6
    that its section does not report yet stay in the goals table as "pending".
    """
    if reported is not None and reported.images:
        return None
    named = " ".join(goal.name for goal in reported.goals) if reported else ""
    pending = [
        Goal(name=name, target=target, measured="not measured yet", met=None, issue="#6")
        for name, target in GATEWAY_GOALS
        if name.split(" vs ")[0].split(",")[0] not in named
    ]
    where = (
        "`bench/gateway.py` runs but draws no curves yet"
        if reported is not None
        else "`bench/gateway.py` does not exist yet"
    )
    return Section(
        title="Gateway scaling curves (slot, pending `bench/gateway.py`)",
        body="\n".join(
            [
                f"_Slot: {where}. The runner discovers `bench/gateway.py` like every "
                "`bench/*.py`; when its `Section` has plots in `images` they take this place, "
                "and its `goals` join the table above._",
                "",
                "Curves owed by issue 10:",
                "",
                *(f"- {curve};" for curve in GATEWAY_CURVES),
            ]
        ),
        goals=pending,
        peer="nginx",
        method="pending",
    )


def _failed(name: str, error: BaseException) -> Section:
    last = traceback.format_exception_only(error)[-1].strip()
    return Section(
        title=f"bench/{name}: failed",
        body=f"The benchmark raised `{last}`; no figures from it in this run.",
        method="crashed",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="small sizes, for CI (< 2 minutes)")
    parser.add_argument("only", nargs="*", help="run only these benchmark modules")
    args = parser.parse_args(argv)
    import bench

    names = sorted(
        (
            info.name
            for info in pkgutil.iter_modules(bench.__path__)
            if info.name not in SKIP and not info.name.startswith("_")
        ),
        key=_order,
    )
    if args.only:
        unknown = sorted(set(args.only) - set(names))
        if unknown:
            parser.error(f"no benchmark module named {', '.join(unknown)}")
        names = [name for name in names if name in args.only]
    started = time.perf_counter()
    sections: list[Section] = []
    failures = 0
    for name in names:
        print(f"== bench/{name}", file=sys.stderr)
        began = time.perf_counter()
        try:
            module = importlib.import_module(f"bench.{name}")
            section = module.run(quick=args.quick)
        except Exception as exc:  # one broken benchmark must not cost the whole report
            traceback.print_exc()
            section = _failed(name, exc)
            failures += 1
        section.seconds = time.perf_counter() - began
        print(f"   done in {section.seconds:.1f}s", file=sys.stderr)
        print(section.body)
        sections.append(section)
    if not args.only:
        ran = dict(zip(names, sections, strict=True))
        slot = gateway_slot(ran.get("gateway"))
        if slot is not None:
            before = [n for n in names if _order(n) <= _order("gateway")]
            sections.insert(len(before), slot)
    if args.only:
        return 1 if failures else 0
    report = (OUT_DIR if args.quick else ROOT / "docs") / "benchmarks.md"
    write_report(
        sections,
        report,
        generated=dt.datetime.now(dt.UTC),
        quick=args.quick,
        elapsed=time.perf_counter() - started,
    )
    print(f"wrote {report.relative_to(ROOT)}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
