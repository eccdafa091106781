"""The CA directory does not follow the umask (issue 27, item 7): it is made 0700, its
database 0600, and a CA whose directory or ca.toml others may write is refused.

Each `ca init` here is a real process started under ``umask 000``, as a careless shell
or service unit would start it.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from ca_server import PASSPHRASE

pytestmark = pytest.mark.attack("ca-directory-permissions")  # issue 27; reliability/redteam.py


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _mtlskit_under_umask_000(*args, env=None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mtlskit", *map(str, args)],
        preexec_fn=lambda: os.umask(0),
        capture_output=True,
        text=True,
        env={**os.environ, "MTLSKIT_CA_PASSPHRASE": PASSPHRASE, **(env or {})},
        timeout=60,
        check=False,
    )


def test_ca_init_under_umask_000_keeps_the_directory_and_database_private(tmp_path):
    directory = tmp_path / "ca"
    made = _mtlskit_under_umask_000("ca", "init", directory, "--trust-domain", "acme.com")
    assert made.returncode == 0, made.stderr
    assert _mode(directory) == 0o700
    assert _mode(directory / "ca.db") == 0o600
    assert not _mode(directory / "ca.toml") & 0o022
    issued = _mtlskit_under_umask_000(
        "ca", "issue", directory, "--id", "spiffe://acme.com/a", "--out", tmp_path / "a"
    )
    assert issued.returncode == 0, issued.stderr
    for name in ("ca.db", "ca.db-wal", "ca.db-shm"):
        if (directory / name).exists():
            assert _mode(directory / name) == 0o600, name


def test_a_ca_toml_others_may_write_is_refused(tmp_path, run_cli, monkeypatch):
    directory = tmp_path / "ca"
    made = _mtlskit_under_umask_000("ca", "init", directory, "--trust-domain", "acme.com")
    assert made.returncode == 0, made.stderr
    (directory / "ca.toml").chmod(0o666)
    monkeypatch.setenv("MTLSKIT_CA_PASSPHRASE", PASSPHRASE)
    result = run_cli(
        "ca", "issue", directory, "--id", "spiffe://acme.com/a", "--out", tmp_path / "a"
    )
    assert result.code == 2
    assert result.err == (
        f"mtlskit: error: {directory / 'ca.toml'}: CA configuration is writable by group or "
        "others (mode 0666): chmod go-w it\n"
    )
    assert not (tmp_path / "a").exists()


def test_a_ca_directory_others_may_write_is_refused(tmp_path, run_cli):
    directory = tmp_path / "ca"
    made = _mtlskit_under_umask_000("ca", "init", directory, "--trust-domain", "acme.com")
    assert made.returncode == 0, made.stderr
    directory.chmod(0o777)
    result = run_cli("ca", "list", directory)
    assert result.code == 2
    assert result.err == (
        f"mtlskit: error: {directory}: CA directory is writable by group or others "
        "(mode 0777): chmod go-w it\n"
    )
