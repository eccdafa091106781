"""Secrets hygiene (item 6) in the report: the pytest checks in tests/, run and counted.

The checks themselves live in ``tests/test_secrets_hygiene.py`` (CA keys encrypted and
0600 by default; no key material or enrollment token in any output or log of the CA,
``ca serve`` enrollment and the gateway), so ``make test`` runs them too.
"""

from __future__ import annotations

import re
import subprocess
import sys

from reliability.report import ROOT, Row


def run(quick: bool) -> list[Row]:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/test_secrets_hygiene.py",
            "tests/test_key_permissions.py",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    summary = (done.stdout.strip().splitlines() or ["no output"])[-1]
    failed = int(match.group(1)) if (match := re.search(r"(\d+) failed", summary)) else 0
    return [
        Row(
            part="6 Secrets",
            test="secrets hygiene (tests/test_secrets_hygiene.py, test_key_permissions.py)",
            load="ca init/issue/list/audit export, ca serve + 2 enrollments (one refused), "
            "gateway with an mTLS request and a refused handshake; every output and log searched",
            observed=f"pytest: {summary}; searched for 'PRIVATE KEY', both tokens, the passphrase",
            unexpected=failed,
            ok=done.returncode == 0,
            notes=[
                "CA keys and the gateway's server key are refused at load when group or "
                "others may read them (exit 2 naming the file; "
                "MTLSKIT_ALLOW_INSECURE_KEY_PERMISSIONS=1 forces)"
            ],
        )
    ]
