"""The CA, people and servers that tests/test_console.py (httpx) and
tests/test_console_browser.py (Chromium) both drive the operator console with.

People are certificates issued by the test's CA (``ca issue``), approvers also registered
with ``ca approvers add``; "outsider" carries an approver's identity from another CA. The
servers are a real ``mtlskit ca serve`` and ``mtlskit ca console`` on the CA directory.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ca_server import RunningCa, RunningConsole, serve, start_console
from conftest import write
from mtlskit.certs import private_key_pem
from mtlskit.cli import main
from mtlskit.client import enroll
from mtlskit.testca import LeafSpec, TestCA

ALICE = "spiffe://acme.com/people/alice"
BOB = "spiffe://acme.com/people/bob"
VICTOR = "spiffe://acme.com/people/victor"
MALLORY = "spiffe://acme.com/people/mallory"


@dataclass(frozen=True, slots=True, kw_only=True)
class Person:
    identity: str
    chain: Path  # leaf + issuing CA, as presented
    key: Path


@dataclass
class Servers:
    """A CA's ``ca serve`` and ``ca console`` and its people (each test module adds how it
    talks to the console: httpx, or a browser)."""

    ca: RunningCa
    console: RunningConsole
    people: dict[str, Person]

    @property
    def url(self) -> str:
        return self.console.url

    def sql(self, statement: str, *args: object) -> None:
        """Write to the CA's ca.db behind its back, as someone with the file would."""
        connection = sqlite3.connect(self.ca.directory / "ca.db")
        try:
            connection.execute(statement, args)
            connection.commit()
        finally:
            connection.close()


def cli_ok(*args: object) -> None:
    """``mtlskit ARGS`` in-process; it must exit 0."""
    assert main([os.fspath(a) if isinstance(a, Path) else str(a) for a in args]) == 0


def issue_person(directory: Path, out: Path, identity: str, *, register: bool = False) -> Person:
    """A certificate for ``identity`` from the CA in ``directory`` (files in ``out``);
    ``register``: also an approver (``ca approvers add``)."""
    passphrase = directory.parent / f"{directory.name}.pass"
    cli_ok(
        "ca", "issue", directory, "--id", identity, "--out", out, "--passphrase-file", passphrase
    )
    if register:
        cli_ok("ca", "approvers", "add", directory, "--cert", out / "cert.pem", "--passphrase-file",
               passphrase)  # fmt: skip
    return Person(identity=identity, chain=out / "chain.pem", key=out / "key.pem")


def issue_people(
    directory: Path, base: Path, *, approvers: dict[str, str], others: dict[str, str]
) -> dict[str, Person]:
    """By name: ``approvers`` issued and registered, ``others`` issued only, and "outsider":
    a certificate from another CA with the first approver's identity."""
    people = {
        name: issue_person(directory, base / name, identity, register=True)
        for name, identity in approvers.items()
    }
    people |= {
        name: issue_person(directory, base / name, identity) for name, identity in others.items()
    }
    impostor = next(iter(approvers.values()))
    outsider = TestCA(name="elsewhere").issue(LeafSpec(uris=(impostor,)))
    people["outsider"] = Person(
        identity=impostor,
        chain=write(base / "outsider.pem", outsider.chain_pem),
        key=write(base / "outsider.key", private_key_pem(outsider.key)),
    )
    return people


@contextlib.contextmanager
def ca_and_console(directory: Path) -> Iterator[tuple[RunningCa, RunningConsole]]:
    """``ca serve`` (token failures not limited in practice) and ``ca console`` on
    ``directory``, both stopped after."""
    ca = serve(directory, "--max-token-failures", "1000")
    try:
        console = start_console(directory)
        try:
            yield ca, console
        finally:
            console.stop()
    finally:
        ca.stop()


def pending_request(ca: RunningCa, identity: str, out: Path) -> str:
    """The id of a pending enrollment request for ``identity`` (an ``[[approval]]`` rule's)."""
    pending = enroll(ca.url, ca.token(identity), out, ca_fingerprint=ca.fingerprint)
    assert pending.status == "pending"
    return pending.request_id


@contextlib.contextmanager
def waiting_enroll(
    ca: RunningCa, identity: str, out: Path
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``mtlskit enroll URL --wait 120`` for ``identity`` as a subprocess, once it says it
    waits for approval: the process and its request id. Killed after if still running."""
    waiting = subprocess.Popen(
        [sys.executable, "-m", "mtlskit", "enroll", ca.url, "--token", ca.token(identity),
         "--out", str(out), "--ca-fingerprint", ca.fingerprint, "--wait", "120"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert waiting.stderr is not None
        line = waiting.stderr.readline()  # "waiting for approval of request ID: 0/2"
        assert line.startswith("waiting for approval of request "), line
        yield waiting, line.split()[5].rstrip(":")
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.communicate()


def approved_by(ca: RunningCa, request_id: str) -> tuple[str, ...]:
    """Who the store counts as having approved ``request_id``."""
    store = ca.store()
    try:
        request = store.get_request(request_id)
    finally:
        store.close()
    assert request is not None
    return request.approved_by
