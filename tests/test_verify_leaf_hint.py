"""`mtlskit verify` on a leaf without its issuing CA says how to fix it (issue 26)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

MTLSKIT = Path(sys.executable).parent / "mtlskit"
HINT = "the issuing CA is missing: pass --chain with it, or use chain.pem (leaf + issuing CA)"


def _mtlskit(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MTLSKIT_CA_PASSPHRASE": "a leaf hint passphrase"}
    return subprocess.run(
        [str(MTLSKIT), *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )


def test_leaf_only_names_the_missing_issuer_and_the_fix(tmp_path):
    assert _mtlskit("ca", "init", "ca", "--trust-domain", "acme.com", cwd=tmp_path).returncode == 0
    issued = _mtlskit(
        "ca", "issue", "ca", "--id", "spiffe://acme.com/x", "--out", "c", cwd=tmp_path
    )
    assert issued.returncode == 0, issued.stderr
    leaf = _mtlskit("verify", "c/cert.pem", "--trust", "ca/root.pem", cwd=tmp_path)
    assert leaf.returncode == 1
    assert "chain_untrusted" in leaf.stdout
    assert f"mtlskit: hint: {HINT}" in leaf.stderr
    with_chain = _mtlskit(
        "verify", "c/cert.pem", "--chain", "ca/issuing.pem", "--trust", "ca/root.pem", cwd=tmp_path
    )
    assert with_chain.returncode == 0, with_chain.stdout
    assert "hint" not in with_chain.stderr
    chain_pem = _mtlskit("verify", "c/chain.pem", "--trust", "ca/root.pem", cwd=tmp_path)
    assert chain_pem.returncode == 0, chain_pem.stdout
