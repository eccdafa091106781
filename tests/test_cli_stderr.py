"""Nothing on stderr but the one line (issue 21): every command, as a real process, with
``python -W error`` so that any warning (a deprecation in a dependency, say) is a failure.

The command list is walked from the CLI itself, so a new command gets its ``--help`` checked
without being added here, and it must name its bad input below or this test fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click
import pytest

from mtlskit.cli import cli


def _commands() -> Iterator[tuple[str, ...]]:
    def walk(command: click.Command, path: tuple[str, ...], ctx: click.Context) -> Iterator:
        yield path
        if isinstance(command, click.Group):
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                assert sub is not None, name
                yield from walk(sub, (*path, name), click.Context(sub, parent=ctx))

    yield from walk(cli, (), click.Context(cli))


COMMANDS = sorted(_commands())
GROUPS = {path[:-1] for path in COMMANDS if path}
LEAVES = [path for path in COMMANDS if path not in GROUPS]

GARBAGE = b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n"


def _bad_inputs(tmp: Path) -> dict[tuple[str, ...], list[str] | None]:
    """One unusable input per command, each of a kind the README promises one line for;
    ``None`` where a command reads no input at all. A key ending in an option (in
    ``OPTIONS``) is one more for that command: a misuse of that option."""
    pem = tmp / "garbage.pem"
    pem.write_bytes(GARBAGE)
    toml = tmp / "broken.toml"
    toml.write_text('[listen\naddress = "127.0.0.1:0"\n')
    missing = str(tmp / "no-such-ca")
    out = str(tmp / "out")
    return {
        ("audit",): [str(pem)],
        ("authz-server",): ["--config", str(toml)],
        ("ca", "audit", "export"): [missing, "--json"],
        ("ca", "audit", "verify"): [missing],
        ("ca", "console"): [missing],
        ("ca", "console", "--listen"): [missing, "--listen", "8445"],  # no HOST:
        ("ca", "console", "--cert"): [missing, "--cert", str(pem)],  # without --key
        ("ca", "crl"): [missing, "--out", out],
        ("ca", "init"): [str(pem), "--insecure-no-passphrase"],  # a file where a dir belongs
        ("ca", "issue"): [missing, "--id", "spiffe://acme.com/x", "--out", out],
        ("ca", "init", "--key-store"): [
            str(tmp / "token-ca"),
            "--key-store",
            "pkcs11",
            "--pkcs11-module",
            str(tmp / "no-such-module.so"),
            "--token-label",
            "t",
        ],
        ("ca", "init", "--pin-file"): [
            str(tmp / "token-ca"),
            "--key-store",
            "pkcs11",
            "--pkcs11-module",
            str(pem),  # a file that exists, so the PIN file is what is read and missing
            "--token-label",
            "t",
            "--pin-file",
            str(tmp / "no-such-pin"),
        ],
        ("ca", "init", "--pkcs11-module"): [str(tmp / "file-ca"), "--pkcs11-module", str(pem)],
        ("ca", "init", "--import-key"): [str(tmp / "file-ca"), "--import-key"],
        ("ca", "init", "--key-label"): [
            str(tmp / "token-ca"),
            "--key-store",
            "pkcs11",
            "--pkcs11-module",
            str(pem),
            "--token-label",
            "t",
            "--key-label",
            "two words",  # not a label prefix
        ],
        ("ca", "issue", "--server"): [
            missing,
            "--server",
            "--id",
            "spiffe://acme.com/x",
            "--out",
            out,
        ],
        ("ca", "list"): [missing, "--expiring", "7x"],  # the duration is checked first
        ("ca", "migrate"): [missing],
        ("ca", "approvers", "add"): [missing, "--cert", str(pem)],
        ("ca", "approvers", "list"): [missing],
        ("ca", "approvers", "remove"): [missing, "sha256:" + "00" * 32],
        ("ca", "requests", "approve"): [missing, "r1", "--cert", str(pem), "--key", str(pem)],
        ("ca", "requests", "deny"): [missing, "r1", "--approver", "alice"],
        ("ca", "requests", "list"): [missing],
        ("ca", "revoke"): [missing, "1234"],
        ("ca", "serve"): [missing],
        ("ca", "sign"): [missing, str(pem), "--id", "spiffe://acme.com/x", "--out", out],
        ("ca", "token"): [missing, "--id", "spiffe://acme.com/x"],
        ("config",): ["nginx", "--trust", str(pem), "--out", out],
        ("demo",): None,
        ("enroll",): ["https://127.0.0.1:9", "--token", "t", "--out", out],
        ("enroll", "--id-token-file"): [
            "https://127.0.0.1:9",
            "--id-token-file",
            str(tmp / "no-such-token"),
            "--out",
            out,
        ],
        ("enroll", "--id-token-env"): [
            "https://127.0.0.1:9",
            "--id-token-env",
            "MTLSKIT_TEST_UNSET_TOKEN",
            "--out",
            out,
        ],
        ("export", "pkcs12"): ["--cert", str(pem), "--key", str(pem), "--out", out],
        ("gateway",): ["--config", str(toml)],
        ("inspect",): [str(pem)],
        ("lint",): [str(pem)],
        ("probe",): ["127.0.0.1:9", "--cert", str(pem)],
        ("renew",): ["https://127.0.0.1:9", "--cert", str(pem), "--key", str(pem)],
        ("selfsigned",): ["--id", "spiffe://ACME.com/x", "--out", out],
        ("serve",): ["app:app", "--config", str(toml)],
        ("survey",): ["127.0.0.1:9"],
        ("verify",): [str(pem), "--trust", str(pem)],
    }


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "error", "MTLSKIT_CA_PASSPHRASE": "not-used-here"}
    return subprocess.run(
        [sys.executable, "-W", "error", "-m", "mtlskit", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
        env=env,
        timeout=120,
    )


def test_every_help_is_clean(tmp_path):
    with ThreadPoolExecutor(max_workers=4) as pool:
        done = list(pool.map(lambda path: _run([*path, "--help"], tmp_path), COMMANDS))
    failures = [
        f"mtlskit {' '.join(path)} --help: exit {run.returncode}, stderr {run.stderr!r}"
        for path, run in zip(COMMANDS, done, strict=True)
        if run.returncode != 0 or run.stderr or "Usage: mtlskit" not in run.stdout
    ]
    assert not failures, "\n".join(failures)


def test_version_is_clean(tmp_path):
    run = _run(["--version"], tmp_path)
    assert run.returncode == 0 and run.stderr == ""
    assert "mtlskit" in run.stdout


OPTIONS = [
    ("ca", "init", "--key-store"),  # pkcs11 with a module that does not exist
    ("ca", "init", "--pin-file"),  # no such PIN file
    ("ca", "init", "--pkcs11-module"),  # without --key-store pkcs11
    ("ca", "init", "--import-key"),  # without --key-store pkcs11
    ("ca", "init", "--key-label"),  # a prefix with a space
    ("ca", "issue", "--server"),  # --server with --id
    ("ca", "console", "--listen"),  # a port without a host
    ("ca", "console", "--cert"),  # --cert without --key
    ("enroll", "--id-token-file"),  # no such file
    ("enroll", "--id-token-env"),  # an unset variable
]


def test_every_command_names_a_bad_input(tmp_path):
    assert sorted(set(_bad_inputs(tmp_path)) - set(OPTIONS)) == LEAVES


NO_INPUT = {("demo",)}  # runs on embedded defaults; its own test runs it


@pytest.mark.parametrize(
    "path", [*(p for p in LEAVES if p not in NO_INPUT), *OPTIONS], ids=" ".join
)
def test_bad_input_is_one_line(tmp_path, path):
    args = _bad_inputs(tmp_path)[path]
    assert args is not None
    command = path[:-1] if path[-1].startswith("--") else path
    run = _run([*command, *args], tmp_path)
    assert run.returncode == 2, (run.returncode, run.stdout, run.stderr)
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("mtlskit: error: "), lines[0]
    assert "Traceback" not in run.stderr
