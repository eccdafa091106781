"""`mtlskit demo` is the README's first command: it must pass end to end and clean up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def _demo_processes() -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "mtlskit-demo-" in command:
            found.append(command)
    return found


def test_demo_passes_and_leaves_nothing_behind(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "mtlskit", "demo"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200", "TMPDIR": str(tmp_path)},
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "every step behaved as it must" in done.stdout
    assert "token_used" in done.stdout
    assert "decrypt_error" in done.stdout
    assert "public_root_in_client_trust_store" in done.stdout
    assert list(tmp_path.iterdir()) == []  # the temporary directory is gone
    assert _demo_processes() == []
    assert "PRIVATE KEY" not in done.stdout + done.stderr
