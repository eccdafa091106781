"""Render docs/interop.md from tests/test_interop_clients.py's JSON and a PKCS#12 load timing.

    MTLSKIT_INTEROP_REPORT=/tmp/interop.json .venv/bin/python -m pytest -q \\
        tests/test_interop_clients.py
    .venv/bin/python tests/interop_report.py /tmp/interop.json > docs/interop.md

The load timing writes one client's PKCS#12 at the old and the new PBKDF2 count and times each
reader present here (best of several; keytool's includes the JVM's start).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from mtlskit.cli.export import PBKDF2_ROUNDS
from mtlskit.testca import LeafSpec, TestCA

OLD_ROUNDS = 600_000
PASSWORD = b"export pw"
NODE_TIMER = """
const fs = require('fs'), tls = require('tls');
const data = fs.readFileSync(process.argv[1]); let best = 1e9;
for (let i = 0; i < 5; i++) {
  const t = process.hrtime.bigint();
  tls.createSecureContext({pfx: data, passphrase: process.argv[2]});
  best = Math.min(best, Number(process.hrtime.bigint() - t) / 1e6);
}
console.log(best);
"""

# (reader, the default file, the --legacy file, where the fact comes from)
GO_TIMER = """
package main

import (
	"fmt"
	"os"
	"time"

	"PKCS12"
)

func main() {
	data, _ := os.ReadFile(os.Args[1])
	best := time.Hour
	for i := 0; i < 5; i++ {
		start := time.Now()
		if _, err := pkcs12.ToPEM(data, os.Args[2]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if spent := time.Since(start); spent < best {
			best = spent
		}
	}
	fmt.Println(float64(best.Microseconds()) / 1000)
}
"""
GOPATH_SRC = Path("/usr/share/gocode/src")
READERS: tuple[tuple[str, str, str, str], ...] = (
    (
        "Reader",
        "Default (PBES2 AES-256-CBC, PBKDF2-SHA256, SHA-256 MAC)",
        "`--legacy` (3DES, SHA-1 MAC)",
        "Source",
    ),
    (
        "OpenSSL 3.x",
        "reads (tested here); its own `pkcs12 -export` writes this format, 2,048 iterations",
        "reads (3DES is in the default provider; only RC2-40 needs `-legacy`)",
        "tested; OpenSSL 3 `pkcs12(1)`",
    ),
    (
        "OpenSSL 1.1.1",
        "reads (PBES2 and SHA-256 MACs are older than 1.1)",
        "reads; it also writes 3DES/RC2 by default",
        "`openssl pkcs12 -keypbe AES-256-CBC -macalg sha256` in 1.1.1",
    ),
    (
        "Java 17 (keytool, KeyStore PKCS12, JSSE)",
        "reads (tested here)",
        "reads (tested here)",
        "tested",
    ),
    (
        "Java 11.0.12+, 8u301+",
        "reads; these write it by default (10,000 iterations)",
        "reads",
        "JDK-8153005, JDK-8267880 backports",
    ),
    (
        "Java before 11.0.12 / 8u301",
        "refuses: `Integrity check failed: ... Algorithm HmacPBESHA256 not available`",
        "reads",
        "reports such as confluentinc/cp-demo#370 (Java 8); JDK-8267880 and its backports",
    ),
    (
        "Windows 10 1709+, Server 2019+",
        "imports (AES256-SHA256 PFX: AES-256 bags, SHA-256 for PBKDF2 and the MAC)",
        "imports",
        "Microsoft: `PKCS12_PBES2_ALG_AES256_SHA256`, minimum Windows 10 1709 / Server 2019",
    ),
    (
        "Windows before 10 1709 / Server 2019",
        "no AES256-SHA256 PFX support: use `--legacy` (TripleDES-SHA1)",
        "imports",
        "the same Microsoft page; not tested here",
    ),
    (
        "macOS Keychain / Security.framework (and iOS)",
        'reported refusing OpenSSL 3 files ("wrong password"), e.g. Ventura 13.3;'
        " other reports import them",
        "imports",
        "mseeeen.msen.jp (Ventura 13.3), ca.stable.confirm.ch/pkcs12.html; not tested here",
    ),
    (
        "Go `golang.org/x/crypto/pkcs12` (frozen)",
        "refuses: `pkcs12: unknown digest algorithm: 2.16.840.1.101.3.4.2.1` (tested here)",
        "reads (tested here)",
        "tested; the package reads only SHA-1 MACs and PKCS#12 PBE ciphers",
    ),
    (
        "Go `software.sslmate.com/src/go-pkcs12`",
        "reads (tested here: Debian's 2021-04-15 snapshot already decodes PBES2/AES-256 and"
        " SHA-256 MACs)",
        "reads",
        "tested; Debian golang-sslmate-src-go-pkcs12-dev",
    ),
    (
        "Node 17+ (OpenSSL 3), Node ≤ 16 (OpenSSL 1.1.1)",
        "reads (Node 20 tested here)",
        "reads (tested here)",
        "tested",
    ),
    (
        "Python `cryptography` (`load_pkcs12`, mtlskit's own reader)",
        "reads (tested)",
        "reads (tested)",
        "tests/test_ca_pkcs12.py",
    ),
    (
        "Firefox (NSS)",
        "imports (NSS decodes PBES2)",
        "imports",
        "NSS PKCS#12; not tested here",
    ),
    (
        "Chrome, Edge, Safari",
        "import through the OS store: the Windows and macOS rows apply (Linux Chrome: NSS)",
        "import",
        "—",
    ),
)

DECISION = """\
## The default and `--legacy`

The default stays the modern format: every maintained reader above reads it (the macOS
Keychain is the exception reports disagree on), and the 3DES/SHA-1 one is weaker against a
stolen file for the same password. The readers that cannot read it are
named in `mtlskit export pkcs12 --help` under `--legacy`: Go's `golang.org/x/crypto/pkcs12`
(use `software.sslmate.com/src/go-pkcs12`, or PEM with `tls.LoadX509KeyPair`, which needs no
conversion at all), Java before 8u301/11.0.12, Windows before 10 1709/Server 2019, and the
macOS Keychain. No `--for go` alias: `--legacy` is one flag whose help names every reader.

The PBKDF2 count goes from {old:,} to {new:,}. 600,000 is OWASP's figure for a server's
password table, where one leak exposes every user and the server pays once per login; a
PKCS#12 is one key at rest, behind a password chosen for it, and every client pays the
derivation each time it loads the file (twice: the key bag and the certificate bag; the
SHA-256 MAC's key takes `cryptography`'s fixed 2,048). Other writers' defaults: OpenSSL 3
2,048; Java 10,000 (JDK-8267880); Botan's "modern" profile 100,000; Bouncy Castle 1.86
600,000. 100,000 keeps about 50x OpenSSL's and 10x Java's work per guess (600,000 would add
log2(6) = 2.6 bits) at one sixth of the load time:

{timing}

mtlskit's `--legacy` file uses `cryptography`'s PKCS#12 PBE counts (20,000 for the bags, 2,048
for the SHA-1 MAC); `openssl pkcs12 -info` shows them.
"""


def _time_python(path: Path) -> float:
    data = path.read_bytes()
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        pkcs12.load_pkcs12(data, PASSWORD)
        best = min(best, time.perf_counter() - start)
    return best * 1000


def _time_node(path: Path) -> float | None:
    if not shutil.which("node"):
        return None
    out = subprocess.run(
        ["node", "-e", NODE_TIMER, str(path), PASSWORD.decode()],
        check=True,
        capture_output=True,
        text=True,
    )
    return float(out.stdout)


def _time_keytool(path: Path) -> float | None:
    if not shutil.which("keytool"):
        return None
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run(
            ["keytool", "-list", "-keystore", str(path), "-storetype", "PKCS12",
             "-storepass", PASSWORD.decode()],
            check=True,
            capture_output=True,
        )  # fmt: skip
        best = min(best, time.perf_counter() - start)
    return best * 1000


def _go_timer(tmp: Path, package: str) -> Callable[[Path], float | None]:
    """Times ``ToPEM`` in a Go program built against ``package`` (Debian's, GOPATH mode)."""
    if not shutil.which("go") or not (GOPATH_SRC / package).is_dir():
        return lambda path: None
    source = tmp / package.replace("/", "_") / "main.go"
    source.parent.mkdir(parents=True)
    source.write_text(GO_TIMER.replace("PKCS12", package))
    env = {**os.environ, "GOPATH": str(GOPATH_SRC.parent), "GO111MODULE": "off", "GOFLAGS": ""}
    binary = source.parent / "timer"
    subprocess.run(["go", "build", "-o", str(binary), str(source)], check=True, env=env)

    def run(path: Path) -> float:
        done = subprocess.run(
            [str(binary), str(path), PASSWORD.decode()], check=True, capture_output=True, text=True
        )
        return float(done.stdout)

    return run


def _timing() -> str:
    issued = TestCA(name="acme").issue(LeafSpec(uris=("spiffe://acme.com/billing/payments",)))
    rows = [
        f"| Reader | {OLD_ROUNDS:,} iterations | {PBKDF2_ROUNDS:,} iterations |",
        "|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for rounds in (OLD_ROUNDS, PBKDF2_ROUNDS):
            encryption = (
                serialization.PrivateFormat.PKCS12.encryption_builder()
                .kdf_rounds(rounds)
                .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
                .hmac_hash(hashes.SHA256())
                .build(PASSWORD)
            )
            path = Path(tmp) / f"{rounds}.p12"
            path.write_bytes(
                pkcs12.serialize_key_and_certificates(
                    b"client", issued.key, issued.chain[0], issued.chain[1:], encryption
                )
            )
            files.append(path)
        for name, timer in (
            ("Python cryptography `load_pkcs12`", _time_python),
            ("Node `tls.createSecureContext({pfx})`", _time_node),
            ("keytool -list (includes the JVM's start, ~0.24 s)", _time_keytool),
            (
                "Go software.sslmate.com/src/go-pkcs12 `ToPEM`",
                _go_timer(Path(tmp), "software.sslmate.com/src/go-pkcs12"),
            ),
        ):
            old, new = (timer(path) for path in files)
            if old is None or new is None:
                continue
            rows.append(f"| {name} | {old:.0f} ms | {new:.0f} ms |")
        legacy = Path(tmp) / "legacy.p12"
        legacy.write_bytes(
            pkcs12.serialize_key_and_certificates(
                b"client",
                issued.key,
                issued.chain[0],
                issued.chain[1:],
                serialization.PrivateFormat.PKCS12.encryption_builder()
                .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
                .hmac_hash(hashes.SHA1())
                .build(PASSWORD),
            )
        )
        x_crypto = _go_timer(Path(tmp), "golang.org/x/crypto/pkcs12")(legacy)
        if x_crypto is not None:
            rows.append(
                "| Go golang.org/x/crypto/pkcs12 `ToPEM` | cannot read it | cannot read it;"
                f" the `--legacy` file: {x_crypto:.0f} ms |"
            )
        rows.append(
            "| Python, the `--legacy` file (3DES, 20,000 PBE rounds) | — |"
            f" {_time_python(legacy):.0f} ms |"
        )
    return "\n".join(rows)


def render(report: dict[str, object]) -> str:
    versions = report["versions"]
    results = report["results"]
    assert isinstance(versions, dict) and isinstance(results, list)
    lines = [
        "# Interop: the clients people already run",
        "",
        "<!-- generated by tests/interop_report.py from a tests/test_interop_clients.py run;"
        " do not edit -->",
        "",
        "A client certificate from `mtlskit ca init` / `mtlskit ca issue` and its PKCS#12 from",
        "`mtlskit export pkcs12` (default and `--legacy`), read by each client below, which then",
        'connects to a running `mtlskit gateway` (echo backend); "backend saw" is the',
        "`X-Mtlskit-Client-Identity` the backend received. Every client sends `chain.pem`",
        "(leaf and issuing CA) or the PKCS#12's chain: the gateway trusts the root only.",
        "",
        "## Matrix (tests/test_interop_clients.py)",
        "",
        "| Client | Reads | Outcome |",
        "|---|---|---|",
    ]
    for row in results:
        assert isinstance(row, dict)
        lines.append(f"| {row['client']} | {row['reads']} | {row['outcome']} |")
    lines += ["", "Versions:", ""]
    lines += [f"- {name}: `{value}`" for name, value in versions.items()]
    lines += ["", "## PKCS#12 readers", ""]
    lines += [f"| {' | '.join(row)} |" for row in READERS[:1]]
    lines.append("|---|---|---|---|")
    lines += [f"| {' | '.join(row)} |" for row in READERS[1:]]
    lines.append("")
    lines.append(DECISION.format(old=OLD_ROUNDS, new=PBKDF2_ROUNDS, timing=_timing()))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(render(json.loads(Path(sys.argv[1]).read_text())))
