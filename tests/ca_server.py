"""A real `mtlskit ca serve` on 127.0.0.1 for tests: a CA directory, a subprocess, tokens.

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
class RunningCa:
    directory: Path
    process: subprocess.Popen[str]
    url: str
    fingerprint: str

    @property
    def errors(self) -> str:
        return (self.directory.parent / f"{self.directory.name}.serve.log").read_text()

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

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        if self.process.stdout is not None:
            self.process.stdout.close()


def serve(directory: Path, *extra: str) -> RunningCa:
    passphrase = directory.parent / f"{directory.name}.pass"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = (directory.parent / f"{directory.name}.serve.log").open("a")
    command = [sys.executable, "-m", "mtlskit", "ca", "serve", str(directory)]
    process = subprocess.Popen(
        [*command, "--listen", "127.0.0.1:0", "--passphrase-file", str(passphrase), *extra],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env=env,
    )
    log.close()  # the child holds its own descriptor
    assert process.stdout is not None
    first = process.stdout.readline()
    second = process.stdout.readline()
    if not first.startswith("serving CA"):
        process.kill()
        process.wait()
        errors = Path(log.name).read_text()
        raise RuntimeError(f"ca serve did not start: {first}{second}{errors}")
    return RunningCa(
        directory=directory,
        process=process,
        url=first.split()[-1],
        fingerprint=second.split()[-1],
    )
