"""Verification and authorization throughput, beside pyca's bare verifier and openssl.

Same chains for every contender: P-256 leaf + intermediate presented, root as the
only anchor. ``openssl verify -purpose sslclient`` is measured per invocation (a
process per certificate, which is how scripts use it) and as one batch invocation
over all leaf files (startup subtracted by timing a one-file run).
"""

from __future__ import annotations

import datetime as dt
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.verification import PolicyBuilder, Store

from bench.report import Goal, Section, table
from mtlskit.authz import Policy, Rule, RuleKind
from mtlskit.certs import certificate_pem
from mtlskit.identity import ClientIdentity, IdentityKind, SpiffeId
from mtlskit.testca import LeafSpec, TestCA
from mtlskit.verify import Decision, TrustStore, Verdict, VerificationCache, Verifier


def _median_rate(work: Callable[[], int], repeats: int) -> float:
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        done = work()
        rates.append(done / (time.perf_counter() - start))
    return statistics.median(rates)


def _interleaved(works: dict[str, Callable[[], int]], repeats: int) -> dict[str, float]:
    """Alternate the contenders so that machine noise hits them alike; median of each."""
    rates: dict[str, list[float]] = {name: [] for name in works}
    for _ in range(repeats):
        for name, work in works.items():
            start = time.perf_counter()
            done = work()
            rates[name].append(done / (time.perf_counter() - start))
    return {name: statistics.median(values) for name, values in rates.items()}


def _openssl(args: list[str]) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def run(quick: bool) -> Section:
    chains_n = 40 if quick else 200
    repeats = 3 if quick else 9
    now = dt.datetime.now(dt.UTC)
    ca = TestCA(name="bench")
    leaves = [ca.issue(LeafSpec(uris=(f"spiffe://acme.com/svc/{i}",))) for i in range(chains_n)]
    chains = [list(leaf.chain[:-1]) for leaf in leaves]
    store = Store([ca.root.cert])
    verifier = Verifier(trust=TrustStore.build(anchors=[ca.root.cert]))
    assert all(verifier.verify(chain, at=now).accepted for chain in chains)

    def bare() -> int:
        for leaf, inter in chains:
            PolicyBuilder().store(store).time(now).build_client_verifier().verify(leaf, [inter])
        return len(chains)

    def ours() -> int:
        for chain in chains:
            verifier.verify(chain, at=now)
        return len(chains)

    rates = _interleaved({"pyca": bare, "mtlskit": ours}, repeats)

    cache = VerificationCache()
    ders = [[cert.public_bytes(Encoding.DER) for cert in chain] for chain in chains]
    hit_rounds = 50 if quick else 500

    def cached() -> int:
        for _ in range(hit_rounds):
            for chain in ders:
                cache.verify(verifier, chain, at=now)
        return hit_rounds * len(ders)

    cached()  # fill
    cache_rate = _median_rate(cached, repeats)

    with tempfile.TemporaryDirectory() as temp:
        directory = Path(temp)
        (directory / "root.pem").write_bytes(ca.bundle_pem)
        (directory / "inter.pem").write_bytes(certificate_pem(ca.issuer.cert))
        names = []
        for index, leaf in enumerate(leaves):
            name = directory / f"leaf{index}.pem"
            name.write_bytes(leaf.cert_pem)
            names.append(str(name))
        base = ["verify", "-purpose", "sslclient", "-CAfile", str(directory / "root.pem")]
        base += ["-untrusted", str(directory / "inter.pem")]
        spawn_n = 20 if quick else 100
        start = time.perf_counter()
        for name in names[:spawn_n]:
            _openssl([*base, name])
        spawn_rate = spawn_n / (time.perf_counter() - start)
        one, batch = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            _openssl([*base, names[0]])
            one.append(time.perf_counter() - start)
            start = time.perf_counter()
            _openssl([*base, *names])
            batch.append(time.perf_counter() - start)
        batch_rate = (len(names) - 1) / max(statistics.median(batch) - statistics.median(one), 1e-9)

    authz_rate, exact_rate, rules_n = _authz(quick, repeats)
    overhead = rates["mtlskit"] and rates["pyca"] / rates["mtlskit"] - 1
    rows = [
        ["pyca bare client verifier", f"{rates['pyca']:,.0f}", "1.00×"],
        [
            "mtlskit Verifier (no cache, full policy)",
            f"{rates['mtlskit']:,.0f}",
            f"{rates['mtlskit'] / rates['pyca']:.2f}× (+{overhead:.0%} time per verification)",
        ],
        [
            "openssl verify, one process per certificate",
            f"{spawn_rate:,.0f}",
            f"{spawn_rate / rates['pyca']:.3f}×",
        ],
        [
            "openssl verify, one batch invocation (startup subtracted)",
            f"{batch_rate:,.0f}",
            f"{batch_rate / rates['pyca']:.2f}×",
        ],
        [
            "mtlskit VerificationCache hit (DER chain in)",
            f"{cache_rate:,.0f}",
            f"{cache_rate / rates['pyca']:.0f}× (goal ≥ 200,000/s)",
        ],
        [
            f"authorize, {rules_n:,} rules, mixed (89% exact, 10% pattern, 1% deny)",
            f"{authz_rate:,.0f}",
            "goal ≥ 500,000/s",
        ],
        [f"authorize, {rules_n:,} rules, exact-ID hits only", f"{exact_rate:,.0f}", ""],
    ]
    body = "\n".join(
        [
            f"{chains_n} distinct P-256 chains (leaf + intermediate presented, root anchored), "
            f"verified at a fixed time; medians of {repeats} interleaved runs, one core.",
            "",
            table(["what", "per second", "vs pyca bare"], rows),
            "",
            "mtlskit's verifier runs pyca's client verifier plus its own checks (identity "
            "extraction, EKU, CA flag, key usage for SVIDs, key strength, signature hash, "
            "validity, depth, trust-domain binding, pins, CRLs) and builds a `Decision` with "
            "chain fingerprints; the budget for that is +25% time per verification. "
            "openssl per invocation is dominated by process start-up; the batch figure is "
            "`openssl verify` given every leaf file in one invocation, minus the time of a "
            "one-file invocation.",
        ]
    )
    return Section(
        title="Client certificate verification and authorization",
        body=body,
        goals=[
            Goal(
                name="verification time over pyca's bare client verifier",
                target="≤ +25%",
                measured=f"+{overhead:.0%} ({rates['mtlskit']:,.0f}/s vs {rates['pyca']:,.0f}/s)",
                met=overhead <= 0.25,
                issue="#5",
            ),
            Goal(
                name="VerificationCache hits",
                target="≥ 200,000/s",
                measured=f"{cache_rate:,.0f}/s",
                met=cache_rate >= 200_000,
                issue="#5",
            ),
            Goal(
                name=f"authorization decisions, {rules_n:,} rules (mixed)",
                target="≥ 500,000/s",
                measured=f"{authz_rate:,.0f}/s",
                met=authz_rate >= 500_000,
                issue="#5",
            ),
        ],
        peer="pyca `build_client_verifier` bare; `openssl verify -purpose sslclient`",
        method=f"{chains_n} P-256 chains, median of {repeats} interleaved runs",
    )


def _authz(quick: bool, repeats: int) -> tuple[float, float, int]:
    exact_n, pattern_n = 100_000, 10_000
    rules = [
        Rule(kind=RuleKind.ID, value=f"spiffe://acme.com/svc/{i}", index=i) for i in range(exact_n)
    ]
    rules += [
        Rule(kind=RuleKind.ID, value=f"spiffe://acme.com/team{i}/*", index=exact_n + i)
        for i in range(pattern_n)
    ]
    policy = Policy(rules)

    def decision(value: str) -> Decision:
        identity = ClientIdentity(
            kind=IdentityKind.SPIFFE, value=value, spiffe_id=SpiffeId.parse(value)
        )
        return Decision(verdict=Verdict.ACCEPT, identity=identity, chain=())

    probes_n = 2_000 if quick else 20_000
    exact = [decision(f"spiffe://acme.com/svc/{(i * 7919) % exact_n}") for i in range(probes_n)]
    mixed = exact[: probes_n * 89 // 100]
    mixed += [decision(f"spiffe://acme.com/team{i % pattern_n}/x") for i in range(probes_n // 10)]
    mixed += [decision(f"spiffe://acme.com/nobody/{i}") for i in range(probes_n // 100)]

    def over(probes: list[Decision]) -> Callable[[], int]:
        def work() -> int:
            authorize = policy.authorize
            for probe in probes:
                authorize(probe)
            return len(probes)

        return work

    return (
        _median_rate(over(mixed), repeats),
        _median_rate(over(exact), repeats),
        exact_n + pattern_n,
    )
