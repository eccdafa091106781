"""Starting and stopping real servers (nginx, HAProxy, mtlskit, PostgreSQL) in tests.

Ports are ephemeral on loopback; every process a test starts is stopped by ``stop``.
"""

from __future__ import annotations

import contextlib
import getpass
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


def wait_for_log(
    path: Path, text: str, *, seconds: float = 15.0, process: subprocess.Popen | None = None
) -> str:
    """The log at ``path`` once it holds ``text`` (waits for an event, asserts no timing).

    The test fails with the log if ``text`` is not there within ``seconds`` or, given the
    ``process`` writing it, as soon as that exits: a crashed server is not a slow one."""
    deadline = time.monotonic() + seconds
    while True:
        log = path.read_text() if path.exists() else ""
        if text in log:
            return log
        if process is not None and process.poll() is not None:
            pytest.fail(f"{text!r} not logged, the process exited {process.returncode}:\n{log}")
        if time.monotonic() > deadline:
            pytest.fail(f"{text!r} never appeared in {path}:\n{log}")
        time.sleep(0.05)


@contextlib.contextmanager
def nginx(
    work: Path, server: str = "", *, http: str = "", port: int | None = None
) -> Iterator[int]:
    """nginx in the foreground (master + one worker) on a loopback port; its port.

    ``server`` is the body of a TLS server block after ``listen 127.0.0.1:PORT ssl;``
    (certificates, ``ssl_verify_client``, locations), on ``port`` or a free one. ``http`` is
    more text for ``http {}``, such as a whole ``server`` block from the docs or from
    ``mtlskit config nginx``; without ``server``, ``port`` is the one it listens on. The
    config, ``nginx.pid`` (written on return; SIGHUP to it reloads), error.log (level info)
    and temp files live in ``work`` (created), so a test reads ``work / "error.log"``; nginx
    is stopped on exit.

    The ``user`` line keeps the worker this user: as root it would otherwise run as nobody,
    unable to write the proxy cache and temp files in ``work``. 256 connections: each
    request behind ``auth_request`` holds three (client, check, upstream)."""
    if not server and port is None:
        raise ValueError("nginx: without a server body, pass the port the http text listens on")
    program = require_program("nginx")
    work.mkdir(parents=True, exist_ok=True)
    port = free_port() if port is None else port
    temps = " ".join(
        f"{kind}_temp_path {work};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    block = f"server {{\n    listen 127.0.0.1:{port} ssl;\n    {server}\n  }}" if server else ""
    config = work / "nginx.conf"
    config.write_text(
        f"""daemon off;
user {getpass.getuser()};
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/error.log info;
events {{ worker_connections 256; }}
http {{
  access_log off;
  {temps}
  {block}
{http}
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
        # the master writes its pid just after it listens; a test may SIGHUP it at once
        wait_for_log(work / "nginx.pid", "\n", seconds=5, process=process)
        yield port
    finally:
        stop(process)
