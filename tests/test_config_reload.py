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
import ssl
import time

import httpx
import pytest

from ca_server import RunningCa, init_ca, serve
from mtlskit.client import CaUnavailable, enroll

APPROVAL = '\n[[approval]]\nids = ["spiffe://acme.com/prod/**"]\napprovers = 1\n'


def _wait_for_log(ca: RunningCa, text: str, *, seconds: float = 15.0) -> str:
    """The server's stderr once it holds ``text`` (a wait for an event, not a timing check)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        log = ca.errors
        if text in log:
            return log
        assert ca.process.poll() is None, f"ca serve exited {ca.process.returncode}: {log}"
        time.sleep(0.05)
    raise AssertionError(f"{text!r} never appeared in the log:\n{ca.errors}")


@pytest.fixture
def ca(tmp_path) -> RunningCa:
    running = serve(init_ca(tmp_path / "ca"), "--max-token-failures", "1000")
    yield running
    running.stop()


def test_an_approval_rule_added_and_sighup_makes_enrollment_wait(ca, tmp_path):
    first = enroll(
        ca.url, ca.token("spiffe://acme.com/prod/a"), tmp_path / "a", ca_fingerprint=ca.fingerprint
    )
    assert first.status == "issued"  # no rule yet
    with (ca.directory / "ca.toml").open("a") as handle:
        handle.write(APPROVAL)
    ca.process.send_signal(signal.SIGHUP)
    log = _wait_for_log(ca, "ca.toml reloaded")
    line = next(line for line in log.splitlines() if "ca.toml reloaded" in line)
    assert "SIGHUP" in line
    assert "approval: +1 rule (spiffe://acme.com/prod/** by 1)" in line
    second = enroll(
        ca.url, ca.token("spiffe://acme.com/prod/b"), tmp_path / "b", ca_fingerprint=ca.fingerprint
    )
    assert second.status == "pending"
    assert not (tmp_path / "b" / "cert.pem").exists()


def test_an_approval_rule_added_without_sighup_still_applies(ca, tmp_path):
    with (ca.directory / "ca.toml").open("a") as handle:
        handle.write(APPROVAL)
    result = enroll(
        ca.url, ca.token("spiffe://acme.com/prod/c"), tmp_path / "c", ca_fingerprint=ca.fingerprint
    )
    assert result.status == "pending"
    line = next(line for line in ca.errors.splitlines() if "ca.toml reloaded" in line)
    assert "before enroll" in line and "+1 rule" in line


def test_a_broken_ca_toml_keeps_the_old_policy_on_sighup_and_issues_nothing(ca, tmp_path):
    config = ca.directory / "ca.toml"
    config.write_text(config.read_text() + "\nunknown_key = 1\n")
    ca.process.send_signal(signal.SIGHUP)
    log = _wait_for_log(ca, "ca.toml not reloaded")
    assert "unknown key 'unknown_key'" in log
    with pytest.raises(CaUnavailable, match="HTTP 503"):
        enroll(
            ca.url,
            ca.token("spiffe://acme.com/prod/d"),
            tmp_path / "d",
            ca_fingerprint=ca.fingerprint,
        )
    assert not (tmp_path / "d" / "cert.pem").exists()
    context = ssl.create_default_context(cafile=str(ca.root))
    answer = httpx.post(f"{ca.url}/v1/enroll", json={"token": "t", "csr": "c"}, verify=context)
    assert (answer.status_code, answer.json()["code"]) == (503, "config_invalid")


def test_a_restart_only_key_is_named_not_applied(ca):
    config = ca.directory / "ca.toml"
    config.write_text(config.read_text().replace('name = "', 'name = "renamed-'))
    ca.process.send_signal(signal.SIGHUP)
    log = _wait_for_log(ca, "ca.toml reloaded")
    assert "restart needed: name" in log
