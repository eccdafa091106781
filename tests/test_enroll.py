"""Enrollment over real HTTPS on 127.0.0.1: tokens, approvals, renewal, concurrency, the API.

One `mtlskit ca serve` subprocess per module (a second for the short-lived-certificate
daemon test and one for the rate limit); every client is the real library or command.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import ssl
import stat
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ca_server import PASSPHRASE, RunningCa, init_ca, serve
from mtlskit.certs import Fingerprint, generate_private_key, load_certificates, private_key_pem
from mtlskit.client import CaRefused, build_csr, enroll, renew, renew_forever
from mtlskit.identity import ClientIdentity
from mtlskit.issue import verify_audit_chain
from mtlskit.testca import LeafSpec, TestCA
from mtlskit.verify import parse_spiffe_bundle

WEB = "spiffe://acme.com/web"
EST_OPERATIONS = ("cacerts", "csrattrs", "simpleenroll", "simplereenroll")  # docs/est.md
APPROVAL = '\n[[approval]]\nids = ["spiffe://acme.com/prod/**"]\napprovers = 2\n'


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> RunningCa:
    directory = init_ca(tmp_path_factory.mktemp("enroll") / "ca", approval=APPROVAL)
    running = serve(directory, "--max-token-failures", "1000")
    yield running
    running.stop()


def _root(ca: RunningCa) -> x509.Certificate:
    return load_certificates(ca.root.read_bytes())[0]


def _context(ca: RunningCa) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca.root)


def _post_enroll(ca: RunningCa, token: str, csr_pem: str) -> httpx.Response:
    return httpx.post(
        f"{ca.url}/v1/enroll", json={"token": token, "csr": csr_pem}, verify=_context(ca)
    )


def _csr_pem(identity: str | None = None) -> str:
    return (
        build_csr(generate_private_key(), identity)
        .public_bytes(serialization.Encoding.PEM)
        .decode()
    )


def _identity(path) -> str:
    return ClientIdentity.from_certificate(load_certificates(path.read_bytes())[0]).value


def test_token_enrolls_once_then_token_used(ca, tmp_path, run_cli):
    token = ca.token(WEB)
    out = tmp_path / "svc"
    result = run_cli(
        "enroll", ca.url, "--token", token, "--out", out, "--ca-fingerprint", ca.fingerprint
    )
    assert result.code == 0, result.err
    assert _identity(out / "cert.pem") == WEB
    assert stat.S_IMODE((out / "key.pem").stat().st_mode) == 0o600
    assert (out / "ca.pem").read_bytes() == ca.root.read_bytes()
    chain = load_certificates((out / "chain.pem").read_bytes())
    key = serialization.load_pem_private_key((out / "key.pem").read_bytes(), None)
    assert chain[0].public_key() == key.public_key()
    again = run_cli("enroll", ca.url, "--token", token, "--out", tmp_path / "other")
    assert again.code == 1
    assert "token_used" in again.err
    response = _post_enroll(ca, token, _csr_pem())
    assert response.status_code == 409
    assert response.json()["code"] == "token_used"


def test_ca_token_command_prints_a_redeemable_token(ca, tmp_path, run_cli):
    result = run_cli("ca", "token", ca.directory, "--id", WEB, "--ttl", "5m")
    assert result.code == 0, result.err
    token = result.out.strip()
    assert token.startswith("mtk1_")
    store = ca.store()
    try:
        entries = [e.as_dict() for e in store.audit_entries() if e.event == "token"]
    finally:
        store.close()
    assert token not in json.dumps(entries)  # only the hash is kept
    assert enroll(ca.url, token, tmp_path / "o", ca_fingerprint=ca.fingerprint).status == "issued"
    refused = run_cli("ca", "token", ca.directory, "--id", "spiffe://other.org/x")
    assert refused.code == 1
    assert "allowed_ids" in refused.err


def test_expired_token(ca):
    token = ca.token(WEB, ttl=dt.timedelta(minutes=15), age=dt.timedelta(hours=1))
    response = _post_enroll(ca, token, _csr_pem())
    assert (response.status_code, response.json()["code"]) == (401, "token_expired")


@pytest.mark.parametrize(
    ("token", "code"),
    [
        ("mtk1_" + "A" * 43, "token_invalid"),
        ("not-a-token", "token_invalid"),
        ("", "request_invalid"),
    ],
)
def test_unknown_or_malformed_token(ca, token, code):
    response = _post_enroll(ca, token, _csr_pem())
    assert response.json()["code"] == code
    assert response.status_code in {400, 401}


def test_a_csr_naming_another_identity_gets_the_tokens_identity(ca, tmp_path):
    """The CA decides every name (issue 28): a CSR naming another identity is issued for
    the token's identity, and the response says what it dropped. ca.toml
    ``csr_names = "must_match"`` refuses instead (tests/test_interop_csr.py)."""
    for other in ("spiffe://acme.com/admin", "admin.acme.com"):
        response = _post_enroll(ca, ca.token(WEB), _csr_pem(other))
        assert response.status_code == 201, response.text
        cert = x509.load_pem_x509_certificate(response.json()["certificate"].encode())
        assert ClientIdentity.from_certificate(cert).value == WEB
        assert any(other in item for item in response.json()["dropped"])
    done = enroll(
        ca.url, ca.token(WEB), tmp_path / "x", identity=WEB, ca_fingerprint=ca.fingerprint
    )
    assert done.identity == WEB and done.dropped == ()


def test_wrong_ca_fingerprint_sends_no_token(ca, tmp_path):
    token = ca.token(WEB)
    with pytest.raises(CaRefused) as refused:
        enroll(ca.url, token, tmp_path / "x", ca_fingerprint="sha256:" + "00" * 32)
    assert refused.value.code == "ca_fingerprint_mismatch"
    assert not (tmp_path / "x" / "key.pem").exists()
    assert enroll(ca.url, token, tmp_path / "y", ca_fingerprint=ca.fingerprint).status == "issued"


def test_malformed_requests_change_nothing(ca):
    before = _count(ca)
    cases = [
        (b"{", 400, "request_invalid"),
        (b"[1, 2]", 400, "request_invalid"),
        (json.dumps({"token": ca.token(WEB), "csr": "garbage"}).encode(), 400, "csr_invalid"),
        (json.dumps({"token": 5, "csr": "x"}).encode(), 400, "request_invalid"),
        (b"x" * 70_000, 413, "request_too_large"),
    ]
    for body, status, code in cases:
        response = httpx.post(f"{ca.url}/v1/enroll", content=body, verify=_context(ca))
        assert (response.status_code, response.json()["code"]) == (status, code), body[:40]
    assert httpx.get(f"{ca.url}/v1/nothing", verify=_context(ca)).json()["code"] == "not_found"
    assert _count(ca) == before


def _count(ca: RunningCa, identity: str | None = None) -> int:
    store = ca.store()
    try:
        records = store.certificates(now=dt.datetime.now(dt.UTC))
    finally:
        store.close()
    return sum(1 for r in records if identity is None or r.identity == identity)


def test_twenty_concurrent_redemptions_issue_one_certificate(ca, tmp_path):
    identity = "spiffe://acme.com/race"
    token = ca.token(identity)
    csrs = [_csr_pem() for _ in range(20)]
    barrier = threading.Barrier(20)

    def redeem(csr: str) -> tuple[int, str]:
        barrier.wait()
        response = _post_enroll(ca, token, csr)
        return response.status_code, response.json().get("code", "issued")

    with ThreadPoolExecutor(20) as pool:
        outcomes = list(pool.map(redeem, csrs))
    assert sorted(outcomes).count((201, "issued")) == 1
    assert outcomes.count((409, "token_used")) == 19
    assert _count(ca, identity) == 1


def _approver(run_cli, ca: RunningCa, out, name: str) -> tuple[str, ...]:
    """--cert/--key of a certificate from this CA registered as an approver."""
    identity = f"spiffe://acme.com/approvers/{name}"
    assert run_cli("ca", "issue", ca.directory, "--id", identity, "--out", out).code == 0
    assert run_cli("ca", "approvers", "add", ca.directory, "--cert", out / "cert.pem").code == 0
    return ("--cert", str(out / "cert.pem"), "--key", str(out / "key.pem"))


def test_approval_needs_two_distinct_approvers(ca, tmp_path, run_cli, monkeypatch):
    monkeypatch.setenv("MTLSKIT_CA_PASSPHRASE", PASSPHRASE)
    alice = _approver(run_cli, ca, tmp_path / "alice", "alice")
    bob = _approver(run_cli, ca, tmp_path / "bob", "bob")
    identity = "spiffe://acme.com/prod/db"
    out = tmp_path / "db"
    pending = enroll(ca.url, ca.token(identity), out, ca_fingerprint=ca.fingerprint)
    assert pending.status == "pending"
    request_id = pending.request_id
    poll = httpx.get(f"{ca.url}/v1/requests/{request_id}", verify=_context(ca))
    assert (poll.status_code, poll.json()["code"]) == (202, "approval_pending")
    listed = run_cli("ca", "requests", "list", ca.directory, "--json")
    (request,) = [r for r in json.loads(listed.out)["requests"] if r["id"] == request_id]
    assert request["identity"] == identity and request["required"] == 2
    for _ in range(2):  # the same approver twice counts once
        result = run_cli("ca", "requests", "approve", ca.directory, request_id, *alice)
        assert result.code == 0, result.err
        assert "1 of 2" in result.out
    assert "already approved" in result.out
    assert httpx.get(f"{ca.url}/v1/requests/{request_id}", verify=_context(ca)).status_code == 202
    wrong = run_cli(
        "ca", "requests", "approve", ca.directory, request_id, *bob, "--csr-sha256", "ab" * 32
    )
    assert wrong.code == 2
    assert "approve what you reviewed" in wrong.err
    result = run_cli(
        "ca", "requests", "approve", ca.directory, request_id,
        *bob, "--csr-sha256", request["csr_sha256"],
    )  # fmt: skip
    assert "2 of 2" in result.out and "approved" in result.out
    done = enroll(ca.url, "", out, request_id=request_id)
    assert done.status == "issued" and _identity(out / "cert.pem") == identity
    again = httpx.get(f"{ca.url}/v1/requests/{request_id}", verify=_context(ca))
    assert again.status_code == 200 and again.json()["serial"] == done.serial
    assert _count(ca, identity) == 1
    store = ca.store()
    try:
        entries = store.audit_entries()
    finally:
        store.close()
    assert verify_audit_chain(entries) is None
    approvals = [e.as_dict()["detail"] for e in entries if e.event == "approve"]
    approvals = [d for d in approvals if d["request"] == request_id]
    assert [(d["approver"], d["counted"], d["repeat"]) for d in approvals] == [
        ("spiffe://acme.com/approvers/alice", 1, False),
        ("spiffe://acme.com/approvers/alice", 1, True),
        ("spiffe://acme.com/approvers/bob", 2, False),
    ]


def test_denied_request(ca, tmp_path, run_cli):
    pending = enroll(ca.url, ca.token("spiffe://acme.com/prod/x"), tmp_path / "x")
    result = run_cli(
        "ca", "requests", "deny", ca.directory, pending.request_id, "--approver", "carol"
    )
    assert result.code == 0, result.err
    with pytest.raises(CaRefused) as refused:
        enroll(ca.url, "", tmp_path / "x", request_id=pending.request_id)
    assert refused.value.code == "request_denied"
    late = run_cli(
        "ca", "requests", "approve", ca.directory, pending.request_id, "--approver", "dave"
    )
    assert late.code == 2


def test_renew_keeps_identity_and_yields_a_new_serial(ca, tmp_path, run_cli):
    out = tmp_path / "svc"
    first = enroll(ca.url, ca.token(WEB), out, ca_fingerprint=ca.fingerprint)
    key_before = (out / "key.pem").read_bytes()
    result = run_cli(
        "renew", ca.url, "--cert", out / "cert.pem", "--key", out / "key.pem", "--json"
    )
    assert result.code == 0, result.err
    renewed = json.loads(result.out)
    assert renewed["old_serial"] == first.serial and renewed["serial"] != first.serial
    assert renewed["identity"] == WEB == _identity(out / "cert.pem")
    assert (out / "key.pem").read_bytes() == key_before
    chain = load_certificates((out / "chain.pem").read_bytes())
    assert f"{chain[0].serial_number:x}" == renewed["serial"]
    rekeyed = renew(ca.url, out / "chain.pem", out / "key.pem", rekey=True)
    assert rekeyed.identity == WEB
    assert (out / "key.pem").read_bytes() != key_before
    assert stat.S_IMODE((out / "key.pem").stat().st_mode) == 0o600
    leaf = load_certificates((out / "chain.pem").read_bytes())[0]
    key = serialization.load_pem_private_key((out / "key.pem").read_bytes(), None)
    assert leaf.public_key() == key.public_key()


def test_renew_refuses_a_revoked_certificate(ca, tmp_path, run_cli):
    out = tmp_path / "svc"
    issued = enroll(ca.url, ca.token(WEB), out, ca_fingerprint=ca.fingerprint)
    assert run_cli("ca", "revoke", ca.directory, issued.serial).code == 0
    before = (out / "cert.pem").read_bytes()
    with pytest.raises(CaRefused) as refused:
        renew(ca.url, out / "cert.pem", out / "key.pem")
    assert refused.value.code == "cert_revoked"
    assert (out / "cert.pem").read_bytes() == before  # nothing replaced, nothing deleted
    crl = x509.load_der_x509_crl(httpx.get(f"{ca.url}/v1/crl", verify=_context(ca)).content)
    assert crl.get_revoked_certificate_by_serial_number(int(issued.serial, 16)) is not None


def test_renew_refuses_a_certificate_from_another_ca(ca, tmp_path):
    other = TestCA(name="elsewhere").issue(LeafSpec(uris=(WEB,)))
    (tmp_path / "cert.pem").write_bytes(other.cert_pem)
    (tmp_path / "key.pem").write_bytes(private_key_pem(other.key))
    (tmp_path / "ca.pem").write_bytes(ca.root.read_bytes())
    with pytest.raises(CaRefused) as refused:
        renew(ca.url, tmp_path / "cert.pem", tmp_path / "key.pem")
    assert refused.value.code == "tls_refused"
    # Without a certificate at all: a JSON answer, not a TLS one.
    response = httpx.post(f"{ca.url}/v1/renew", verify=_context(ca))
    assert (response.status_code, response.json()["code"]) == (401, "client_cert_required")


def test_bundle_crl_health_and_openapi(ca):
    context = _context(ca)
    pem = httpx.get(f"{ca.url}/v1/bundle", verify=context)
    assert pem.content == ca.root.read_bytes()
    spiffe = httpx.get(f"{ca.url}/v1/bundle?format=spiffe", verify=context).json()
    assert spiffe["spiffe_refresh_hint"] > 0 and spiffe["spiffe_sequence"] > 0
    assert parse_spiffe_bundle(json.dumps(spiffe).encode()) == (_root(ca),)
    assert httpx.get(f"{ca.url}/v1/bundle?format=x", verify=context).status_code == 400
    crl = x509.load_der_x509_crl(httpx.get(f"{ca.url}/v1/crl", verify=context).content)
    issuing = load_certificates((ca.directory / "issuing.pem").read_bytes())[0]
    assert crl.is_signature_valid(issuing.public_key())
    assert httpx.get(f"{ca.url}/healthz", verify=context).json()["status"] == "ok"
    document = httpx.get(f"{ca.url}/openapi.json", verify=context).json()
    assert set(document["paths"]) == {
        "/healthz",
        "/v1/enroll",
        "/v1/requests/{request_id}",
        "/v1/renew",
        "/v1/crl",
        "/v1/bundle",
        *(f"/.well-known/est/{op}" for op in EST_OPERATIONS),
        *(f"/.well-known/est/{{label}}/{op}" for op in EST_OPERATIONS),  # ca.toml [est.labels]
    }
    cert_der = _server_certificate(ca)
    eku = x509.load_der_x509_certificate(cert_der).extensions.get_extension_for_class(
        x509.ExtendedKeyUsage
    )
    assert [oid._name for oid in eku.value] == ["serverAuth"]
    assert Fingerprint.parse(ca.fingerprint) == Fingerprint.of(_root(ca))


def _server_certificate(ca: RunningCa) -> bytes:
    host, port = ca.url.removeprefix("https://").rsplit(":", 1)
    with (
        socket.create_connection((host, int(port))) as raw,
        _context(ca).wrap_socket(raw, server_hostname=host) as tls,
    ):
        return tls.getpeercert(binary_form=True)


def test_failed_token_attempts_are_limited_per_address(tmp_path):
    running = serve(init_ca(tmp_path / "limited"), "--max-token-failures", "3")
    try:
        codes = [
            _post_enroll(running, "mtk1_" + "B" * 43, _csr_pem()).json()["code"] for _ in range(5)
        ]
        assert codes == ["token_invalid"] * 3 + ["rate_limited"] * 2
        response = _post_enroll(running, running.token(WEB), _csr_pem())
        assert response.status_code == 429 and int(response.headers["retry-after"]) >= 1
    finally:
        running.stop()


def test_renew_daemon_rotates_under_a_live_tls_server(tmp_path):
    """6-second certificates renewed at ~4 s while an ssl server reloads the same files
    for every connection: every handshake succeeds and the served serial changes."""
    running = serve(init_ca(tmp_path / "short", "--default-ttl", "6s", "--max-ttl", "1h"))
    out = tmp_path / "svc"
    stop = threading.Event()
    served: list[int] = []
    failures: list[BaseException] = []
    try:
        enroll(running.url, running.token(WEB), out, ca_fingerprint=running.fingerprint)
        listener = socket.create_server(("127.0.0.1", 0))
        port = listener.getsockname()[1]

        def tls_server() -> None:
            listener.settimeout(0.2)
            while not stop.is_set():
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                with conn:
                    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                    context.load_cert_chain(out / "chain.pem", out / "key.pem")
                    try:
                        with context.wrap_socket(conn, server_side=True) as tls:
                            tls.sendall(b"ok")
                    except (ssl.SSLError, OSError) as exc:
                        failures.append(exc)

        daemon = threading.Thread(
            target=renew_forever,
            args=(running.url, out / "cert.pem", out / "key.pem"),
            kwargs={"stop": stop},
        )
        server = threading.Thread(target=tls_server)
        daemon.start()
        server.start()
        client = ssl.create_default_context()
        client.check_hostname = False
        client.verify_mode = ssl.CERT_NONE
        deadline = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=11)
        while dt.datetime.now(dt.UTC) < deadline:
            with (
                socket.create_connection(("127.0.0.1", port)) as raw,
                client.wrap_socket(raw) as tls,
            ):
                assert tls.recv(2) == b"ok"
                leaf = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
                assert leaf.not_valid_after_utc > dt.datetime.now(dt.UTC)  # never expired
                served.append(leaf.serial_number)
            stop.wait(0.2)
    finally:
        stop.set()
        running.stop()
    daemon.join(timeout=10)
    server.join(timeout=5)
    listener.close()
    assert not failures
    assert len(set(served)) >= 3, f"only {len(set(served))} serials in 11 s"
    assert _count(running, WEB) >= 3
