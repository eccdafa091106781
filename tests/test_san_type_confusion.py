"""SAN-type confusion (issue 27 item 2): a DNS or email SAN whose text is a SPIFFE ID.

acme.com's SVIDs are bound to acme.com's bundle; a partner CA is trusted for its own
clients. Before the fix the partner CA's certificate with ``DNS:spiffe://acme.com/admin``
(or an email SAN of that text) matched ``id = "spiffe://acme.com/admin"``: 200 on the
admin route through the gateway and ``accept`` from ``mtlskit verify``. Every component
is the real one: the CLI as a process, the gateway with real TLS. A URI-looking DNS or
email SAN is also an error for ``mtlskit lint`` (``san_malformed``) and refused by the CA.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import trustme

from _gateway_support import EchoBackend, GatewayThread, Site, https_request, write_config
from conftest import write
from mtlskit.testca import LeafSpec, TestCA

pytestmark = pytest.mark.attack("san-type-confusion")  # issue 27; reliability/redteam.py

ADMIN = "spiffe://acme.com/admin"
POLICY = (
    f'[[allow]]\nid = "{ADMIN}"\nroutes = ["GET /admin/"]\n\n'
    '[[allow]]\ndns = "api.partner.example"\n'
)
# The same text in the two SAN types that are not URIs; the last is a control: a real SVID.
CONFUSED = {
    "dns": LeafSpec(dns=(ADMIN,)),
    "email": LeafSpec(emails=(f"{ADMIN}@partner.example",)),
}


@pytest.fixture(scope="module")
def acme() -> TestCA:
    return TestCA(name="acme")


@pytest.fixture(scope="module")
def partner() -> TestCA:
    return TestCA(name="partner")


def _mtlskit(*args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mtlskit", *map(os.fspath, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _verify(tmp_path: Path, acme: TestCA, partner: TestCA, leaf_pem: bytes) -> tuple[int, dict]:
    client = write(tmp_path / "client.pem", leaf_pem)
    bundle = write(tmp_path / "acme.pem", acme.bundle_pem)
    trust = write(tmp_path / "partner.pem", partner.bundle_pem)
    policy = tmp_path / "policy.toml"
    policy.write_text(f'[[allow]]\nid = "{ADMIN}"\n')
    result = _mtlskit(
        "verify", client, "--spiffe-bundle", f"acme.com={bundle}", "--trust", trust,
        "--policy", policy, "--json",
    )  # fmt: skip
    assert result.returncode in {0, 1}, result.stderr
    return result.returncode, json.loads(result.stdout)


@pytest.mark.parametrize("kind", sorted(CONFUSED))
def test_verify_process_rejects_a_spiffe_id_in_a_dns_or_email_san(tmp_path, acme, partner, kind):
    """`mtlskit verify --spiffe-bundle acme.com=... --trust partner --policy` as a process."""
    spec = CONFUSED[kind]
    if kind == "email":  # the text exactly, too: an email SAN without '@' is no mailbox
        spec = LeafSpec(emails=(ADMIN,))
    code, out = _verify(tmp_path, acme, partner, partner.issue(spec).chain_pem)
    assert (code, out["verdict"]) == (1, "reject")
    assert [reason["code"] for reason in out["reasons"]] == ["identity_not_authorized"]
    assert out["identity"] == {"kind": kind, "value": ADMIN}


def test_verify_process_control_the_real_svid_is_accepted(tmp_path, acme, partner):
    code, out = _verify(tmp_path, acme, partner, acme.issue(LeafSpec(uris=(ADMIN,))).chain_pem)
    assert (code, out["verdict"], out["identity"]["kind"]) == (0, "accept", "spiffe")
    # ...and the partner CA cannot mint the URI SAN either: acme.com has its own bundle.
    code, out = _verify(tmp_path, acme, partner, partner.issue(LeafSpec(uris=(ADMIN,))).chain_pem)
    assert code == 1 and out["verdict"] == "reject", out


@pytest.fixture
def gateway_site(tmp_path: Path, acme: TestCA, partner: TestCA):
    backend = EchoBackend()
    site = Site(dir=tmp_path, server_ca=trustme.CA(), backend=backend)
    (tmp_path / "acme.pem").write_bytes(acme.bundle_pem)
    (tmp_path / "policy.toml").write_text(POLICY)
    config = write_config(
        site,
        partner.bundle_pem,
        '[client_auth]\ntrust = ["trust.pem"]\nspiffe_bundles = { "acme.com" = "acme.pem" }\n'
        'policy = "policy.toml"\n',
    )
    gateway = GatewayThread(config)
    yield site, gateway
    gateway.stop()
    backend.stop()


def _get(site: Site, gateway: GatewayThread, leaf, path: str) -> bytes:
    request = f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode()
    return https_request(gateway.port, site.client_context(leaf), request)


def test_gateway_gives_403_on_the_admin_route(gateway_site, acme, partner):
    site, gateway = gateway_site
    for spec in (*CONFUSED.values(), LeafSpec(dns=(ADMIN,), emails=(f"{ADMIN}@x.example",))):
        confused = partner.issue(spec)
        assert _get(site, gateway, confused, "/admin/secret").startswith(b"HTTP/1.1 403 "), spec
    # controls: the real SVID reaches the admin route, a partner host name its own rule
    svid = acme.issue(LeafSpec(uris=(ADMIN,)))
    assert _get(site, gateway, svid, "/admin/secret").startswith(b"HTTP/1.1 200 ")
    host = partner.issue(LeafSpec(dns=("api.partner.example",)))
    assert _get(site, gateway, host, "/anything").startswith(b"HTTP/1.1 200 ")
    assert site.backend.seen.count("/admin/secret") == 1
    denied = site.wait_for_record(lambda r: r.get("status") == 403, which="access")
    assert denied["code"] == "identity_not_authorized"


@pytest.mark.parametrize("kind", sorted(CONFUSED))
def test_lint_process_calls_a_uri_looking_dns_or_email_san_malformed(tmp_path, partner, kind):
    """`mtlskit lint` as a process: an error, so a CA or a reviewer stops it."""
    leaf = write(tmp_path / "leaf.pem", partner.issue(CONFUSED[kind]).cert_pem)
    result = _mtlskit("lint", leaf, "--json")
    assert result.returncode == 1, result.stderr
    findings = json.loads(result.stdout)["results"][0]["findings"]
    malformed = [f for f in findings if f["code"] == "san_malformed"]
    assert [f["severity"] for f in malformed] == ["error"]
    assert "looks like a URI" in malformed[0]["message"]
    # control: a host name and a mailbox are well-formed
    clean = partner.issue(LeafSpec(dns=("api.partner.example",), emails=("ops@partner.example",)))
    result = _mtlskit("lint", write(tmp_path / "clean.pem", clean.cert_pem), "--json")
    codes = [f["code"] for f in json.loads(result.stdout)["results"][0]["findings"]]
    assert "san_malformed" not in codes


@pytest.mark.parametrize("identity", [f"admin@{ADMIN}", f"{ADMIN}@partner.example"])
def test_ca_refuses_to_issue_a_uri_looking_email_identity(tmp_path, identity):
    """`mtlskit ca issue --id` as a process: one line, exit 2, nothing issued."""
    passphrase = tmp_path / "pass"
    passphrase.write_text("correct horse battery staple\n")
    passphrase.chmod(0o600)
    ca_dir = tmp_path / "ca"
    made = _mtlskit(
        "ca", "init", ca_dir, "--allow", "*", "--passphrase-file", passphrase
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    result = _mtlskit(
        "ca", "issue", ca_dir, "--id", identity, "--out", tmp_path / "c",
        "--passphrase-file", passphrase,
    )  # fmt: skip
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and "--id" in result.stderr, result.stderr
    assert not (tmp_path / "c").exists()
    listed = _mtlskit("ca", "list", ca_dir, "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout) == {"certificates": []}
    # control: the same CA issues a mailbox
    result = _mtlskit(
        "ca", "issue", ca_dir, "--id", "ops@partner.example", "--out", tmp_path / "c",
        "--passphrase-file", passphrase,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
