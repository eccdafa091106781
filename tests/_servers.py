"""Starting and stopping real servers (nginx, HAProxy, mtlskit, PostgreSQL) in tests.

Ports are ephemeral on loopback; every process a test starts is stopped by ``stop``.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import require_program


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


@contextlib.contextmanager
def nginx(work: Path, server: str) -> Iterator[int]:
    """nginx in the foreground with one TLS ``server`` on a free loopback port; its port.

    ``server`` is the block's body after ``listen 127.0.0.1:PORT ssl;`` (certificates,
    ``ssl_verify_client``, locations). The config, pid, error.log and temp files live in
    ``work`` (created), so a test reads ``work / "error.log"``; nginx is stopped on exit."""
    program = require_program("nginx")
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    temps = " ".join(
        f"{kind}_temp_path {work};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    config = work / "nginx.conf"
    config.write_text(
        f"""daemon off;
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/error.log info;
events {{ worker_connections 32; }}
http {{
  access_log off;
  {temps}
  server {{
    listen 127.0.0.1:{port} ssl;
    {server}
  }}
}}
"""
    )
    process = subprocess.Popen(
        [program, "-c", str(config), "-p", str(work), "-e", str(work / "error.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(port, process, "nginx")
        yield port
    finally:
        stop(process)
