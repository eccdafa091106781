"""The probe: its pure case table, and the whole battery against real endpoints on 127.0.0.1.

Endpoints: mtlskit's gateway (with an echo backend), nginx (`ssl_verify_client on`,
without and with `ssl_crl`) and HAProxy (`verify required`), each trusting a real
CA directory from `mtlskit ca init`. Everything listens on an ephemeral port and is
stopped by its own pid in teardown.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from _gateway_support import EchoBackend, GatewayThread, Site, write_config
from _servers import free_port as _free_port
from _servers import nginx
from _servers import stop as _stop
from _servers import wait_for as _wait_for
from conftest import SPIFFE_ID, require_program, write
from mtlskit.certs import load_certificates, load_private_key
from mtlskit.probe import (
    CASES,
    Case,
    Expect,
    Needs,
    Observation,
    Outcome,
    ProbeReport,
    Verdict,
    alert_from_ssl_error,
    judge,
    run_probe,
)
from mtlskit.testca import SERVER_AUTH, LeafSpec, TestCA

PASSPHRASE = b"probe test passphrase"

# --- the pure core -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "alert"),
    [
        ("TLSV1_ALERT_UNKNOWN_CA", "unknown_ca"),
        ("SSLV3_ALERT_BAD_CERTIFICATE", "bad_certificate"),
        ("TLSV1_ALERT_DECRYPT_ERROR", "decrypt_error"),
        ("TLSV13_ALERT_CERTIFICATE_REQUIRED", "certificate_required"),
        ("SSLV3_ALERT_CERTIFICATE_EXPIRED", "certificate_expired"),
        ("SSLV3_ALERT_HANDSHAKE_FAILURE", "handshake_failure"),
        ("UNEXPECTED_EOF_WHILE_READING", None),
        (None, None),
    ],
)
def test_alert_names_from_openssl_reasons(reason, alert):
    assert alert_from_ssl_error(reason) == alert


def test_alert_from_message_when_reason_is_missing():
    message = "[SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca (_ssl.c:2580)"
    assert alert_from_ssl_error(None, message) == "unknown_ca"


def _case(expect: Expect) -> Case:
    return Case(id="x", title="x", expect=expect, needs=Needs.CERT, why="")


@pytest.mark.parametrize(
    ("expect", "outcome", "verdict"),
    [
        (Expect.REFUSE, Outcome.REFUSED, Verdict.PASS),
        (Expect.REFUSE, Outcome.ACCEPTED, Verdict.FAIL),
        (Expect.SHOULD_REFUSE, Outcome.ACCEPTED, Verdict.FINDING),
        (Expect.SHOULD_REFUSE, Outcome.REFUSED, Verdict.PASS),
        (Expect.ACCEPT, Outcome.REFUSED, Verdict.FAIL),
        (Expect.ACCEPT, Outcome.ACCEPTED, Verdict.PASS),
        (Expect.INFO, Outcome.ACCEPTED, Verdict.INFO),
        (Expect.INFO, Outcome.REFUSED, Verdict.INFO),
        (Expect.REFUSE, Outcome.ERROR, Verdict.ERROR),
        (Expect.ACCEPT, Outcome.SKIPPED, Verdict.SKIPPED),
    ],
)
def test_verdict_table(expect, outcome, verdict):
    assert judge(_case(expect), Observation(outcome=outcome)) is verdict


def test_case_table_is_complete_and_revoked_runs_last():
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids))
    assert ids[-1] == "revoked"
    assert {case.id for case in CASES if case.expect is Expect.ACCEPT} == {"control", "ca-control"}


def test_exit_code_counts_fails_not_findings():
    refuse, should = _case(Expect.REFUSE), _case(Expect.SHOULD_REFUSE)
    accepted = Observation(outcome=Outcome.ACCEPTED)

    def report(*cases: Case) -> ProbeReport:
        from mtlskit.probe import CaseResult

        results = tuple(
            CaseResult(case=case, observation=accepted, verdict=judge(case, accepted))
            for case in cases
        )
        return ProbeReport(target="t:1", server_name=None, results=results)

    assert report(should).exit_code == 0
    assert report(should, refuse).exit_code == 1


# --- a real CA directory ---------------------------------------------------------------


@pytest.fixture
def ca_dir(tmp_path: Path, run_cli) -> Path:
    """`mtlskit ca init` + one issued client (client/chain.pem, key.pem) + an empty CRL."""
    passphrase = write(tmp_path / "pass", PASSPHRASE + b"\n")
    ca = tmp_path / "ca"
    result = run_cli(
        "ca", "init", ca, "--trust-domain", "acme.com", "--passphrase-file", passphrase
    )
    assert result.code == 0, result.err
    result = run_cli(
        "ca", "issue", ca, "--id", SPIFFE_ID, "--out", tmp_path / "client",
        "--passphrase-file", passphrase,
    )  # fmt: skip
    assert result.code == 0, result.err
    result = run_cli("ca", "crl", ca, "--out", ca / "crl.pem", "--passphrase-file", passphrase)
    assert result.code == 0, result.err
    return ca


def _client(tmp_path: Path):
    chain = load_certificates((tmp_path / "client" / "chain.pem").read_bytes(), source="chain")
    key = load_private_key((tmp_path / "client" / "key.pem").read_bytes(), source="key")
    return chain, key


def _keep(name: str, report: ProbeReport) -> None:
    """With MTLSKIT_PROBE_REPORTS=DIR, save the report: docs/probe_compare.py builds its table
    from exactly these runs."""
    folder = os.environ.get("MTLSKIT_PROBE_REPORTS")
    if folder:
        Path(folder, f"{name}.json").write_text(json.dumps(report.as_dict(), indent=2))


def _verdicts(report: ProbeReport) -> dict[str, str]:
    return {r.case.id: f"{r.verdict.value} ({r.observation.summary()})" for r in report.results}


# --- mtlskit's gateway ---------------------------------------------------------------


@pytest.fixture
def gateway(tmp_path: Path, ca_dir: Path) -> Iterator[tuple[GatewayThread, Site]]:
    backend = EchoBackend()
    site_dir = tmp_path / "site"
    site_dir.mkdir()
    site = Site(dir=site_dir, server_ca=trustme.CA(), backend=backend)
    write(site_dir / "policy.toml", b'[[allow]]\ntrust_domain = "acme.com"\n')
    config = write_config(
        site,
        (ca_dir / "root.pem").read_bytes(),
        f'[client_auth]\ntrust = ["trust.pem"]\ncrls = ["{ca_dir / "crl.pem"}"]\n'
        'policy = "policy.toml"\n[forward]\nformats = ["xfcc", "gcp", "aws", "rfc9440", '
        '"verdict"]\n[reload]\npoll_interval = 0.1\n',
    )
    running = GatewayThread(config)
    try:
        yield running, site
    finally:
        running.stop()
        backend.stop()


def test_probe_against_the_gateway_refuses_everything_it_must(tmp_path, ca_dir, gateway):
    running, _ = gateway
    chain, key = _client(tmp_path)
    report = run_probe(
        f"127.0.0.1:{running.port}",
        chain=chain,
        key=key,
        ca_dir=ca_dir,
        passphrase=PASSPHRASE,
        crl_out=ca_dir / "crl.pem",
        after_crl=running.reload,
        server_name="localhost",
        echo=True,
    )
    _keep("gateway", report)
    verdicts = _verdicts(report)
    assert report.exit_code == 0, verdicts
    assert report.count(Verdict.FAIL) == 0
    assert report.count(Verdict.FINDING) == 0, verdicts  # the second gate catches the rest
    assert report.count(Verdict.SKIPPED) == 0, verdicts
    for version in ("1.2", "1.3"):
        observed = report.result(f"foreign-key-tls{version}").observation
        assert observed.alert == "decrypt_error", verdicts
    assert report.result("unknown-ca").observation.alert == "unknown_ca"
    assert report.result("control").verdict is Verdict.PASS
    assert report.result("ca-control").verdict is Verdict.PASS
    # no EKU: the gateway refuses by default (allow_missing_eku = false): recorded as info
    assert report.result("no-eku").observation.outcome is Outcome.REFUSED
    assert report.result("header-spoofing").observation.detail.startswith("all 11 stripped")
    assert report.result("revoked").verdict is Verdict.PASS


def test_probe_with_the_leaf_alone_names_the_missing_intermediate(tmp_path, ca_dir, gateway):
    """Issue 28 item 5: --cert without its intermediate is refused unknown_ca, and the
    report says why instead of leaving the operator to guess."""
    running, _ = gateway
    chain, key = _client(tmp_path)
    report = run_probe(
        f"127.0.0.1:{running.port}", chain=chain[:1], key=key, server_name="localhost"
    )
    control = report.result("control").observation
    assert control.alert == "unknown_ca"
    assert "the client sent no intermediate; its issuer is not a trust anchor" in control.detail
    # said once, though several cases send the same chain
    assert sum("sent no intermediate" in n and "--cert" in n for n in report.notes) == 1
    # negative control: with its intermediate the same client passes, and nothing is said
    report = run_probe(f"127.0.0.1:{running.port}", chain=chain, key=key, server_name="localhost")
    assert report.result("control").verdict is Verdict.PASS
    assert not any("intermediate" in note for note in report.notes)


def test_cli_json_and_table_against_the_gateway(tmp_path, ca_dir, gateway, run_cli, monkeypatch):
    running, _ = gateway
    monkeypatch.setenv("MTLSKIT_CA_PASSPHRASE", PASSPHRASE.decode())
    client = tmp_path / "client"
    target = f"127.0.0.1:{running.port}"
    result = run_cli(
        "probe", target, "--cert", client / "chain.pem", "--json", "--server-name", "localhost"
    )
    assert result.code == 0, result.out + result.err
    document = json.loads(result.out)
    by_id = {case["id"]: case for case in document["cases"]}
    assert by_id["foreign-key-tls1.3"]["observed"]["alert"] == "decrypt_error"
    assert by_id["control"]["verdict"] == "skipped"
    assert "--key" in by_id["control"]["observed"]["detail"]
    assert by_id["expired"]["verdict"] == "skipped"
    assert document["exit_code"] == 0
    # the table, with the CA cases (no --crl-out: the revoked case says what it needs)
    result = run_cli(
        "probe", target, "--cert", client / "chain.pem", "--key", client / "key.pem",
        "--ca-dir", ca_dir,
    )  # fmt: skip
    assert result.code == 0, result.out + result.err
    assert "legitimate certificate, foreign key (TLS 1.3)" in result.out
    assert "refused: alert decrypt_error" in result.out
    assert "needs --crl-out" in result.out
    # the probe's certificates are in the CA's audit log
    audit = run_cli("ca", "audit", "export", ca_dir, "--json")
    events = [entry["event"] for entry in json.loads(audit.out)["entries"]]
    assert "probe" in events


def test_cli_usage_errors(tmp_path, run_cli):
    cert = write(tmp_path / "c.pem", TestCA().issue(LeafSpec(uris=(SPIFFE_ID,))).cert_pem)
    assert run_cli("probe", "no-port", "--cert", cert).code == 2
    assert run_cli("probe", "127.0.0.1:1", "--cert", tmp_path / "missing.pem").code == 2
    result = run_cli("probe", "127.0.0.1:1", "--cert", cert, "--crl-out", tmp_path / "x")
    assert result.code == 2


# --- nginx and HAProxy ---------------------------------------------------------------


def _server_files(tmp_path: Path) -> tuple[Path, Path]:
    server_ca = TestCA(name="probe server")
    server = server_ca.issue(LeafSpec(dns=("localhost",), eku=(SERVER_AUTH,)))
    return write(tmp_path / "server.pem", server.chain_pem), write(
        tmp_path / "server.key", server.key_pem
    )


@dataclass(frozen=True)
class Proxy:
    """A proxy process in front of the echo backend; ``reload`` re-reads its files."""

    port: int
    pid: int
    reload_signal: int

    def reload(self) -> None:
        os.kill(self.pid, self.reload_signal)
        time.sleep(0.5)  # new workers take over; the revoked case runs last anyway


@pytest.fixture
def proxies(tmp_path: Path, ca_dir: Path) -> Iterator:
    """``start(kind, crl=bool)``: nginx or HAProxy trusting ``ca_dir``; all stopped at teardown."""
    backend = EchoBackend()
    cert, key = _server_files(tmp_path)
    running = contextlib.ExitStack()

    def start(kind: str, *, crl: bool) -> Proxy:
        port = _free_port()
        work = tmp_path / f"{kind}-{port}"
        work.mkdir()
        if kind == "nginx":
            crl_line = f"ssl_crl {ca_dir / 'crl.pem'};" if crl else ""
            server = f"""
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_client_certificate {ca_dir / "root.pem"};
    ssl_protocols TLSv1.2 TLSv1.3;  # nginx 1.22's default lacks TLSv1.3
    ssl_verify_client on;
    ssl_verify_depth 2;
    {crl_line}
    location / {{
      proxy_pass {backend.url};
      proxy_set_header X-SSL-Client-Verify $ssl_client_verify;
    }}
"""
            running.enter_context(nginx(work, server, port=port))
            # in the foreground: the pid nginx writes is its master's, which SIGHUP reloads
            return Proxy(port, int((work / "nginx.pid").read_text()), signal.SIGHUP)
        haproxy = require_program("haproxy")
        write(work / "server.pem", cert.read_bytes() + key.read_bytes())
        verify = f"ca-file {ca_dir / 'root.pem'} verify required"
        verify += f" crl-file {ca_dir / 'crl.pem'}" if crl else ""
        config = write(
            work / "haproxy.cfg",
            f"""
global
  log stderr format raw local0 err
defaults
  mode http
  timeout connect 2s
  timeout client 5s
  timeout server 5s
frontend mtls
  bind 127.0.0.1:{port} ssl crt {work / "server.pem"} {verify}
  http-request set-header X-SSL-Client-Verify %[ssl_c_verify]
  default_backend echo
backend echo
  server echo {backend.url.removeprefix("http://")}
""".encode(),
        )
        argv = [haproxy, "-W", "-db", "-f", str(config)]  # master-worker: SIGUSR2 reloads
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        running.callback(_stop, process)
        _wait_for(port, process, "haproxy")
        return Proxy(port, process.pid, signal.SIGUSR2)

    try:
        with running:
            yield start
    finally:
        backend.stop()


def _probe(tmp_path: Path, ca_dir: Path, proxy: Proxy) -> ProbeReport:
    chain, key = _client(tmp_path)
    return run_probe(
        f"127.0.0.1:{proxy.port}",
        chain=chain,
        key=key,
        ca_dir=ca_dir,
        passphrase=PASSPHRASE,
        crl_out=ca_dir / "crl.pem",
        after_crl=proxy.reload,
        server_name="localhost",
        echo=True,
    )


@pytest.mark.integration
def test_nginx_without_ssl_crl_accepts_the_revoked_client(tmp_path, ca_dir, proxies):
    report = _probe(tmp_path, ca_dir, proxies("nginx", crl=False))
    _keep("nginx", report)
    verdicts = _verdicts(report)
    assert report.result("control").verdict is Verdict.PASS, verdicts
    assert report.result("revoked").verdict is Verdict.FAIL, verdicts
    assert report.exit_code == 1
    for version in ("1.2", "1.3"):
        assert report.result(f"foreign-key-tls{version}").observation.alert == "decrypt_error"
    # OpenSSL's defaults, as DESIGN.md §4 measured them: these reach the backend
    for case_id in ("ca-true-leaf", "no-san", "two-spiffe-ids", "foreign-trust-domain"):
        assert report.result(case_id).verdict is Verdict.FINDING, verdicts
    assert report.result("no-eku").observation.outcome is Outcome.ACCEPTED
    assert report.result("server-auth-only").observation.http_status == 400
    # a plain proxy_pass forwards what the client sent, except the one header it overwrites
    spoofing = report.result("header-spoofing")
    assert spoofing.verdict is Verdict.FAIL
    assert "X-Forwarded-Client-Cert" in spoofing.observation.detail
    assert "X-SSL-Client-Verify" not in spoofing.observation.detail


@pytest.mark.integration
def test_nginx_with_ssl_crl_refuses_the_revoked_client(tmp_path, ca_dir, proxies):
    report = _probe(tmp_path, ca_dir, proxies("nginx", crl=True))
    _keep("nginx-crl", report)
    verdicts = _verdicts(report)
    assert report.result("ca-control").verdict is Verdict.PASS, verdicts
    revoked = report.result("revoked")
    assert revoked.verdict is Verdict.PASS, verdicts
    assert revoked.observation.http_status == 400


@pytest.mark.integration
def test_haproxy_verify_required(tmp_path, ca_dir, proxies):
    report = _probe(tmp_path, ca_dir, proxies("haproxy", crl=True))
    _keep("haproxy-crl", report)
    verdicts = _verdicts(report)
    assert report.result("control").verdict is Verdict.PASS, verdicts
    assert report.result("ca-control").verdict is Verdict.PASS, verdicts
    assert report.result("revoked").verdict is Verdict.PASS, verdicts
    for version in ("1.2", "1.3"):
        assert report.result(f"foreign-key-tls{version}").observation.alert == "decrypt_error"
    assert report.result("no-client-cert").verdict is Verdict.PASS
    assert report.result("ca-true-leaf").verdict is Verdict.FINDING, verdicts
    assert report.result("header-spoofing").verdict is Verdict.FAIL, verdicts


def test_unreachable_endpoint_is_an_error_not_a_pass(tmp_path, run_cli):
    cert = write(tmp_path / "c.pem", TestCA().issue(LeafSpec(uris=(SPIFFE_ID,))).cert_pem)
    port = _free_port()  # nothing listens there
    result = run_cli("probe", f"127.0.0.1:{port}", "--cert", cert, "--json")
    assert result.code == 2
    cases = {case["id"]: case for case in json.loads(result.out)["cases"]}
    assert cases["no-client-cert"]["verdict"] == "error"
    assert "cannot connect" in cases["no-client-cert"]["observed"]["detail"]
