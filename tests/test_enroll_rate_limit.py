"""The CA's failed-token limit as the client sees it (issue 21): a real ``mtlskit ca serve``,
wrong tokens until it answers 429 with ``Retry-After``, and ``mtlskit enroll`` (a real
process) saying it was rate-limited, why, and when to retry, in one line with exit 2,
instead of "CA unavailable: HTTP 429".
"""

from __future__ import annotations

import datetime as dt
import re
import ssl
import subprocess
import sys

import httpx
import pytest

from ca_server import init_ca, serve
from mtlskit.client import CaRateLimited, enroll

WRONG = "mtk1_" + "B" * 43
WINDOW = 600  # --failure-window 10m: the wait stays well above a test's own duration


def _enroll(url: str, fingerprint: str, out) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mtlskit", "enroll", url, "--token", WRONG,
         "--out", str(out), "--ca-fingerprint", fingerprint],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_enroll_says_rate_limited_and_when_to_retry(tmp_path):
    running = serve(
        init_ca(tmp_path / "ca"), "--max-token-failures", "2", "--failure-window", "10m"
    )
    try:
        for _ in range(2):
            refused = _enroll(running.url, running.fingerprint, tmp_path / "out")
            assert refused.returncode == 1, refused.stderr
            assert "token_invalid" in refused.stderr
        before = dt.datetime.now(dt.UTC).replace(microsecond=0)
        limited = _enroll(running.url, running.fingerprint, tmp_path / "out")
        response = httpx.post(
            f"{running.url}/v1/enroll",
            json={"token": WRONG, "csr": "x"},
            verify=ssl.create_default_context(cafile=running.root),
        )
        with pytest.raises(CaRateLimited) as raised:
            enroll(running.url, WRONG, tmp_path / "lib", ca_fingerprint=running.fingerprint)
    finally:
        running.stop()
    assert response.status_code == 429 and response.json()["code"] == "rate_limited"
    header = int(response.headers["retry-after"])
    assert 1 <= header <= WINDOW + 1
    assert limited.returncode == 2
    assert limited.stdout == ""
    (line,) = limited.stderr.splitlines()
    match = re.fullmatch(
        rf"mtlskit: error: {re.escape(running.url)}/v1/enroll: rate-limited by the CA after "
        r"repeated failed enrollments from this address \(unknown, used or expired tokens\): "
        r"retry in (\d+) s \(after (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC\)",
        line,
    )
    assert match, line
    seconds = int(match[1])
    assert header <= seconds <= WINDOW + 1  # asked first, so it waits at least as long
    retry_at = dt.datetime.fromisoformat(match[2]).replace(tzinfo=dt.UTC)
    assert before + dt.timedelta(seconds=seconds - 5) <= retry_at
    assert retry_at <= before + dt.timedelta(seconds=seconds + 5)
    assert "CA unavailable" not in line
    assert raised.value.code == "rate_limited"
    assert 1 <= raised.value.retry_after <= WINDOW + 1
