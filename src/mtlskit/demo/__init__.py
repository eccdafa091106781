"""``mtlskit demo``: the seed's questions answered end to end, on embedded defaults.

In a temporary directory and on 127.0.0.1 only: a private CA (SQLite) enrolls a
client with a one-time token over its HTTPS API; a self-signed client is pinned by
fingerprint; a gateway in front of an echo backend verifies, authorizes and forwards
identities; the probe shows a copied certificate is useless without its key; a
simulated public CA's stranger passes path validation and is stopped only by policy,
and audit and lint flag the public root and the dual-use certificate. It ends with a
table mapping each question to what was shown, removes every file and process, and
exits 0 only if every step behaved as it must.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from mtlskit.demo._services import Services
from mtlskit.demo._story import Outcome, Story, new_passphrase
from mtlskit.publicca import EXTRA_ROOTS_ENV
from mtlskit.testca import TestCA

__all__ = ["Outcome", "run"]


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """The demo's settings for in-process commands too, restored afterwards."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _table(outcomes: list[Outcome]) -> Table:
    table = Table(title="The seed's questions, answered on real certificates", show_lines=True)
    table.add_column("question", style="bold", max_width=34)
    table.add_column("what the demo showed")
    table.add_column("", justify="center")
    for outcome in outcomes:
        table.add_row(outcome.question, outcome.shown, "✅" if outcome.ok else "❌")
    return table


def run(console: Console | None = None) -> int:
    console = console or Console()
    started = time.monotonic()
    console.print(
        Panel.fit(
            "mTLS proves the client holds the key of a certificate a trusted issuer signed.\n"
            "Which field is the identity, which extensions it needs, who signs it and who\n"
            "checked the identity first are left to you. This demo answers each question\n"
            "with real certificates, a real CA server, a gateway and an attacker.",
            title="mtlskit demo",
        )
    )
    with tempfile.TemporaryDirectory(prefix="mtlskit-demo-") as tmp:
        workdir = Path(tmp)
        public = TestCA(name="Simulated Public Trust", organization="Simulated Public Trust")
        (workdir / "public-roots.pem").write_bytes(public.root.cert_pem)
        settings = {
            "MTLSKIT_CA_PASSPHRASE": new_passphrase(),
            EXTRA_ROOTS_ENV: str(workdir / "public-roots.pem"),
        }
        services = Services(workdir=workdir, env=settings)
        story = Story(console=console, workdir=workdir, services=services)
        try:
            with _environment(settings):
                story.private_ca()
                story.identity_and_extensions(TestCA(name="careless"))
                port = story.gateway(TestCA(name="acme web", intermediate=False), public)
                story.proof_of_possession(port)
                story.public_ca()
        except Exception as exc:  # a broken step is a failed demo, reported, not a trace
            story.record("(the demo itself)", f"stopped: {type(exc).__name__}: {exc}", False)
        finally:
            services.close()
    console.print(_table(story.outcomes))
    seconds = time.monotonic() - started
    failed = [outcome for outcome in story.outcomes if not outcome.ok]
    if failed:
        console.print(
            f"[red]{len(failed)} step(s) did not behave as they must[/red] ({seconds:.1f}s)"
        )
        return 1
    console.print(
        f"[green]every step behaved as it must[/green] — {len(story.outcomes)} checks in "
        f"{seconds:.1f}s; every process stopped and every file removed"
    )
    return 0
