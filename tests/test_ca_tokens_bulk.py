"""Bulk enrollment and the CA database's password file (issue 26), as real processes.

- ``ca token --from ids.txt`` mints one token per identity, and each enrolls its own
  identity against a running ``ca serve``; one bad or disallowed line mints nothing;
- a database password file that group or others may read is refused, like every other
  password file.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from ca_server import init_ca, serve
from mtlskit.certs import load_certificates
from mtlskit.identity import ClientIdentity


def _run(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mtlskit", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _tokens_stored(ca: Path) -> int:
    with sqlite3.connect(ca / "ca.db") as db:
        return db.execute("select count(*) from tokens").fetchone()[0]


IDS = "# billing services\nspiffe://acme.com/billing/a\n\n  spiffe://acme.com/billing/b  \n"


def test_tokens_from_a_file_each_enroll_their_own_identity(tmp_path):
    ca = init_ca(tmp_path / "ca")
    ids = tmp_path / "ids.txt"
    ids.write_text(IDS)
    done = _run("ca", "token", ca, "--from", ids)
    assert done.returncode == 0, done.stderr
    lines = [line.split("\t") for line in done.stdout.splitlines()]
    assert [identity for identity, _ in lines] == [
        "spiffe://acme.com/billing/a",
        "spiffe://acme.com/billing/b",
    ]
    assert "2 one-time tokens" in done.stderr
    running = serve(ca)
    try:
        for identity, token in lines:
            out = tmp_path / identity.rsplit("/", 1)[1]
            enrolled = _run(
                "enroll", running.url, "--token", token, "--out", out,
                "--ca-fingerprint", running.fingerprint,
            )  # fmt: skip
            assert enrolled.returncode == 0, enrolled.stderr + running.errors
            leaf = load_certificates((out / "cert.pem").read_bytes())[0]
            assert ClientIdentity.from_certificate(leaf).value == identity
    finally:
        running.stop()


def test_tokens_from_a_file_as_json(tmp_path):
    ca = init_ca(tmp_path / "ca")
    ids = tmp_path / "ids.txt"
    ids.write_text(IDS)
    done = _run("ca", "token", ca, "--from", ids, "--json")
    assert done.returncode == 0, done.stderr
    entries = json.loads(done.stdout)
    assert [e["identity"] for e in entries] == [
        "spiffe://acme.com/billing/a",
        "spiffe://acme.com/billing/b",
    ]
    assert len({e["token"] for e in entries}) == 2
    assert all(e["expires_at"] and e["approvers_required"] == 0 for e in entries)
    assert _tokens_stored(ca) == 2


def test_one_malformed_line_mints_nothing(tmp_path):
    ca = init_ca(tmp_path / "ca")
    ids = tmp_path / "ids.txt"
    ids.write_text("spiffe://acme.com/a\n# ok\nspiffe://acme.com/a/../admin\n")
    done = _run("ca", "token", ca, "--from", ids)
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"mtlskit: error: {ids} line 3:"), line
    assert "no token minted" in line
    assert done.stdout == ""
    assert _tokens_stored(ca) == 0


def test_one_disallowed_identity_mints_nothing(tmp_path):
    ca = init_ca(tmp_path / "ca")
    ids = tmp_path / "ids.txt"
    ids.write_text("spiffe://acme.com/a\nspiffe://evil.example/a\n")
    done = _run("ca", "token", ca, "--from", ids)
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert f"{ids} line 2 spiffe://evil.example/a matches no allowed pattern" in line
    assert done.stdout == ""
    assert _tokens_stored(ca) == 0


def test_id_and_from_together_is_a_usage_error(tmp_path):
    ca = init_ca(tmp_path / "ca")
    ids = tmp_path / "ids.txt"
    ids.write_text("spiffe://acme.com/a\n")
    done = _run("ca", "token", ca, "--from", ids, "--id", "spiffe://acme.com/b")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "mtlskit: error: ca token: give exactly one of --id and --from"
    ]
    assert _tokens_stored(ca) == 0


def test_a_database_password_file_others_may_read_is_refused(tmp_path):
    secret = tmp_path / "db.pass"
    secret.write_text("s3cret\n")
    secret.chmod(0o644)
    done = _run(
        "ca", "init", tmp_path / "ca", "--trust-domain", "acme.com",
        "--db", "postgresql://mtlskit@127.0.0.1:1/ca", "--db-password-file", secret,
    )  # fmt: skip
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"mtlskit: error: {secret}: database password file is readable")
    assert not (tmp_path / "ca").exists()
