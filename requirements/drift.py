"""Print which installed distributions differ from the lock: the drift `make test-latest` tests."""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

_PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s\\]+)", re.MULTILINE)


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def main(lock: str) -> int:
    locked = {_normal(n): v for n, v in _PIN.findall(Path(lock).read_text())}
    installed = {_normal(d.metadata["Name"]): d.version for d in metadata.distributions()}
    changed = sorted(
        (name, locked.get(name, "-"), version)
        for name, version in installed.items()
        if name != "mtlskit" and locked.get(name) != version
    )
    print(f"newest releases vs {lock}: {len(changed)} differ")
    for name, old, new in changed:
        print(f"  {name}: {old} -> {new}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
