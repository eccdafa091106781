"""A running server applies its edited config file, or says what it did not apply (issue 26 item 2).

Before: an ``[[approval]]`` rule added to ca.toml while ``ca serve`` ran was ignored and the
next enrollment was issued without approval (SIGHUP even killed the server), and the
gateway logged ``ok:true`` on SIGHUP without re-reading gateway.toml. Now ``ca serve``
re-reads ca.toml on SIGHUP and before every enroll/poll/renew decision, and the gateway
re-reads gateway.toml, applies what can change live and names what needs a restart.
Real ``mtlskit ca serve`` / ``mtlskit gateway`` processes, real TLS.
"""

from __future__ import annotations

import signal
import socket
import ssl
import sys

import httpx
import pytest

from _gateway_support import gateway_process, https_request, sighup_reloads, write_config
from _servers import wait_for_log
from ca_server import RunningCa, init_ca, serve
from mtlskit.client import CaUnavailable, enroll

APPROVAL = '\n[[approval]]\nids = ["spiffe://acme.com/prod/**"]\napprovers = 1\n'


@pytest.fixture
def running_ca(tmp_path) -> RunningCa:
    running = serve(init_ca(tmp_path / "ca"), "--max-token-failures", "1000")
    yield running
    running.stop()


def test_an_approval_rule_added_and_sighup_makes_enrollment_wait(running_ca, tmp_path):
    ca_ = running_ca
    first = enroll(
        ca_.url,
        ca_.token("spiffe://acme.com/prod/a"),
        tmp_path / "a",
        ca_fingerprint=ca_.fingerprint,
    )
    assert first.status == "issued"  # no rule yet
    with (ca_.directory / "ca.toml").open("a") as handle:
        handle.write(APPROVAL)
    ca_.process.send_signal(signal.SIGHUP)
    log = wait_for_log(ca_.log_file, "ca.toml reloaded", process=ca_.process)
    line = next(line for line in log.splitlines() if "ca.toml reloaded" in line)
    assert "SIGHUP" in line
    assert "approval: +1 rule (spiffe://acme.com/prod/** by 1)" in line
    second = enroll(
        ca_.url,
        ca_.token("spiffe://acme.com/prod/b"),
        tmp_path / "b",
        ca_fingerprint=ca_.fingerprint,
    )
    assert second.status == "pending"
    assert not (tmp_path / "b" / "cert.pem").exists()


def test_an_approval_rule_added_without_sighup_still_applies(running_ca, tmp_path):
    ca_ = running_ca
    with (ca_.directory / "ca.toml").open("a") as handle:
        handle.write(APPROVAL)
    result = enroll(
        ca_.url,
        ca_.token("spiffe://acme.com/prod/c"),
        tmp_path / "c",
        ca_fingerprint=ca_.fingerprint,
    )
    assert result.status == "pending"
    line = next(line for line in ca_.errors.splitlines() if "ca.toml reloaded" in line)
    assert "before enroll" in line and "+1 rule" in line


def test_a_broken_ca_toml_keeps_the_old_policy_on_sighup_and_issues_nothing(running_ca, tmp_path):
    ca_ = running_ca
    config = ca_.directory / "ca.toml"
    config.write_text(config.read_text() + "\nunknown_key = 1\n")
    ca_.process.send_signal(signal.SIGHUP)
    log = wait_for_log(ca_.log_file, "ca.toml not reloaded", process=ca_.process)
    assert "unknown key 'unknown_key'" in log
    with pytest.raises(CaUnavailable, match="HTTP 503"):
        enroll(
            ca_.url,
            ca_.token("spiffe://acme.com/prod/d"),
            tmp_path / "d",
            ca_fingerprint=ca_.fingerprint,
        )
    assert not (tmp_path / "d" / "cert.pem").exists()
    context = ssl.create_default_context(cafile=str(ca_.root))
    answer = httpx.post(f"{ca_.url}/v1/enroll", json={"token": "t", "csr": "c"}, verify=context)
    assert (answer.status_code, answer.json()["code"]) == (503, "config_invalid")


def test_a_restart_only_key_is_named_not_applied(running_ca):
    ca_ = running_ca
    config = ca_.directory / "ca.toml"
    config.write_text(config.read_text().replace('name = "', 'name = "renamed-'))
    ca_.process.send_signal(signal.SIGHUP)
    log = wait_for_log(ca_.log_file, "ca.toml reloaded", process=ca_.process)
    assert "restart needed: name" in log


# --- the gateway -----------------------------------------------------------------------

GET = b"GET /hello HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


@pytest.fixture(params=[1, 2], ids=["one-process", "two-workers"])
def gateway(request, echo_site, ca):
    """A real `mtlskit gateway` process on a fixed free port (one process, or a master with
    two workers, each reloading itself); yields (site, config, process, port)."""
    (echo_site.dir / "deny.toml").write_text('[[allow]]\nid = "spiffe://acme.com/nobody"\n')
    config = write_config(echo_site, ca.bundle_pem, '[client_auth]\ntrust = ["trust.pem"]\n')
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    text = config.read_text().replace("127.0.0.1:0", f"127.0.0.1:{port}")
    config.write_text(
        text.replace('key = "server.key"', f'key = "server.key"\nworkers = {request.param}')
    )
    echo_site.extra["workers"] = request.param
    argv = [sys.executable, "-m", "mtlskit", "gateway", "--config", str(config)]
    with gateway_process(echo_site, argv) as process:
        yield echo_site, config, process, port


def _sighup_and_wait(site, process) -> dict:
    """SIGHUP, then the first new reload record once every worker has written one."""
    records = sighup_reloads(site, process)
    assert all(r["ok"] == records[0]["ok"] for r in records), records
    return records[0]


def test_a_policy_added_to_gateway_toml_denies_after_sighup(gateway, clean_leaf):
    site, config, process, port = gateway
    context = site.client_context(clean_leaf)
    assert https_request(port, context, GET).startswith(b"HTTP/1.1 200 ")
    config.write_text(
        config.read_text().replace(
            'trust = ["trust.pem"]', 'trust = ["trust.pem"]\npolicy = "deny.toml"'
        )
    )
    record = _sighup_and_wait(site, process)
    assert record["ok"] is True
    assert record["applied"] == ["client_auth.policy"]
    for _ in range(4):  # any worker takes it
        assert https_request(port, context, GET).startswith(b"HTTP/1.1 403 ")
    access = site.wait_for_record(lambda r: r.get("status") == 403, which="access")
    assert access["code"] == "identity_not_authorized"


def test_a_listen_change_is_named_restart_needed_and_not_applied(gateway, clean_leaf):
    site, config, process, port = gateway
    config.write_text(config.read_text().replace(f"127.0.0.1:{port}", "127.0.0.1:1"))
    record = _sighup_and_wait(site, process)
    assert record["ok"] is False
    assert record["restart_needed"] == ["listen.address"]
    assert "restart needed: listen.address" in record["error"]
    assert record["applied"] == []
    context = site.client_context(clean_leaf)
    assert https_request(port, context, GET).startswith(b"HTTP/1.1 200 ")  # still the old port


def test_a_gateway_toml_that_does_not_parse_is_ok_false(gateway, clean_leaf):
    site, config, process, port = gateway
    config.write_text(config.read_text() + "\n[nonsense\n")
    record = _sighup_and_wait(site, process)
    assert record["ok"] is False
    assert "gateway.toml" in record["error"]
    assert https_request(port, site.client_context(clean_leaf), GET).startswith(b"HTTP/1.1 200 ")


def test_the_file_poll_sees_an_edit_of_gateway_toml_itself(echo_site, ca, clean_leaf):
    """No SIGHUP: ``poll_interval`` now watches gateway.toml too, not only the files it names."""
    from _gateway_support import GatewayThread

    (echo_site.dir / "deny.toml").write_text('[[allow]]\nid = "spiffe://acme.com/nobody"\n')
    config = write_config(
        echo_site,
        ca.bundle_pem,
        '[client_auth]\ntrust = ["trust.pem"]\n[reload]\npoll_interval = 0.1\n',
    )
    running = GatewayThread(config, source=config)
    try:
        context = echo_site.client_context(clean_leaf)
        assert https_request(running.port, context, GET).startswith(b"HTTP/1.1 200 ")
        config.write_text(
            config.read_text().replace(
                'trust = ["trust.pem"]', 'trust = ["trust.pem"]\npolicy = "deny.toml"'
            )
        )
        record = echo_site.wait_for_record(lambda r: r.get("event") == "reload")
        assert (record["ok"], record["applied"]) == (True, ["client_auth.policy"])
        assert https_request(running.port, context, GET).startswith(b"HTTP/1.1 403 ")
    finally:
        running.stop()
