"""Approvals count people, not strings (issue 27 item 5, issue 26 item 1).

Before: `ca requests approve ID --approver alice` then `--approver Alice`, by one person
without the CA passphrase, satisfied a two-approver rule. Now an approver is a
certificate registered with the CA's key, an approval is that key's signature, people
are told apart by verified identity (case-folded), the requester cannot approve, and
`ca serve` counts the signatures again before it signs. One real `ca serve` process;
every approval through the real command line.
"""

from __future__ import annotations

import json
import ssl
from pathlib import Path

import httpx
import pytest

from ca_server import PASSPHRASE, RunningCa, init_ca, serve
from conftest import write
from mtlskit.certs import private_key_pem
from mtlskit.client import enroll
from mtlskit.issue import verify_audit_chain
from mtlskit.testca import LeafSpec, TestCA

APPROVAL = '\n[[approval]]\nids = ["spiffe://acme.com/prod/**"]\napprovers = 2\n'


pytestmark = pytest.mark.attack("approver-identity")  # issue 27; reliability/redteam.py


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> RunningCa:
    directory = init_ca(tmp_path_factory.mktemp("approvers") / "ca", approval=APPROVAL)
    running = serve(directory, "--max-token-failures", "1000")
    yield running
    running.stop()


@pytest.fixture
def cli(run_cli, monkeypatch):
    monkeypatch.setenv("MTLSKIT_CA_PASSPHRASE", PASSPHRASE)
    return run_cli


def _issue(cli, ca: RunningCa, out: Path, identity: str) -> tuple[Path, Path]:
    result = cli("ca", "issue", ca.directory, "--id", identity, "--out", out)
    assert result.code == 0, result.err
    return out / "cert.pem", out / "key.pem"


def _approver(cli, ca: RunningCa, out: Path, identity: str) -> tuple[Path, Path]:
    """A certificate from this CA for ``identity``, registered as an approver."""
    cert, key = _issue(cli, ca, out, identity)
    added = cli("ca", "approvers", "add", ca.directory, "--cert", cert)
    assert added.code == 0, added.err
    return cert, key


def _pending(ca: RunningCa, identity: str, out: Path) -> str:
    pending = enroll(ca.url, ca.token(identity), out, ca_fingerprint=ca.fingerprint)
    assert pending.status == "pending"
    return pending.request_id


def _poll(ca: RunningCa, request_id: str) -> tuple[int, int | None]:
    """(HTTP status, approvals the CA reports) of polling a request."""
    response = httpx.get(
        f"{ca.url}/v1/requests/{request_id}", verify=ssl.create_default_context(cafile=ca.root)
    )
    return response.status_code, response.json().get("approvals")


def _approve(cli, ca: RunningCa, request_id: str, cert: Path, key: Path):
    return cli("ca", "requests", "approve", ca.directory, request_id, "--cert", cert, "--key", key)


def test_two_registered_approvers_issue_and_the_same_one_counts_once(ca, cli, tmp_path):
    alice = _approver(cli, ca, tmp_path / "alice", "spiffe://acme.com/approvers/alice")
    bob = _approver(cli, ca, tmp_path / "bob", "spiffe://acme.com/approvers/bob")
    out = tmp_path / "db"
    request_id = _pending(ca, "spiffe://acme.com/prod/db", out)
    first = _approve(cli, ca, request_id, *alice)
    assert first.code == 0, first.err
    assert "1 of 2" in first.out
    again = _approve(cli, ca, request_id, *alice)  # a retry with the same key counts once
    assert again.code == 0, again.err
    assert "already approved" in again.out and "1 of 2" in again.out
    assert _poll(ca, request_id) == (202, 1)
    second = _approve(cli, ca, request_id, *bob)
    assert second.code == 0, second.err
    assert "2 of 2" in second.out and "approved" in second.out
    done = enroll(ca.url, "", out, request_id=request_id)
    assert done.status == "issued"
    listed = json.loads(cli("ca", "requests", "list", ca.directory, "--json", "--status",
                            "issued").out)  # fmt: skip
    (request,) = [r for r in listed["requests"] if r["id"] == request_id]
    assert request["approved_by"] == [
        "spiffe://acme.com/approvers/alice",
        "spiffe://acme.com/approvers/bob",
    ]
    store = ca.store()
    try:
        assert verify_audit_chain(store.audit_entries()) is None
    finally:
        store.close()


def test_the_same_person_in_another_letter_case_is_refused(ca, cli, tmp_path):
    lower = _approver(cli, ca, tmp_path / "carol", "spiffe://acme.com/approvers/carol")
    upper = _approver(cli, ca, tmp_path / "Carol", "spiffe://acme.com/approvers/Carol")
    out = tmp_path / "x"
    request_id = _pending(ca, "spiffe://acme.com/prod/case", out)
    assert _approve(cli, ca, request_id, *lower).code == 0
    twice = _approve(cli, ca, request_id, *upper)
    assert twice.code == 1
    assert twice.err.startswith("mtlskit: approver_already_counted: ")
    assert len(twice.err.splitlines()) == 1
    assert _poll(ca, request_id) == (202, 1)


def test_an_unregistered_certificate_is_refused(ca, cli, tmp_path):
    cert, key = _issue(cli, ca, tmp_path / "dave", "spiffe://acme.com/approvers/dave")
    request_id = _pending(ca, "spiffe://acme.com/prod/unreg", tmp_path / "x")
    result = _approve(cli, ca, request_id, cert, key)
    assert result.code == 1
    assert result.err.startswith("mtlskit: approver_unregistered: key sha256:")
    outsider = TestCA(name="elsewhere").issue(LeafSpec(emails=("erin@acme.com",)))
    cert = write(tmp_path / "erin.pem", outsider.cert_pem)
    key = write(tmp_path / "erin.key", private_key_pem(outsider.key))
    key.chmod(0o600)
    assert _approve(cli, ca, request_id, cert, key).code == 1


def test_a_name_alone_no_longer_approves(ca, cli, tmp_path):
    request_id = _pending(ca, "spiffe://acme.com/prod/names", tmp_path / "x")
    for name in ("alice", "Alice"):
        result = cli("ca", "requests", "approve", ca.directory, request_id, "--approver", name)
        assert result.code == 2
        assert result.err.startswith("mtlskit: error: --cert: an approval is signed")
    listed = json.loads(cli("ca", "requests", "list", ca.directory, "--json").out)
    (request,) = [r for r in listed["requests"] if r["id"] == request_id]
    assert request["approvals"] == 0


def test_the_requester_cannot_approve_its_own_request(ca, cli, tmp_path):
    identity = "spiffe://acme.com/prod/self"
    own = _approver(cli, ca, tmp_path / "own", identity)  # even if it was registered
    request_id = _pending(ca, identity, tmp_path / "x")
    result = _approve(cli, ca, request_id, *own)
    assert result.code == 1
    assert result.err.startswith("mtlskit: approver_is_requester: ")


def test_a_signature_by_another_key_is_refused(ca, cli, tmp_path):
    frank_cert, _ = _approver(cli, ca, tmp_path / "frank", "spiffe://acme.com/approvers/frank")
    _, mallory_key = _issue(cli, ca, tmp_path / "mallory", "spiffe://acme.com/mallory")
    request_id = _pending(ca, "spiffe://acme.com/prod/forged", tmp_path / "x")
    result = _approve(cli, ca, request_id, frank_cert, mallory_key)
    assert result.code == 1
    assert result.err.startswith("mtlskit: approval_signature_invalid: ")


def test_approvals_forged_in_the_database_do_not_issue(ca, cli, tmp_path):
    """Someone who can write ca.db but lacks the passphrase: a registration they make is
    not the CA's, approval rows they write carry no valid signature; `ca serve` counts
    the signatures before it signs, so the request stays pending."""
    from mtlskit.issue import ApproverRecord  # imported here: the other tests run without it

    grace = _approver(cli, ca, tmp_path / "grace", "spiffe://acme.com/approvers/grace")
    out = tmp_path / "x"
    request_id = _pending(ca, "spiffe://acme.com/prod/dbforge", out)
    assert _approve(cli, ca, request_id, *grace).code == 0
    store = ca.store()
    try:
        (registered,) = [r for r in store.approvers() if r.identity.endswith("/grace")]
        request = store.get_request(request_id)
        fake = ApproverRecord(
            fingerprint="sha256:" + "ab" * 32,
            identity="spiffe://acme.com/approvers/heidi",
            cert_pem=registered.cert_pem,
            signature=registered.signature,
            added_at=registered.added_at,
        )
        store.add_approver(fake)
        updated, _ = store.approve_request(
            request_id,
            approver=fake.identity,
            csr_sha256=request.csr_sha256,
            at=request.created_at,
            fingerprint=fake.fingerprint,
            signature=b"\x30\x06\x02\x01\x01\x02\x01\x01",
        )
    finally:
        store.close()
    assert updated.status.value == "approved"  # the database is convinced
    assert _poll(ca, request_id)[0] == 202  # the CA is not
    assert enroll(ca.url, "", out, request_id=request_id).status == "pending"
    heidi = tmp_path / "heidi"
    cert, key = _issue(cli, ca, heidi, "spiffe://acme.com/approvers/heidi")
    store = ca.store()
    try:
        real = store.approvers()[-1]
        store.add_approver(  # a registration of a real cert, signed by someone else's key
            ApproverRecord(
                fingerprint=_key_fingerprint(cert),
                identity="spiffe://acme.com/approvers/heidi",
                cert_pem=cert.read_bytes(),
                signature=real.signature,
                added_at=real.added_at,
            )
        )
    finally:
        store.close()
    result = _approve(cli, ca, request_id, cert, key)
    assert result.code == 1
    assert result.err.startswith("mtlskit: approver_unregistered: ")


def _key_fingerprint(cert_path: Path) -> str:
    from mtlskit.certs import load_certificates
    from mtlskit.issue import key_fingerprint

    return key_fingerprint(load_certificates(cert_path.read_bytes())[0].public_key())
