"""Secrets hygiene (issue 11, item 6): keys encrypted at rest, and no secret in any log.

Runs the CA (init, issue, token, ``ca serve`` with an enrollment), and the gateway with
a real mTLS request, as processes, then searches everything they printed or logged
for key material and for the enrollment token. Every process is stopped in teardown.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import trustme

from _gateway_support import EchoBackend, GatewayThread, Site, https_request, write_config
from ca_server import PASSPHRASE, init_ca, serve
from mtlskit.client import enroll
from mtlskit.testca import TestCA


def _run(*args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "mtlskit", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **(env or {})},
    )
    return done.stdout + done.stderr


def test_ca_init_refuses_to_store_keys_unencrypted_by_default(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MTLSKIT_CA_PASSPHRASE"}
    done = subprocess.run(
        [sys.executable, "-m", "mtlskit", "ca", "init", str(tmp_path / "ca")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2
    assert "no passphrase" in done.stderr
    assert not (tmp_path / "ca" / "root.key").exists()


def test_ca_keys_are_encrypted_and_private(tmp_path):
    directory = init_ca(tmp_path / "ca")
    for stem in ("root", "issuing"):
        key = directory / f"{stem}.key"
        assert b"ENCRYPTED PRIVATE KEY" in key.read_bytes()
        assert key.stat().st_mode & 0o077 == 0


def test_no_key_material_or_token_in_any_output_or_log(tmp_path, ca: TestCA, clean_leaf):
    outputs: list[str] = []
    directory = init_ca(tmp_path / "ca")
    env = {"MTLSKIT_CA_PASSPHRASE": PASSPHRASE}
    outputs.append(
        _run(
            "ca",
            "issue",
            str(directory),
            "--id",
            "spiffe://acme.com/a",
            "--out",
            str(tmp_path / "issued"),
            env=env,
        )
    )
    outputs.append(_run("ca", "list", str(directory), "--json"))
    outputs.append(_run("ca", "audit", "export", str(directory), "--json"))
    running = serve(directory)
    try:
        token = running.token("spiffe://acme.com/enrolled")
        enroll(running.url, token, tmp_path / "enrolled", ca_fingerprint=running.fingerprint)
        refused = running.token("spiffe://acme.com/other")
        try:  # a refused redemption (wrong identity) must not echo the token either
            enroll(
                running.url,
                refused,
                tmp_path / "refused",
                ca_fingerprint=running.fingerprint,
                identity="spiffe://acme.com/wrong",
            )
        except Exception as exc:
            outputs.append(str(exc))
    finally:
        running.stop()
    outputs.append(running.errors)
    outputs.append(_run("ca", "audit", "export", str(directory), "--json"))
    outputs.append(_run("ca", "requests", "list", str(directory), "--json"))

    backend = EchoBackend()
    site = Site(dir=tmp_path / "gw", server_ca=trustme.CA(), backend=backend)
    site.dir.mkdir()
    gateway = GatewayThread(
        write_config(site, ca.bundle_pem, '[client_auth]\ntrust = ["trust.pem"]\n')
    )
    try:
        context = site.client_context(clean_leaf)
        answer = https_request(
            gateway.port, context, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        assert answer.startswith(b"HTTP/1.1 200")
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
            sock.sendall(b"\x16\x03\x01\x00\x05hello")  # a refused handshake gets logged too
            sock.recv(100)
    finally:
        gateway.stop()
        backend.stop()
    outputs += [site.connection_log.read_text(), site.access_log.read_text()]

    text = "\n".join(outputs)
    for secret in (token, refused, PASSPHRASE):
        assert secret not in text
    assert "PRIVATE KEY" not in text
    assert "issued serial" in text and '"event":"connection"' in text  # the logs were read
