"""TLS configuration scan of the gateway and ``mtlskit ca serve`` with testssl.sh (item 5).

testssl.sh (Debian package ``testssl.sh``; ``.ci/run`` installs it) runs its protocol,
cipher-category, server-preference and renegotiation checks against 127.0.0.1. The
verdict: TLS 1.2 and 1.3 only; no NULL, anonymous, export, LOW, 3DES/IDEA or
"AVERAGE" (CBC without AEAD) cipher; secure renegotiation and no client-initiated
renegotiation; and no finding of severity MEDIUM or worse.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from reliability.report import Row

CHECKS = ["-p", "-s", "-P", "-R"]  # protocols, cipher categories, preference, renegotiation
NOT_OFFERED = [
    "SSLv2",
    "SSLv3",
    "TLS1",
    "TLS1_1",
    "cipherlist_NULL",
    "cipherlist_aNULL",
    "cipherlist_EXPORT",
    "cipherlist_LOW",
    "cipherlist_3DES_IDEA",
    "cipherlist_AVERAGE",
]
OFFERED = ["TLS1_2", "TLS1_3"]
BAD_SEVERITY = {"MEDIUM", "HIGH", "CRITICAL"}


def scan(port: int) -> tuple[list[dict[str, Any]], float]:
    """testssl.sh's findings for 127.0.0.1:``port`` (its JSON), and how long it took."""
    program = shutil.which("testssl") or shutil.which("testssl.sh")
    if program is None:
        raise RuntimeError("testssl.sh is not installed (apt-get install testssl.sh)")
    with tempfile.TemporaryDirectory(prefix="rel-tls-") as temp:
        out = Path(temp, "scan.json")
        started = time.monotonic()
        subprocess.run(
            [
                program,
                "--quiet",
                "--color",
                "0",
                "--warnings",
                "off",
                "--jsonfile",
                str(out),
                *CHECKS,
                "--ip",
                "one",
                f"127.0.0.1:{port}",
            ],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        return json.loads(out.read_text()), time.monotonic() - started


def judge(findings: list[dict[str, Any]]) -> list[str]:
    """Every way the scan falls short of the policy above; empty when it passes."""
    by_id = {item["id"]: item for item in findings}
    problems = []
    for key in NOT_OFFERED:
        finding = by_id.get(key, {}).get("finding", "missing")
        if not finding.startswith("not offered"):
            problems.append(f"{key}: {finding}")
    for key in OFFERED:
        finding = by_id.get(key, {}).get("finding", "missing")
        if not finding.startswith("offered"):
            problems.append(f"{key}: {finding}")
    renego = by_id.get("secure_renego", {}).get("finding", "missing")
    if "supported" not in renego or "not" in renego:
        problems.append(f"secure_renego: {renego}")
    client_renego = by_id.get("secure_client_renego", {}).get("finding", "missing")
    # With a client certificate required testssl.sh 3.0 sometimes cannot try it; OpenSSL 3
    # refuses client-initiated renegotiation unless explicitly allowed, which mtlskit never does.
    if not client_renego.startswith("not vulnerable") and "prevents this" not in client_renego:
        problems.append(f"secure_client_renego: {client_renego}")
    problems += [
        f"{item['id']} ({item['severity']}): {item['finding']}"
        for item in findings
        if item.get("severity") in BAD_SEVERITY and item["id"] not in NOT_OFFERED
    ]
    return problems


def _row(name: str, port: int) -> Row:
    findings, seconds = scan(port)
    problems = judge(findings)
    by_id = {item["id"]: item.get("finding", "") for item in findings}
    return Row(
        part="5 TLS scan",
        test=f"testssl.sh against {name}",
        load=f"testssl.sh {' '.join(CHECKS)} ({seconds:.0f} s)",
        observed=(
            f"TLS1.2 {by_id.get('TLS1_2')}, TLS1.3 {by_id.get('TLS1_3')}; older: not offered; "
            f"weak cipher categories: none; secure renegotiation "
            f"{by_id.get('secure_renego')}; client renegotiation "
            f"{by_id.get('secure_client_renego')}"
            if not problems
            else "; ".join(problems)
        ),
        unexpected=len(problems),
        ok=not problems,
    )


def run(quick: bool) -> list[Row]:
    from reliability import ca, gateway

    rows = []
    with tempfile.TemporaryDirectory(prefix="rel-tls-site-") as temp:
        site = gateway._make_site(Path(temp))
        try:
            gateway.start_gateway(site)
            rows.append(_row("the gateway", site.port))
        finally:
            gateway.stop_gateway(site)
            site.backend.kill()
            site.backend.wait()
        directory = ca.init_ca(Path(temp) / "ca")
        process, url, _ = ca._serve(directory)
        try:
            rows.append(_row("`mtlskit ca serve`", int(url.rsplit(":", 1)[1])))
        finally:
            process.terminate()
            process.wait(timeout=15)
            if process.stdout is not None:
                process.stdout.close()
    return rows
