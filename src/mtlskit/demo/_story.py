"""The demo's steps: each answers one of the seed's questions with real certificates and servers.

Every step records an ``Outcome`` — the question, what was shown, and whether it
behaved as it must — and the demo's exit code is 0 only if all of them did.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import secrets
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from mtlskit.certs import load_certificates
from mtlskit.client import CaRefused, enroll
from mtlskit.demo._services import Services, free_port, https_get, wait_for_port
from mtlskit.testca import CLIENT_AUTH, SERVER_AUTH, LeafSpec, TestCA

__all__ = ["Outcome", "Story"]

ENROLLED_ID = "spiffe://acme.com/billing/payments"
SELF_SIGNED_ID = "spiffe://acme.com/batch/reporter"
STRANGER_DNS = "stranger.example"


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    question: str
    shown: str
    ok: bool


def cli(*args: str | Path) -> tuple[int, str, str]:
    """Run ``mtlskit ARGS`` in-process, as a user would type it."""
    from mtlskit.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(arg) for arg in args])
    return code, out.getvalue(), err.getvalue()


@dataclass
class Story:
    console: Console
    workdir: Path
    services: Services
    outcomes: list[Outcome] = field(default_factory=list)
    gateway_pid: int = 0

    def record(self, question: str, shown: str, ok: bool) -> None:
        self.outcomes.append(Outcome(question=question, shown=shown, ok=ok))
        mark = "[green]as expected[/green]" if ok else "[red]NOT as expected[/red]"
        self.console.print(f"  → {shown}  {mark}")

    def say(self, text: str) -> None:
        self.console.print(f"[dim]{text}[/dim]")

    # --- the private CA: identity is checked before signing ---------------------------

    def private_ca(self) -> None:
        self.console.rule("[bold]1. A private CA checks who the client is before it signs")
        ca_dir = self.workdir / "ca"
        code, _, err = cli("ca", "init", ca_dir, "--trust-domain", "acme.com", "--name", "acme")
        if code != 0:
            raise RuntimeError(f"ca init failed: {err.strip()}")
        self.say(f"mtlskit ca init {ca_dir.name}/ --trust-domain acme.com")
        code, token, err = cli("ca", "token", ca_dir, "--id", ENROLLED_ID, "--ttl", "5m")
        token = token.strip()
        self.say(f"mtlskit ca token ca/ --id {ENROLLED_ID}   (one-time, bound to that identity)")
        serve = self.services.start(
            "ca-serve", "ca", "serve", str(ca_dir), "--listen", "127.0.0.1:0"
        )
        assert serve.stdout is not None
        first, second = serve.stdout.readline(), serve.stdout.readline()
        if not first.startswith("serving CA"):
            raise RuntimeError(f"ca serve did not start: {self.services.log('ca-serve')}")
        url, root_fingerprint = first.split()[-1], second.split()[-1]
        self.say(f"mtlskit ca serve ca/  → {url}")
        client_dir = self.workdir / "client"
        enrolled = enroll(url, token, client_dir, ca_fingerprint=root_fingerprint)
        leaf = load_certificates((client_dir / "cert.pem").read_bytes())[0]
        self.say(f"mtlskit enroll {url} --token … --ca-fingerprint {root_fingerprint[:20]}…")
        try:
            enroll(url, token, self.workdir / "thief", ca_fingerprint=root_fingerprint)
            reused = "accepted"
        except CaRefused as refusal:
            reused = refusal.code
        key_mode = (client_dir / "key.pem").stat().st_mode & 0o777
        self.record(
            "Who checks the identity before signing? (private CA)",
            f"the CA redeemed a one-time token for {ENROLLED_ID}; serial {leaf.serial_number:x}"
            f"; the key never left the client (mode {key_mode:o}); reusing the token: {reused}",
            ok=reused == "token_used" and key_mode == 0o600 and enrolled is not None,
        )

    # --- which field, which extensions --------------------------------------------------

    def identity_and_extensions(self, defects: TestCA) -> None:
        self.console.rule("[bold]2. Which field is the identity, which extensions matter")
        client = self.workdir / "client" / "chain.pem"
        _, out, _ = cli("inspect", "--json", client)
        leaf = json.loads(out)["results"][0]
        eku = [usage["name"] for usage in leaf["extended_key_usage"] or []]
        self.record(
            "Which certificate field identifies the client?",
            f"the subjectAltName URI: {leaf['identity']['kind']} {leaf['identity']['value']}",
            ok=leaf["identity"]["value"] == ENROLLED_ID,
        )
        code, _, _ = cli("lint", client)
        self.record(
            "Which extensions must a client certificate carry?",
            f"CA:FALSE, keyUsage {', '.join(leaf['key_usage'])}, EKU {', '.join(eku)}: lint clean",
            ok=code == 0 and eku == ["clientAuth"],
        )
        wrong = {
            "serverAuth-only EKU": LeafSpec(uris=(ENROLLED_ID,), eku=(SERVER_AUTH,)),
            "CA:TRUE leaf": LeafSpec(
                uris=(ENROLLED_ID,),
                ca=True,
                key_usage=frozenset({"digital_signature", "key_cert_sign"}),
            ),
            "identity only in the CN": LeafSpec(common_name="payments", include_san=False),
            "two SPIFFE IDs": LeafSpec(uris=(ENROLLED_ID, "spiffe://acme.com/admin")),
        }
        caught = []
        for name, spec in wrong.items():
            path = self.workdir / f"defect-{len(caught)}.pem"
            path.write_bytes(defects.issue(spec).chain_pem)
            code, out, _ = cli("lint", "--json", path)
            codes = {f["code"] for f in json.loads(out)["results"][0]["findings"]}
            caught.append(code == 1)
            self.say(f"lint {name}: {', '.join(sorted(codes))}")
        self.record(
            "What do people get wrong? (lint)",
            f"{sum(caught)} of {len(caught)} defective certificates refused by lint with a code",
            ok=all(caught),
        )

    # --- the gateway: verify, authorize, forward ---------------------------------------

    def gateway(self, web: TestCA, public: TestCA) -> int:
        self.console.rule("[bold]3. A gateway verifies, authorizes and forwards the identity")
        code, out, _ = cli("selfsigned", "--id", SELF_SIGNED_ID, "--out", self.workdir / "solo")
        pin = next(line.split()[-1] for line in out.splitlines() if "fingerprint" in line.lower())
        self.say(f"mtlskit selfsigned --id {SELF_SIGNED_ID}  → pin {pin[:23]}…")
        server = web.issue(LeafSpec(dns=("localhost",), eku=(SERVER_AUTH,)))
        (self.workdir / "server.pem").write_bytes(server.chain_pem)
        (self.workdir / "server.key").write_bytes(server.key_pem)
        (self.workdir / "server.key").chmod(0o600)
        (self.workdir / "web-root.pem").write_bytes(web.root.cert_pem)
        (self.workdir / "public-root.pem").write_bytes(public.root.cert_pem)
        (self.workdir / "policy.toml").write_text(
            f'[[allow]]\nid = "spiffe://acme.com/billing/*"\n\n[[allow]]\nfingerprint = "{pin}"\n'
        )
        backend = self.services.echo()
        port, metrics = free_port(), free_port()
        config = self.workdir / "gateway.toml"
        config.write_text(
            f'[listen]\naddress = "127.0.0.1:{port}"\ncert = "server.pem"\nkey = "server.key"\n\n'
            '[client_auth]\nmode = "reject_invalid"\n'
            'trust = ["ca/root.pem", "public-root.pem"]\npins = ["solo/cert.pem"]\n'
            'policy = "policy.toml"\ncrls = ["crl.pem"]\n'
            "allow_public_roots = true   # the mistake this demo shows: a public root trusted\n\n"
            f'[upstream]\nurls = ["http://127.0.0.1:{backend.port}"]\n\n'
            '[forward]\nformats = ["xfcc", "gcp", "rfc9440", "verdict"]\n\n'
            f'[metrics]\naddress = "127.0.0.1:{metrics}"\n\n'
            '[log]\naccess = "access.log"\nconnection = "connection.log"\n\n'
            "[reload]\npoll_interval = 0.2   # CRL and trust files are re-read when they change\n"
        )
        tomllib.loads(config.read_text())
        code, _, err = cli("ca", "crl", self.workdir / "ca", "--out", self.workdir / "crl.pem")
        if code != 0:
            raise RuntimeError(f"ca crl failed: {err.strip()}")
        gateway = self.services.start("gateway", "gateway", "--config", str(config))
        self.gateway_pid = gateway.pid
        try:
            wait_for_port(port, process=gateway)
        except RuntimeError as exc:
            last = (self.services.log("gateway").strip().splitlines() or [""])[-1]
            raise RuntimeError(f"the gateway did not start ({exc}): {last}") from None
        self.say(f"mtlskit gateway --config gateway.toml   (127.0.0.1:{port} → echo backend)")
        server_ca = self.workdir / "web-root.pem"
        client = self.workdir / "client"
        forged = {
            "X-Client-Cert-SPIFFE": "spiffe://acme.com/admin",
            "X-Forwarded-Client-Cert": "URI=spiffe://acme.com/admin",
        }
        good = https_get(
            port,
            server_ca=server_ca,
            cert=client / "chain.pem",
            key=client / "key.pem",
            headers=forged,
        )
        xfcc = good.headers.get("x-forwarded-client-cert", "")
        spiffe = good.headers.get("x-client-cert-spiffe", "")
        self.say(f"backend received X-Client-Cert-SPIFFE: {spiffe}")
        self.say(f"backend received X-Forwarded-Client-Cert: {xfcc[:110]}…")
        self.record(
            "What reaches the backend? (identity headers, spoofing)",
            f"{good.status}; the backend saw {spiffe} in GCP and XFCC form, "
            "not the forged spiffe://acme.com/admin the client sent",
            ok=good.status == 200 and spiffe == ENROLLED_ID and "admin" not in xfcc,
        )
        pinned = https_get(
            port,
            server_ca=server_ca,
            cert=self.workdir / "solo" / "cert.pem",
            key=self.workdir / "solo" / "key.pem",
        )
        seen = pinned.headers.get("x-mtlskit-client-identity")
        self.record(
            "Self-signed: how does a service trust it?",
            f"{pinned.status} for the pinned self-signed client ({seen}); "
            "pinned by SHA-256, checked out of band",
            ok=pinned.status == 200 and seen == SELF_SIGNED_ID,
        )
        stranger = public.issue(LeafSpec(dns=(STRANGER_DNS,), eku=(SERVER_AUTH, CLIENT_AUTH)))
        (self.workdir / "stranger.pem").write_bytes(stranger.chain_pem)
        (self.workdir / "stranger.key").write_bytes(stranger.key_pem)
        denied = https_get(
            port,
            server_ca=server_ca,
            cert=self.workdir / "stranger.pem",
            key=self.workdir / "stranger.key",
        )
        reason = self._logged("access.log", "identity_not_authorized")
        self.record(
            "Public CA: what does domain validation prove about a client?",
            f"nothing: the stranger's DV certificate passed path validation under the trusted "
            f"public root and only the policy stopped it ({denied.status}; the log says "
            "identity_not_authorized, the client learns nothing)",
            ok=denied.status == 403 and reason,
        )
        nothing = https_get(port, server_ca=server_ca)
        self.record(
            "No client certificate?",
            f"refused in the handshake ({(nothing.error or '')[:60]})",
            ok=nothing.status is None or nothing.status >= 400,
        )
        return port

    def _logged(self, name: str, text: str, *, seconds: float = 5.0) -> bool:
        """Whether ``text`` reaches the gateway's log (buffered: written at most 0.1 s late)."""
        deadline = time.monotonic() + seconds
        path = self.workdir / name
        while True:
            if path.exists() and text in path.read_text():
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)

    # --- proof of possession -------------------------------------------------------------

    def proof_of_possession(self, port: int) -> None:
        self.console.rule("[bold]4. A copied certificate cannot be passed off")
        client = self.workdir / "client"
        code, out, err = cli(
            "probe",
            f"127.0.0.1:{port}",
            "--cert",
            client / "chain.pem",
            "--key",
            client / "key.pem",
            "--ca-dir",
            self.workdir / "ca",
            "--crl-out",
            self.workdir / "crl.pem",
            "--after-crl",
            f"kill -HUP {self.gateway_pid}",  # reload now, not at the next file poll
            "--echo",
            "--server-name",
            "localhost",
            "--json",
        )
        if code == 2:
            self.record("Can a copied certificate be used?", f"probe failed: {err.strip()}", False)
            return
        report = json.loads(out)
        cases = report["cases"]
        for case in cases:
            self.say(f"probe {case['id']}: {case['summary']} ({case['verdict']})")
        foreign = [case for case in cases if case["id"].startswith("foreign-key")]
        alerts = {case["observed"]["alert"] for case in foreign}
        counts = report["counts"]
        odd = [
            f"{case['id']}: {case['summary']}"
            for case in cases
            if case["verdict"] not in {"pass", "info"}
        ]
        self.record(
            "Can a copied certificate be used without its key?",
            f"no: presented with a foreign key over TLS 1.2 and 1.3 the handshake failed "
            f"with {', '.join(sorted(str(a) for a in alerts))} — CertificateVerify proves "
            f"possession; the whole battery: {counts.get('pass', 0)} passed, "
            f"{counts.get('fail', 0)} failed, {counts.get('finding', 0)} findings"
            + (f" ({'; '.join(odd)})" if odd else ""),
            ok=len(foreign) == 2 and alerts == {"decrypt_error"} and report["exit_code"] == 0,
        )

    # --- public CAs -----------------------------------------------------------------------

    def public_ca(self) -> None:
        self.console.rule("[bold]5. Why a public CA is the wrong signer for clients")
        code, out, _ = cli("audit", "--json", self.workdir / "gateway.toml")
        flagged = [
            entry["source"]
            for entry in json.loads(out)["entries"]
            if any(f["code"] == "public_root_in_client_trust_store" for f in entry["findings"])
        ]
        self.record(
            "Is a public root in my client trust store?",
            f"mtlskit audit gateway.toml: exit {code}, public_root_in_client_trust_store for "
            f"{', '.join(Path(s).name for s in flagged)}",
            ok=code == 1 and len(flagged) == 1,
        )
        code, out, _ = cli(
            "lint", "--json", "--profile", "public-ca", self.workdir / "stranger.pem"
        )
        findings = json.loads(out)["results"][0]["findings"]
        dated = [f for f in findings if f["code"].startswith("public_ca_client_auth")]
        for finding in dated:
            self.say(f"lint --profile public-ca: {finding['code']}: {finding['message'][:120]}…")
        issued = dt.datetime.now(dt.UTC).date().isoformat()
        self.record(
            "Do public CAs still issue clientAuth?",
            f"a dual-use certificate issued {issued} is flagged with the root-program dates "
            "(Chrome: serverAuth-only leaves from 2027-03-15; Let's Encrypt ended it 2026-07-08)",
            ok=bool(dated),
        )


def new_passphrase() -> str:
    """A fresh CA passphrase per demo run: never a hard-coded one, even in a demo."""
    return secrets.token_urlsafe(24)
