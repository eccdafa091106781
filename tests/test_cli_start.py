"""Fast start (issue 21): a command imports only what it needs, and ``--version`` says what
mtlskit runs on. Real processes; what is checked is which modules got imported, not time
(bench/cli.py measures the seconds beside the openssl CLI).
"""

from __future__ import annotations

import json
import platform
import ssl
import subprocess
import sys

import click
import cryptography
import pytest
from cryptography.hazmat.backends.openssl import backend

from conftest import write
from mtlskit import __version__
from mtlskit.cli import _LazyGroup, cli
from mtlskit.testca import LeafSpec, TestCA

# What the paths of --help, inspect and lint must not pay for at start-up.
HEAVY = {"rich", "pydantic", "sqlalchemy", "starlette", "httpx", "uvicorn", "tlslite", "alembic"}

_PROBE = """
import json, sys
from mtlskit.cli import main
code = main(sys.argv[1:])
loaded = sorted(sys.modules)
print(json.dumps({"code": code, "modules": loaded}), file=sys.stderr)
"""


def _imports(*args: str) -> tuple[int, set[str]]:
    """Run ``mtlskit ARGS`` in a fresh interpreter, stdout piped; the modules it imported."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, check=False
    )
    report = json.loads(done.stderr.strip().splitlines()[-1])
    return report["code"], set(report["modules"])


def test_help_imports_no_command_module():
    code, modules = _imports("--help")
    assert code == 0
    commands = {name for name in modules if name.startswith("mtlskit.cli.")}
    assert commands == set(), commands
    assert not {name.split(".")[0] for name in modules} & HEAVY


@pytest.mark.parametrize("command", ["inspect", "lint"])
def test_inspect_and_lint_import_nothing_heavy(tmp_path, command):
    leaf = TestCA().issue(LeafSpec(uris=("spiffe://acme.com/x",), ca=True))
    code, modules = _imports(command, str(write(tmp_path / "one.pem", leaf.cert_pem)))
    assert code == (1 if command == "lint" else 0)
    assert not {name.split(".")[0] for name in modules} & HEAVY
    assert {name for name in modules if name.startswith("mtlskit.cli.")} == {
        f"mtlskit.cli.{command}",
        "mtlskit.cli._inputs",
        "mtlskit.cli._output",
    }


def test_the_help_summaries_are_the_commands_own():
    """The lazy table's summaries (listed without importing) match each command's docstring."""
    ctx = click.Context(cli)
    for name, (target, summary) in _LazyGroup.lazy.items():
        command = cli.get_command(ctx, name)
        assert command is not None, target
        assert command.get_short_help_str(limit=1000) == summary, name


def test_help_lists_every_command():
    done = subprocess.run(
        [sys.executable, "-m", "mtlskit", "--help"], capture_output=True, text=True, check=True
    )
    listed = done.stdout.split("Commands:\n", 1)[1].splitlines()
    assert [line.split()[0] for line in listed] == sorted(_LazyGroup.lazy)
    assert "  lint          Check certificates against client-authentication" in done.stdout


def test_version_names_mtlskit_cryptography_and_both_openssl_builds():
    done = subprocess.run(
        [sys.executable, "-W", "error", "-m", "mtlskit", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.splitlines() == [
        f"mtlskit {__version__}",
        f"cryptography {cryptography.__version__} ({backend.openssl_version_text()})",
        f"Python {platform.python_version()} ssl ({ssl.OPENSSL_VERSION})",
    ]
