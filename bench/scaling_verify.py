"""Verification cost vs trust-store size (1 to 10,000 anchors) and vs chain depth (1 to 5).

Store size: the bench CA's root sits among n-1 filler roots with distinct subjects
(one shared key, so building 10,000 of them is quick); every client presents leaf +
intermediate. Per-request cost is ``Verifier.verify`` for an accepted client and for
a client of an unknown CA (the rejection path also asks which public root, if any,
the chain ends at), beside pyca's bare client verifier over the same store.
Depth: a root, then depth-1 intermediates, then the leaf; the client presents every
intermediate. Depth is not a store size: cost is expected to grow linearly with it
(one signature check per link).
"""

from __future__ import annotations

import datetime as dt
import time

from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store

from bench.report import Section, flat_goal, per_call, plot, shape, table
from mtlskit.certs import generate_private_key
from mtlskit.issue import CLIENT_AUTH, Issuer, build_ca_certificate, build_leaf, parse_identity
from mtlskit.testca import LeafSpec, TestCA
from mtlskit.verify import TrustStore, Verifier

ANCHORS = (1, 10, 100, 1_000, 10_000)
QUICK_ANCHORS = (1, 100, 10_000)
DEPTHS = (1, 2, 3, 4, 5)


def _fillers(count: int, now: dt.datetime) -> list[x509.Certificate]:
    key = generate_private_key()
    return [
        build_ca_certificate(
            common_name=f"filler root {index}",
            key=key,
            signer=None,
            not_before=now - dt.timedelta(days=1),
            not_after=now + dt.timedelta(days=365),
            path_length=None,
        )
        for index in range(count)
    ]


def _run_all(verify, chains: list[list[x509.Certificate]]) -> int:
    for chain in chains:
        verify(chain)
    return len(chains)


def _bare(store: Store, now: dt.datetime):
    def verify(chain: list[x509.Certificate]) -> object:
        verifier = PolicyBuilder().store(store).time(now).build_client_verifier()
        return verifier.verify(chain[0], chain[1:])

    return verify


def _store_size(quick: bool, repeats: int, now: dt.datetime) -> tuple[Section, list]:
    sizes = QUICK_ANCHORS if quick else ANCHORS
    ca, stranger = TestCA(name="bench"), TestCA(name="stranger")
    # 20 distinct chains, 5 times over per pass: a pass long enough (~20 ms) to outlast
    # the scheduling noise of a shared 2-core machine.
    chains = 5 * [
        list(ca.issue(LeafSpec(uris=(f"spiffe://acme.com/s/{i}",))).chain[:-1]) for i in range(20)
    ]
    unknown = [list(stranger.issue(LeafSpec(uris=("spiffe://acme.com/x",))).chain[:-1])] * 20
    started = time.perf_counter()
    fillers = _fillers(sizes[-1] - 1, now)
    made = time.perf_counter() - started
    accept, reject, bare = [], [], []
    rows = []
    for size in sizes:
        anchors = [*fillers[: (size - 1) // 2], ca.root.cert, *fillers[(size - 1) // 2 : size - 1]]
        started = time.perf_counter()
        trust = TrustStore.build(anchors=anchors)
        build_s = time.perf_counter() - started
        verifier = Verifier(trust=trust)
        assert verifier.verify(chains[0], at=now).accepted
        assert not verifier.verify(unknown[0], at=now).accepted
        ours = per_call(
            lambda v=verifier: _run_all(lambda c: v.verify(c, at=now), chains), repeats=repeats
        )
        bad = per_call(
            lambda v=verifier: _run_all(lambda c: v.verify(c, at=now), unknown), repeats=repeats
        )
        bare_verify = _bare(Store(anchors), now)
        theirs = per_call(lambda f=bare_verify: _run_all(f, chains), repeats=repeats)
        accept.append((size, ours * 1e6))
        reject.append((size, bad * 1e6))
        bare.append((size, theirs * 1e6))
        rows.append(
            [
                f"{size:,}",
                f"{build_s * 1e3:,.1f}",
                f"{ours * 1e6:,.0f}",
                f"{theirs * 1e6:,.0f}",
                f"{ours / theirs:.2f}×",
                f"{bad * 1e6:,.0f}",
            ]
        )
    image = plot(
        "verify-anchors",
        title="Verification vs trust-store size",
        xlabel="anchors in the trust store",
        ylabel="µs per verification (median)",
        series={
            "mtlskit, accepted": accept,
            "mtlskit, unknown CA (rejected)": reject,
            "pyca bare client verifier": bare,
        },
        quick=quick,
    )
    body = "\n".join(
        [
            f"{', '.join(f'{s:,}' for s in sizes)} anchors ({sizes[-1] - 1:,} filler roots built "
            f"in {made:.1f}s); 20 accepted chains ×5 and one unknown-CA chain ×20 per pass, "
            f"median of {repeats} passes. `TrustStore.build` is the load cost (it checks each "
            "anchor "
            "against the public roots), allowed to be O(n).",
            "",
            table(
                [
                    "anchors",
                    "TrustStore.build ms",
                    "mtlskit µs",
                    "pyca bare µs",
                    "ratio",
                    "unknown CA µs",
                ],
                rows,
            ),
            "",
            f"- mtlskit, accepted: {shape(accept)}.",
            f"- mtlskit, unknown CA: {shape(reject)}.",
            f"- pyca bare: {shape(bare)}.",
        ]
    )
    goals = [
        flat_goal("verification vs trust-store size (accepted)", accept),
        flat_goal("verification vs trust-store size (unknown CA)", reject),
    ]
    return Section(
        title="Scaling: verification vs trust-store size",
        body=body,
        images=[image],
        goals=goals,
        peer="pyca bare client verifier, same store",
        method=f"1–{sizes[-1]:,} anchors",
    ), []


def _chain(
    depth: int, now: dt.datetime, count: int
) -> tuple[x509.Certificate, list[list[x509.Certificate]]]:
    """A root, depth-1 intermediates and ``count`` leaves; chains as presented (no root)."""
    key = generate_private_key()
    validity = {"not_before": now - dt.timedelta(days=1), "not_after": now + dt.timedelta(days=365)}
    root_cert = build_ca_certificate(
        common_name="depth root", key=key, signer=None, path_length=None, **validity
    )
    issuer = Issuer(cert=root_cert, key=key, chain=(root_cert,))
    for level in range(1, depth):
        key = generate_private_key()
        cert = build_ca_certificate(
            common_name=f"depth CA {level}", key=key, signer=issuer, path_length=None, **validity
        )
        issuer = Issuer(cert=cert, key=key, chain=(cert, *issuer.chain))
    chains = []
    for index in range(count):
        leaf = build_leaf(
            issuer=issuer,
            identity=parse_identity(f"spiffe://acme.com/d/{index}"),
            public_key=generate_private_key().public_key(),
            profile=CLIENT_AUTH,
            not_before=now - dt.timedelta(hours=1),
            not_after=now + dt.timedelta(hours=24),
            serial=x509.random_serial_number(),
        )
        chains.append([leaf, *issuer.chain[:-1]])
    return root_cert, chains


def _depth(quick: bool, repeats: int, now: dt.datetime) -> Section:
    ours_pts, bare_pts, rows = [], [], []
    for depth in DEPTHS:
        root, chains = _chain(depth, now, 10 if quick else 20)
        verifier = Verifier(trust=TrustStore.build(anchors=[root]))
        assert verifier.verify(chains[0], at=now).accepted, verifier.verify(chains[0], at=now)
        ours = per_call(
            lambda v=verifier, c=chains: _run_all(lambda x: v.verify(x, at=now), c), repeats=repeats
        )
        bare_verify = _bare(Store([root]), now)
        theirs = per_call(lambda f=bare_verify, c=chains: _run_all(f, c), repeats=repeats)
        ours_pts.append((depth, ours * 1e6))
        bare_pts.append((depth, theirs * 1e6))
        rows.append(
            [
                depth,
                len(chains[0]),
                f"{ours * 1e6:,.0f}",
                f"{theirs * 1e6:,.0f}",
                f"{ours / theirs:.2f}×",
            ]
        )
    image = plot(
        "verify-depth",
        title="Verification vs chain depth",
        xlabel="CA certificates above the leaf (root included)",
        ylabel="µs per verification (median)",
        series={"mtlskit Verifier": ours_pts, "pyca bare client verifier": bare_pts},
        quick=quick,
        logx=False,
    )
    per_link = (ours_pts[-1][1] - ours_pts[0][1]) / (DEPTHS[-1] - DEPTHS[0])
    body = "\n".join(
        [
            "Depth d = a root and d-1 intermediates above the leaf; the client presents the "
            f"leaf and every intermediate; P-256 throughout; median of {repeats} passes.",
            "",
            table(["depth", "certificates presented", "mtlskit µs", "pyca bare µs", "ratio"], rows),
            "",
            f"Each extra link costs mtlskit about {per_link:,.0f} µs (a signature check in pyca, "
            "plus mtlskit's per-certificate checks, memoized per CA certificate): linear in "
            "depth, as a chain walk must be; depth is bounded by `max_chain_depth` (8). "
            "mtlskit's own checks are a fixed cost of a few tens of µs per verification, so "
            "the ratio to pyca is highest at depth 1, where pyca checks a single signature.",
        ]
    )
    return Section(
        title="Scaling: verification vs chain depth",
        body=body,
        images=[image],
        peer="pyca bare client verifier",
        method="depth 1–5, P-256",
    )


def run(quick: bool) -> Section:
    repeats = 3 if quick else 11
    now = dt.datetime.now(dt.UTC)
    store_section, _ = _store_size(quick, repeats, now)
    depth_section = _depth(quick, repeats, now)
    return Section(
        title="Scaling: verification vs trust-store size and chain depth",
        body="\n".join(
            [
                "### Trust-store size",
                "",
                store_section.body,
                "",
                *[f"![{p.stem}](img/{p.name})" for p in store_section.images],
                "",
                "### Chain depth",
                "",
                depth_section.body,
            ]
        ),
        images=depth_section.images,
        goals=store_section.goals,
        peer="pyca bare client verifier on the same store and chains",
        method=f"{store_section.method}; depth 1–5",
    )
