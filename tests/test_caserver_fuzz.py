"""Schemathesis over the CA server's own OpenAPI document, against a live `ca serve`.

Short form for CI (a few hundred generated requests, seconds): no 5xx, and every
status code, content type, header and body conforms to the document. The client
presents a certificate the CA issued, so `/v1/renew` is exercised past its TLS gate.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ca_server import init_ca, serve
from mtlskit.client import enroll

HOOKS = Path(__file__).with_name("schemathesis_hooks.py")
CHECKS = ",".join(
    (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    )
)


def _schemathesis() -> str:
    found = Path(sys.executable).with_name("st")
    if not found.exists():
        pytest.fail("schemathesis is not installed: pip install -e '.[test]'")
    return str(found)


def test_openapi_fuzz_finds_no_server_error(tmp_path):
    running = serve(init_ca(tmp_path / "ca"), "--max-token-failures", "100000")
    try:
        client = tmp_path / "client"
        enroll(running.url, running.token("spiffe://acme.com/fuzz"), client)
        command = [
            *(_schemathesis(), "run", f"{running.url}/openapi.json"),
            *("--tls-verify", str(running.root), "--checks", CHECKS),
            *("--request-cert", str(client / "chain.pem")),
            *("--request-cert-key", str(client / "key.pem")),
            # EST's simpleenroll past its Basic gate (RFC 7030 §3.2.3: the token is the password)
            *("--auth", f"est:{running.token('spiffe://acme.com/fuzz-est')}"),
            *("--max-examples", "25", "--generation-database", "none", "--no-color"),
        ]
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=tmp_path,  # schemathesis leaves a .schemathesis/ folder where it runs
            env={**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS)},  # EST's application/pkcs10
        )
    finally:
        running.stop()
    report = result.stdout[-4000:] + result.stderr[-2000:]
    assert result.returncode == 0, report
    assert " passed" in result.stdout and "failed" not in result.stdout.split("SUMMARY")[-1]
    assert "internal error" not in running.errors, running.errors[-2000:]
    store = running.store()
    try:
        renewed = store.certificates(now=dt.datetime.now(dt.UTC))
    finally:
        store.close()
    assert len(renewed) > 1  # the fuzzer got past the TLS gate and renewed
