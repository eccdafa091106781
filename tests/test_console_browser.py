"""The operator console in a real browser (issue 24): headless Debian Chromium, Playwright.

One CA directory for the module with an ``[[approval]]`` rule (two approvers for
spiffe://acme.com/prod/**) and a ``[console]`` table; a real ``mtlskit ca serve`` and a
real ``mtlskit ca console`` on it. People are certificates from that CA: alice and bob
(console approvers, registered with ``ca approvers add``), victor (viewer), mallory
(issued by the CA, in neither list), and an outsider from another CA that carries
alice's identity. Each browser context presents one person's certificate
(``_browser.Chromium.user``); the server certificate is checked against the CA root.

No timing assertions: the 10,000-certificate page time is bench/console.py's.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import sqlite3
import ssl
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from _browser import Chromium, chromium, require_browser
from _console_support import (
    ALICE,
    BOB,
    MALLORY,
    VICTOR,
    Servers,
    approved_by,
    ca_and_console,
    cli_ok,
    issue_people,
    issue_person,
    pending_request,
    waiting_enroll,
)
from _gateway_support import gateway_process, https_request, sighup_reloads, write_config
from ca_server import init_ca
from mtlskit.certs import generate_private_key
from mtlskit.client import CaRefused, enroll
from mtlskit.issue import csr_hash

CA_TOML_TAIL = f"""
[[approval]]
ids = ["spiffe://acme.com/prod/**"]
approvers = 2

[console]
approvers = ["{ALICE}", "{BOB}"]
viewers = ["{VICTOR}"]
"""
GET = b"GET /hello HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


@dataclass
class Console(Servers):
    """Everything the scenarios share: the CA, its two servers, the people, the browser."""

    browser: Chromium

    def page(self, who: str, path: str = "/requests"):
        """A new page of a fresh context for ``who``, opened at ``path``."""
        person = self.people[who]
        page = self.browser.user(person.chain, person.key).new_page()
        response = page.goto(self.url + path)
        assert response is not None
        return page, response


@pytest.fixture(scope="module")
def console(tmp_path_factory) -> Iterator[Console]:
    require_browser()
    base = tmp_path_factory.mktemp("console")
    directory = init_ca(base / "ca", approval=CA_TOML_TAIL)
    people = issue_people(
        directory,
        base,
        approvers={"alice": ALICE, "bob": BOB},
        others={"victor": VICTOR, "mallory": MALLORY},
    )
    with (
        ca_and_console(directory) as (ca, running),
        chromium(directory / "root.pem", running.url) as browser,
    ):
        yield Console(ca=ca, console=running, browser=browser, people=people)


def _approve_in_browser(console: Console, who: str, request_id: str) -> int:
    """``who`` opens the queue, follows the request's link, checks the hash, clicks Approve;
    the HTTP status the console answers the form with."""
    page, response = console.page(who, "/requests")
    assert response.status == 200
    page.click(f"a[href='/requests/{request_id}']")
    shown = page.locator("#csr-sha256").inner_text().strip()
    store = console.ca.store()
    try:
        assert shown == store.get_request(request_id).csr_sha256
    finally:
        store.close()
    with page.expect_navigation() as navigation:
        page.get_by_role("button", name="Approve").click()
    assert navigation.value is not None
    status = navigation.value.status
    if status == 200:
        assert page.locator("#flash").count() == 1
    page.context.close()
    return status


def test_two_approvers_approve_in_the_browser_and_the_waiting_enroll_gets_its_certificate(
    console, tmp_path
):
    out = tmp_path / "db"
    with waiting_enroll(console.ca, "spiffe://acme.com/prod/db", out) as (waiting, request_id):
        assert _approve_in_browser(console, "alice", request_id) == 200
        assert approved_by(console.ca, request_id) == (ALICE,)
        assert waiting.poll() is None  # one of two: still waiting
        assert _approve_in_browser(console, "bob", request_id) == 200
        assert approved_by(console.ca, request_id) == (ALICE, BOB)
        out_text, err_text = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, err_text
    assert "enrolled spiffe://acme.com/prod/db" in out_text
    issued = x509.load_pem_x509_certificate((out / "cert.pem").read_bytes())
    san = issued.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://acme.com/prod/db"]
    store = console.ca.store()
    try:
        approved = [
            e.detail
            for e in store.audit_entries()
            if request_id in e.detail and "approve" in e.event
        ]
    finally:
        store.close()
    assert any(ALICE in detail for detail in approved) and any(BOB in d for d in approved)


def test_the_same_approver_twice_counts_once(console, tmp_path):
    request_id = pending_request(console.ca, "spiffe://acme.com/prod/twice", tmp_path / "x")
    assert _approve_in_browser(console, "alice", request_id) == 200
    assert _approve_in_browser(console, "alice", request_id) < 500  # told, not counted
    assert approved_by(console.ca, request_id) == (ALICE,)


def test_a_denial_with_a_reason_reaches_the_client_and_the_audit_log(console, tmp_path):
    out = tmp_path / "x"
    request_id = pending_request(console.ca, "spiffe://acme.com/prod/denied", out)
    page, _ = console.page("bob", f"/requests/{request_id}")
    page.get_by_label("Reason").fill("no ticket for this service")
    with page.expect_navigation() as navigation:
        page.get_by_role("button", name="Deny").click()
    assert navigation.value is not None and navigation.value.status == 200
    assert page.locator("#request-status").inner_text() == "denied"
    with pytest.raises(CaRefused, match="request_denied"):
        enroll(console.ca.url, "", out, request_id=request_id)
    store = console.ca.store()
    try:
        entries = store.audit_entries()
        (entry,) = [e for e in entries if e.event == "deny" and request_id in e.detail]
    finally:
        store.close()
    assert BOB in entry.detail and "no ticket for this service" in entry.detail
    page.context.close()


def test_the_chain_download_is_the_certificate_and_its_cas_and_nothing_secret(console):
    store = console.ca.store()
    try:
        record = next(r for r in store.certificates(now=dt.datetime.now(dt.UTC)))
    finally:
        store.close()
    page, _ = console.page("victor", f"/certificates/{record.serial:x}")
    with page.expect_download() as download:
        page.get_by_role("link", name="Download chain PEM").click()
    data = Path(download.value.path()).read_bytes()
    chain = x509.load_pem_x509_certificates(data)
    assert chain[0].serial_number == record.serial
    cas = x509.load_pem_x509_certificates((console.ca.directory / "chain.pem").read_bytes())
    assert chain[1:] == cas  # the issuing CA, then the root
    assert b"PRIVATE KEY" not in data
    assert page.get_by_role("button", name="Revoke").count() == 0  # a viewer's page
    page.context.close()


def test_a_viewer_sees_no_approve_button_and_a_forged_post_is_refused(console, tmp_path):
    request_id = pending_request(console.ca, "spiffe://acme.com/prod/viewed", tmp_path / "x")
    page, response = console.page("victor", f"/requests/{request_id}")
    assert response.status == 200
    assert page.locator("#user-role").inner_text() == "viewer"
    assert page.locator("#csr-sha256").inner_text().strip()  # a viewer does see the request
    assert page.get_by_role("button", name="Approve").count() == 0
    assert page.locator("form[action$='/approve']").count() == 0
    digest = page.locator("#csr-sha256").inner_text().strip()
    # alice's page carries her CSRF token; victor replays it, then tries with none at all
    alice, _ = console.page("alice", f"/requests/{request_id}")
    stolen = alice.locator("input[name=csrf]").first.get_attribute("value")
    assert stolen
    for form in ({"csrf": stolen, "csr_sha256": digest}, {"csr_sha256": digest}):
        forged = page.context.request.post(
            f"{console.url}/requests/{request_id}/approve", form=form, max_redirects=0
        )
        assert forged.status == 403, forged.text()
    revoke = page.context.request.post(
        f"{console.url}/certificates/1/revoke", form={"csrf": stolen, "confirm": "yes"}
    )
    assert revoke.status in (403, 404)
    # and alice herself, without the token of her session: the CSRF check, by its code
    missing = alice.context.request.post(
        f"{console.url}/requests/{request_id}/approve", form={"csr_sha256": digest}
    )
    assert missing.status == 403
    assert '<code id="error-code">csrf_invalid</code>' in missing.text()
    assert approved_by(console.ca, request_id) == ()
    page.context.close()
    alice.context.close()


def test_an_unknown_certificate_gets_no_page(console, tmp_path):
    request_id = pending_request(console.ca, "spiffe://acme.com/prod/secret-db", tmp_path / "x")
    # Another CA's certificate, even with an approver's identity: the handshake fails.
    outsider = console.people["outsider"]
    context = console.browser.user(outsider.chain, outsider.key)
    page = context.new_page()
    try:
        response = page.goto(console.url + "/requests")
    except Exception as failed:  # the browser reports a dropped connection
        assert "ERR_" in str(failed) or "closed" in str(failed), failed
    else:  # Playwright's client-certificate proxy answers 503 for a refused handshake
        assert response is not None and response.status != 200
        assert "secret-db" not in page.content() and request_id not in page.content()
    context.close()
    tls = ssl.create_default_context(cafile=str(console.ca.root))
    tls.load_cert_chain(outsider.chain, outsider.key)
    host, port = console.url.removeprefix("https://").rsplit(":", 1)
    with (
        pytest.raises((ssl.SSLError, ConnectionError)),
        socket.create_connection((host, int(port)), timeout=5) as sock,
        tls.wrap_socket(sock, server_hostname=host) as conn,
    ):
        conn.sendall(b"GET /requests HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.recv(65536) == b""  # TLS 1.3: the refusal arrives on read
        raise ConnectionError("closed without an answer")
    # A certificate of this CA, but in neither list: 403, the code, no data, on every page.
    for path in ("/requests", f"/requests/{request_id}", "/certificates", "/audit", "/health"):
        page, response = console.page("mallory", path)
        assert response.status == 403, path
        assert page.locator("#error-code").inner_text() == "not_console_user"
        text = page.content()
        assert "secret-db" not in text and request_id not in text and "<nav" not in text
        page.context.close()


def test_an_approval_of_a_replaced_csr_is_refused_as_stale(console, tmp_path):
    identity = "spiffe://acme.com/prod/stale"
    request_id = pending_request(console.ca, identity, tmp_path / "x")
    page, _ = console.page("alice", f"/requests/{request_id}")
    shown = page.locator("#csr-sha256").inner_text().strip()
    key = generate_private_key()
    other = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "replaced")]))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity)]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    from cryptography.hazmat.primitives.serialization import Encoding

    console.sql(
        "UPDATE enrollment_requests SET csr = ?, csr_sha256 = ? WHERE id = ?",
        other.public_bytes(Encoding.PEM),
        csr_hash(other),
        request_id,
    )
    with page.expect_navigation() as navigation:
        page.get_by_role("button", name="Approve").click()
    assert navigation.value is not None and navigation.value.status == 409
    assert page.locator("#error-code").inner_text() == "approval_stale"
    assert approved_by(console.ca, request_id) == ()
    fresh, _ = console.page("alice", f"/requests/{request_id}")
    assert fresh.locator("#csr-sha256").inner_text().strip() == csr_hash(other) != shown
    page.context.close()
    fresh.context.close()


def test_revoke_in_the_browser_reaches_the_crl_and_the_gateway_after_sighup(
    console, echo_site, tmp_path
):
    directory = console.ca.directory
    passphrase = directory.parent / f"{directory.name}.pass"
    client = issue_person(directory, tmp_path / "payments", "spiffe://acme.com/billing/payments")
    crl = directory / "crl.pem"  # ca.toml [console] crl_file's default: the console writes it
    cli_ok("ca", "crl", directory, "--out", crl, "--passphrase-file", passphrase)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    body = f'[client_auth]\ntrust = ["trust.pem"]\ncrls = ["{crl}"]\n'
    config = write_config(echo_site, (directory / "root.pem").read_bytes(), body)
    config.write_text(config.read_text().replace("127.0.0.1:0", f"127.0.0.1:{port}"))
    echo_site.extra["workers"] = 1
    tls = ssl.create_default_context()
    echo_site.server_ca.configure_trust(tls)
    tls.load_cert_chain(client.chain, client.key)
    serial = x509.load_pem_x509_certificate(client.chain.read_bytes()).serial_number
    argv = [sys.executable, "-m", "mtlskit", "gateway", "--config", str(config)]
    with gateway_process(echo_site, argv) as process:
        assert https_request(port, tls, GET).startswith(b"HTTP/1.1 200 ")
        page, _ = console.page("alice", f"/certificates?q={serial:x}")
        page.click(f"a[href='/certificates/{serial:x}']")
        page.select_option("#reason", "keyCompromise")
        with page.expect_navigation():
            page.get_by_role("button", name="Revoke").click()
        assert "keyCompromise" in page.locator("#confirm-text").inner_text()
        assert x509.load_pem_x509_crl(crl.read_bytes()).get_revoked_certificate_by_serial_number(
            serial
        ) is None  # fmt: skip  # nothing happens before the confirmation
        with page.expect_navigation() as navigation:
            page.get_by_role("button", name="Confirm revoke").click()
        assert navigation.value is not None and navigation.value.status == 200
        assert page.locator("#flash").count() == 1
        listed = x509.load_pem_x509_crl(crl.read_bytes())
        entry = listed.get_revoked_certificate_by_serial_number(serial)
        assert entry is not None
        reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        assert reason is x509.ReasonFlags.key_compromise
        records = sighup_reloads(echo_site, process)
        assert records and all(r["ok"] for r in records), records
        assert https_request(port, tls, GET).startswith(b"HTTP/1.1 403 ")
        access = echo_site.wait_for_record(lambda r: r.get("status") == 403, which="access")
        assert access["code"] == "cert_revoked"
        page.context.close()


def test_the_audit_page_shows_where_the_chain_breaks_after_a_row_is_edited(console):
    page, _ = console.page("alice", "/audit")
    status = page.locator("#audit-status").inner_text()
    assert status.startswith("intact (") and status.endswith(" entries)"), status
    connection = sqlite3.connect(console.ca.directory / "ca.db")
    try:
        seq, detail = connection.execute(
            "SELECT seq, detail FROM audit_log WHERE event = 'issue' ORDER BY seq LIMIT 1 OFFSET 1"
        ).fetchone()
    finally:
        connection.close()
    console.sql("UPDATE audit_log SET detail = ? WHERE seq = ?", detail.replace("people", "pe0ple"),
                seq)  # fmt: skip
    try:
        page.reload()
        assert page.locator("#audit-status").inner_text() == f"broken at entry {seq}"
        assert page.locator("tr.broken td").first.inner_text() == str(seq)
    finally:
        console.sql("UPDATE audit_log SET detail = ? WHERE seq = ?", detail, seq)
    page.reload()
    assert page.locator("#audit-status").inner_text().startswith("intact (")
    page.context.close()


LABELLED = """() => [...document.querySelectorAll('input, select, textarea')]
  .filter(e => !['hidden', 'submit', 'button'].includes(e.type))
  .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
  .map(e => e.outerHTML)"""


def _request_and_certificate(console: Console, identity: str, out: Path) -> tuple[str, int]:
    """A pending request for ``identity``, and the serial of a certificate in the store:
    what the request and certificate pages are opened with."""
    request_id = pending_request(console.ca, identity, out)
    store = console.ca.store()
    try:
        serial = store.certificates(now=dt.datetime.now(dt.UTC))[0].serial
    finally:
        store.close()
    return request_id, serial


def test_form_fields_have_labels_and_the_keyboard_reaches_approve(console, tmp_path):
    request_id, serial = _request_and_certificate(
        console, "spiffe://acme.com/prod/keyboard", tmp_path / "x"
    )
    paths = [f"/requests/{request_id}", f"/certificates/{serial:x}", "/certificates", "/requests"]
    for path in paths:
        page, response = console.page("alice", path)
        assert response.status == 200, path
        assert page.locator("input, select, textarea").count() >= (0 if path == "/requests" else 1)
        assert page.evaluate(LABELLED) == [], path
        page.context.close()
    page, _ = console.page("alice", f"/requests/{request_id}")
    reached = []
    for _ in range(40):
        page.keyboard.press("Tab")
        focused = page.evaluate(
            "() => document.activeElement.tagName + ' ' + document.activeElement.textContent"
        )
        reached.append(focused.strip())
        if focused.strip() == "BUTTON Approve":
            break
    assert reached[-1] == "BUTTON Approve", reached
    with page.expect_navigation():
        page.keyboard.press("Enter")  # the focused button works from the keyboard too
    assert ALICE in approved_by(console.ca, request_id)
    page.context.close()


PAGES = {
    "requests": "/requests",
    "request": "/requests/{request}",
    "certificates": "/certificates",
    "certificate": "/certificates/{serial}",
    "audit": "/audit",
    "health": "/health",
}


def test_every_page_renders_with_nav_and_identity_and_is_captured(console, tmp_path):
    """Each page as alice sees it, saved as console-NAME.png: in tmp_path, or in the directory
    MTLSKIT_CONSOLE_SCREENSHOTS names (``docs/img`` regenerates the docs' pictures)."""
    request_id, serial = _request_and_certificate(
        console, "spiffe://acme.com/prod/billing-db", tmp_path / "x"
    )
    out = Path(os.environ.get("MTLSKIT_CONSOLE_SCREENSHOTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    person = console.people["alice"]
    context = console.browser.user(
        person.chain, person.key, viewport={"width": 1100, "height": 900}
    )
    page = context.new_page()
    for name, path in PAGES.items():
        response = page.goto(console.url + path.format(request=request_id, serial=f"{serial:x}"))
        assert response is not None and response.status == 200, path
        headers = response.headers
        assert "script-src 'self'" in headers["content-security-policy"]
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert headers["x-frame-options"] == "DENY"
        assert headers["cache-control"] == "no-store"
        nav = page.locator("nav a")
        assert nav.all_inner_texts() == ["Requests", "Certificates", "Audit", "Health"]
        assert page.locator("#user-identity").inner_text() == ALICE
        assert page.locator("#user-role").inner_text() == "approver"
        assert page.locator("script:not([src]), style, [style]").count() == 0  # CSP-clean
        page.screenshot(path=str(out / f"console-{name}.png"))  # the first screenful
    context.close()
    assert sorted(p.name for p in out.glob("console-*.png")) == sorted(
        f"console-{name}.png" for name in PAGES
    )
