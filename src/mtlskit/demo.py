"""``mtlskit demo``: the seed's questions answered on real certificates, in a temporary directory.

It mints a clean client certificate from a private CA, a self-signed one, and the
defective certificates people actually deploy, then runs ``inspect`` and ``lint``
on each through the same command line a user types. It exits 0 only if every
certificate got the verdict it should, so ``make demo`` doubles as a smoke test.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from mtlskit.certs import Fingerprint
from mtlskit.testca import CLIENT_AUTH, SERVER_AUTH, LeafSpec, TestCA

__all__ = ["run"]

SPIFFE_ID = "spiffe://acme.com/billing/payments"


@dataclass(frozen=True, slots=True, kw_only=True)
class Specimen:
    name: str
    story: str
    spec: LeafSpec
    expect_clean: bool
    self_signed: bool = False


def _specimens(now: dt.datetime) -> list[Specimen]:
    clean = LeafSpec(uris=(SPIFFE_ID,))
    return [
        Specimen(
            name="private-ca-client",
            story="private CA: the CA checked the identity and set SAN and EKU itself",
            spec=clean,
            expect_clean=True,
        ),
        Specimen(
            name="self-signed-client",
            story="self-signed: fine for one client, pinned by its SHA-256 fingerprint",
            spec=LeafSpec(uris=("spiffe://acme.com/batch/reporter",), self_signed=True),
            expect_clean=True,
            self_signed=True,
        ),
        Specimen(
            name="dual-use-server-cert",
            story="a server certificate reused as a client one (serverAuth+clientAuth, DNS SAN)",
            spec=LeafSpec(dns=("api.partner.example",), eku=(SERVER_AUTH, CLIENT_AUTH)),
            expect_clean=True,  # usable, but lint says why this is the wrong signer's habit
        ),
        Specimen(
            name="server-only-eku",
            story="serverAuth only: every strict verifier refuses it for client auth",
            spec=clean.replace(eku=(SERVER_AUTH,)),
            expect_clean=False,
        ),
        Specimen(
            name="ca-true-leaf",
            story="a CA:TRUE 'client' certificate: it could sign other clients",
            spec=clean.replace(
                ca=True, key_usage=frozenset({"digital_signature", "key_cert_sign"})
            ),
            expect_clean=False,
        ),
        Specimen(
            name="cn-only",
            story="identity only in the subject CN: the legacy habit SAN replaced",
            spec=LeafSpec(common_name="payments", include_san=False),
            expect_clean=False,
        ),
        Specimen(
            name="expired",
            story="expired yesterday",
            spec=clean.replace(
                not_before=now - dt.timedelta(days=3), not_after=now - dt.timedelta(days=1)
            ),
            expect_clean=False,
        ),
        Specimen(
            name="two-spiffe-ids",
            story="two SPIFFE IDs: an X509-SVID must carry exactly one URI SAN",
            spec=LeafSpec(uris=(SPIFFE_ID, "spiffe://acme.com/admin")),
            expect_clean=False,
        ),
    ]


def _cli(*args: str) -> tuple[int, str, str]:
    from mtlskit.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def run(console: Console | None = None) -> int:
    console = console or Console()
    now = dt.datetime.now(dt.UTC)
    console.print(
        Panel.fit(
            "mTLS proves the client holds the key of a certificate a trusted issuer signed.\n"
            "Everything else — which field is the identity, which extensions it needs, who\n"
            "signed it — is up to you. This demo shows mtlskit answering those questions.",
            title="mtlskit demo",
        )
    )
    ca = TestCA(name="acme demo")
    failures: list[str] = []
    rows: list[tuple[str, str, str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="mtlskit-demo-") as tmp:
        workdir = Path(tmp)
        for specimen in _specimens(now):
            issued = ca.issue(specimen.spec)
            path = workdir / f"{specimen.name}.pem"
            path.write_bytes(issued.chain_pem + (b"" if specimen.self_signed else ca.root.cert_pem))
            console.rule(f"[bold]{specimen.name}[/bold] — {specimen.story}")
            code, out, err = _cli("inspect", "--json", str(path))
            if code != 0:
                failures.append(f"{specimen.name}: inspect exited {code}: {err.strip()}")
                continue
            leaf = json.loads(out)["results"][0]
            identity = leaf["identity"]
            shown = f"{identity['kind']}: {identity['value']}" if identity else "none"
            fingerprint = Fingerprint.parse(leaf["fingerprint_sha256"]).colon_hex
            console.print(
                f"identity [cyan]{shown}[/cyan]   issuer class [magenta]{leaf['issuer_class']}"
                f"[/magenta]   sha256 {fingerprint[:23]}…"
            )
            code, out, err = _cli("lint", str(path))
            console.print(out.rstrip() or err.rstrip())
            clean = code == 0
            verdict = "clean" if clean else "errors" if code == 1 else f"exit {code}"
            if code not in (0, 1) or clean != specimen.expect_clean:
                failures.append(f"{specimen.name}: lint said {verdict}")
            expected = "clean" if specimen.expect_clean else "errors"
            rows.append((specimen.name, shown, leaf["issuer_class"], expected, verdict))
    table = Table(title="What the demo showed")
    for header in ("certificate", "identity", "issuer", "expected", "lint"):
        table.add_column(header)
    for name, shown, issuer, expected, verdict in rows:
        style = "green" if expected == verdict else "red"
        table.add_row(name, shown, issuer, expected, f"[{style}]{verdict}[/{style}]")
    console.print(table)
    if failures:
        for failure in failures:
            console.print(f"[red]unexpected:[/red] {failure}")
        return 1
    console.print("[green]every certificate got the verdict it should[/green]")
    return 0


if __name__ == "__main__":
    raise SystemExit(run())
