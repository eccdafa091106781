"""A throwaway PostgreSQL cluster on 127.0.0.1 for tests and bench/ha: initdb, start, stop.

The binaries come from PATH or from the Debian package's ``/usr/lib/postgresql/<ver>/bin``.
PostgreSQL refuses to run as root, so under root the cluster belongs to the
``postgres`` user (``runuser``). Password authentication over TCP (scram), so tests can
use a wrong password; ``stop`` removes the directory. ``postgres_cluster`` is the
session fixture: a missing PostgreSQL skips with a reason, or fails under
MTLSKIT_REQUIRE_INTEGRATION=1 (``require_program``).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from _servers import free_port as _free_port

SUPERUSER = "mtlskit"
PASSWORD = "pg test password"


def find_bin(name: str) -> str | None:
    """``name`` on PATH, else the newest ``/usr/lib/postgresql/*/bin/name``."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda path: int(Path(path).parts[4]) if Path(path).parts[4].isdigit() else 0,
    )
    return candidates[-1] if candidates else None


@dataclass
class PostgresCluster:
    """One cluster in a temporary directory; ``url(db)`` for a database in it."""

    fast: bool = True  # tests: fsync off (the cluster is thrown away); bench: False
    port: int = 0
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="mtlskit-pg-")))
    _as_user: list[str] = field(default_factory=list)

    @property
    def data(self) -> Path:
        return self.root / "data"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self._as_user, *args], capture_output=True, text=True, check=check, timeout=120
        )

    def start(self) -> PostgresCluster:
        initdb, pg_ctl = find_bin("initdb"), find_bin("pg_ctl")
        if initdb is None or pg_ctl is None:
            raise LookupError("PostgreSQL (initdb, pg_ctl) is not installed")
        self._pg_ctl = pg_ctl
        if os.geteuid() == 0:  # initdb and postgres refuse root
            owner = pwd.getpwnam("postgres")
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
            self._as_user = ["runuser", "-u", "postgres", "--"]
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self._as_user:
            os.chown(pwfile, pwd.getpwnam("postgres").pw_uid, -1)
        self._run(
            initdb,
            "-D",
            str(self.data),
            "-U",
            SUPERUSER,
            f"--pwfile={pwfile}",
            "--auth-host=scram-sha-256",
            "--auth-local=trust",
            "-E",
            "UTF8",
            "--no-instructions",
        )
        pwfile.unlink()
        self.port = self.port or _free_port()
        options = [
            "-c listen_addresses=127.0.0.1",
            f"-c port={self.port}",
            f"-c unix_socket_directories={self.root}",
            "-c max_connections=200",
        ]
        if self.fast:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        self._options = " ".join(options)
        self.resume()
        return self

    def resume(self) -> None:
        """Start (again, after ``pause``) on the same port and data."""
        self._run(
            self._pg_ctl,
            "start",
            "-w",
            "-t",
            "60",
            "-D",
            str(self.data),
            "-l",
            str(self.root / "log"),
            "-o",
            self._options,
        )

    def pause(self) -> None:
        """Stop the server (fast: open connections are cut), keeping the data."""
        self._run(self._pg_ctl, "stop", "-w", "-m", "fast", "-D", str(self.data), check=False)

    def stop(self) -> None:
        if self.data.exists():
            self._run(
                self._pg_ctl, "stop", "-w", "-m", "immediate", "-D", str(self.data), check=False
            )
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres", *, password: bool = True) -> str:
        secret = f":{PASSWORD.replace(' ', '%20')}" if password else ""
        return f"postgresql://{SUPERUSER}{secret}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A fresh, empty database; its URL (with the password)."""
        import psycopg

        with psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user=SUPERUSER,
            password=PASSWORD,
            dbname="postgres",
            autocommit=True,
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    from conftest import require_program

    if find_bin("initdb") is None:
        require_program("initdb")  # skips (or fails in CI) with the install hint
    cluster = PostgresCluster()
    try:
        cluster.start()
    except (subprocess.CalledProcessError, LookupError) as exc:
        cluster.stop()
        detail = getattr(exc, "stderr", "") or str(exc)
        pytest.fail(f"cannot start a PostgreSQL test cluster: {detail.strip()[-500:]}")
    try:
        yield cluster
    finally:
        cluster.stop()
