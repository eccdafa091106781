"""Running the CLI the way a person at a terminal does, for tests of what it prints there."""

from __future__ import annotations

import os
import pty
import subprocess
import sys


def terminal_env(**extra: str) -> dict[str, str]:
    """This environment without the caller's width/colour settings, as an xterm."""
    env = {k: v for k, v in os.environ.items() if k not in {"COLUMNS", "LINES", "NO_COLOR"}}
    return {**env, "TERM": "xterm-256color", **extra}


def on_a_terminal(*args: object, columns: int = 100, **env: str) -> str:
    """``mtlskit ARGS``' stdout on a pty (a terminal to the child) ``columns`` wide; CRs removed."""
    leader, follower = pty.openpty()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "mtlskit", *map(str, args)],
            stdout=follower,
            stderr=subprocess.DEVNULL,
            env=terminal_env(COLUMNS=str(columns), **env),
        )
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the child closed its end
                break
            if not chunk:
                break
            chunks.append(chunk)
        process.wait(timeout=60)
    finally:
        os.close(leader)
    return b"".join(chunks).decode().replace("\r", "")
