"""The operator console server (issue 24), driven over real mTLS with httpx.

One CA (two approvers for spiffe://acme.com/prod/**), a real `mtlskit ca serve` and a
real `mtlskit ca console` on it, as processes. People are certificates the test issues
from that CA: alice and bob (console approvers, registered with `ca approvers add`),
carol (approver and requester of her own certificate), dave (console approver, never
registered), victor (viewer), mallory (identity in neither list); plus a certificate
from another CA. The browser scenarios are tests/test_console_browser.py's.
"""

from __future__ import annotations

import datetime as dt
import re
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from _console_support import (
    ALICE,
    BOB,
    MALLORY,
    VICTOR,
    Person,
    Servers,
    approved_by,
    ca_and_console,
    cli_ok,
    issue_people,
    issue_person,
    pending_request,
    waiting_enroll,
)
from _servers import wait_for_log
from ca_server import RunningCa, init_ca, start_console
from mtlskit.certs import load_certificates
from mtlskit.client import enroll
from mtlskit.testca import LeafSpec, TestCA
from pg_cluster import postgres_cluster  # noqa: F401 - the session fixture

CAROL = "spiffe://acme.com/people/carol"
DAVE = "spiffe://acme.com/people/dave"
CA_TOML_TAIL = f"""
[[approval]]
ids = ["spiffe://acme.com/prod/**", "{CAROL}"]
approvers = 2

[console]
approvers = ["{ALICE}", "{BOB}", "{CAROL}", "{DAVE}"]
viewers = ["{VICTOR}"]
"""
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; frame-ancestors 'none'; "
    "form-action 'self'"
)


@dataclass
class Running(Servers):
    """The servers, and the people's httpx clients."""

    def client(self, who: str) -> httpx.Client:
        context = ssl.create_default_context(cafile=self.ca.root)
        person = self.people[who]
        context.load_cert_chain(person.chain, person.key)
        return httpx.Client(base_url=self.url, verify=context, follow_redirects=False)

    def get(self, who: str, path: str) -> httpx.Response:
        with self.client(who) as client:
            return client.get(path)

    def post(self, who: str, path: str, data: dict[str, str]) -> httpx.Response:
        with self.client(who) as client:
            return client.post(path, data=data)

    def csrf(self, who: str, path: str) -> str:
        """The form token on ``path`` as ``who`` sees it."""
        found = re.search(r'name="csrf" value="([0-9a-f]+)"', self.get(who, path).text)
        assert found, path
        return found.group(1)


@pytest.fixture(scope="module")
def console(tmp_path_factory) -> Iterator[Running]:
    base = tmp_path_factory.mktemp("console")
    directory = init_ca(base / "ca", approval=CA_TOML_TAIL)
    people = issue_people(
        directory,
        base,
        approvers={"alice": ALICE, "bob": BOB, "carol": CAROL},
        others={"dave": DAVE, "victor": VICTOR, "mallory": MALLORY},
    )
    with ca_and_console(directory) as (ca, running):
        yield Running(ca=ca, console=running, people=people)


def _approve(console: Running, who: str, request_id: str) -> httpx.Response:
    """Approve as the form on the request page does: its CSRF token, its CSR hash."""
    page = console.get(who, f"/requests/{request_id}")
    assert page.status_code == 200, page.text
    shown = re.search(r'<code id="csr-sha256">([0-9a-f]{64})</code>', page.text)
    assert shown
    return console.post(
        who,
        f"/requests/{request_id}/approve",
        {"csrf": console.csrf(who, f"/requests/{request_id}"), "csr_sha256": shown.group(1)},
    )


def _error_code(response: httpx.Response) -> str:
    found = re.search(r'<code id="error-code">([a-z_]+)</code>', response.text)
    assert found, response.text
    return found.group(1)


def test_two_approvers_approve_and_the_waiting_enroll_gets_its_certificate(console, tmp_path):
    out = tmp_path / "db"
    with waiting_enroll(console.ca, "spiffe://acme.com/prod/db", out) as (waiting, request_id):
        listed = console.get("alice", "/requests")
        assert f'href="/requests/{request_id}"' in listed.text
        first = _approve(console, "alice", request_id)
        assert first.status_code == 303, first.text
        assert first.headers["location"] == f"/requests/{request_id}?done=approved"
        shown = console.get("alice", first.headers["location"])
        assert '<p id="flash" role="status">Approval recorded.</p>' in shown.text
        assert ALICE in shown.text.split('id="approvals"')[1]
        assert approved_by(console.ca, request_id) == (ALICE,)
        again = _approve(console, "alice", request_id)  # the same person twice: once
        assert again.headers["location"].endswith("?done=repeat")
        assert approved_by(console.ca, request_id) == (ALICE,)
        assert waiting.poll() is None
        assert _approve(console, "bob", request_id).status_code == 303
        _, err_text = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, err_text
    cert = x509.load_pem_x509_certificate((out / "cert.pem").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://acme.com/prod/db"]
    store = console.ca.store()
    try:
        approvals = [e for e in store.audit_entries() if e.event == "approve"]
    finally:
        store.close()
    by = {e.detail for e in approvals if request_id in e.detail}
    assert any(ALICE in d for d in by) and any(BOB in d for d in by)


def _pending_with_names(console: Running, identity: str) -> str:
    """A pending request whose CSR asks for a CN and a DNS name the CA will drop."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "admin")]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("evil.example")]), False)
        .sign(key, hashes.SHA256())
    )
    context = ssl.create_default_context(cafile=console.ca.root)
    response = httpx.post(
        console.ca.url + "/v1/enroll",
        json={
            "token": console.ca.token(identity),
            "csr": csr.public_bytes(serialization.Encoding.PEM).decode(),
        },
        verify=context,
    )
    assert response.status_code == 202, response.text
    return response.json()["request_id"]


def test_the_request_page_shows_the_planned_certificate_and_what_is_dropped(console):
    request_id = _pending_with_names(console, "spiffe://acme.com/prod/plan")
    page = console.get("victor", f"/requests/{request_id}").text  # a viewer reads it all
    assert '<dd id="planned-san">URI:spiffe://acme.com/prod/plan</dd>' in page
    assert "clientAuth" in page.split('id="planned-eku"')[1].split("</dd>")[0]
    assert 'id="lint-findings"' in page
    assert '<dd id="planned-lifetime">1d from signing' in page  # default_ttl 24h
    dropped = page.split('id="dropped"')[1].split("</ul>")[0]
    assert "subject CN=admin" in dropped and "DNS:evil.example" in dropped
    assert "<form" not in page and 'id="read-only"' in page  # viewers get no forms
    assert "PRIVATE KEY" not in page and "BEGIN CERTIFICATE" not in page


def test_a_viewer_cannot_approve_deny_or_revoke(console, tmp_path):
    request_id = pending_request(console.ca, "spiffe://acme.com/prod/viewer", tmp_path / "x")
    own = console.csrf("alice", f"/requests/{request_id}")  # even with a valid-looking token
    for path, data in (
        (f"/requests/{request_id}/approve", {"csrf": own, "csr_sha256": "0" * 64}),
        (f"/requests/{request_id}/deny", {"csrf": own, "reason": "no"}),
        ("/certificates/1/revoke", {"csrf": own, "reason": "keyCompromise", "confirm": "yes"}),
    ):
        refused = console.post("victor", path, data)
        assert refused.status_code == 403
        assert _error_code(refused) == "not_approver"
    assert approved_by(console.ca, request_id) == ()
    assert console.get("victor", "/requests").status_code == 200
    assert '<span id="user-role">viewer</span>' in console.get("victor", "/requests").text


def test_an_unknown_identity_gets_a_403_page_without_data(console, tmp_path):
    request_id = pending_request(console.ca, "spiffe://acme.com/prod/unknown", tmp_path / "x")
    for path in ("/requests", f"/requests/{request_id}", "/certificates", "/audit", "/health"):
        refused = console.get("mallory", path)
        assert refused.status_code == 403
        assert _error_code(refused) == "not_console_user"
        assert request_id not in refused.text and "acme.com/prod" not in refused.text
        assert "<nav" not in refused.text


def _handshake(console: Running, person: Person | None) -> bytes | str:
    """What the console answers over TLS 1.2 (where a refused client certificate fails the
    handshake itself, not the first read): the response's first bytes, or the error."""
    import socket

    context = ssl.create_default_context(cafile=console.ca.root)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    if person is not None:
        context.load_cert_chain(person.chain, person.key)
    host, port = console.url.removeprefix("https://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        try:
            tls = context.wrap_socket(raw, server_hostname=host)
        except (ssl.SSLError, ConnectionError) as exc:
            return f"handshake failed: {exc}"
        with tls:
            tls.sendall(b"GET /requests HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return tls.recv(12)


def test_a_revoked_certificate_gets_no_page(console, tmp_path):
    """The handshake reads no CRL: the console checks the CA's records on every request."""
    directory = console.ca.directory
    old = issue_person(directory, tmp_path / "old", VICTOR)
    serial = f"{load_certificates(old.chain.read_bytes())[0].serial_number:x}"
    console.people["victor-old"] = old
    assert console.get("victor-old", "/requests").status_code == 200
    cli_ok("ca", "revoke", directory, serial)
    refused = console.get("victor-old", "/requests")
    assert refused.status_code == 403 and _error_code(refused) == "cert_revoked"
    assert "<nav" not in refused.text
    assert console.get("victor", "/requests").status_code == 200  # the other one still works


def test_a_certificate_from_another_ca_fails_the_handshake(console):
    assert _handshake(console, console.people["mallory"]) == b"HTTP/1.1 403"  # the control
    assert str(_handshake(console, console.people["outsider"])).startswith("handshake failed")
    assert str(_handshake(console, None)).startswith("handshake failed")


def _curl(url: str, root: Path, person: Person | None, tls: str) -> subprocess.CompletedProcess:
    args = ["curl", "-sS", "--max-time", "20", "--cacert", str(root), "--tls-max", tls]
    if tls == "1.2":
        args.append("--tlsv1.2")
    if person is not None:
        args += ["--cert", str(person.chain), "--key", str(person.key)]
    return subprocess.run(
        [*args, f"{url}/requests"], capture_output=True, text=True, timeout=30, check=False
    )


@pytest.mark.parametrize(
    ("who", "tls", "alert"),
    [
        (None, "1.3", "alert certificate required"),
        (None, "1.2", "alert handshake failure"),
        ("outsider", "1.3", "alert unknown ca"),
        ("outsider", "1.2", "alert unknown ca"),
    ],
)
def test_a_refused_handshake_gets_its_tls_alert(console, who, tls, alert):
    """curl names the alert the console sent (not "Empty reply from server", exit 52):
    the alert is flushed before the connection closes, as the gateway does."""
    person = console.people[who] if who else None
    result = _curl(console.url, console.ca.root, person, tls)
    assert result.returncode not in (0, 52), result.stderr
    assert alert in result.stderr, result.stderr
    assert _curl(console.url, console.ca.root, console.people["alice"], tls).returncode == 0


@pytest.mark.parametrize("tls", ["1.2", "1.3"])
def test_ca_serve_sends_unknown_ca_to_a_foreign_client_certificate(console, tls):
    """`ca serve` shares the console's TLS server: a client certificate from another CA
    gets its alert too (none at all is fine there: enrollment needs no certificate)."""
    url = f"{console.ca.url}/openapi.json"
    result = _curl(console.ca.url, console.ca.root, console.people["outsider"], tls)
    assert result.returncode not in (0, 52), result.stderr
    assert "alert unknown ca" in result.stderr, result.stderr
    plain = subprocess.run(
        ["curl", "-sS", "--max-time", "20", "--cacert", str(console.ca.root), url],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert plain.returncode == 0, plain.stderr


def test_a_stale_csr_hash_is_refused(console, tmp_path):
    request_id = pending_request(console.ca, "spiffe://acme.com/prod/stale", tmp_path / "x")
    token = console.csrf("alice", f"/requests/{request_id}")
    refused = console.post(
        "alice", f"/requests/{request_id}/approve", {"csrf": token, "csr_sha256": "ab" * 32}
    )
    assert refused.status_code == 409
    assert _error_code(refused) == "approval_stale"
    # the CSR replaced behind the page: the hash the approver saw no longer approves it
    shown = re.search(
        r'<code id="csr-sha256">([0-9a-f]{64})</code>',
        console.get("alice", f"/requests/{request_id}").text,
    )
    assert shown
    console.sql("UPDATE enrollment_requests SET csr_sha256 = ? WHERE id = ?", "cd" * 32, request_id)
    refused = console.post(
        "alice", f"/requests/{request_id}/approve", {"csrf": token, "csr_sha256": shown.group(1)}
    )
    assert _error_code(refused) == "approval_stale"
    assert approved_by(console.ca, request_id) == ()


def test_a_post_without_the_right_csrf_token_is_refused(console, tmp_path):
    request_id = pending_request(console.ca, "spiffe://acme.com/prod/csrf", tmp_path / "x")
    page = console.get("alice", f"/requests/{request_id}").text
    digest = re.search(r'<code id="csr-sha256">([0-9a-f]{64})</code>', page)
    assert digest
    bobs = console.csrf("bob", f"/requests/{request_id}")  # another certificate's token
    for data in ({"csr_sha256": digest.group(1)}, {"csrf": bobs, "csr_sha256": digest.group(1)}):
        refused = console.post("alice", f"/requests/{request_id}/approve", data)
        assert refused.status_code == 403
        assert _error_code(refused) == "csrf_invalid"
    refused = console.post("alice", f"/requests/{request_id}/deny", {"reason": "x"})
    assert _error_code(refused) == "csrf_invalid"
    assert approved_by(console.ca, request_id) == ()


def test_the_requester_and_an_unregistered_key_cannot_approve(console, tmp_path):
    request_id = pending_request(console.ca, CAROL, tmp_path / "x")
    own = _approve(console, "carol", request_id)
    assert own.status_code == 403
    assert _error_code(own) == "approver_is_requester"
    unregistered = _approve(console, "dave", request_id)  # in [console], not `approvers add`
    assert _error_code(unregistered) == "approver_unregistered"
    assert approved_by(console.ca, request_id) == ()


def test_deny_with_a_reason_is_audited_with_the_approver(console, tmp_path):
    out = tmp_path / "x"
    request_id = pending_request(console.ca, "spiffe://acme.com/prod/deny", out)
    token = console.csrf("bob", f"/requests/{request_id}")
    denied = console.post(
        "bob", f"/requests/{request_id}/deny", {"csrf": token, "reason": "not ours"}
    )
    assert denied.headers["location"] == f"/requests/{request_id}?done=denied"
    from mtlskit.client import CaRefused

    with pytest.raises(CaRefused, match="request_denied"):
        enroll(console.ca.url, "", out, request_id=request_id)
    store = console.ca.store()
    try:
        (entry,) = [
            e for e in store.audit_entries() if e.event == "deny" and request_id in e.detail
        ]
    finally:
        store.close()
    assert BOB in entry.detail and "not ours" in entry.detail


def test_revoke_asks_to_confirm_then_the_crl_lists_the_serial(console, tmp_path):
    victim = issue_person(console.ca.directory, tmp_path / "victim", "spiffe://acme.com/revoke/me")
    serial = f"{load_certificates(victim.chain.read_bytes())[0].serial_number:x}"
    page = console.get("alice", f"/certificates/{serial}")
    assert "Download chain PEM" in page.text and 'id="inspect"' in page.text
    token = console.csrf("alice", f"/certificates/{serial}")
    asked = console.post(
        "alice", f"/certificates/{serial}/revoke", {"csrf": token, "reason": "keyCompromise"}
    )
    assert asked.status_code == 200
    assert ">Confirm revoke</button>" in asked.text and 'name="confirm" value="yes"' in asked.text
    store = console.ca.store()
    try:
        assert store.get(int(serial, 16)).revoked_at is None  # nothing yet
    finally:
        store.close()
    done = console.post(
        "alice",
        f"/certificates/{serial}/revoke",
        {"csrf": token, "reason": "keyCompromise", "confirm": "yes"},
    )
    assert done.status_code == 303, done.text
    crl = x509.load_pem_x509_crl((console.ca.directory / "crl.pem").read_bytes())
    entry = crl.get_revoked_certificate_by_serial_number(int(serial, 16))
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == (
        x509.ReasonFlags.key_compromise
    )
    health = console.get("victor", "/health").text
    assert re.search(r'<dd id="crl-number">\d+</dd>', health)
    assert '<dd id="crl-written">' in health and 'id="store-status">ok (sqlite' in health
    assert '<dd id="key-status">file: loaded</dd>' in health
    out = tmp_path / "crl.pem"
    cli_ok(
        "ca",
        "crl",
        console.ca.directory,
        "--out",
        out,
        "--passphrase-file",
        console.ca.directory.parent / "ca.pass",
    )
    assert x509.load_pem_x509_crl(out.read_bytes()).get_revoked_certificate_by_serial_number(
        int(serial, 16)
    )
    store = console.ca.store()
    try:
        (entry,) = [e for e in store.audit_entries() if e.event == "console_revoke"]
    finally:
        store.close()
    assert ALICE in entry.detail and serial in entry.detail
    assert "revoked" in console.get("alice", f"/certificates/{serial}").text


def test_certificates_are_searched_and_paged_in_the_database(console, tmp_path):
    directory = console.ca.directory
    for number in range(53):
        cli_ok(
            "ca",
            "issue",
            directory,
            "--id",
            f"spiffe://acme.com/batch/n{number}",
            "--out",
            tmp_path / str(number),
            "--passphrase-file",
            directory.parent / "ca.pass",
        )
    first = console.get("victor", "/certificates?q=acme.com/batch/")
    assert '<p id="total">53 certificates, page 1</p>' in first.text
    assert first.text.count('<a href="/certificates/') == 50
    found = re.search(r'<a href="([^"]+)" rel="next">Next</a>', first.text)
    assert found and "Previous" not in first.text
    second = console.get("victor", found.group(1).replace("&amp;", "&"))
    assert second.text.count('<a href="/certificates/') == 3
    assert 'rel="prev">Previous</a>' in second.text and "Next" not in second.text
    soon = console.get("victor", "/certificates?status=expiring&days=2&q=batch/n7")
    assert '<p id="total">1 certificate, page 1</p>' in soon.text


def test_the_audit_page_says_where_the_chain_breaks(console):
    page = console.get("victor", "/audit").text
    intact = re.search(r'<strong id="audit-status">intact \((\d+) entries\)</strong>', page)
    assert intact, page[:2000]
    store = console.ca.store()
    try:
        entries = store.audit_entries()
    finally:
        store.close()
    target = entries[len(entries) // 2]
    console.sql("UPDATE audit_log SET detail = ? WHERE seq = ?", '{"forged":true}', target.seq)
    try:
        broken = console.get("victor", "/audit").text
        assert f'<strong id="audit-status">broken at entry {target.seq}</strong>' in broken
    finally:
        console.sql("UPDATE audit_log SET detail = ? WHERE seq = ?", target.detail, target.seq)
    assert "intact (" in console.get("victor", "/audit").text


@pytest.mark.parametrize(
    "path",
    ["/requests", "/certificates", "/audit", "/health", "/static/console.css", "/no-such-page"],
)
def test_every_response_carries_the_security_headers(console, path):
    for who in ("alice", "mallory"):
        response = console.get(who, path)
        assert response.headers["content-security-policy"] == CSP
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert response.headers["cache-control"] == "no-store"
        assert re.fullmatch(r"app;dur=\d+\.\d", response.headers["server-timing"])
        assert "server" not in response.headers  # not uvicorn's "server: uvicorn"
        assert "<script" not in response.text and "style=" not in response.text


@pytest.mark.parametrize("path", ["/openapi.json", "/no-such-endpoint"])
def test_ca_serve_names_no_server_software(console, path):
    context = ssl.create_default_context(cafile=console.ca.root)
    response = httpx.get(f"{console.ca.url}{path}", verify=context)
    assert response.status_code in (200, 404)
    assert "server" not in response.headers and "date" in response.headers


def test_root_redirects_to_the_requests(console):
    response = console.get("alice", "/")
    assert response.status_code == 303 and response.headers["location"] == "/requests"


def test_a_forged_console_approval_row_counts_for_nothing(console, tmp_path):
    """Someone with ca.db but not the CA key writes a 'countersigned' approval row: the
    marker without the CA's signature does not count when `ca serve` re-checks."""
    from mtlskit.issue import ApprovalRefused, check_approval, countersign_approval
    from mtlskit.issue._approvers import _COUNTERSIGNED

    out = tmp_path / "x"
    request_id = pending_request(console.ca, "spiffe://acme.com/prod/forged", out)
    assert _approve(console, "alice", request_id).status_code == 303
    store = console.ca.store()
    try:
        request = store.get_request(request_id)
        bob = next(r for r in store.approvers() if r.identity == BOB)
        issuer = load_certificates((console.ca.directory / "chain.pem").read_bytes())[0]
        forged = _COUNTERSIGNED + b"\x30\x06\x02\x01\x01\x02\x01\x01"
        other = TestCA(name="not-the-ca").issue(LeafSpec(uris=(BOB,)))
        wrong = countersign_approval(  # a countersignature by another key
            request.id, request.csr_sha256, fingerprint=bob.fingerprint, ca_key=other.key
        )
        for signature in (forged, wrong):
            with pytest.raises(ApprovalRefused, match="approval_signature_invalid"):
                check_approval(
                    request,
                    bob,
                    fingerprint=bob.fingerprint,
                    signature=signature,
                    at=request.created_at,
                    ca_public_key=issuer.public_key(),
                    revoked=lambda _: False,
                )
        updated, _ = store.approve_request(
            request_id,
            approver=BOB,
            csr_sha256=request.csr_sha256,
            at=dt.datetime.now(dt.UTC),
            fingerprint=bob.fingerprint,
            signature=forged,
        )
    finally:
        store.close()
    assert updated.status.value == "approved"  # the database is convinced
    assert enroll(console.ca.url, "", out, request_id=request_id).status == "pending"


def test_a_bad_console_table_is_one_line(tmp_path, run_cli):
    directory = init_ca(tmp_path / "ca", approval='\n[console]\napprovers = "alice"\n')
    result = run_cli(
        "ca",
        "console",
        directory,
        "--listen",
        "127.0.0.1:0",
        "--passphrase-file",
        tmp_path / "ca.pass",
    )
    assert result.code == 2
    assert result.err == (
        f"mtlskit: error: {directory / 'ca.toml'}: key 'console.approvers': "
        "Input should be a valid list\n"
    )
    empty = init_ca(tmp_path / "empty")
    result = run_cli("ca", "console", empty, "--passphrase-file", tmp_path / "empty.pass")
    assert result.code == 2
    assert "no [console] approvers or viewers" in result.err


def test_a_server_certificate_of_ones_own_is_served(console, tmp_path):
    """--cert/--key: the console presents that certificate, not one minted at start."""
    import socket

    from cryptography.hazmat.primitives.serialization import Encoding

    directory = console.ca.directory
    out = tmp_path / "server"
    cli_ok(
        "ca",
        "issue",
        directory,
        "--server",
        "--dns",
        "localhost",
        "--ip",
        "127.0.0.1",
        "--out",
        out,
        "--passphrase-file",
        directory.parent / "ca.pass",
    )
    started = start_console(
        directory, "--cert", str(out / "chain.pem"), "--key", str(out / "key.pem")
    )
    try:
        served = Running(ca=console.ca, console=started, people=console.people)
        assert served.get("alice", "/requests").status_code == 200
        context = ssl.create_default_context(cafile=console.ca.root)
        alice = console.people["alice"]
        context.load_cert_chain(alice.chain, alice.key)
        host, port = started.url.removeprefix("https://").rsplit(":", 1)
        with (
            socket.create_connection((host, int(port)), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            presented = tls.getpeercert(binary_form=True)
    finally:
        started.stop()
    given = load_certificates((out / "cert.pem").read_bytes())[0]
    assert presented == given.public_bytes(Encoding.DER)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ca.db'}"
    import uuid

    cluster = request.getfixturevalue("postgres_cluster")
    return cluster.create_database(f"c_{uuid.uuid4().hex[:12]}")


def test_certificate_pages_are_counted_and_cut_by_the_database(store_url):
    """``certificate_page`` on SQLite and PostgreSQL: LIMIT/OFFSET and COUNT in SQL, the
    search and the filters the console's /certificates offers."""
    from mtlskit.issue import CertificateRecord, CertificateStatus
    from mtlskit.store import SqlStore

    now = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    store = SqlStore.open(store_url, create=True)
    try:
        for number in range(120):
            store.add_certificate(
                CertificateRecord(
                    serial=0x1000 + number,
                    identity=f"spiffe://acme.com/{'Web' if number % 2 else 'db'}/n{number}",
                    fingerprint=f"sha256:{number:064x}",
                    not_before=now - dt.timedelta(days=1),
                    not_after=now + dt.timedelta(days=number),  # n0 expired already
                    profile="client-auth",
                    pem=b"-",
                    issued_at=now + dt.timedelta(seconds=number),
                )
            )
        for number in (3, 5):
            store.revoke(0x1000 + number, reason=x509.ReasonFlags.key_compromise, at=now)
        page, total = store.certificate_page(now=now, limit=50, offset=100)
        assert total == 120 and [r.serial for r in page] == [0x1000 + n for n in range(19, -1, -1)]
        page, total = store.certificate_page(now=now, query="/web/", limit=50)
        assert total == 60 and all("/Web/" in r.identity for r in page) and len(page) == 50
        assert store.certificate_page(now=now, query="1007")[0][0].identity.endswith("/n7")
        hit, _ = store.certificate_page(now=now, query=f"SHA256:{9:064X}")
        assert [r.serial for r in hit] == [0x1009]
        page, total = store.certificate_page(now=now, status=CertificateStatus.REVOKED)
        assert total == 2 and {r.serial for r in page} == {0x1003, 0x1005}
        page, total = store.certificate_page(now=now, expiring_within=dt.timedelta(days=4))
        assert [r.serial for r in page] == [0x1001, 0x1002, 0x1004] and total == 3
        valid = store.certificate_page(now=now, status=CertificateStatus.VALID)[1]
        assert valid == 117  # 120, less two revoked and n0 that expires at ``now``
        assert store.certificate_page(now=now, query="%")[1] == 0  # LIKE wildcards escaped
    finally:
        store.close()


def test_a_console_approval_and_a_signed_one_issue_together(console, tmp_path):
    """One approval countersigned by the CA (console), one signed by the approver's own key
    (`ca requests approve`): `ca serve` counts both kinds."""
    out = tmp_path / "x"
    request_id = pending_request(console.ca, "spiffe://acme.com/prod/mixed", out)
    assert _approve(console, "alice", request_id).status_code == 303
    bob = console.people["bob"]
    cli_ok(
        "ca",
        "requests",
        "approve",
        console.ca.directory,
        request_id,
        "--cert",
        bob.chain.parent / "cert.pem",
        "--key",
        bob.key,
    )
    assert enroll(console.ca.url, "", out, request_id=request_id).status == "issued"


def test_the_same_person_with_another_key_counts_once(console, tmp_path):
    directory = console.ca.directory
    request_id = pending_request(console.ca, "spiffe://acme.com/prod/twokeys", tmp_path / "x")
    console.people["alice-2"] = issue_person(directory, tmp_path / "alice2", ALICE, register=True)
    assert _approve(console, "alice", request_id).status_code == 303
    twice = _approve(console, "alice-2", request_id)
    assert twice.status_code == 403 and _error_code(twice) == "approver_already_counted"
    assert approved_by(console.ca, request_id) == (ALICE,)


def test_an_approver_removed_from_ca_toml_is_refused_after_sighup(tmp_path):
    """ca.toml's [console] edited under a running console (alice moved to the viewers),
    then SIGHUP: alice's next POST, with the form token she already holds, is 403, and the
    console says what it reloaded; bob, still an approver, revokes."""
    import signal

    tail = f'\n[console]\napprovers = ["{ALICE}", "{BOB}"]\nviewers = ["{VICTOR}"]\n'
    directory = init_ca(tmp_path / "ca", approval=tail)
    alice = issue_person(directory, tmp_path / "alice", ALICE)
    bob = issue_person(directory, tmp_path / "bob", BOB)
    victims = [
        issue_person(directory, tmp_path / f"v{n}", f"spiffe://acme.com/v{n}") for n in (1, 2)
    ]
    serials = [f"{load_certificates(v.chain.read_bytes())[0].serial_number:x}" for v in victims]
    started = start_console(directory)
    process = started.process
    ca = RunningCa(directory=directory, process=process, url="", fingerprint="")
    running = Running(ca=ca, console=started, people={"alice": alice, "bob": bob})
    try:
        token = running.csrf("alice", f"/certificates/{serials[0]}")
        config = directory / "ca.toml"
        config.write_text(
            config.read_text()
            .replace(f'approvers = ["{ALICE}", "{BOB}"]', f'approvers = ["{BOB}"]')
            .replace(f'viewers = ["{VICTOR}"]', f'viewers = ["{VICTOR}", "{ALICE}"]')
        )
        process.send_signal(signal.SIGHUP)
        wait_for_log(started.log_file, "ca.toml reloaded (SIGHUP)", seconds=30, process=process)
        form = {"csrf": token, "reason": "keyCompromise", "confirm": "yes"}
        refused = running.post("alice", f"/certificates/{serials[0]}/revoke", form)
        assert refused.status_code == 403 and _error_code(refused) == "not_approver"
        assert '<span id="user-role">viewer</span>' in running.get("alice", "/health").text
        form["csrf"] = running.csrf("bob", f"/certificates/{serials[1]}")
        done = running.post("bob", f"/certificates/{serials[1]}/revoke", form)
        assert done.status_code == 303, done.text
        # No SIGHUP needed: ca.toml is hashed before every request. A broken file shows
        # no page to anyone until it is fixed.
        good = config.read_text()
        config.write_text(good + "\n[console.extra]\n")
        broken = running.get("bob", "/requests")
        assert broken.status_code == 503 and _error_code(broken) == "config_invalid"
        assert "<nav" not in broken.text
        config.write_text(good.replace(f'approvers = ["{BOB}"]', f'approvers = ["{ALICE}"]'))
        gone = running.get("bob", "/requests")  # fixed, with bob out and alice back
        assert gone.status_code == 403 and _error_code(gone) == "not_console_user"
        back = running.get("alice", "/requests")
        assert '<span id="user-role">approver</span>' in back.text
        assert process.poll() is None
    finally:
        started.stop()
    log = started.log
    assert "ca.toml not reloaded (before a request)" in log, log
