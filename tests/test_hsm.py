"""CA keys in a PKCS#11 token (issue 23), with a real SoftHSM2 token in a temp dir.

Every mtlskit command runs as a real process: python-pkcs11 loads one library per
process and SoftHSM2 reads $SOFTHSM2_CONF once, so each test's token stays its own.
The gateway that must accept the token CA's leaves is a real one on 127.0.0.1.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import ssl
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from _gateway_support import EchoBackend, GatewayThread, Site, https_request, write_config
from _servers import free_port, wait_for_log
from ca_server import RunningCa, serve
from conftest import require_program
from mtlskit.certs import generate_private_key, load_certificates
from mtlskit.client import build_csr
from mtlskit.issue import new_token, parse_identity, verify_audit_chain
from mtlskit.store import SqlStore
from pg_cluster import PASSWORD as PG_PASSWORD
from pg_cluster import postgres_cluster  # noqa: F401

MODULES = ("/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so")
PIN = "4711"
GET = b"GET /hello HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


@dataclass
class Token:
    """One throwaway SoftHSM2 token: its conf, its directory, the env every command gets."""

    module: str
    label: str
    tokendir: Path
    env: dict[str, str]

    def run(self, *args: str | os.PathLike[str], env: dict[str, str] | None = None):
        return subprocess.run(
            [sys.executable, "-m", "mtlskit", *map(os.fspath, args)],
            env=env or self.env,
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
        )


def _module() -> str:
    require_program("softhsm2-util")
    for path in MODULES:
        if Path(path).is_file():
            return path
    message = "the SoftHSM2 module (libsofthsm2.so) is not installed; .ci/run installs it"
    if os.environ.get("MTLSKIT_REQUIRE_INTEGRATION") == "1":
        pytest.fail(message)
    pytest.skip(message)


def _token(root: Path, label: str = "mtlskit-test") -> Token:
    module = _module()
    tokendir = root / "tokens"
    tokendir.mkdir(parents=True)
    conf = root / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokendir}\nobjectstore.backend = file\n")
    env = {**os.environ, "SOFTHSM2_CONF": str(conf), "MTLSKIT_PKCS11_PIN": PIN}
    subprocess.run(
        [
            "softhsm2-util",
            "--init-token",
            "--free",
            "--label",
            label,
            "--pin",
            PIN,
            "--so-pin",
            "1234",
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    return Token(module=module, label=label, tokendir=tokendir, env=env)


def _init(token: Token, directory: Path, *extra: str) -> None:
    done = token.run(
        "ca", "init", directory, "--trust-domain", "acme.com", "--key-store", "pkcs11",
        "--pkcs11-module", token.module, "--token-label", token.label, *extra,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def token_ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[Token, Path]:
    root = tmp_path_factory.mktemp("hsm")
    token = _token(root)
    _init(token, root / "ca")
    return token, root / "ca"


def _no_private_key_files(directory: Path) -> None:
    for path in directory.rglob("*"):
        if path.is_file():
            assert b"PRIVATE KEY" not in path.read_bytes(), path
    assert not list(directory.glob("*.key"))


def test_token_ca_issues_revokes_and_publishes_a_crl(token_ca, tmp_path):
    token, ca = token_ca
    config = (ca / "ca.toml").read_text()
    assert "[pkcs11]" in config
    assert "pkcs11:token=mtlskit-test;object=mtlskit-issuing;type=private" in config
    assert PIN not in config
    _no_private_key_files(ca)

    issued = token.run("ca", "issue", ca, "--id", "spiffe://acme.com/web", "--out", tmp_path / "c")
    assert issued.returncode == 0, issued.stderr
    verified = token.run("verify", tmp_path / "c" / "chain.pem", "--trust", ca / "root.pem")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "ACCEPT" in verified.stdout

    leaf = load_certificates((tmp_path / "c" / "cert.pem").read_bytes())[0]
    issuing = load_certificates((ca / "issuing.pem").read_bytes())[0]
    leaf.verify_directly_issued_by(issuing)  # the token's issuing key signed it
    revoked = token.run("ca", "revoke", ca, "--cert", tmp_path / "c" / "cert.pem")
    assert revoked.returncode == 0, revoked.stderr
    crl_path = tmp_path / "crl.pem"
    published = token.run("ca", "crl", ca, "--out", crl_path)
    assert published.returncode == 0, published.stderr
    issuer_crl, root_crl = (
        x509.load_pem_x509_crl(b"-----BEGIN" + block)
        for block in crl_path.read_bytes().split(b"-----BEGIN")[1:]
    )
    assert issuer_crl.is_signature_valid(issuing.public_key())
    assert issuer_crl.get_revoked_certificate_by_serial_number(leaf.serial_number) is not None
    root = load_certificates((ca / "root.pem").read_bytes())[0]
    assert root_crl.is_signature_valid(root.public_key())  # the root key signs in the token too
    refused = token.run(
        "verify", tmp_path / "c" / "chain.pem", "--trust", ca / "root.pem", "--crl", crl_path
    )
    assert refused.returncode == 1, refused.stdout + refused.stderr
    audit = token.run("ca", "audit", "verify", ca)
    assert audit.returncode == 0, audit.stdout + audit.stderr


def test_gateway_accepts_a_leaf_of_the_token_ca(token_ca, tmp_path):
    token, ca = token_ca
    out = tmp_path / "client"
    issued = token.run("ca", "issue", ca, "--id", "spiffe://acme.com/api", "--out", out)
    assert issued.returncode == 0, issued.stderr
    backend = EchoBackend()
    site = Site(dir=tmp_path, server_ca=trustme.CA(), backend=backend)
    config = write_config(
        site, (ca / "root.pem").read_bytes(), '[client_auth]\ntrust = ["trust.pem"]\n'
    )
    gateway = GatewayThread(config)
    try:
        context = ssl.create_default_context()
        site.server_ca.configure_trust(context)
        context.load_cert_chain(out / "chain.pem", out / "key.pem")
        assert https_request(gateway.port, context, GET).startswith(b"HTTP/1.1 200")
        stranger = ssl.create_default_context()  # negative control: no client certificate
        site.server_ca.configure_trust(stranger)
        assert not https_request(gateway.port, stranger, GET).startswith(b"HTTP/1.1 200")
    finally:
        gateway.stop()
        backend.stop()


def test_pkcs11_tool_shows_the_keys_sensitive_and_never_extractable(token_ca):
    token, ca = token_ca
    listed = subprocess.run(
        [require_program("pkcs11-tool"), "--module", token.module, "--token-label", token.label,
         "--login", "--pin", PIN, "--list-objects", "--type", "privkey"],
        env=token.env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    blocks = listed.stdout.split("Private Key Object")[1:]
    labels = sorted(
        line.split(":", 1)[1].strip() for b in blocks for line in b.splitlines() if "label:" in line
    )
    assert labels == ["mtlskit-issuing", "mtlskit-root"]
    for block in blocks:
        access = next(line for line in block.splitlines() if "Access:" in line)
        assert "sensitive" in access and "never extractable" in access, access
    _no_private_key_files(ca)


@pytest.mark.parametrize("key_type", ["ec-p384", "rsa-3072"])
def test_other_key_types_in_the_token(key_type, tmp_path):
    token = _token(tmp_path)
    _init(token, tmp_path / "ca", "--key-type", key_type)
    issued = token.run(
        "ca", "issue", tmp_path / "ca", "--id", "spiffe://acme.com/x", "--out", tmp_path / "c"
    )
    assert issued.returncode == 0, issued.stderr
    verified = token.run(
        "verify", tmp_path / "c" / "chain.pem", "--trust", tmp_path / "ca" / "root.pem"
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    issuing = load_certificates((tmp_path / "ca" / "issuing.pem").read_bytes())[0]
    expected = "ecdsa-with-SHA384" if key_type == "ec-p384" else "sha256WithRSAEncryption"
    assert issuing.signature_algorithm_oid._name == expected
    _approver_registers(token, tmp_path / "ca", tmp_path)  # RSA: RSA-PSS in the token


def _approver_registers(token: Token, ca: Path, tmp_path: Path) -> None:
    """The CA key signs an approver's registration in the token too (ECDSA or RSA-PSS)."""
    out = tmp_path / "alice"
    issued = token.run("ca", "issue", ca, "--id", "spiffe://acme.com/alice", "--out", out)
    assert issued.returncode == 0, issued.stderr
    added = token.run("ca", "approvers", "add", ca, "--cert", out / "cert.pem")
    assert added.returncode == 0, added.stdout + added.stderr
    listed = token.run("ca", "approvers", "list", ca)
    assert "spiffe://acme.com/alice" in listed.stdout, listed.stdout + listed.stderr


def test_probe_refuses_a_token_ca_in_one_line(token_ca, tmp_path):
    token, ca = token_ca
    out = tmp_path / "c"
    assert token.run("ca", "issue", ca, "--id", "spiffe://acme.com/p", "--out", out).returncode == 0
    done = token.run(
        "probe", "127.0.0.1:9", "--cert", out / "chain.pem", "--key", out / "key.pem",
        "--ca-dir", ca,
    )  # fmt: skip
    _one_error_line(done, "PKCS#11 token", "file-key test CA")


def test_approver_registration_is_signed_in_the_token(token_ca, tmp_path):
    token, ca = token_ca
    _approver_registers(token, ca, tmp_path)


def _one_error_line(done: subprocess.CompletedProcess[str], *words: str) -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("mtlskit: error: "), done.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_wrong_pin_and_absent_token_are_one_line_exit_2(token_ca, tmp_path):
    token, ca = token_ca
    wrong = {**token.env, "MTLSKIT_PKCS11_PIN": "0000"}
    args = ("ca", "issue", ca, "--id", "spiffe://acme.com/x", "--out", tmp_path / "c")
    _one_error_line(token.run(*args, env=wrong), "wrong PIN")
    no_pin = {key: value for key, value in token.env.items() if key != "MTLSKIT_PKCS11_PIN"}
    _one_error_line(token.run(*args, env=no_pin), "MTLSKIT_PKCS11_PIN")
    empty = tmp_path / "empty-tokens"
    empty.mkdir()
    conf = tmp_path / "other.conf"
    conf.write_text(f"directories.tokendir = {empty}\nobjectstore.backend = file\n")
    _one_error_line(token.run(*args, env={**token.env, "SOFTHSM2_CONF": str(conf)}), "no token")
    assert not (tmp_path / "c").exists()
    _one_error_line(
        token.run("ca", "init", tmp_path / "again", "--key-store", "pkcs11", "--pkcs11-module",
                  token.module, "--token-label", token.label),
        "already holds",
    )  # fmt: skip


def _csr() -> str:
    return build_csr(generate_private_key(), None).public_bytes(serialization.Encoding.PEM).decode()


def _enroll(ca: RunningCa, token: str) -> httpx.Response:
    context = ssl.create_default_context(cafile=ca.root)
    return httpx.post(
        f"{ca.url}/v1/enroll", json={"token": token, "csr": _csr()}, verify=context, timeout=30
    )


def test_serve_refuses_503_while_the_token_is_gone_and_recovers(tmp_path, monkeypatch):
    token = _token(tmp_path)
    ca_dir = tmp_path / "ca"
    _init(token, ca_dir)
    (tmp_path / "ca.pass").write_text(PIN + "\n")  # what serve() passes as --passphrase-file
    (tmp_path / "ca.pass").chmod(0o600)
    monkeypatch.setenv("SOFTHSM2_CONF", token.env["SOFTHSM2_CONF"])  # serve() passes os.environ
    running = serve(ca_dir)
    try:
        first = _enroll(running, running.token("spiffe://acme.com/a"))
        assert first.status_code == 201, first.text
        hidden = tmp_path / "tokens.away"
        token.tokendir.rename(hidden)  # the token is pulled out
        lost = running.token("spiffe://acme.com/b")
        refused = _enroll(running, lost)
        assert refused.status_code == 503, refused.text
        assert refused.json()["code"] == "key_unavailable"
        assert refused.headers["retry-after"] == "1"
        crl = httpx.get(
            f"{running.url}/v1/crl", verify=ssl.create_default_context(cafile=running.root)
        )
        assert crl.status_code == 503 and crl.json()["code"] == "key_unavailable"
        hidden.rename(token.tokendir)  # it comes back: no restart
        again = _enroll(running, lost)  # the token was not burned by the failed attempt
        assert again.status_code == 201, again.text
        crl = httpx.get(
            f"{running.url}/v1/crl", verify=ssl.create_default_context(cafile=running.root)
        )
        assert crl.status_code == 200
    finally:
        running.stop()
    store = running.store()
    try:
        serials = [record.serial for record in store.certificates(now=dt.datetime.now(dt.UTC))]
    finally:
        store.close()
    assert len(serials) == len(set(serials)) == 2
    audit = token.run("ca", "audit", "verify", ca_dir)
    assert audit.returncode == 0, audit.stdout + audit.stderr


def _keypairgen(token: Token, label: str, *flags: str) -> None:
    subprocess.run(
        [require_program("pkcs11-tool"), "--module", token.module, "--token-label", token.label,
         "--login", "--pin", PIN, "--keypairgen", "--key-type", "EC:prime256v1",
         "--label", label, "--usage-sign", *flags],
        env=token.env, capture_output=True, check=True,
    )  # fmt: skip


def test_import_key_uses_keys_already_in_the_token(tmp_path):
    token = _token(tmp_path)
    _keypairgen(token, "mtlskit-root", "--sensitive")
    _keypairgen(token, "mtlskit-issuing", "--sensitive")
    _init(token, tmp_path / "ca", "--import-key")
    issued = token.run(
        "ca", "issue", tmp_path / "ca", "--id", "spiffe://acme.com/x", "--out", tmp_path / "c"
    )
    assert issued.returncode == 0, issued.stderr
    verified = token.run(
        "verify", tmp_path / "c" / "chain.pem", "--trust", tmp_path / "ca" / "root.pem"
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    _no_private_key_files(tmp_path / "ca")


def test_import_key_refuses_an_extractable_key(tmp_path):
    token = _token(tmp_path)
    _keypairgen(token, "mtlskit-root", "--sensitive", "--extractable")
    done = token.run(
        "ca", "init", tmp_path / "ca", "--key-store", "pkcs11", "--import-key", "--no-intermediate",
        "--pkcs11-module", token.module, "--token-label", token.label,
    )  # fmt: skip
    _one_error_line(done, "extractable")
    assert not (tmp_path / "ca").exists()


def test_serve_names_an_edited_pkcs11_table_restart_needed_and_keeps_its_key(tmp_path, monkeypatch):
    token = _token(tmp_path)
    ca_dir = tmp_path / "ca"
    _init(token, ca_dir)
    (tmp_path / "ca.pass").write_text(PIN + "\n")
    (tmp_path / "ca.pass").chmod(0o600)
    monkeypatch.setenv("SOFTHSM2_CONF", token.env["SOFTHSM2_CONF"])
    running = serve(ca_dir)
    try:
        config = ca_dir / "ca.toml"
        config.write_text(config.read_text().replace("object=mtlskit-issuing", "object=other"))
        running.process.send_signal(signal.SIGHUP)
        wait_for_log(running.log_file, "ca.toml reloaded", process=running.process)
        assert "restart needed: pkcs11" in running.errors, running.errors
        issued = _enroll(running, running.token("spiffe://acme.com/a"))
        assert issued.status_code == 201, issued.text
    finally:
        running.stop()


def test_postgres_serve_keeps_the_token_usable_when_the_signature_fails(
    postgres_cluster,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    """PostgreSQL has no group transaction: the CA signs before it redeems, so a token
    pulled out mid-serve burns no enrollment token, records no serial, breaks no chain."""
    url = postgres_cluster.create_database(f"hsm_{uuid.uuid4().hex[:8]}")
    secret = tmp_path / "db.pass"
    secret.write_text(PG_PASSWORD + "\n")
    secret.chmod(0o600)
    bare = url.replace(f":{PG_PASSWORD.replace(' ', '%20')}@", "@")
    token = _token(tmp_path)
    ca_dir = tmp_path / "ca"
    _init(token, ca_dir, "--db", bare, "--db-password-file", secret)
    (tmp_path / "ca.pass").write_text(PIN + "\n")
    (tmp_path / "ca.pass").chmod(0o600)
    monkeypatch.setenv("SOFTHSM2_CONF", token.env["SOFTHSM2_CONF"])
    running = serve(ca_dir)

    def one_time_token(identity: str) -> str:
        value, record = new_token(
            parse_identity(identity), now=dt.datetime.now(dt.UTC), ttl=dt.timedelta(minutes=15)
        )
        store = SqlStore.open(url)
        try:
            store.add_token(record)
        finally:
            store.close()
        return value

    try:
        first = _enroll(running, one_time_token("spiffe://acme.com/a"))
        assert first.status_code == 201, first.text
        hidden = tmp_path / "tokens.away"
        token.tokendir.rename(hidden)  # the token is pulled out
        lost = one_time_token("spiffe://acme.com/b")
        refused = _enroll(running, lost)
        assert refused.status_code == 503, refused.text
        assert refused.json()["code"] == "key_unavailable"
        hidden.rename(token.tokendir)  # it comes back: no restart
        again = _enroll(running, lost)  # the one-time token was not burned
        assert again.status_code == 201, again.text
    finally:
        running.stop()
    store = SqlStore.open(url)
    try:
        serials = [record.serial for record in store.certificates(now=dt.datetime.now(dt.UTC))]
        assert verify_audit_chain(store.audit_entries()) is None
    finally:
        store.close()
    assert len(serials) == len(set(serials)) == 2
    audit = token.run("ca", "audit", "verify", ca_dir)
    assert audit.returncode == 0, audit.stdout + audit.stderr


def _private_labels(token: Token) -> list[str]:
    listed = subprocess.run(
        [require_program("pkcs11-tool"), "--module", token.module, "--token-label", token.label,
         "--login", "--pin", PIN, "--list-objects"],
        env=token.env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return sorted(
        line.split(":", 1)[1].strip()
        for line in listed.stdout.splitlines()
        if line.strip().startswith("label:")
    )


def test_init_that_fails_after_generating_deletes_its_keys_and_a_rerun_works(tmp_path):
    token = _token(tmp_path)
    unreachable = f"postgresql://mtlskit@127.0.0.1:{free_port()}/ca"  # nothing listens there
    done = token.run(
        "ca", "init", tmp_path / "ca", "--trust-domain", "acme.com", "--key-store", "pkcs11",
        "--pkcs11-module", token.module, "--token-label", token.label, "--db", unreachable,
    )  # fmt: skip
    _one_error_line(done, "unavailable")
    assert _private_labels(token) == []  # the two key pairs it made are gone
    assert not (tmp_path / "ca" / "ca.toml").exists()
    _init(token, tmp_path / "ca")  # the same labels again: not refused
    assert _private_labels(token) == ["mtlskit-issuing"] * 2 + ["mtlskit-root"] * 2


def test_init_refused_midway_deletes_only_the_keys_it_generated(tmp_path):
    token = _token(tmp_path)
    _keypairgen(token, "mtlskit-issuing", "--sensitive")  # someone else's key, in the way
    done = token.run(
        "ca", "init", tmp_path / "ca", "--key-store", "pkcs11",
        "--pkcs11-module", token.module, "--token-label", token.label,
    )  # fmt: skip
    _one_error_line(done, "already holds")
    assert _private_labels(token) == ["mtlskit-issuing"] * 2  # its root pair went, that one stays


def test_two_cas_share_one_token_by_key_label(tmp_path):
    token = _token(tmp_path)
    _init(token, tmp_path / "a", "--key-label", "team-a")
    _init(token, tmp_path / "b", "--key-label", "team-b")
    assert "object=team-b-issuing" in (tmp_path / "b" / "ca.toml").read_text()
    assert _private_labels(token) == sorted(
        f"team-{ca}-{role}" for ca in "ab" for role in ("issuing", "root") for _ in range(2)
    )
    for ca, other in (("a", "b"), ("b", "a")):
        out = tmp_path / f"leaf-{ca}"
        issued = token.run(
            "ca", "issue", tmp_path / ca, "--id", "spiffe://acme.com/x", "--out", out
        )
        assert issued.returncode == 0, issued.stderr
        own = token.run("verify", out / "chain.pem", "--trust", tmp_path / ca / "root.pem")
        assert own.returncode == 0 and "ACCEPT" in own.stdout, own.stdout + own.stderr
        leaf = load_certificates((out / "cert.pem").read_bytes())[0]
        leaf.verify_directly_issued_by(
            load_certificates((tmp_path / ca / "issuing.pem").read_bytes())[0]
        )
        foreign = token.run("verify", out / "chain.pem", "--trust", tmp_path / other / "root.pem")
        assert foreign.returncode == 1, foreign.stdout + foreign.stderr
    keys = {
        load_certificates((tmp_path / ca / f"{role}.pem").read_bytes())[0]
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        for ca in "ab"
        for role in ("root", "issuing")
    }
    assert len(keys) == 4  # four key pairs, none shared
    _one_error_line(
        token.run("ca", "init", tmp_path / "c", "--key-store", "pkcs11", "--key-label", "team-a",
                  "--pkcs11-module", token.module, "--token-label", token.label),
        "already holds",
    )  # fmt: skip


def _console_client(root: Path, person: Path) -> httpx.Client:
    context = ssl.create_default_context(cafile=root)
    context.load_cert_chain(person / "chain.pem", person / "key.pem")
    return httpx.Client(verify=context, timeout=30)


def _health(url: str, root: Path, person: Path) -> tuple[int, str, str]:
    """/health as ``person`` (a directory with chain.pem and key.pem): status, the
    #key-status text and the page."""
    import re

    with _console_client(root, person) as client:
        response = client.get(f"{url}/health")
    found = re.search(r'<dd id="key-status">([^<]*)</dd>', response.text)
    return response.status_code, found.group(1) if found else "", response.text


def _revoke(url: str, root: Path, person: Path, serial: str) -> httpx.Response:
    """``person`` revokes ``serial`` from the console (the confirm step's form)."""
    import re

    with _console_client(root, person) as client:
        page = client.get(f"{url}/certificates/{serial}").text
        found = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
        assert found, page
        form = {"csrf": found.group(1), "reason": "keyCompromise", "confirm": "yes"}
        return client.post(f"{url}/certificates/{serial}/revoke", data=form)


def _status(url: str, root: Path, person: Path, serial: str) -> str:
    import re

    with _console_client(root, person) as client:
        page = client.get(f"{url}/certificates/{serial}").text
    found = re.search(r'<dd id="cert-status">([^<]*)</dd>', page)
    assert found, page
    return found.group(1)


def test_console_health_shows_the_token_going_away_and_coming_back(tmp_path, monkeypatch):
    """`ca console` on a token CA: /health says the token signs; with the token directory
    renamed away it says the token is unavailable (the console keeps serving) and a
    revocation is refused before it is recorded (else the store would list it and the
    CRL not, and a retry would say "already revoked"); after the rename back the token
    signs again and the revocation goes through, with no restart."""
    from ca_server import start_console

    token = _token(tmp_path)
    ca_dir = tmp_path / "ca"
    _init(token, ca_dir)
    alice, viewer = "spiffe://acme.com/people/alice", "spiffe://acme.com/people/victor"
    with (ca_dir / "ca.toml").open("a") as handle:
        handle.write(f'\n[console]\napprovers = ["{alice}"]\nviewers = ["{viewer}"]\n')
    for identity, out in ((viewer, "victor"), (alice, "alice"), ("spiffe://acme.com/x", "x")):
        issued = token.run("ca", "issue", ca_dir, "--id", identity, "--out", tmp_path / out)
        assert issued.returncode == 0, issued.stderr
    person, approver = tmp_path / "victor", tmp_path / "alice"
    victim = load_certificates((tmp_path / "x" / "cert.pem").read_bytes())[0]
    serial = f"{victim.serial_number:x}"
    (tmp_path / "ca.pass").write_text(PIN + "\n")  # what start_console passes
    (tmp_path / "ca.pass").chmod(0o600)
    monkeypatch.setenv("SOFTHSM2_CONF", token.env["SOFTHSM2_CONF"])
    console = start_console(ca_dir)
    root = ca_dir / "root.pem"
    name = "PKCS#11 token (pkcs11:token=mtlskit-test;object=mtlskit-issuing;type=private)"
    try:
        status, key, page = _health(console.url, root, person)
        assert status == 200, page
        assert key == f"{name}: signs", key
        assert str(tmp_path) not in page  # the CRL file is named relative to the CA dir
        assert '<dd id="crl-file">crl.pem</dd>' in page
        hidden = tmp_path / "tokens.away"
        token.tokendir.rename(hidden)  # the token is pulled out
        status, key, page = _health(console.url, root, person)
        assert status == 200, page
        assert key.startswith(f"{name}: unavailable (the token cannot sign: "), key
        refused = _revoke(console.url, root, approver, serial)
        assert refused.status_code == 503, refused.text
        assert '<code id="error-code">key_unavailable</code>' in refused.text
        assert _status(console.url, root, person, serial) == "valid"  # nothing recorded
        assert _health(console.url, root, person)[0] == 200  # still serving
        hidden.rename(token.tokendir)  # and comes back
        status, key, page = _health(console.url, root, person)
        assert status == 200, page
        assert key == f"{name}: signs", key
        done = _revoke(console.url, root, approver, serial)
        assert done.status_code == 303, done.text
        assert console.process.poll() is None
    finally:
        console.stop()
    crl = x509.load_pem_x509_crl(
        (ca_dir / "crl.pem").read_bytes().split(b"-----END X509 CRL-----")[0]
        + b"-----END X509 CRL-----"
    )
    assert crl.get_revoked_certificate_by_serial_number(victim.serial_number) is not None
