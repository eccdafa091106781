"""``python -m reliability [--quick] [--only PART...]``: run every part, write the report.

A part that crashes becomes a failed row saying so (the others still run); any failed
row makes the exit code 1, so CI fails on lost data, an unexpected acceptance or a crash.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback

from reliability.report import Row, write

PARTS = ["ca", "gateway", "fuzz", "tls_scan", "hygiene", "redteam"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reliability")
    parser.add_argument("--quick", action="store_true", help="CI size: a few minutes in all")
    parser.add_argument("--only", nargs="*", choices=PARTS, help="run only these parts")
    args = parser.parse_args(argv)
    started = time.monotonic()
    rows: list[Row] = []
    extra: list[str] = []
    for name in args.only or PARTS:
        print(f"reliability: {name} ...", flush=True)
        began = time.monotonic()
        try:
            module = importlib.import_module(f"reliability.{name}")
            rows += module.run(args.quick)
            extra.append(getattr(module, "NOTES", ""))
        except Exception:
            traceback.print_exc()
            last = traceback.format_exc().strip().splitlines()[-1]
            rows.append(
                Row(
                    part=name,
                    test=f"{name} (harness)",
                    load="-",
                    observed=last,
                    crashes=1,
                    ok=False,
                )
            )
        print(f"reliability: {name} took {time.monotonic() - began:.0f} s", flush=True)
    path = write(
        rows,
        quick=args.quick,
        seconds=time.monotonic() - started,
        extra="\n\n".join(text.strip() for text in extra if text.strip()),
    )
    for row in rows:
        print(f"{'ok  ' if row.ok else 'FAIL'} {row.test}: {row.observed}")
    print(f"wrote {path}")
    return 0 if all(row.ok for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
