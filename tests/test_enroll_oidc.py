"""Enrollment with workload-identity tokens (issue 22, part 1) against a real `ca serve`.

Issuers: a Kubernetes-shaped one (projected service-account tokens, claims as the API
server sets them) and a GitHub-Actions-shaped one, both from static JWKS files whose
keys the test makes with joserfc. The CA verifies, templates the identity from claims,
burns the ``jti`` in its database and issues; every refusal has its stable code, and
its detail goes to the audit log only. Clients are the real `mtlskit enroll` or httpx.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import shutil
import ssl
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, OKPKey, RSAKey

from _servers import free_port
from ca_server import RunningCa, init_ca, serve
from conftest import require_program
from mtlskit.certs import generate_private_key
from mtlskit.client import build_csr
from mtlskit.issue import verify_audit_chain
from mtlskit.store import SqlStore
from pg_cluster import PASSWORD, PostgresCluster, postgres_cluster  # noqa: F401

K8S = "https://kubernetes.default.svc.cluster.local"
GH = "https://token.actions.githubusercontent.com"
AUDIENCE = "mtlskit-ca"
K8S_TEMPLATE = (
    "spiffe://acme.com/ns/{kubernetes.io.namespace}/sa/{kubernetes.io.serviceaccount.name}"
)
PROVISIONERS = f"""
[[provisioners]]
kind = "oidc"
name = "k8s"
issuer = "{K8S}"
jwks = "k8s-jwks.json"
audience = "{AUDIENCE}"
max_token_age = "1h"
identity = "{K8S_TEMPLATE}"

[[provisioners]]
kind = "oidc"
name = "github"
issuer = "{GH}"
jwks = "gh-jwks.json"
audience = "https://github.com/acme"
max_token_age = "10m"
identity = "spiffe://acme.com/gh/{{repository_owner}}/{{repository_id}}"
[provisioners.require]
repository_owner = "acme"

[[provisioners]]
kind = "oidc"
name = "k8s-outside"
issuer = "{K8S}"
jwks = "k8s-jwks.json"
audience = "outside"
identity = "spiffe://other.org/{{sub}}"
"""


class Issuer:
    """A JWKS-file issuer: its signing keys, and tokens signed by them."""

    def __init__(self, iss: str, keys: list, path: Path) -> None:
        self.iss, self.keys, self.path = iss, keys, path
        self.publish()

    def publish(self) -> None:
        self.path.write_text(json.dumps(KeySet(self.keys).as_dict(private=False)))

    def token(self, claims: dict, *, key=None, alg: str | None = None, **header) -> str:
        key = key or self.keys[0]
        alg = alg or {"RSA": "RS256", "EC": "ES256", "OKP": "EdDSA"}[key.key_type]
        header = {"alg": alg, "kid": key.kid, **header}
        return jwt.encode(header, claims, key, algorithms=[alg])


def _now() -> int:
    return int(time.time())


def k8s_claims(namespace: str = "billing", account: str = "payments", **extra) -> dict:
    """What a projected service-account token carries (Kubernetes 1.29+ bound tokens)."""
    now = _now()
    claims = {
        "aud": [AUDIENCE],
        "exp": now + 600,
        "iat": now,
        "nbf": now,
        "iss": K8S,
        "jti": str(uuid.uuid4()),
        "kubernetes.io": {
            "namespace": namespace,
            "node": {"name": "node-1", "uid": str(uuid.uuid4())},
            "pod": {"name": f"{account}-7d9f8b6c5-x2x4z", "uid": str(uuid.uuid4())},
            "serviceaccount": {"name": account, "uid": str(uuid.uuid4())},
        },
        "sub": f"system:serviceaccount:{namespace}:{account}",
    }
    claims.update(extra)
    return claims


def gh_claims(owner: str = "acme", **extra) -> dict:
    now = _now()
    claims = {
        "aud": "https://github.com/acme",
        "iss": GH,
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": str(uuid.uuid4()),
        "sub": f"repo:{owner}/app:ref:refs/heads/main",
        "repository": f"{owner}/app",
        "repository_owner": owner,
        "repository_id": "74125846",
        "ref": "refs/heads/main",
        "workflow": "deploy",
    }
    claims.update(extra)
    return claims


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("oidc")
    directory = init_ca(base / "ca", approval=PROVISIONERS)
    k8s = Issuer(
        K8S,
        [
            RSAKey.generate_key(2048, parameters={"kid": "k8s-1"}),
            ECKey.generate_key("P-256", parameters={"kid": "k8s-2"}),
        ],
        directory / "k8s-jwks.json",
    )
    gh = Issuer(
        GH, [OKPKey.generate_key("Ed25519", parameters={"kid": "gh-1"})], directory / "gh-jwks.json"
    )
    running = serve(directory, "--max-token-failures", "1000")
    yield running, k8s, gh
    running.stop()


def _csr() -> str:
    return build_csr(generate_private_key()).public_bytes(serialization.Encoding.PEM).decode()


def _post(ca: RunningCa, body: dict) -> httpx.Response:
    context = ssl.create_default_context(cafile=ca.root)
    return httpx.post(f"{ca.url}/v1/enroll", json=body, verify=context, timeout=30)


def _enroll(ca: RunningCa, token: str) -> httpx.Response:
    return _post(ca, {"id_token": token, "csr": _csr()})


def _identity(response: httpx.Response) -> str:
    cert = x509.load_pem_x509_certificate(response.json()["certificate"].encode())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    (uri,) = san.get_values_for_type(x509.UniformResourceIdentifier)
    assert san.get_values_for_type(x509.DNSName) == []
    return uri


def _audit(ca: RunningCa, event: str) -> list[dict]:
    store = ca.store()
    try:
        entries = store.audit_entries()
    finally:
        store.close()
    return [json.loads(entry.detail) for entry in entries if entry.event == event]


def _cli_enroll(ca: RunningCa, out: Path, *token: str, env: dict | None = None) -> str:
    """``mtlskit enroll URL TOKEN-OPTION... --json`` as a workload runs it: the identity it
    printed, checked to be the one URI SAN of the certificate it wrote to ``out``."""
    run = subprocess.run(
        [sys.executable, "-m", "mtlskit", "enroll", ca.url, *token, "--out", str(out),
         "--ca-fingerprint", ca.fingerprint, "--json"],
        capture_output=True, text=True, timeout=120, check=False, env={**os.environ, **(env or {})},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    identity = json.loads(run.stdout)["identity"]
    cert = x509.load_pem_x509_certificate((out / "cert.pem").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [identity]
    return identity


def fresh_claims(iss: str, **extra) -> dict:
    """The registered claims a provisioner with ``audience = "mtlskit"`` needs, for a minute."""
    now = _now()
    return {"iss": iss, "aud": "mtlskit", "iat": now, "exp": now + 60, **extra}


def _provision(ca: RunningCa, name: str, iss: str, identity: str, *, jwks: bool = True) -> Issuer:
    """A ``[[provisioners]]`` entry appended to the running CA's ca.toml (read before the next
    decision, no SIGHUP) and its issuer: one P-256 key, in ``NAME-jwks.json`` with ``jwks``,
    else found by discovery at ``iss``."""
    issuer = Issuer(
        iss,
        [ECKey.generate_key("P-256", parameters={"kid": f"{name}-1"})],
        ca.directory / f"{name}-jwks.json",
    )
    keys = f'jwks = "{name}-jwks.json"\n' if jwks else ""
    with (ca.directory / "ca.toml").open("a") as handle:
        handle.write(
            f'\n[[provisioners]]\nkind = "oidc"\nname = "{name}"\nissuer = "{iss}"\n{keys}'
            f'audience = "mtlskit"\nidentity = "{identity}"\n'
        )
    return issuer


def test_kubernetes_token_enrolls_with_the_cli_as_exactly_the_templated_identity(setup, tmp_path):
    ca, k8s, _ = setup
    token_file = tmp_path / "token"
    token_file.write_text(k8s.token(k8s_claims("billing", "payments")) + "\n")
    wanted = "spiffe://acme.com/ns/billing/sa/payments"
    assert _cli_enroll(ca, tmp_path / "out", "--id-token-file", str(token_file)) == wanted
    assert (tmp_path / "out" / "key.pem").stat().st_mode & 0o777 == 0o600


def test_id_token_from_an_environment_variable(setup, tmp_path):
    ca, k8s, _ = setup
    env = {"K8S_TOKEN": k8s.token(k8s_claims("web", "frontend"))}
    identity = _cli_enroll(ca, tmp_path / "out", "--id-token-env", "K8S_TOKEN", env=env)
    assert identity == "spiffe://acme.com/ns/web/sa/frontend"


def test_es256_eddsa_and_ed25519_verify(setup):
    ca, k8s, gh = setup
    response = _enroll(ca, k8s.token(k8s_claims("ops", "backup"), key=k8s.keys[1]))
    assert response.status_code == 201, response.text
    assert _identity(response) == "spiffe://acme.com/ns/ops/sa/backup"
    for alg in ("EdDSA", "Ed25519"):  # RFC 8037's name and RFC 9864's for the same signature
        response = _enroll(ca, gh.token(gh_claims(), alg=alg))
        assert response.status_code == 201, response.text
        assert _identity(response) == "spiffe://acme.com/gh/acme/74125846"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(header: dict, claims: dict) -> str:
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"


def _alg_none(k8s: Issuer) -> str:
    return _unsigned({"alg": "none", "typ": "JWT"}, k8s_claims()) + "."


def _hs256_with_public_key(k8s: Issuer) -> str:
    """The classic confusion attack: HMAC keyed with the issuer's (public) RSA key."""
    public = k8s.keys[0].as_pem(private=False)
    signing_input = _unsigned({"alg": "HS256", "kid": "k8s-1", "typ": "JWT"}, k8s_claims())
    mac = hmac.new(public, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


def _wrong_key(k8s: Issuer) -> str:
    impostor = RSAKey.generate_key(2048, parameters={"kid": "k8s-1"})
    return k8s.token(k8s_claims(), key=impostor)


NEGATIVES = {
    "wrong key": (_wrong_key, "token_signature_invalid", 401),
    "alg none": (_alg_none, "token_signature_invalid", 401),
    "HS256 with the public key": (_hs256_with_public_key, "token_signature_invalid", 401),
    "alg as a list": (
        lambda k: _unsigned({"alg": ["RS256"], "kid": "k8s-1"}, k8s_claims()) + ".AAAA",
        "token_signature_invalid",
        401,
    ),
    "wrong audience": (
        lambda k: k.token(k8s_claims(aud=["kubelet"])),
        "token_audience_mismatch",
        401,
    ),
    "expired": (
        lambda k: k.token(k8s_claims(iat=_now() - 1200, nbf=_now() - 1200, exp=_now() - 600)),
        "token_expired",
        401,
    ),
    "older than max_token_age": (
        lambda k: k.token(k8s_claims(iat=_now() - 7200, nbf=_now() - 7200)),
        "token_expired",
        401,
    ),
    "not yet valid": (
        lambda k: k.token(k8s_claims(nbf=_now() + 900, iat=_now())),
        "token_not_yet_valid",
        401,
    ),
    "unknown issuer": (
        lambda k: k.token(k8s_claims(iss="https://evil.example")),
        "token_issuer_unknown",
        401,
    ),
    "not a JWT": (lambda k: "not.a-jwt", "token_invalid", 401),
    "namespace ../": (
        lambda k: k.token(k8s_claims(namespace="../admin")),
        "template_value_invalid",
        403,
    ),
    "namespace ..": (lambda k: k.token(k8s_claims(namespace="..")), "template_value_invalid", 403),
    "service account a/b": (
        lambda k: k.token(k8s_claims(account="pay/../../root")),
        "template_value_invalid",
        403,
    ),
    "percent-encoded slash": (
        lambda k: k.token(k8s_claims(account="a%2Fb")),
        "template_value_invalid",
        403,
    ),
    "empty namespace": (lambda k: k.token(k8s_claims(namespace="")), "template_value_invalid", 403),
    "template outside allowed_ids": (
        lambda k: k.token(k8s_claims(aud="outside", sub="x")),
        "issuance_refused",
        403,
    ),
}


@pytest.mark.parametrize("case", list(NEGATIVES))
def test_refused_with_its_code_and_audited(setup, case):
    ca, k8s, _ = setup
    make, code, status = NEGATIVES[case]
    response = _enroll(ca, make(k8s))
    assert (response.status_code, response.json()["code"]) == (status, code), response.text
    if code.startswith(("token_", "template_")):
        entries = _audit(ca, "id_token_refused")
        assert entries[-1]["code"] == code
        assert entries[-1]["detail"]  # what exactly: for operators, not in the response
        assert entries[-1]["detail"] not in response.text


def test_claims_outside_require_are_refused(setup):
    ca, _, gh = setup
    response = _enroll(ca, gh.token(gh_claims(owner="evil")))
    assert (response.status_code, response.json()["code"]) == (403, "claims_not_allowed")
    entry = _audit(ca, "id_token_refused")[-1]
    assert "repository_owner" in entry["detail"]
    # who the token says it is, for the operator (unverified, so only in the audit log)
    assert (entry["claimed_iss"], entry["claimed_sub"]) == (GH, "repo:evil/app:ref:refs/heads/main")


def test_a_jti_is_single_use(setup):
    ca, k8s, _ = setup
    token = k8s.token(k8s_claims("billing", "replayed"))
    first = _enroll(ca, token)
    assert first.status_code == 201, first.text
    again = _enroll(ca, token)
    assert (again.status_code, again.json()["code"]) == (409, "token_replayed")
    jti = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))["jti"]
    assert [e["jti"] for e in _audit(ca, "id_token_refused") if e.get("jti") == jti] == [jti]


def test_rotated_keys_are_fetched_once_for_an_unknown_kid(setup):
    ca, k8s, _ = setup
    rotated = RSAKey.generate_key(2048, parameters={"kid": "k8s-rotated"})
    k8s.keys.append(rotated)
    k8s.publish()  # the running CA read the old file; the new kid makes it read again
    response = _enroll(ca, k8s.token(k8s_claims("billing", "rotated"), key=rotated))
    assert response.status_code == 201, response.text
    assert _identity(response) == "spiffe://acme.com/ns/billing/sa/rotated"
    stranger = RSAKey.generate_key(2048, parameters={"kid": "made-up"})
    response = _enroll(ca, k8s.token(k8s_claims(), key=stranger))
    assert response.json()["code"] == "token_signature_invalid"


def test_a_provisioner_added_to_ca_toml_is_trusted_without_a_restart(setup, tmp_path):
    ca, _, _ = setup
    ci = _provision(ca, "ci", "https://ci.acme.com", "spiffe://acme.com/ci/{project}")
    response = _enroll(ca, ci.token(fresh_claims(ci.iss, project="deploy-bot")))
    assert response.status_code == 201, response.text
    assert _identity(response) == "spiffe://acme.com/ci/deploy-bot"
    line = next(line for line in ca.errors.splitlines() if "ca.toml reloaded" in line)
    assert "provisioners: +ci" in line, line


def test_an_issuer_whose_keys_cannot_be_fetched_is_503_not_the_clients_fault(setup):
    ca, _, _ = setup
    gone = f"http://127.0.0.1:{free_port()}"  # nothing listens: discovery cannot connect
    issuer = _provision(ca, "gone", gone, "spiffe://acme.com/gone/{sub}", jwks=False)
    response = _enroll(ca, issuer.token(fresh_claims(gone, sub="s")))
    assert (response.status_code, response.json()["code"]) == (503, "token_issuer_unavailable")
    assert "provisioner gone: keys unavailable" in ca.errors


def test_a_claim_that_breaks_a_templated_trust_domain_is_template_value_invalid(setup):
    ca, _, _ = setup
    tenants = _provision(
        ca, "tenants", "https://tenants.acme.com", "spiffe://{tenant}.acme.com/svc"
    )
    evil = fresh_claims(tenants.iss, tenant="EVIL")  # no upper case in a trust domain
    response = _enroll(ca, tenants.token(evil))
    assert (response.status_code, response.json()["code"]) == (403, "template_value_invalid")


def test_token_and_id_token_together_is_a_bad_request(setup):
    ca, k8s, _ = setup
    response = _post(ca, {"token": "mtk1_x", "id_token": k8s.token(k8s_claims()), "csr": _csr()})
    assert (response.status_code, response.json()["code"]) == (400, "request_invalid")


# --- a real OpenID Provider: panva/oidc-provider, run by node ------------------------

OIDC_DIR = Path(__file__).resolve().parent / "oidc"
RESOURCE = "https://ca.mtlskit.test"
CLIENT_ID, CLIENT_SECRET = "billing-batch", "a client secret for tests only"


def _oidc_modules() -> Path:
    """A directory with tests/oidc's locked node_modules: ``npm ci`` once into a cache
    keyed by the lock file's hash (reused by later runs), then the provider script."""
    require_program("node")
    npm = require_program("npm")
    lock = (OIDC_DIR / "package-lock.json").read_bytes()
    root = Path(os.environ.get("MTLSKIT_TEST_CACHE", Path.home() / ".cache" / "mtlskit-tests"))
    target = root / f"oidc-provider-{hashlib.sha256(lock).hexdigest()[:16]}"
    if not (target / "node_modules" / "oidc-provider" / "package.json").exists():
        staging = root / f"{target.name}.{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copy(OIDC_DIR / name, staging / name)
        run = subprocess.run(
            [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
            cwd=staging, capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        assert run.returncode == 0, f"npm ci failed:\n{run.stdout}\n{run.stderr}"
        try:
            staging.rename(target)
        except OSError:  # another run installed it meanwhile
            shutil.rmtree(staging, ignore_errors=True)
    script = (OIDC_DIR / "provider.mjs").read_bytes()
    (target / f"provider-{hashlib.sha256(script).hexdigest()[:16]}.mjs").write_bytes(script)
    return target / f"provider-{hashlib.sha256(script).hexdigest()[:16]}.mjs"


@pytest.fixture(scope="module")
def op(tmp_path_factory):
    """oidc-provider on 127.0.0.1 with keys made here; yields its issuer URL."""
    script = _oidc_modules()
    base = tmp_path_factory.mktemp("op")
    keys = KeySet(
        [
            ECKey.generate_key("P-256", parameters={"kid": "op-ec", "use": "sig", "alg": "ES256"}),
            RSAKey.generate_key(2048, parameters={"kid": "op-rsa", "use": "sig", "alg": "RS256"}),
        ]
    )
    (base / "keys.json").write_text(json.dumps(keys.as_dict(private=True)))
    client = {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "grant_types": ["client_credentials"],
        "redirect_uris": [],
        "response_types": [],
        "token_endpoint_auth_method": "client_secret_basic",
    }
    (base / "clients.json").write_text(json.dumps([client]))
    port = free_port()
    log = (base / "op.log").open("w")
    args = [str(port), str(base / "keys.json"), str(base / "clients.json")]
    process = subprocess.Popen(
        ["node", str(script), *args],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env={**os.environ, "OIDC_RESOURCE": RESOURCE},
    )
    log.close()
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("listening "):
        process.kill()
        process.wait()
        raise RuntimeError(f"oidc-provider did not start: {line}{(base / 'op.log').read_text()}")
    yield line.split()[1]
    process.terminate()
    process.wait(timeout=10)
    process.stdout.close()


def _client_credentials(issuer: str) -> str:
    """A JWT access token (RFC 9068) for the CA, by the client_credentials grant."""
    discovery = httpx.get(f"{issuer}/.well-known/openid-configuration", timeout=10).json()
    response = httpx.post(
        discovery["token_endpoint"],
        data={"grant_type": "client_credentials", "scope": "enroll", "resource": RESOURCE},
        auth=(CLIENT_ID, CLIENT_SECRET),
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


@pytest.fixture(scope="module")
def op_ca(op, tmp_path_factory):
    provisioner = f"""
[[provisioners]]
kind = "oidc"
name = "corp-op"
issuer = "{op}"
audience = "{RESOURCE}"
max_token_age = "10m"
identity = "spiffe://acme.com/oidc/{{client_id}}"
[provisioners.require]
scope = "enroll"
"""
    directory = init_ca(tmp_path_factory.mktemp("op-ca") / "ca", approval=provisioner)
    running = serve(directory, "--max-token-failures", "1000")
    yield running
    running.stop()


def test_a_token_from_a_real_openid_provider_enrolls_once(op, op_ca, tmp_path):
    token = _client_credentials(op)
    identity = _cli_enroll(
        op_ca, tmp_path / "out", "--id-token-env", "OP_TOKEN", env={"OP_TOKEN": token}
    )
    assert identity == "spiffe://acme.com/oidc/billing-batch"
    again = _enroll(op_ca, token)  # the OP's jti, burned in the CA's database
    assert (again.status_code, again.json()["code"]) == (409, "token_replayed")
    fresh = _enroll(op_ca, _client_credentials(op))  # a new token: a new jti
    assert fresh.status_code == 201, fresh.text


def test_a_real_openid_providers_token_for_another_ca_is_refused(op, op_ca, setup):
    other_ca, _, _ = setup  # trusts Kubernetes and GitHub, not this OP
    response = _enroll(other_ca, _client_credentials(op))
    assert (response.status_code, response.json()["code"]) == (401, "token_issuer_unknown")


# --- replay across CA nodes on one PostgreSQL ------------------------------------------


@pytest.fixture(scope="module")
def pg_nodes(postgres_cluster: PostgresCluster, tmp_path_factory):  # noqa: F811
    url = postgres_cluster.create_database(f"oidc_{uuid.uuid4().hex[:8]}")
    base = tmp_path_factory.mktemp("oidc-pg")
    secret = base / "db.pass"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o600)
    bare = url.replace(f":{PASSWORD.replace(' ', '%20')}@", "@")
    directory = init_ca(
        base / "ca", "--db", bare, "--db-password-file", str(secret), approval=PROVISIONERS
    )
    k8s = Issuer(
        K8S, [RSAKey.generate_key(2048, parameters={"kid": "k8s-1"})], directory / "k8s-jwks.json"
    )
    Issuer(GH, [OKPKey.generate_key("Ed25519")], directory / "gh-jwks.json")
    nodes: list[RunningCa] = []
    try:
        for _ in range(2):  # one directory: the same keys, ca.toml and database
            nodes.append(serve(directory, "--max-token-failures", "1000"))
        yield nodes, k8s, url
    finally:
        for node in nodes:
            node.stop()


def test_a_jti_is_single_use_across_two_nodes_on_postgresql(pg_nodes):
    nodes, k8s, url = pg_nodes
    token = k8s.token(k8s_claims("billing", "raced"))
    with ThreadPoolExecutor(max_workers=16) as pool:
        responses = list(pool.map(lambda i: _enroll(nodes[i % 2], token), range(16)))
    outcomes = sorted((r.status_code, r.json().get("code", "issued")) for r in responses)
    assert outcomes == [(201, "issued")] + [(409, "token_replayed")] * 15
    jti = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))["jti"]
    store = SqlStore.open(url)
    try:
        entries = store.audit_entries()
    finally:
        store.close()
    assert verify_audit_chain(entries) is None
    events = [(e.event, json.loads(e.detail)) for e in entries]
    assert [name for name, detail in events if detail.get("jti") == jti].count("id_token") == 1
    refused = [d for name, d in events if name == "id_token_refused" and d.get("jti") == jti]
    assert len(refused) == 15 and {d["code"] for d in refused} == {"token_replayed"}


# --- ca.toml: a provisioner that cannot work is refused when the file is read ----------

_BASE = 'name = "ca"\ntrust_domain = "acme.com"\n'
_GOOD = {
    "kind": '"oidc"',
    "name": '"k8s"',
    "issuer": f'"{K8S}"',
    "jwks": '"k8s-jwks.json"',
    "audience": '"mtlskit-ca"',
    "identity": f'"{K8S_TEMPLATE}"',
}
BAD_PROVISIONERS = {
    "unbalanced brace": ({"identity": '"spiffe://acme.com/{sub"'}, "unbalanced brace"),
    "empty claim path": ({"identity": '"spiffe://acme.com/{}"'}, "empty claim path"),
    "dotted path with an empty part": ({"identity": '"spiffe://acme.com/{a..b}"'}, "empty"),
    "template that is no identity": ({"identity": '"spiffe://ACME.com/{sub}"'}, "no identity"),
    "skew beyond 5m": ({"clock_skew": '"10m"'}, "more than the 5m"),
    "bad max_token_age": ({"max_token_age": '"soon"'}, "invalid duration"),
    "unknown kind": ({"kind": '"saml"'}, "kind"),
    "issuer not a URL": ({"issuer": '"kubernetes"'}, "not an http(s) URL"),
    "discovery over plain http": (
        {"issuer": '"http://idp.example.com"', "jwks": None},
        "discovery over http:// is only for a loopback issuer",
    ),
    "unknown key": ({"audiences": '"x"'}, "unknown key"),
}


def _provisioner_toml(changes: dict) -> str:
    fields = {**_GOOD, **changes}
    lines = [f"{key} = {value}" for key, value in fields.items() if value is not None]
    return _BASE + "[[provisioners]]\n" + "\n".join(lines) + "\n"


@pytest.mark.parametrize("case", list(BAD_PROVISIONERS))
def test_a_provisioner_that_cannot_work_is_a_config_error(case):
    from mtlskit.errors import ConfigError
    from mtlskit.issue import parse_ca_config

    changes, message = BAD_PROVISIONERS[case]
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_ca_config(_provisioner_toml(changes).encode(), source="ca.toml")


def test_the_good_provisioner_parses_and_loopback_discovery_is_allowed():
    from mtlskit.issue import parse_ca_config

    config = parse_ca_config(_provisioner_toml({}).encode(), source="ca.toml")
    (provisioner,) = config.oidc_provisioners()
    assert provisioner.identity.paths == (
        "kubernetes.io.namespace",
        "kubernetes.io.serviceaccount.name",
    )
    local = _provisioner_toml({"issuer": '"http://127.0.0.1:8080"', "jwks": None})
    assert parse_ca_config(local.encode(), source="ca.toml").provisioners[0].jwks is None


def test_two_provisioners_with_one_name_are_a_config_error():
    from mtlskit.errors import ConfigError
    from mtlskit.issue import parse_ca_config

    text = _provisioner_toml({}) + "[[provisioners]]\n" + _provisioner_toml({}).split("\n", 3)[3]
    with pytest.raises(ConfigError, match="used twice"):
        parse_ca_config(text.encode(), source="ca.toml")


def test_ca_serve_with_a_broken_provisioner_says_so_in_one_line(tmp_path):
    directory = init_ca(
        tmp_path / "ca", approval=_provisioner_toml({"clock_skew": '"1h"'}).removeprefix(_BASE)
    )
    run = subprocess.run(
        [sys.executable, "-m", "mtlskit", "ca", "serve", str(directory), "--listen",
         "127.0.0.1:0", "--passphrase-file", str(tmp_path / "ca.pass")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 2, (run.stdout, run.stderr)
    assert run.stderr.splitlines() == [run.stderr.strip()]
    assert run.stderr.startswith("mtlskit: error: ") and "clock_skew" in run.stderr
