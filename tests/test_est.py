"""EST (RFC 7030) on a real `ca serve`, driven by curl and openssl as a standard client.

One CA process for the module (``csr_names = "must_match"``, one approval rule, one
Kubernetes-shaped JWKS provisioner). Every request is a real curl over HTTPS, every CSR
comes from `openssl req`, every response is read back by `openssl pkcs7`; the commands
are the ones docs/est.md shows.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import socket
import ssl
import subprocess
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from asn1crypto import cms, core
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import AttributeOID, ExtendedKeyUsageOID, NameOID
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet

from _gateway_support import EchoBackend, GatewayThread, Site, https_request, write_config
from _servers import nginx
from ca_server import PASSPHRASE, RunningCa, init_ca, serve
from conftest import require_program
from mtlskit.caserver._est import CsrAttrs, csr_attributes, decode_body
from mtlskit.identity import ClientIdentity
from mtlskit.testca import SERVER_AUTH, LeafSpec, TestCA
from rfc7030_vectors import (
    CACERTS,
    CSRATTRS_4_5_2,
    CSRATTRS_A_3,
    SIMPLEENROLL_REQUEST,
    SIMPLEENROLL_RESPONSE,
)

WEB = "spiffe://acme.com/web"
GET = b"GET /hello HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
K8S = "https://kubernetes.default.svc.cluster.local"
CONFIG = f"""
[[approval]]
ids = ["spiffe://acme.com/prod/**"]
approvers = 1

[[approval]]
ids = ["spiffe://acme.com/ns/prod/**"]
approvers = 1

[[provisioners]]
kind = "oidc"
name = "k8s"
issuer = "{K8S}"
jwks = "k8s-jwks.json"
audience = "mtlskit-ca"
identity = "spiffe://acme.com/ns/{{kubernetes.io.namespace}}/sa/{{kubernetes.io.serviceaccount.name}}"

[est.labels]
svid = "spiffe"
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    directory = init_ca(tmp_path_factory.mktemp("est") / "ca", approval=CONFIG)
    toml = directory / "ca.toml"
    toml.write_text(toml.read_text().replace('csr_names = "ignore"', 'csr_names = "must_match"'))
    key = ECKey.generate_key("P-256", parameters={"kid": "k8s-1"})
    (directory / "k8s-jwks.json").write_text(json.dumps(KeySet([key]).as_dict(private=False)))
    running = serve(directory, "--max-token-failures", "1000")
    yield running, key
    running.stop()


@pytest.fixture
def ca(setup) -> RunningCa:
    return setup[0]


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def curl(ca: RunningCa, path: str, *args: str | Path) -> Answer:
    """``curl`` against the CA's EST path; status, headers (lower-case names), body."""
    run = subprocess.run(
        [require_program("curl"), "-sS", "-D", "-", "--cacert", str(ca.root),
         *map(str, args), f"{ca.url}/.well-known/est/{path}"],
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    head, _, body = run.stdout.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(status=int(lines[0].split()[1]), headers=headers, body=body)


def openssl(*args: str | Path, stdin: bytes | None = None) -> bytes:
    run = subprocess.run(
        [require_program("openssl"), *map(str, args)],
        input=stdin, capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    return run.stdout


def csr_b64(out: Path, identity: str, name: str = "req") -> Path:
    """`openssl req` → base64 DER in ``out/NAME.b64`` (key in ``out/NAME.key``), as docs/est.md."""
    out.mkdir(parents=True, exist_ok=True)
    der = out / f"{name}.der"
    openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", out / f"{name}.key", "-subj", "/",
        "-addext", f"subjectAltName=URI:{identity}", "-outform", "DER", "-out", der,
    )  # fmt: skip
    b64 = out / f"{name}.b64"
    b64.write_bytes(base64.encodebytes(der.read_bytes()))
    return b64


def pkcs7_certs(answer: Answer) -> list[x509.Certificate]:
    """The body as `base64 -d | openssl pkcs7 -inform DER -print_certs` reads it."""
    der = subprocess.run(
        ["base64", "-d"], input=answer.body, capture_output=True, check=True
    ).stdout
    pem = openssl("pkcs7", "-inform", "DER", "-print_certs", stdin=der)
    return x509.load_pem_x509_certificates(pem)


def _identity(cert: x509.Certificate) -> str:
    return ClientIdentity.from_certificate(cert).value


def _enroll(ca: RunningCa, b64: Path, *auth: str, path: str = "simpleenroll") -> Answer:
    return curl(
        ca, path, "--data-binary", f"@{b64}", "-H", "Content-Type: application/pkcs10", *auth,
    )  # fmt: skip


def _events(ca: RunningCa, event: str) -> list[dict]:
    store = ca.store()
    try:
        return [json.loads(e.detail) for e in store.audit_entries() if e.event == event]
    finally:
        store.close()


def test_cacerts_is_a_certs_only_pkcs7_of_the_chain_that_openssl_reads(ca):
    answer = curl(ca, "cacerts")
    assert answer.status == 200
    assert answer.headers["content-type"] == "application/pkcs7-mime; smime-type=certs-only"
    assert answer.headers["content-transfer-encoding"] == "base64"
    certs = pkcs7_certs(answer)
    root = x509.load_pem_x509_certificate(ca.root.read_bytes())
    issuing = x509.load_pem_x509_certificate((ca.directory / "issuing.pem").read_bytes())
    assert set(certs) == {root, issuing}
    # §4.1.3 shape: a SignedData with no signers (openssl's own parse of the structure)
    der = base64.b64decode(answer.body)
    printed = openssl("pkcs7", "-inform", "DER", "-print", "-noout", stdin=der).decode()
    assert "pkcs7-signedData" in printed and "signer_info:\n      <EMPTY>" in printed


def test_csrattrs_asks_for_nothing(ca):
    answer = curl(ca, "csrattrs")
    assert (answer.status, base64.b64decode(answer.body)) == (200, b"\x30\x00")  # SEQUENCE {}


def test_simpleenroll_with_basic_token_as_password_gives_the_token_identity(ca, tmp_path):
    token = ca.token(WEB)
    b64 = csr_b64(tmp_path, WEB)
    answer = _enroll(ca, b64, "-u", f"device:{token}")
    assert answer.status == 200, answer.body
    assert answer.headers["content-type"] == "application/pkcs7-mime; smime-type=certs-only"
    assert answer.headers["content-transfer-encoding"] == "base64"
    (cert,) = pkcs7_certs(answer)
    assert _identity(cert) == WEB
    key = serialization.load_pem_private_key((tmp_path / "req.key").read_bytes(), None)
    assert cert.public_key() == key.public_key()
    again = _enroll(ca, csr_b64(tmp_path, WEB, "other"), "-u", f"device:{token}")
    assert again.status == 409 and again.body.startswith(b"token_used: ")


def test_simpleenroll_with_bearer_one_time_token(ca, tmp_path):
    token = ca.token("spiffe://acme.com/bearer")
    answer = _enroll(
        ca, csr_b64(tmp_path, "spiffe://acme.com/bearer"), "-H", f"Authorization: Bearer {token}"
    )
    assert answer.status == 200, answer.body
    assert _identity(pkcs7_certs(answer)[0]) == "spiffe://acme.com/bearer"


def _k8s_token(key: ECKey, namespace: str, account: str) -> str:
    now = int(time.time())
    claims = {
        "aud": ["mtlskit-ca"], "iss": K8S, "iat": now, "nbf": now, "exp": now + 600,
        "jti": str(uuid.uuid4()), "sub": f"system:serviceaccount:{namespace}:{account}",
        "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": account}},
    }  # fmt: skip
    return jwt.encode({"alg": "ES256", "kid": key.kid}, claims, key, algorithms=["ES256"])


def test_simpleenroll_with_bearer_workload_identity_token(setup, tmp_path):
    ca, key = setup
    wanted = "spiffe://acme.com/ns/billing/sa/payments"
    token = _k8s_token(key, "billing", "payments")
    answer = _enroll(ca, csr_b64(tmp_path, wanted), "-H", f"Authorization: Bearer {token}")
    assert answer.status == 200, answer.body
    assert _identity(pkcs7_certs(answer)[0]) == wanted
    replayed = _enroll(
        ca, csr_b64(tmp_path, wanted, "again"), "-H", f"Authorization: Bearer {token}"
    )
    assert replayed.status == 409 and replayed.body.startswith(b"token_replayed: ")
    # the CSR names another identity than the token's template gives
    other = _k8s_token(key, "billing", "payments")
    refused = _enroll(ca, csr_b64(tmp_path, WEB, "foreign"), "-H", f"Authorization: Bearer {other}")
    assert refused.status == 403 and refused.body.startswith(b"identity_mismatch: ")
    forged = _k8s_token(ECKey.generate_key("P-256", parameters={"kid": "k8s-1"}), "a", "b")
    bad = _enroll(ca, csr_b64(tmp_path, wanted, "forged"), "-H", f"Authorization: Bearer {forged}")
    assert bad.status == 401 and bad.body.startswith(b"token_signature_invalid: ")


def _records(ca: RunningCa) -> tuple[int, int]:
    """(certificates, enrollment requests) in the CA's store."""
    store = ca.store()
    try:
        now = dt.datetime.now(dt.UTC)
        return len(store.certificates(now=now)), len(store.requests())
    finally:
        store.close()


def test_bad_input_is_refused_with_a_code_and_burns_nothing(ca, tmp_path):
    token = ca.token(WEB)
    before = _records(ca)
    audited = len(_events(ca, "est_refused"))
    auth = ("-u", f"device:{token}")
    garbage = tmp_path / "garbage.b64"
    garbage.write_bytes(b"this is not base64!!\n")
    not_csr = tmp_path / "notcsr.b64"
    not_csr.write_bytes(base64.encodebytes(b"\x30\x03\x02\x01\x00"))
    huge = tmp_path / "huge.b64"
    huge.write_bytes(b"A" * (200 * 1024))
    cases = [
        (_enroll(ca, garbage, *auth), 400, b"csr_invalid: "),
        (_enroll(ca, not_csr, *auth), 400, b"csr_invalid: "),
        (_enroll(ca, huge, *auth), 413, b"request_too_large: "),
        (_enroll(ca, csr_b64(tmp_path, "spiffe://acme.com/evil"), *auth), 403,
         b"identity_mismatch: "),
        (curl(ca, "simpleenroll", "--data-binary", f"@{csr_b64(tmp_path, WEB, 'typed')}",
              "-H", "Content-Type: application/json", *auth), 415, b"request_invalid: "),
        (_enroll(ca, csr_b64(tmp_path, WEB, "anon")), 401, b"token_invalid: "),
        (_enroll(ca, csr_b64(tmp_path, WEB, "wrong"), "-u", "device:mtk1_" + "A" * 43), 401,
         b"token_invalid: "),
    ]  # fmt: skip
    for answer, status, prefix in cases:
        assert (answer.status, answer.body[: len(prefix)]) == (status, prefix), answer.body
        assert answer.headers["content-type"].startswith("text/plain")
    assert "www-authenticate" in cases[5][0].headers
    assert _records(ca) == before  # no certificate, no request
    refusals = _events(ca, "est_refused")
    assert len(refusals) == audited + len(cases)  # one audit entry per refusal
    codes = [entry["code"] for entry in refusals]
    for code in ("csr_invalid", "request_too_large", "identity_mismatch", "request_invalid"):
        assert code in codes
    ok = _enroll(ca, csr_b64(tmp_path, WEB, "good"), *auth)  # the token was not burned
    assert ok.status == 200, ok.body


def _approve_the_request(ca: RunningCa, run_cli, identity: str, approver: Path) -> None:
    """The one request waiting for ``identity``, approved by a new approver (certificate
    issued into ``approver``, registered, then signing the approval) with the CLI."""
    store = ca.store()
    try:
        (request,) = [r for r in store.requests() if r.identity == identity]
    finally:
        store.close()
    person = f"spiffe://acme.com/approvers/{approver.name}"
    issued = run_cli("ca", "issue", ca.directory, "--id", person, "--out", approver)
    assert issued.code == 0, issued.err
    added = run_cli("ca", "approvers", "add", ca.directory, "--cert", approver / "cert.pem")
    assert added.code == 0, added.err
    approved = run_cli(
        "ca", "requests", "approve", ca.directory, request.id,
        "--cert", approver / "cert.pem", "--key", approver / "key.pem",
    )  # fmt: skip
    assert approved.code == 0, approved.err


def test_pending_approval_is_202_with_retry_after_then_the_same_csr_gets_its_cert(
    ca, tmp_path, run_cli, monkeypatch
):
    monkeypatch.setenv("MTLSKIT_CA_PASSPHRASE", PASSPHRASE)
    identity = "spiffe://acme.com/prod/db"
    token = ca.token(identity)
    b64 = csr_b64(tmp_path, identity)
    first = _enroll(ca, b64, "-u", f"device:{token}")
    assert first.status == 202, first.body
    assert int(first.headers["retry-after"]) > 0
    again = _enroll(ca, b64, "-u", f"device:{token}")  # polling is sending it again
    assert again.status == 202 and "retry-after" in again.headers
    _approve_the_request(ca, run_cli, identity, tmp_path / "alice")
    done = _enroll(ca, b64, "-u", f"device:{token}")
    assert done.status == 200, done.body
    (cert,) = pkcs7_certs(done)
    assert _identity(cert) == identity
    key = serialization.load_pem_private_key((tmp_path / "req.key").read_bytes(), None)
    assert cert.public_key() == key.public_key()
    other = _enroll(ca, csr_b64(tmp_path, identity, "other"), "-u", f"device:{token}")
    assert other.status == 409  # a different CSR does not ride on the used token


def _enrolled(ca: RunningCa, out: Path, identity: str) -> tuple[Path, Path]:
    answer = _enroll(ca, csr_b64(out, identity, "first"), "-u", f"d:{ca.token(identity)}")
    assert answer.status == 200, answer.body
    cert = out / "cert.pem"
    cert.write_bytes(pkcs7_certs(answer)[0].public_bytes(serialization.Encoding.PEM))
    return cert, out / "first.key"


def test_simplereenroll_over_mtls_keeps_the_identity_with_a_new_key(ca, tmp_path, run_cli):
    identity = "spiffe://acme.com/device/7"
    cert, key = _enrolled(ca, tmp_path, identity)
    b64 = csr_b64(tmp_path, identity, "next")
    answer = curl(
        ca, "simplereenroll", "--cert", cert, "--key", key, "--data-binary", f"@{b64}",
        "-H", "Content-Type: application/pkcs10",
    )  # fmt: skip
    assert answer.status == 200, answer.body
    (renewed,) = pkcs7_certs(answer)
    assert _identity(renewed) == identity
    new_key = serialization.load_pem_private_key((tmp_path / "next.key").read_bytes(), None)
    assert renewed.public_key() == new_key.public_key()
    old = x509.load_pem_x509_certificate(cert.read_bytes())
    assert renewed.serial_number != old.serial_number
    anonymous = curl(
        ca, "simplereenroll", "--data-binary", f"@{b64}", "-H", "Content-Type: application/pkcs10"
    )
    assert anonymous.status == 401 and anonymous.body.startswith(b"client_cert_required: ")


def test_simplereenroll_refuses_a_revoked_certificate(ca, tmp_path, run_cli, monkeypatch):
    monkeypatch.setenv("MTLSKIT_CA_PASSPHRASE", PASSPHRASE)
    identity = "spiffe://acme.com/device/8"
    cert, key = _enrolled(ca, tmp_path, identity)
    revoked = run_cli("ca", "revoke", ca.directory, "--cert", cert)
    assert revoked.code == 0, revoked.err
    answer = curl(
        ca, "simplereenroll", "--cert", cert, "--key", key,
        "--data-binary", f"@{csr_b64(tmp_path, identity, 'next')}",
        "-H", "Content-Type: application/pkcs10",
    )  # fmt: skip
    assert answer.status == 403 and answer.body.startswith(b"cert_revoked: "), answer.body


def test_the_est_certificate_passes_a_real_gateway_handshake(ca, tmp_path):
    cert, key = _enrolled(ca, tmp_path, "spiffe://acme.com/device/9")
    chain = tmp_path / "chain.pem"
    issuing = (ca.directory / "issuing.pem").read_bytes()
    chain.write_bytes(cert.read_bytes() + issuing)
    backend = EchoBackend()
    site = Site(dir=tmp_path, server_ca=trustme.CA(), backend=backend)
    config = write_config(site, ca.root.read_bytes(), '[client_auth]\ntrust = ["trust.pem"]\n')
    gateway = GatewayThread(config)
    try:
        context = ssl.create_default_context()
        site.server_ca.configure_trust(context)
        context.load_cert_chain(chain, key)
        assert https_request(gateway.port, context, GET).startswith(b"HTTP/1.1 200")
        stranger = ssl.create_default_context()  # negative control: no client certificate
        site.server_ca.configure_trust(stranger)
        assert not https_request(gateway.port, stranger, GET).startswith(b"HTTP/1.1 200")
    finally:
        gateway.stop()
        backend.stop()


def test_the_est_certificate_passes_nginx_ssl_verify_client(ca, tmp_path):
    """nginx with ``ssl_verify_client on`` and the EST CA's root (from cacerts) as trust."""
    require_program("nginx")
    cert, key = _enrolled(ca, tmp_path, "spiffe://acme.com/device/10")
    roots = [c for c in pkcs7_certs(curl(ca, "cacerts")) if c.issuer == c.subject]
    trust = tmp_path / "est-root.pem"
    trust.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in roots))
    chain = tmp_path / "chain.pem"
    chain.write_bytes(cert.read_bytes() + (ca.directory / "issuing.pem").read_bytes())
    server_ca = TestCA(name="nginx server")
    server = server_ca.issue(LeafSpec(dns=("localhost",), eku=(SERVER_AUTH,)))
    (tmp_path / "server.pem").write_bytes(server.chain_pem)
    (tmp_path / "server.key").write_bytes(server.key_pem)
    (tmp_path / "server-ca.pem").write_bytes(server_ca.bundle_pem)
    server = f"""
    ssl_certificate {tmp_path}/server.pem;
    ssl_certificate_key {tmp_path}/server.key;
    ssl_client_certificate {trust};
    ssl_verify_client on;
    ssl_verify_depth 2;
    location / {{ return 200 "$ssl_client_verify\\n"; }}
"""
    with nginx(tmp_path / "nginx", server) as port:
        url = f"https://localhost:{port}/"
        base = [require_program("curl"), "-sS", "--cacert", str(tmp_path / "server-ca.pem")]
        accepted = subprocess.run(
            [*base, "--cert", str(chain), "--key", str(key), url],
            capture_output=True, timeout=30, check=False,
        )  # fmt: skip
        assert accepted.stdout == b"SUCCESS\n", accepted.stderr
        refused = subprocess.run([*base, url], capture_output=True, timeout=30, check=False)
        assert b"No required SSL certificate was sent" in refused.stdout  # negative control


def _raw(ca: RunningCa, request: bytes) -> tuple[str, dict[str, str], bytes]:
    """One HTTP/1.1 exchange written byte for byte, as an embedded EST client sends it."""
    host, port = ca.url.removeprefix("https://").rsplit(":", 1)
    context = ssl.create_default_context(cafile=ca.root)
    with (
        socket.create_connection((host, int(port)), timeout=30) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        tls.sendall(request)
        received = b""
        while chunk := tls.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status, *lines = head.decode().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}
    return status, headers, body


def test_raw_messages_shaped_like_rfc7030_appendix_a(ca, tmp_path):
    """Raw HTTP/1.1 as an embedded client writes it, after the layout of RFC 7030 Appendix A
    (A.1 cacerts, A.2 simpleenroll): base64 in 64-column CRLF lines, Content-Transfer-Encoding
    on the request, Basic credentials. The RFC's own bytes are tested below; its
    certificates would not chain to this CA, so this CA's messages take their layout."""
    host = ca.url.removeprefix("https://")
    status, headers, body = _raw(
        ca,
        f"GET /.well-known/est/cacerts HTTP/1.1\r\nUser-Agent: curl/7.22.0\r\n"
        f"Host: {host}\r\nAccept: */*\r\nConnection: close\r\n\r\n".encode(),
    )
    assert status == "HTTP/1.1 200 OK"
    assert headers["content-type"] == "application/pkcs7-mime; smime-type=certs-only"
    assert headers["content-transfer-encoding"] == "base64"
    assert len(pkcs7_certs(Answer(status=200, headers=headers, body=body))) == 2
    token = ca.token(WEB)
    der = base64.b64decode(csr_b64(tmp_path, WEB).read_bytes())
    text = base64.b64encode(der).decode()
    wrapped = "\r\n".join(text[i : i + 64] for i in range(0, len(text), 64)) + "\r\n"
    basic = base64.b64encode(f"estuser:{token}".encode()).decode()
    status, headers, body = _raw(
        ca,
        f"POST /.well-known/est/simpleenroll HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Basic {basic}\r\nContent-Type: application/pkcs10\r\n"
        f"Content-Transfer-Encoding: base64\r\nContent-Length: {len(wrapped)}\r\n"
        f"Connection: close\r\n\r\n{wrapped}".encode(),
    )
    assert status == "HTTP/1.1 200 OK", body
    assert headers["content-type"] == "application/pkcs7-mime; smime-type=certs-only"
    assert headers["content-transfer-encoding"] == "base64"
    (cert,) = pkcs7_certs(Answer(status=200, headers=headers, body=body))
    assert _identity(cert) == WEB


def test_workload_token_waiting_for_approval_polls_with_a_fresh_token(
    setup, tmp_path, run_cli, monkeypatch
):
    """With id tokens a poll is a new token (the first one's jti is spent) and the same CSR:
    it finds the waiting request instead of queueing a second one."""
    ca, key = setup
    monkeypatch.setenv("MTLSKIT_CA_PASSPHRASE", PASSPHRASE)
    identity = "spiffe://acme.com/ns/prod/sa/ledger"
    b64 = csr_b64(tmp_path, identity)
    for _ in range(2):
        token = _k8s_token(key, "prod", "ledger")
        waiting = _enroll(ca, b64, "-H", f"Authorization: Bearer {token}")
        assert waiting.status == 202 and "retry-after" in waiting.headers, waiting.body
    _approve_the_request(ca, run_cli, identity, tmp_path / "bob")
    done = _enroll(ca, b64, "-H", f"Authorization: Bearer {_k8s_token(key, 'prod', 'ledger')}")
    assert done.status == 200, done.body
    assert _identity(pkcs7_certs(done)[0]) == identity


def test_failed_tokens_are_rate_limited_per_address(tmp_path):
    """As on /v1/enroll (--max-token-failures): 429 with Retry-After, and no audit entry."""
    running = serve(init_ca(tmp_path / "limited"), "--max-token-failures", "3")
    try:
        b64 = csr_b64(tmp_path, WEB)
        answers = [_enroll(running, b64, "-u", "d:mtk1_" + "B" * 43) for _ in range(5)]
        assert [a.status for a in answers] == [401, 401, 401, 429, 429]
        assert answers[3].body.startswith(b"rate_limited: ")
        assert int(answers[3].headers["retry-after"]) > 0
        assert len(_events(running, "est_refused")) == 3
    finally:
        running.stop()


def _eku(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def test_a_label_enrolls_and_reenrolls_under_its_profile(ca, tmp_path):
    """ca.toml [est.labels] svid = "spiffe": /.well-known/est/svid/... issues X509-SVIDs
    (EKU serverAuth + clientAuth); the unlabelled path keeps the CA's client-auth."""
    identity = "spiffe://acme.com/svid/1"
    b64 = csr_b64(tmp_path, identity)
    answer = _enroll(ca, b64, "-u", f"d:{ca.token(identity)}", path="svid/simpleenroll")
    assert answer.status == 200, answer.body
    (svid,) = pkcs7_certs(answer)
    assert _identity(svid) == identity
    assert _eku(svid) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    plain = _enroll(ca, csr_b64(tmp_path, identity, "p"), "-u", f"d:{ca.token(identity)}")
    assert _eku(pkcs7_certs(plain)[0]) == [ExtendedKeyUsageOID.CLIENT_AUTH]  # control
    cert = tmp_path / "svid.pem"
    cert.write_bytes(svid.public_bytes(serialization.Encoding.PEM))
    again = curl(
        ca, "svid/simplereenroll", "--cert", cert, "--key", tmp_path / "req.key",
        "--data-binary", f"@{csr_b64(tmp_path, identity, 'next')}",
        "-H", "Content-Type: application/pkcs10",
    )  # fmt: skip
    assert again.status == 200, again.body
    assert _eku(pkcs7_certs(again)[0]) == _eku(svid)
    assert set(pkcs7_certs(curl(ca, "svid/cacerts"))) == set(pkcs7_certs(curl(ca, "cacerts")))
    assert curl(ca, "svid/csrattrs").status == 200


def test_an_unknown_label_is_404_est_label_unknown_and_burns_nothing(ca, tmp_path):
    for path in ("nope/cacerts", "nope/csrattrs"):
        answer = curl(ca, path)
        assert answer.status == 404 and answer.body.startswith(b"est_label_unknown: "), path
        assert answer.headers["content-type"].startswith("text/plain")
    token = ca.token(WEB)
    audited = len(_events(ca, "est_refused"))
    b64 = csr_b64(tmp_path, WEB)
    for path in ("nope/simpleenroll", "nope/simplereenroll"):
        answer = _enroll(ca, b64, "-u", f"d:{token}", path=path)
        assert answer.status == 404 and answer.body.startswith(b"est_label_unknown: "), path
    refusals = _events(ca, "est_refused")[audited:]
    assert [entry["code"] for entry in refusals] == ["est_label_unknown"] * 2
    assert _enroll(ca, b64, "-u", f"d:{token}").status == 200  # the token was not burned


def test_a_label_added_to_ca_toml_serves_without_a_restart(ca):
    toml = ca.directory / "ca.toml"
    before = toml.read_text()
    assert curl(ca, "later/cacerts").status == 404
    assert before.rstrip().endswith('[est.labels]\nsvid = "spiffe"')  # CONFIG's last table
    toml.write_text(before.rstrip() + '\nlater = "client-auth"\n')
    try:
        assert curl(ca, "later/cacerts").status == 200
    finally:
        toml.write_text(before)
    assert curl(ca, "later/cacerts").status == 404


# --- RFC 7030 Appendix A's own messages (tests/rfc7030_vectors.py) ---------------------


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """A CA with ca.toml's defaults (``csr_names = "ignore"``): the Appendix A CSR names a
    subject CN and no SAN, which this CA drops rather than refuses."""
    running = serve(init_ca(tmp_path_factory.mktemp("est-plain") / "ca"))
    yield running
    running.stop()


def _vector(text: str) -> bytes:
    return decode_body(text.encode())


def _cn(name: x509.Name) -> str:
    return name.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


def _signed_data_shape(der: bytes) -> dict[str, object]:
    """What RFC 7030 §4.1.3 fixes in a certs-only Simple PKI Response: SignedData, no
    digest algorithms, no content, no signers, certificates and nothing else in them."""
    info = cms.ContentInfo.load(der)
    signed = info["content"]
    crls = signed["crls"]
    return {
        "content_type": info["content_type"].native,
        "version": signed["version"].native,
        "digest_algorithms": len(signed["digest_algorithms"]),
        "encap": signed["encap_content_info"]["content_type"].native,
        "encap_content": signed["encap_content_info"]["content"].native,
        "crls": 0 if isinstance(crls, core.Void) else len(crls),
        "signers": len(signed["signer_infos"]),
        "all_certificates": all(c.name == "certificate" for c in signed["certificates"]),
    }


def _load_certs_only(der: bytes) -> tuple[list[x509.Certificate], list[str]]:
    """cryptography's PKCS#7 loader; also the warnings it gave (its BER fallback)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        certs = pkcs7.load_der_pkcs7_certificates(der)
    return certs, [str(w.message) for w in caught]


def test_appendix_a_cacerts_response_parses_to_its_four_rollover_certificates():
    der = _vector(CACERTS)
    certs, _ = _load_certs_only(der)  # its SET OF certificates is BER order; see below
    named = {(_cn(c.subject), _cn(c.issuer), c.serial_number): c for c in certs}
    assert set(named) == {
        ("estExampleCA OwO", "estExampleCA OwO", 11121883874307308188),
        ("estExampleCA NwO", "estExampleCA OwO", 1),
        ("estExampleCA OwN", "estExampleCA NwN", 2),
        ("estExampleCA NwN", "estExampleCA NwN", 16838569520216125969),
    }
    by_subject = {_cn(c.subject): c for c in certs}
    # a root key rollover: NewWithOld carries the new key, OldWithNew the old one
    assert (
        by_subject["estExampleCA NwO"].public_key() == by_subject["estExampleCA NwN"].public_key()
    )
    assert (
        by_subject["estExampleCA OwN"].public_key() == by_subject["estExampleCA OwO"].public_key()
    )
    # the pipeline docs/est.md gives a client reads the RFC's message too
    pem = openssl("pkcs7", "-inform", "DER", "-print_certs", stdin=der)
    assert set(x509.load_pem_x509_certificates(pem)) == set(certs)
    assert _signed_data_shape(der) == {
        "content_type": "signed_data", "version": "v1", "digest_algorithms": 0, "encap": "data",
        "encap_content": None, "crls": 0, "signers": 0, "all_certificates": True,
    }  # fmt: skip


def test_our_cacerts_answers_in_the_shape_of_appendix_a_and_in_strict_der(plain):
    answer = curl(plain, "cacerts")
    ours = decode_body(answer.body)
    assert _signed_data_shape(ours) == _signed_data_shape(_vector(CACERTS))
    certs, warned = _load_certs_only(ours)
    assert len(certs) == 2
    assert warned == []  # DER: cryptography needs no BER fallback, unlike for the RFC's bytes
    _, rfc_warned = _load_certs_only(_vector(CACERTS))
    assert all("BER" in text for text in rfc_warned)


def _attrs(der: bytes) -> list[tuple[str, ...]]:
    """``CsrAttrs`` as (OID,) or (attribute type, DER of each value...)."""
    parsed = CsrAttrs.load(der)
    assert parsed.dump(force=True) == der  # DER in, the same DER out: nothing was lost
    return [
        (item.chosen.dotted,)
        if item.name == "oid"
        else (item.chosen["type"].dotted, *(v.dump().hex() for v in item.chosen["values"]))
        for item in parsed
    ]


def test_appendix_a_csrattrs_parse_with_the_oids_the_rfc_lists():
    assert _attrs(_vector(CSRATTRS_4_5_2)) == [
        ("1.2.840.113549.1.9.7",),  # challengePassword
        ("1.2.840.10045.2.1", "06052b81040022"),  # id-ecPublicKey: secp384r1
        ("1.2.840.113549.1.9.14", "06072b060101010116"),  # extensionRequest: macAddress
        ("1.2.840.10045.4.3.3",),  # ecdsaWithSHA384
    ]
    printable = (
        "131950617273652053455420617320322e3939392e{}2064617461"  # "Parse SET as 2.999.N data"
    )
    assert _attrs(_vector(CSRATTRS_A_3)) == [
        ("1.3.6.1.1.1.1.22",),  # macAddress
        ("2.999.1", printable.format("31")),
        ("1.2.840.113549.1.9.7",),  # challengePassword
        ("2.999.2", "0603883703", "0603883704", printable.format("32")),  # 2.999.3, 2.999.4
        ("1.3.36.3.3.2.8.1.1.11",),  # brainpoolP384r1
        ("2.16.840.1.101.3.4.2.2",),  # SHA-384
    ]


def test_our_csrattrs_is_application_csrattrs_as_rfc_8951_encodes_it(plain):
    answer = curl(plain, "csrattrs")
    assert answer.status == 200
    assert answer.headers["content-type"] == "application/csrattrs"
    der = decode_body(answer.body)
    assert _attrs(der) == []  # every key type accepted, every name set by the CA: an empty SEQUENCE
    assert b"SEQUENCE" in openssl("asn1parse", "-inform", "DER", stdin=der)
    # ca.toml accepting only P-384 asks for it exactly as §4.5.2's example does
    (p384,) = CsrAttrs.load(csr_attributes(frozenset({"ec-p384"})))
    (_, rfc_p384, _, _) = CsrAttrs.load(_vector(CSRATTRS_4_5_2))
    assert p384.dump() == rfc_p384.dump()
    assert _attrs(csr_attributes(frozenset({"ed25519"}))) == [("1.3.101.112",)]


def _challenge_password(csr: x509.CertificateSigningRequest) -> bytes:
    return csr.attributes.get_attribute_for_oid(AttributeOID.CHALLENGE_PASSWORD).value


def test_appendix_a_simpleenroll_request_parses_and_its_sha1_signature_is_refused(plain, tmp_path):
    """The A.2 request as the RFC sends it (64-column lines) reaches the CSR check: its
    subject and challengePassword read as the RFC shows, and its SHA-1 signature is refused
    with a reason (cryptography no longer verifies SHA-1), recording nothing."""
    csr = x509.load_der_x509_csr(_vector(SIMPLEENROLL_REQUEST))
    assert _cn(csr.subject) == "demostep4 1368141352"
    assert _challenge_password(csr) == b"+rrCir/7+EYu50T4"
    assert csr.public_key().key_size == 2048
    body = tmp_path / "a2.b64"
    body.write_text(SIMPLEENROLL_REQUEST)
    token = plain.token("spiffe://acme.com/device/demostep4")
    before = _records(plain)
    answer = _enroll(plain, body, "-u", f"estuser:{token}")
    assert answer.status == 400, answer.body
    assert answer.body.startswith(b"csr_invalid: csr: CSR is signed with SHA1, "), answer.body
    assert _records(plain) == before


def test_a_csr_shaped_like_appendix_a_gets_the_ca_decided_certificate(plain, tmp_path):
    """A.2's request re-made with SHA-256 (its key is the RFC's secret): subject CN,
    challengePassword, RSA-2048, no SAN. The certificate carries the token's identity and
    the profile's EKU; the CSR's subject is dropped, as the CA sets every name."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "demostep4 1368141352")]))
        .add_attribute(AttributeOID.CHALLENGE_PASSWORD, b"+rrCir/7+EYu50T4")
        .sign(key, hashes.SHA256())
    )
    der = csr.public_bytes(serialization.Encoding.DER)
    body = tmp_path / "shaped.b64"
    text = base64.b64encode(der).decode()
    body.write_text("".join(text[i : i + 64] + "\r\n" for i in range(0, len(text), 64)))
    identity = "spiffe://acme.com/device/demostep4"
    answer = _enroll(plain, body, "-u", f"estuser:{plain.token(identity)}")
    assert answer.status == 200, answer.body
    (cert,) = pkcs7_certs(answer)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(san) == [x509.UniformResourceIdentifier(identity)]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert "demostep4 1368141352" not in cert.subject.rfc4514_string()
    assert cert.public_key() == key.public_key()
    assert _signed_data_shape(decode_body(answer.body)) == _signed_data_shape(
        _vector(SIMPLEENROLL_RESPONSE)
    )


def test_appendix_a_simpleenroll_response_is_the_certificate_for_the_a2_request():
    (cert,), _ = _load_certs_only(_vector(SIMPLEENROLL_RESPONSE))
    assert (_cn(cert.issuer), cert.serial_number) == ("estExampleCA NwN", 21)
    request = x509.load_der_x509_csr(_vector(SIMPLEENROLL_REQUEST))
    assert cert.subject == request.subject
    assert cert.public_key() == request.public_key()
    certs, _ = _load_certs_only(_vector(CACERTS))
    (new_root,) = [c for c in certs if _cn(c.subject) == _cn(c.issuer) == "estExampleCA NwN"]
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = new_root.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest  # issued under A.1's new root key
