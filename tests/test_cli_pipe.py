"""Output that survives a pipe (issue 21): every command that prints findings or rows, run as
a real process with stdout piped, prints each one whole on one line, so ``grep CODE`` finds
the code and the message beside it. On a terminal (a pty here) the rich tables stay, unless
``NO_COLOR`` or ``TERM=dumb`` asks for plain text.

Each process gets no ``COLUMNS``: a pipe is 80 columns to rich, which is what folded
``public_root_in_client_trust_store`` across two table cells.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import certifi
import pytest

from _terminal import on_a_terminal, terminal_env
from ca_server import init_ca, serve
from conftest import write
from mtlskit.audit import audit_trust_store
from mtlskit.certs import Fingerprint, load_certificates
from mtlskit.client import enroll
from mtlskit.lint import lint_chain
from mtlskit.testca import CLIENT_AUTH, SERVER_AUTH, LeafSpec, TestCA
from test_publicca import TLSServer

LONG_ID = "spiffe://acme.com/" + "/".join(["billing-and-payments-service"] * 4)


def _piped(*args: object, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mtlskit", *map(str, args)],
        capture_output=True,
        text=True,
        env=terminal_env(**env),
        timeout=120,
        check=False,
    )


def _line_with(out: str, *parts: str) -> str:
    """The one line that holds every part, or a failure that shows the output."""
    found = [line for line in out.splitlines() if all(part in line for part in parts)]
    assert found, f"no single line holds {parts!r} in:\n{out}"
    return found[0]


@pytest.fixture(scope="module")
def defective(tmp_path_factory) -> tuple[Path, Path]:
    """A CA:TRUE leaf with a long SPIFFE ID (under a long path), and its CA's root."""
    ca = TestCA(name="pipe")
    leaf = ca.issue(LeafSpec(uris=(LONG_ID,), ca=True))
    directory = tmp_path_factory.mktemp("a-rather-long-directory-name-for-the-table-title")
    return write(directory / "client.pem", leaf.cert_pem), write(
        directory / "root.pem", ca.root.cert_pem
    )


def test_lint_finding_is_one_line(defective):
    cert, _ = defective
    (report,) = lint_chain(
        load_certificates(cert.read_bytes()), ["client-auth"], at=dt.datetime.now(dt.UTC)
    )
    (finding,) = [f for f in report.findings if f.code == "leaf_is_ca"]
    done = _piped("lint", cert)
    assert done.returncode == 1, done.stderr
    line = _line_with(done.stdout, str(cert), "error leaf_is_ca", finding.message)
    assert finding.reference in line
    assert done.stdout.splitlines()[-1].startswith("FAIL (client-auth): error: ")


def test_inspect_rows_are_one_line_each(defective):
    cert, _ = defective
    fingerprint = Fingerprint.of(load_certificates(cert.read_bytes())[0]).colon_hex
    done = _piped("inspect", cert)
    assert done.returncode == 0, done.stderr
    _line_with(done.stdout, f"Identity: spiffe: {LONG_ID}")
    _line_with(done.stdout, f"SHA-256: {fingerprint}")
    _line_with(done.stdout, f"Subject alt names: URI:{LONG_ID}")


def test_audit_of_the_public_bundle_greps(tmp_path):
    bundle = certifi.where()
    report = audit_trust_store(
        [(bundle, cert) for cert in load_certificates(Path(bundle).read_bytes())],
        now=dt.datetime.now(dt.UTC),
    )
    first = report.entries[0]
    (finding,) = [f for f in first.findings if f.code == "public_root_in_client_trust_store"]
    done = _piped("audit", bundle)
    assert done.returncode == 1, done.stderr
    hits = [
        line for line in done.stdout.splitlines() if "public_root_in_client_trust_store" in line
    ]
    assert len(hits) == sum(
        f.code == "public_root_in_client_trust_store" for e in report.entries for f in e.findings
    )
    _line_with(done.stdout, f"{bundle} #0 {first.subject}", finding.code, finding.message)
    assert done.stdout.splitlines()[-1] == "verdict: FAIL"


def test_verify_reason_is_one_line(defective):
    cert, root = defective
    done = _piped("verify", cert, "--trust", root)
    assert done.returncode == 1, done.stderr
    assert done.stdout.startswith(f"REJECT  spiffe: {LONG_ID}\n")
    _line_with(done.stdout, "x leaf_is_ca (depth 0): ", "end-entity", "ClientCertPurposeInvalid")


def test_survey_row_is_one_line(tmp_path):
    public = TestCA(name="Simulated Public Trust")
    roots = write(tmp_path / "public-roots.pem", public.root.cert_pem)
    late = public.issue(
        LeafSpec(
            dns=("stranger.example",),
            eku=(SERVER_AUTH, CLIENT_AUTH),
            not_before=dt.datetime(2027, 4, 1, tzinfo=dt.UTC),
        )
    )
    server = TLSServer(late, tmp_path)
    try:
        done = _piped("survey", f"127.0.0.1:{server.port}", MTLSKIT_EXTRA_PUBLIC_ROOTS=str(roots))
    finally:
        server.close()
    assert done.returncode == 1, done.stderr
    _line_with(
        done.stdout,
        f"127.0.0.1:{server.port}: EKU serverAuth, clientAuth;",
        "class public;",
        "clientAuth: no longer issued: ",
        "(Chrome Root Program Policy v1.8 §1.3.2)",
    )


def test_probe_case_is_one_line(defective):
    cert, _ = defective
    import socket

    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens: every case is an error, still one line each
    done = _piped("probe", f"127.0.0.1:{port}", "--cert", cert)
    assert done.returncode == 2, done.stderr
    _line_with(
        done.stdout,
        "foreign-key-tls1.3: legitimate certificate, foreign key (TLS 1.3): expected refuse, ",
        "cannot connect",
        ": error",
    )


def test_ca_list_and_requests_list_rows_are_one_line(tmp_path):
    approval = '\n[[approval]]\nids = ["spiffe://acme.com/prod/**"]\napprovers = 2\n'
    directory = init_ca(tmp_path / "ca", approval=approval)
    running = serve(directory)
    try:
        pending = enroll(running.url, running.token("spiffe://acme.com/prod/db"), tmp_path / "db")
        issued = enroll(running.url, running.token("spiffe://acme.com/web"), tmp_path / "web")
    finally:
        running.stop()
    requests = _piped("ca", "requests", "list", directory)
    assert requests.returncode == 0, requests.stderr
    assert requests.stdout.splitlines()[0].split() == [
        "id", "identity", "status", "approvals", "csr", "sha256", "client",
    ]  # fmt: skip
    _line_with(requests.stdout, pending.request_id, "spiffe://acme.com/prod/db", "pending", "0/2")
    leaf = load_certificates((tmp_path / "web" / "cert.pem").read_bytes())[0]
    listed = _piped("ca", "list", directory)
    assert listed.returncode == 0, listed.stderr
    _line_with(listed.stdout, issued.serial, "spiffe://acme.com/web", str(Fingerprint.of(leaf)))


def test_a_terminal_gets_the_table_unless_told_not_to(defective):
    cert, _ = defective
    assert "┏" in on_a_terminal("lint", cert)
    for env in ({"NO_COLOR": "1"}, {"TERM": "dumb"}):
        plain = on_a_terminal("lint", cert, **env)
        assert "┏" not in plain and "\x1b[" not in plain, env
        _line_with(plain, str(cert), "error leaf_is_ca: basicConstraints says CA:TRUE")
