"""Defects a new user hit following the README (issue 26, items 4-7): each as it was reported.

- a directory where a file belongs, or a bad ``--at``: one ``mtlskit: error:`` line, exit 2;
- ``config nginx`` without ``--listen`` listens on loopback, as every other mtlskit listener;
- a port already in use: one line, exit 2, for ``gateway`` and ``authz-server`` as real
  processes (the port is held by a socket bound first);
- a private key or password file that group or others may read is refused by every command
  that reads one, as server and CA keys already were.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from _gateway_support import write_config
from conftest import write

CERT_READERS = [
    ("inspect", "{dir}"),
    ("lint", "{dir}"),
    ("verify", "{dir}", "--pin", "sha256:" + "00" * 32),
    ("verify", "{pem}", "--trust", "{dir}"),
    ("audit", "{dir}/no-such.pem"),
    ("export", "pkcs12", "--cert", "{dir}", "--key", "{pem}", "--out", "{dir}/o.p12"),
    ("gateway", "--config", "{dir}"),
    ("authz-server", "--config", "{dir}"),
    ("selfsigned", "--id", "spiffe://acme.com/x", "--out", "{pem}"),
]


def _one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("mtlskit: error: "), err
    assert "Traceback" not in err and "Usage:" not in err and "Try " not in err, err
    return lines[0]


@pytest.mark.parametrize("args", CERT_READERS, ids=lambda a: " ".join(a[:2]))
def test_a_directory_where_a_file_belongs_is_one_error_line(run_cli, tmp_path, ca, args):
    pem = write(tmp_path / "root.pem", ca.root.cert_pem)
    argv = [a.format(dir=tmp_path, pem=pem) for a in args]
    result = run_cli(*argv)
    assert result.code == 2, result
    line = _one_error_line(result.err)
    assert str(tmp_path) in line or "directory" in line or "is a file" in line, line


@pytest.mark.parametrize(
    "args",
    [
        ("lint", "{pem}", "--at", "yesterday"),
        ("verify", "{pem}", "--trust", "{pem}", "--at", "2026-13-01"),
        ("verify", "{pem}", "--trust", "{pem}", "--at", ""),
    ],
    ids=["lint", "verify-month-13", "verify-empty"],
)
def test_a_bad_at_is_one_error_line(run_cli, tmp_path, ca, args):
    pem = write(tmp_path / "root.pem", ca.root.cert_pem)
    result = run_cli(*[a.format(pem=pem) for a in args])
    assert result.code == 2, result
    assert "--at" in _one_error_line(result.err)


def test_config_nginx_listens_on_loopback_unless_told(run_cli, tmp_path, ca):
    root = write(tmp_path / "root.pem", ca.root.cert_pem)
    result = run_cli("config", "nginx", "--trust", root)
    assert result.code == 0, result.err
    listens = [
        line.strip() for line in result.out.splitlines() if line.strip().startswith("listen")
    ]
    assert listens == ["listen 127.0.0.1:8443 ssl;"], listens
    exposed = run_cli("config", "nginx", "--trust", root, "--listen", "0.0.0.0:443")
    assert "listen 0.0.0.0:443 ssl;" in exposed.out


@pytest.fixture
def held_port():
    """A port something else already listens on."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield sock.getsockname()[1]


def _run(*args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mtlskit", *map(os.fspath, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _gateway_config(site, ca, listen: str, extra: str = "") -> Path:
    config = write_config(site, ca.bundle_pem, '[client_auth]\ntrust = ["trust.pem"]\n' + extra)
    text = config.read_text().replace('address = "127.0.0.1:0"', f'address = "{listen}"', 1)
    config.write_text(text)
    return config


@pytest.mark.parametrize(
    ("listen", "extra"),
    [
        ("held", ""),
        ("held", '[metrics]\naddress = "127.0.0.1:0"\n'),
        ("free", '[metrics]\naddress = "127.0.0.1:{held}"\n'),
    ],
    ids=["listen", "listen-with-metrics", "metrics"],
)
@pytest.mark.parametrize("workers", [1, 2])
def test_gateway_on_a_port_in_use_is_one_line_exit_2(
    echo_site, ca, held_port, listen, extra, workers
):
    address = f"127.0.0.1:{held_port}" if listen == "held" else "127.0.0.1:0"
    extra = extra.format(held=held_port)
    config = _gateway_config(echo_site, ca, address, extra)
    config.write_text(
        config.read_text().replace("[listen]\n", f"[listen]\nworkers = {workers}\n", 1)
    )
    result = _run("gateway", "--config", config)
    assert result.returncode == 2, result.stderr
    line = _one_error_line(result.stderr)
    assert f"cannot listen on 127.0.0.1:{held_port}" in line, line
    assert "in use" in line, line


def test_authz_server_on_a_port_in_use_is_one_line_exit_2(tmp_path, ca, held_port):
    write(tmp_path / "root.pem", ca.root.cert_pem)
    config = write(
        tmp_path / "authz.toml",
        f'[listen]\naddress = "127.0.0.1:{held_port}"\n'
        '[client_auth]\ntrust = ["root.pem"]\n'.encode(),
    )
    result = _run("authz-server", "--config", config)
    assert result.returncode == 2, result.stderr
    line = _one_error_line(result.stderr)
    assert f"cannot listen on 127.0.0.1:{held_port}" in line, line
    assert "listening" not in result.stderr


LOOSE = "is readable by group or others (mode 0644): chmod 600 it"


@pytest.fixture
def client_files(tmp_path, clean_leaf):
    """A client's chain, key and a password file, 0600 (``write``): each test loosens one."""
    return {
        "cert": write(tmp_path / "chain.pem", clean_leaf.chain_pem),
        "key": write(tmp_path / "key.pem", clean_leaf.key_pem),
        "password": write(tmp_path / "p12.pass", b"export pw\n"),
        "out": tmp_path / "out",
    }


def _loosen_and_run(run_cli, path: Path, args: list[str | Path]):
    """Refused with the key rule's one line when ``path`` is 0644; what it does at 0600."""
    path.chmod(0o644)
    refused = run_cli(*args)
    assert refused.code == 2, refused
    assert _one_error_line(refused.err) == (
        f"mtlskit: error: {path}: "
        + ("password file " if "pass" in path.name else "private key ")
        + f"{LOOSE}, or set MTLSKIT_ALLOW_INSECURE_KEY_PERMISSIONS=1 to accept that"
    )
    path.chmod(0o600)
    return run_cli(*args)


@pytest.mark.parametrize("loose", ["key", "password"])
def test_export_pkcs12_refuses_a_key_or_password_file_others_may_read(run_cli, client_files, loose):
    f = client_files
    args = ["export", "pkcs12", "--cert", f["cert"], "--key", f["key"], "--out", f["out"]]
    args += ["--password-file", f["password"]]
    done = _loosen_and_run(run_cli, f[loose], args)
    assert done.code == 0, done.err
    assert f["out"].exists()


def test_renew_refuses_a_key_others_may_read(run_cli, client_files):
    f = client_files
    args = ["renew", "https://127.0.0.1:9", "--cert", f["cert"], "--key", f["key"]]
    args += ["--ca", f["cert"]]
    # at 0600 it goes on to the CA (nothing listens on port 9): past the key check
    assert "CA unavailable" in _loosen_and_run(run_cli, f["key"], args).err


def test_probe_refuses_a_key_others_may_read(run_cli, client_files):
    f = client_files
    args = ["probe", "127.0.0.1:9", "--cert", f["cert"], "--key", f["key"]]
    assert LOOSE not in _loosen_and_run(run_cli, f["key"], args).err


@pytest.mark.parametrize("command", ["inspect", "lint"])
def test_pkcs12_readers_refuse_a_password_file_others_may_read(
    run_cli, client_files, tmp_path, command
):
    f = client_files
    export = ["export", "pkcs12", "--cert", f["cert"], "--key", f["key"], "--out", f["out"]]
    assert run_cli(*export, "--password-file", f["password"]).code == 0
    args = [command, "--password-file", f["password"], f["out"]]
    assert _loosen_and_run(run_cli, f["password"], args).code in (0, 1)


def test_ca_init_refuses_a_passphrase_file_others_may_read(run_cli, tmp_path):
    passphrase = write(tmp_path / "ca.pass", b"a long ca passphrase\n")
    args = ["ca", "init", tmp_path / "ca", "--trust-domain", "acme.com"]
    done = _loosen_and_run(run_cli, passphrase, [*args, "--passphrase-file", passphrase])
    assert done.code == 0, done.err
