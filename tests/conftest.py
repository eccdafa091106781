"""Shared fixtures: one test CA per session, the CLI run in-process, integration gating."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from _gateway_support import EchoBackend, Site
from mtlskit.cli import main
from mtlskit.testca import IssuedCert, LeafSpec, TestCA

SPIFFE_ID = "spiffe://acme.com/billing/payments"
CLEAN = LeafSpec(uris=(SPIFFE_ID,))


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    """Run ``mtlskit ARGS`` in-process; returns exit code, stdout and stderr.

    Tables are rendered 200 columns wide so that assertions see unwrapped cells.
    """
    monkeypatch.setenv("COLUMNS", "200")

    def run(*args: str | os.PathLike[str]) -> CliResult:
        capsys.readouterr()
        code = main([os.fspath(arg) for arg in args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture(scope="session")
def ca() -> TestCA:
    return TestCA(name="acme")


@pytest.fixture(scope="session")
def clean_leaf(ca: TestCA) -> IssuedCert:
    return ca.issue(CLEAN)


@pytest.fixture(scope="session")
def gateway_server_ca() -> trustme.CA:
    """The CA of the gateway sites' server certificates (clients trust it)."""
    return trustme.CA()


@pytest.fixture
def echo_site(tmp_path: Path, gateway_server_ca: trustme.CA) -> Iterator[Site]:
    """A gateway site (``_gateway_support.Site``) with its own echo backend, stopped after."""
    backend = EchoBackend()
    yield Site(dir=tmp_path, server_ca=gateway_server_ca, backend=backend)
    backend.stop()


def write(path: Path, data: bytes) -> Path:
    """``data`` to ``path``, 0600 as under an operator's umask 077: every command refuses a
    key or password file others may read (a test of that chmods the file itself)."""
    path.write_bytes(data)
    path.chmod(0o600)
    return path


def require_program(name: str) -> str:
    """The program's path: a skip with a reason on a laptop, a failure in CI.

    CI sets MTLSKIT_REQUIRE_INTEGRATION=1, so a missing program there is an install bug.
    """
    found = shutil.which(name)
    if found:
        return found
    message = f"{name} is not installed; .ci/run installs it"
    if os.environ.get("MTLSKIT_REQUIRE_INTEGRATION") == "1":
        pytest.fail(message)
    pytest.skip(message)
