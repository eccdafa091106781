"""`mtlskit ca` features step-ca/Vault users look for (issue 26), as real processes: whole
serials in `ca list` on a terminal and in a pipe, and `ca list --expiring`."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest

from _terminal import on_a_terminal, terminal_env
from ca_server import init_ca, serve
from mtlskit.certs import load_certificates
from mtlskit.issue import BACKDATE


def _run(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mtlskit", *map(str, args)],
        capture_output=True,
        text=True,
        env=terminal_env(),
        timeout=120,
        check=False,
    )


def _issue(directory: Path, identity: str, ttl: str, out: Path) -> str:
    """Issue through the CLI; the serial it printed."""
    done = _run(
        "ca", "issue", directory, "--id", identity, "--ttl", ttl, "--out", out,
        "--passphrase-file", directory.parent / f"{directory.name}.pass",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.split()[2].rstrip(",")


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> Path:
    return init_ca(tmp_path_factory.mktemp("features") / "ca")


@pytest.fixture(scope="module")
def issued(ca) -> dict[str, str]:
    """identity -> serial: three lifetimes, and one revoked short one."""
    serials = {}
    for name, ttl in (("six-days", "6d"), ("two-days", "2d"), ("one-hour", "1h"), ("gone", "1h")):
        serials[name] = _issue(ca, f"spiffe://acme.com/{name}", ttl, ca.parent / name)
    revoked = _run("ca", "revoke", ca, serials["gone"])
    assert revoked.returncode == 0, revoked.stderr
    return serials


@pytest.mark.parametrize("columns", [80, 100])
def test_ca_list_on_a_terminal_never_cuts_a_serial(ca, issued, columns):
    out = on_a_terminal("ca", "list", ca, columns=columns)
    assert "┏" in out  # still the rich table
    for serial in issued.values():
        assert any(serial in line for line in out.splitlines()), (serial, out)


def test_ca_list_piped_serial_revokes(ca, issued):
    listed = _run("ca", "list", ca)
    assert listed.returncode == 0, listed.stderr
    (line,) = [line for line in listed.stdout.splitlines() if "/six-days" in line]
    assert "…" not in line and line.split()[0] == issued["six-days"]


def test_ca_list_expiring_keeps_unrevoked_within_the_window_soonest_first(ca, issued):
    listed = _run("ca", "list", ca, "--expiring", "3d")
    assert listed.returncode == 0, listed.stderr
    serials = [line.split()[0] for line in listed.stdout.splitlines()[1:]]
    assert serials == [issued["one-hour"], issued["two-days"]]
    as_json = _run("ca", "list", ca, "--expiring", "30m", "--json")
    assert as_json.returncode == 0 and '"certificates": []' in as_json.stdout


@pytest.mark.parametrize("duration", ["7x", "0d", "", "-1h"])
def test_ca_list_expiring_bad_duration_is_one_error_line(ca, duration):
    done = _run("ca", "list", ca, "--expiring", duration)
    assert done.returncode == 2
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith("mtlskit: error: --expiring: ")


def test_renewal_keeps_a_two_minute_lifetime_and_the_daemon_says_when(tmp_path):
    directory = init_ca(tmp_path / "renewing")
    _issue(directory, "spiffe://acme.com/brief", "2m", tmp_path / "brief")
    cert, key = tmp_path / "brief" / "cert.pem", tmp_path / "brief" / "key.pem"
    running = serve(directory)
    try:
        done = _run("renew", running.url, "--cert", cert, "--key", key, "--json")
        assert done.returncode == 0, done.stderr
        leaf = load_certificates(cert.read_bytes())[0]
        lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc - BACKDATE
        assert lifetime == dt.timedelta(minutes=2)  # was ca.toml's default_ttl, 24 h
        daemon = subprocess.Popen(
            [sys.executable, "-m", "mtlskit", "renew", running.url, "--cert", cert,
             "--key", key, "--daemon"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=terminal_env(),
        )  # fmt: skip
        try:
            assert daemon.stderr is not None
            line = daemon.stderr.readline()
        finally:
            daemon.terminate()
            daemon.wait(timeout=10)
            daemon.stderr.close()
        assert line.startswith(f"mtlskit renew: next renewal of {leaf.serial_number:x} at "), line
        due = dt.datetime.fromisoformat(line.split(" at ")[1].split()[0])
        assert leaf.not_valid_before_utc < due < leaf.not_valid_after_utc
    finally:
        running.stop()
