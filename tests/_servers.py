"""Starting and stopping real servers (nginx, HAProxy, mtlskit, PostgreSQL) in tests.

Ports are ephemeral on loopback; every process a test starts is stopped by ``stop``.
"""

from __future__ import annotations

import socket
import subprocess
import time

import pytest


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def wait_for(port: int, process: subprocess.Popen, name: str, *, seconds: float = 15.0) -> None:
    """Until ``port`` accepts; the test fails with the process's stderr if it exits or stalls."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                error = process.stderr.read().decode() if process.stderr else ""
                pytest.fail(f"{name} did not start: {error}")
            time.sleep(0.05)


def stop(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 10 s; closes the pipes the test opened."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()
