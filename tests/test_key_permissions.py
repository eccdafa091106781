"""Keys that group or others may read are refused at load (issue 11, item 6), unless forced."""

from __future__ import annotations

import pytest

from ca_server import PASSPHRASE, init_ca
from conftest import CLEAN, write


@pytest.fixture
def loose_ca(tmp_path):
    directory = init_ca(tmp_path / "ca")
    (directory / "issuing.key").chmod(0o644)
    return directory


def test_a_ca_key_others_can_read_is_refused(loose_ca, run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("MTLSKIT_CA_PASSPHRASE", PASSPHRASE)
    result = run_cli(
        "ca", "issue", loose_ca, "--id", "spiffe://acme.com/a", "--out", tmp_path / "o"
    )
    assert result.code == 2
    assert result.err == (
        f"mtlskit: error: {loose_ca / 'issuing.key'}: CA key is readable by group or others "
        "(mode 0644): chmod 600 it, or set MTLSKIT_ALLOW_INSECURE_KEY_PERMISSIONS=1 "
        "to accept that\n"
    )
    assert not (tmp_path / "o").exists()
    monkeypatch.setenv("MTLSKIT_ALLOW_INSECURE_KEY_PERMISSIONS", "1")
    forced = run_cli(
        "ca", "issue", loose_ca, "--id", "spiffe://acme.com/a", "--out", tmp_path / "o"
    )
    assert forced.code == 0, forced.err


def test_a_gateway_server_key_others_can_read_is_refused(tmp_path, run_cli, ca, monkeypatch):
    server = ca.issue(CLEAN.replace(uris=(), dns=("localhost",)))
    write(tmp_path / "server.pem", server.chain_pem)
    key = write(tmp_path / "server.key", server.key_pem)
    key.chmod(0o640)
    write(tmp_path / "root.pem", ca.root.cert_pem)
    config = write(
        tmp_path / "gateway.toml",
        b'[listen]\ncert = "server.pem"\nkey = "server.key"\n'
        b'[client_auth]\ntrust = ["root.pem"]\n[upstream]\nurls = ["http://127.0.0.1:9"]\n',
    )
    result = run_cli("gateway", "--config", config, "--check")
    assert result.code == 2
    assert "server key is readable by group or others (mode 0640)" in result.err
    key.chmod(0o600)
    assert run_cli("gateway", "--config", config, "--check").code == 0
