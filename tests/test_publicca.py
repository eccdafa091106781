"""Public CAs: the clientAuth timeline, trust-store audits, and surveys of real local servers."""

from __future__ import annotations

import datetime as dt
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import certifi
import pytest

from conftest import write
from mtlskit.certs import Fingerprint
from mtlskit.publicca import ClientAuthStatus, client_auth_status, find_public_root
from mtlskit.testca import CLIENT_AUTH, SERVER_AUTH, IssuedCert, LeafSpec, TestCA

UTC = dt.UTC


@pytest.fixture(scope="module")
def public_ca() -> TestCA:
    """A local CA standing in for a public one: the 'public-root source' points at its root."""
    return TestCA(name="Simulated Public Trust")


@pytest.fixture
def simulated_public(public_ca, tmp_path, monkeypatch) -> TestCA:
    roots = write(tmp_path / "public-roots.pem", public_ca.root.cert_pem)
    monkeypatch.setenv("MTLSKIT_EXTRA_PUBLIC_ROOTS", str(roots))
    return public_ca


def _dv(ca: TestCA, issued: dt.datetime, eku=(SERVER_AUTH, CLIENT_AUTH)) -> IssuedCert:
    """A DV-style certificate for a stranger who controls some domain."""
    return ca.issue(LeafSpec(dns=("stranger.example",), eku=eku, not_before=issued))


@pytest.mark.parametrize(
    ("issued", "eku", "status"),
    [
        (dt.datetime(2025, 5, 1, tzinfo=UTC), (SERVER_AUTH, CLIENT_AUTH), ClientAuthStatus.ALLOWED),
        (
            dt.datetime(2026, 7, 1, tzinfo=UTC),
            (SERVER_AUTH, CLIENT_AUTH),
            ClientAuthStatus.PHASING_OUT,
        ),
        (
            dt.datetime(2027, 3, 15, tzinfo=UTC),
            (SERVER_AUTH, CLIENT_AUTH),
            ClientAuthStatus.NO_LONGER_ISSUED,
        ),
        (dt.datetime(2027, 6, 1, tzinfo=UTC), (SERVER_AUTH,), ClientAuthStatus.NOT_CLIENT_AUTH),
        (dt.datetime(2027, 6, 1, tzinfo=UTC), None, ClientAuthStatus.NO_LONGER_ISSUED),
    ],
)
def test_timeline_judged_at_not_before(public_ca, issued, eku, status):
    assert client_auth_status(_dv(public_ca, issued, eku).cert).status is status


@pytest.mark.parametrize(
    ("organization", "issued", "status"),
    [
        ("Let's Encrypt", dt.datetime(2026, 1, 10, tzinfo=UTC), ClientAuthStatus.ALLOWED),
        ("Let's Encrypt", dt.datetime(2026, 3, 1, tzinfo=UTC), ClientAuthStatus.PHASING_OUT),
        ("Let's Encrypt", dt.datetime(2026, 7, 9, tzinfo=UTC), ClientAuthStatus.NO_LONGER_ISSUED),
        ("Other CA", dt.datetime(2026, 3, 1, tzinfo=UTC), ClientAuthStatus.ALLOWED),
        ("Other CA", dt.datetime(2026, 7, 9, tzinfo=UTC), ClientAuthStatus.PHASING_OUT),
    ],
)
def test_a_cas_own_dates_apply_to_that_ca_only(organization, issued, status):
    issuer = TestCA(name="R", organization=organization)
    verdict = client_auth_status(_dv(issuer, issued).cert)
    assert verdict.status is status


def test_real_mozilla_root_is_found_and_a_lookalike_is_not(ca):
    from mtlskit.certs import load_certificates

    root = load_certificates(Path(certifi.where()).read_bytes())[3]
    assert find_public_root([root]) == root
    assert find_public_root([ca.root.cert]) is None


# --- audit ------------------------------------------------------------------------


def test_audit_of_certifi_bundle_fails_with_public_roots(run_cli):
    result = run_cli("audit", "--json", certifi.where())
    assert result.code == 1
    report = json.loads(result.out)
    codes = {f["code"] for entry in report["entries"] for f in entry["findings"]}
    assert "public_root_in_client_trust_store" in codes
    assert report["verdict"] == "fail"


def test_audit_of_private_ca_bundle_passes(tmp_path, run_cli, ca):
    bundle = write(tmp_path / "root.pem", ca.root.cert_pem)
    result = run_cli("audit", bundle)
    assert result.code == 0, result.out
    assert "PASS" in result.out


def test_audit_findings_on_a_messy_store(tmp_path, run_cli, ca):
    server_only_ca = TestCA(name="servers")
    eku_limited = server_only_ca.issue(
        LeafSpec(
            dns=("x.example",),
            ca=True,
            key_usage=frozenset({"key_cert_sign", "crl_sign"}),
            eku=(SERVER_AUTH,),
            lifetime=dt.timedelta(days=3650),
        )
    )
    pinned = ca.issue(
        LeafSpec(
            uris=("spiffe://acme.com/solo",), self_signed=True, lifetime=dt.timedelta(days=365)
        )
    )
    now = dt.datetime.now(UTC)
    expired = TestCA(name="old").issue(
        LeafSpec(
            dns=("old.example",),
            ca=True,
            key_usage=frozenset({"key_cert_sign"}),
            not_before=now - dt.timedelta(days=400),
            not_after=now - dt.timedelta(days=1),
            self_signed=True,
        )
    )
    store = tmp_path / "store"
    store.mkdir()
    write(store / "a-root.pem", ca.root.cert_pem + ca.root.cert_pem)
    write(store / "b-eku.pem", eku_limited.cert_pem)
    write(store / "c-pin.pem", pinned.cert_pem)
    write(store / "d-expired.crt", expired.cert_pem)
    write(store / "notes.txt", b"ignored")
    result = run_cli("audit", "--json", store)
    assert result.code == 1
    by_file = {}
    for entry in json.loads(result.out)["entries"]:
        by_file.setdefault(Path(entry["source"]).name, set()).update(
            f["code"] for f in entry["findings"]
        )
    assert by_file["a-root.pem"] == {"duplicate_certificate"}
    assert by_file["b-eku.pem"] == {"ca_eku_excludes_client_auth"}
    assert by_file["c-pin.pem"] == {"pinned_certificate"}
    assert "anchor_expired" in by_file["d-expired.crt"]
    assert Fingerprint.of(pinned.cert).colon_hex in result.out


def test_audit_reads_a_gateway_config(tmp_path, run_cli, ca):
    write(tmp_path / "root.pem", ca.root.cert_pem)
    config = write(
        tmp_path / "gateway.toml",
        b'[client_auth]\nmode = "reject_invalid"\ntrust = ["root.pem"]\n',
    )
    assert run_cli("audit", config).code == 0
    write(tmp_path / "bad.toml", b"[client_auth\n")
    result = run_cli("audit", tmp_path / "bad.toml")
    assert result.code == 2
    assert result.err.startswith(f"mtlskit: error: {tmp_path / 'bad.toml'}: is not valid TOML")


def test_audit_flags_the_simulated_public_root(tmp_path, run_cli, simulated_public):
    bundle = write(tmp_path / "trust.pem", simulated_public.root.cert_pem)
    result = run_cli("audit", "--json", bundle)
    assert result.code == 1
    (entry,) = json.loads(result.out)["entries"]
    assert [f["code"] for f in entry["findings"]] == ["public_root_in_client_trust_store"]


# --- survey against local TLS servers -----------------------------------------------


class TLSServer:
    """A TLS server on 127.0.0.1 presenting one chain; it completes handshakes and hangs up."""

    def __init__(self, issued: IssuedCert, tmp: Path) -> None:
        chain = write(tmp / f"server-{id(self)}.pem", issued.chain_pem)
        key = write(tmp / f"server-{id(self)}.key", issued.key_pem)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(chain, key)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                with self.context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (OSError, ssl.SSLError):
                pass

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def servers(tmp_path) -> Iterator[list[TLSServer]]:
    started: list[TLSServer] = []
    yield started
    for server in started:
        server.close()


def test_survey_reports_dates_and_rules(tmp_path, run_cli, simulated_public, servers, ca):
    late = _dv(simulated_public, dt.datetime(2027, 4, 1, tzinfo=UTC))
    early = _dv(simulated_public, dt.datetime(2025, 4, 1, tzinfo=UTC))
    private = ca.issue(LeafSpec(dns=("internal.example",), eku=(SERVER_AUTH,)))
    for issued in (late, early, private):
        servers.append(TLSServer(issued, tmp_path))
    closed = socket.create_server(("127.0.0.1", 0))
    dead_port = closed.getsockname()[1]
    closed.close()
    targets = [f"127.0.0.1:{s.port}" for s in servers] + [f"127.0.0.1:{dead_port}"]
    result = run_cli("survey", "--json", "--timeout", "3", *targets)
    assert result.code == 1  # the late certificate is non-compliant
    late_r, early_r, private_r, dead_r = json.loads(result.out)["results"]
    assert late_r["client_auth_status"] == "no longer issued"
    assert late_r["compliant"] is False
    assert late_r["extended_key_usage"] == ["serverAuth", "clientAuth"]
    assert late_r["issuer_class"] == "public"
    assert {
        "date": "2027-03-15",
        "rule": "leaf certificates under Chrome roots must carry serverAuth only",
        "source": "Chrome Root Program Policy v1.8 §1.3.2",
    } in late_r["policy"]
    assert early_r["client_auth_status"] == "allowed"
    assert early_r["compliant"] is True
    assert private_r["issuer_class"] in {"private", "unknown"}
    assert private_r["client_auth_status"] is None
    assert dead_r["error"]
    table = run_cli("survey", f"127.0.0.1:{servers[0].port}")
    assert "no longer issued" in table.out
    assert "2027-03-15" in table.out


def test_survey_bad_target_is_a_usage_error(run_cli):
    result = run_cli("survey", "host:notaport")
    assert (result.code, result.err) == (
        2,
        "mtlskit: error: not a port number in 'host:notaport'\n",
    )


def test_lint_public_ca_profile_flags_the_stranger_with_dates(tmp_path, run_cli, simulated_public):
    stranger = _dv(simulated_public, dt.datetime(2027, 4, 1, tzinfo=UTC))
    chain = write(tmp_path / "stranger.pem", stranger.chain_pem)
    result = run_cli("lint", "--json", "--profile", "public-ca", chain)
    leaf = json.loads(result.out)["results"][0]
    messages = " ".join(f["message"] + f["reference"] for f in leaf["findings"])
    assert result.code == 1, result.out
    assert "2027-03-15" in messages
    assert "Chrome Root Program Policy" in messages
    early = _dv(simulated_public, dt.datetime(2025, 4, 1, tzinfo=UTC))
    chain = write(tmp_path / "early.pem", early.chain_pem)
    result = run_cli("lint", "--json", "--profile", "public-ca", chain)
    assert result.code == 0, result.out


def test_a_verifier_trusting_a_public_root_admits_the_stranger_unless_policy_denies(
    tmp_path, run_cli, simulated_public
):
    """The seed's point: domain validation says nothing about who a client is."""
    stranger = _dv(simulated_public, dt.datetime.now(UTC) - dt.timedelta(hours=1))
    chain = write(tmp_path / "stranger.pem", stranger.chain_pem)
    root = write(tmp_path / "public-root.pem", simulated_public.root.cert_pem)
    refused = run_cli("verify", "--json", chain, "--trust", root)
    assert refused.code == 1
    assert [r["code"] for r in json.loads(refused.out)["reasons"]] == ["public_ca_not_allowed"]
    careless = write(tmp_path / "careless.toml", b'[[allow]]\ndns = "stranger.example"\n')
    admitted = run_cli(
        "verify", "--json", chain, "--trust", root, "--allow-public-roots", "--policy", careless
    )
    assert admitted.code == 0, admitted.out
    strict = write(tmp_path / "strict.toml", b'[[allow]]\ntrust_domain = "acme.com"\n')
    denied = run_cli(
        "verify", "--json", chain, "--trust", root, "--allow-public-roots", "--policy", strict
    )
    assert denied.code == 1
    assert [r["code"] for r in json.loads(denied.out)["reasons"]] == ["identity_not_authorized"]
