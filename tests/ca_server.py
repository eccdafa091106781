"""A real `mtlskit ca serve` (and `ca console`) on 127.0.0.1 for tests: a CA directory,
a subprocess, tokens.

The server is the installed command run as `python -m mtlskit`, on an ephemeral port it
prints; ``stop`` terminates it (and kills it if it lingers), so nothing is left behind.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from _servers import stop
from mtlskit.cli import main
from mtlskit.issue import new_token, parse_identity
from mtlskit.store import SqlStore, database_url

PASSPHRASE = "correct horse battery staple"


def init_ca(directory: Path, *extra: str, approval: str = "") -> Path:
    """A CA for acme.com (passphrase from a file beside it), plus an optional TOML tail."""
    passphrase = directory.parent / f"{directory.name}.pass"
    passphrase.write_text(PASSPHRASE + "\n")
    passphrase.chmod(0o600)  # a password file others may read is refused
    args = ["ca", "init", str(directory), "--trust-domain", "acme.com"]
    code = main([*args, "--passphrase-file", str(passphrase), *extra])
    assert code == 0
    if approval:
        with (directory / "ca.toml").open("a") as handle:
            handle.write(approval)
    return directory


@dataclass
class RunningServer:
    """A `mtlskit ca serve` or `ca console` subprocess on an ephemeral port of 127.0.0.1."""

    directory: Path
    process: subprocess.Popen[str]
    url: str
    fingerprint: str

    def stop(self) -> None:
        stop(self.process)


def _start(
    directory: Path, command: str, extra: tuple[str, ...], *, ready: str, lines: int
) -> tuple[subprocess.Popen[str], list[str]]:
    """`mtlskit ca COMMAND DIR --listen 127.0.0.1:0 EXTRA` with the passphrase file beside
    DIR (as ``init_ca`` writes it), stderr appended to DIR.COMMAND.log: the process and its
    first ``lines`` stdout lines, once printed; RuntimeError with the log if the first
    does not start with ``ready``."""
    passphrase = directory.parent / f"{directory.name}.pass"
    log = (directory.parent / f"{directory.name}.{command}.log").open("a")
    argv = [sys.executable, "-m", "mtlskit", "ca", command, str(directory)]
    process = subprocess.Popen(
        [*argv, "--listen", "127.0.0.1:0", "--passphrase-file", str(passphrase), *extra],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    log.close()  # the child holds its own descriptor
    assert process.stdout is not None
    printed = [process.stdout.readline() for _ in range(lines)]
    if not printed[0].startswith(ready):
        process.kill()
        process.wait()
        errors = Path(log.name).read_text()
        raise RuntimeError(f"ca {command} did not start: {''.join(printed)}{errors}")
    return process, printed


@dataclass
class RunningCa(RunningServer):
    @property
    def log_file(self) -> Path:
        """The server's stderr (``_start`` appends it there), for ``wait_for_log``."""
        return self.directory.parent / f"{self.directory.name}.serve.log"

    @property
    def errors(self) -> str:
        return self.log_file.read_text()

    @property
    def root(self) -> Path:
        return self.directory / "root.pem"

    def store(self) -> SqlStore:
        return SqlStore.open(database_url(self.directory, "ca.db"))

    def token(
        self, identity: str, *, ttl: dt.timedelta = dt.timedelta(minutes=15), age=None
    ) -> str:
        """A token straight into the store; ``age`` makes one issued that long ago."""
        now = dt.datetime.now(dt.UTC) - (age or dt.timedelta(0))
        token, record = new_token(parse_identity(identity), now=now, ttl=ttl)
        store = self.store()
        try:
            store.add_token(record)
        finally:
            store.close()
        return token


def serve(directory: Path, *extra: str) -> RunningCa:
    process, (first, second) = _start(directory, "serve", extra, ready="serving CA", lines=2)
    return RunningCa(
        directory=directory,
        process=process,
        url=first.split()[-1],
        fingerprint=second.split()[-1],
    )


@dataclass
class RunningConsole(RunningServer):
    @property
    def log_file(self) -> Path:
        """The console's stderr (``_start`` appends it there), for ``wait_for_log``."""
        return self.directory.parent / f"{self.directory.name}.console.log"

    @property
    def log(self) -> str:
        return self.log_file.read_text()


def start_console(directory: Path, *extra: str) -> RunningConsole:
    """``mtlskit ca console DIR``, once it prints its ``console listening on`` line."""
    ready = "console listening on https://"
    process, (first,) = _start(directory, "console", extra, ready=ready, lines=1)
    # console listening on https://HOST:PORT (fingerprint sha256:...)
    words = first.split()
    return RunningConsole(
        directory=directory,
        process=process,
        url=words[3],
        fingerprint=words[-1].rstrip(")"),
    )
