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
ORDER = ["lint", "verify", "authz", "issue", "enroll", "gateway"]


def _order(name: str) -> tuple[int, str]:
    return (ORDER.index(name) if name in ORDER else len(ORDER), name)


def gateway_slot() -> Section:
    """Where bench/gateway.py's section goes until it exists: the curves and goals it owes."""
    return Section(
        title="Gateway: requests/s, p99 and memory beside nginx (pending `bench/gateway.py`)",
        body="\n".join(
            [
                "_This slot is filled by `bench/gateway.py` as soon as that module exists: the "
                "runner discovers it like every other `bench/*.py`, puts its section here, its "
                "plots beside it and its goals in the table above._",
                "",
                "Curves it will draw (issue 10), mtlskit gateway beside nginx "
                "(`ssl_verify_client on`, `proxy_pass` to the same backend), same certificates "
                "and load generator (`ab -E`, `openssl s_time -cert`):",
                "",
                "- requests/s and p99 latency vs concurrent clients (1 to 256), full handshake "
                "and keep-alive;",
                "- resident memory vs open idle TLS connections (up to 10,000).",
            ]
        ),
        goals=[
            Goal(
                name="gateway full-handshake requests/s vs nginx",
                target="≥ 0.8×",
                measured="not measured yet",
                met=None,
                issue="#6",
            ),
            Goal(
                name="gateway keep-alive requests/s vs nginx",
                target="≥ 0.6×",
                measured="not measured yet",
                met=None,
                issue="#6",
            ),
            Goal(
                name="gateway memory, 10,000 idle TLS connections",
                target="< 300 MB RSS",
                measured="not measured yet",
                met=None,
                issue="#6",
            ),
        ],
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
    if not args.only and "gateway" not in names:
        after = max((i for i, n in enumerate(names) if _order(n)[0] < len(ORDER)), default=-1)
        sections.insert(after + 1, gateway_slot())
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
