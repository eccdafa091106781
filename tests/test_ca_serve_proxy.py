"""`ca serve` trusts X-Forwarded-For only from the proxies it is told of (issue 27, item 6).

uvicorn's default trusts the header from 127.0.0.1, so every client of a local proxy
(or any local process) chose its own address: it escaped the failed-token limit and
wrote a false address into the audit log. Real `ca serve` processes, real HTTPS.
"""

from __future__ import annotations

import ssl

import httpx
import pytest
from cryptography.hazmat.primitives import serialization

from ca_server import RunningCa, init_ca, serve
from mtlskit.certs import generate_private_key
from mtlskit.client import build_csr

WEB = "spiffe://acme.com/web"


pytestmark = pytest.mark.attack("forwarded-for-spoofing")  # issue 27; reliability/redteam.py


def _enroll(ca: RunningCa, token: str, forwarded_for: str) -> httpx.Response:
    csr = build_csr(generate_private_key(), None).public_bytes(serialization.Encoding.PEM)
    return httpx.post(
        f"{ca.url}/v1/enroll",
        json={"token": token, "csr": csr.decode()},
        headers={"X-Forwarded-For": forwarded_for},
        verify=ssl.create_default_context(cafile=ca.root),
    )


def _redeemed_by(ca: RunningCa) -> list[str]:
    store = ca.store()
    try:
        return [
            e.as_dict()["detail"]["client"] for e in store.audit_entries() if e.event == "redeem"
        ]
    finally:
        store.close()


def test_forwarded_for_from_localhost_neither_escapes_the_limit_nor_enters_the_audit(tmp_path):
    running = serve(init_ca(tmp_path / "ca"), "--max-token-failures", "3")
    try:
        codes = [
            _enroll(running, "mtk1_" + "C" * 43, f"203.0.113.{index}").json()["code"]
            for index in range(8)
        ]
        assert codes == ["token_invalid"] * 3 + ["rate_limited"] * 5
    finally:
        running.stop()
    running = serve(init_ca(tmp_path / "ca2"))
    try:
        assert _enroll(running, running.token(WEB), "198.51.100.7").status_code == 201
        assert _redeemed_by(running) == ["127.0.0.1"]
    finally:
        running.stop()


def test_a_configured_proxy_is_trusted_for_the_client_address(tmp_path):
    running = serve(init_ca(tmp_path / "ca"), "--trusted-proxy", "127.0.0.1")
    try:
        assert _enroll(running, running.token(WEB), "198.51.100.7").status_code == 201
        assert _redeemed_by(running) == ["198.51.100.7"]
    finally:
        running.stop()
