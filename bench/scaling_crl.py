"""Revocation cost vs CRL size: the per-request check, and loading or reloading a CRL.

A CRL of n serials (1 to 1,000,000) from one root, which also signs the probe
clients; each client presents its leaf only and the root is the anchor. Per-request
cost is a full ``Verifier.verify`` (so it includes the CRL lookup, its memoized
signature check and the revocation reason), for a client that is not on the CRL and
for one that is (its serial is the CRL's last entry, the worst place for a scan).
Reload is what a gateway does when the CRL file changes: parse, build a new
``TrustStore``, and the first verification (which checks the CRL's signature once).

Building a million-entry CRL with cryptography takes seconds, so the root and the
CRL files are cached under bench/out/crl/ (git-ignored); the CRLs' nextUpdate is
years away so that cached files stay fresh.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import Encoding

from bench.report import OUT_DIR, Section, flat_goal, per_call, plot, shape, table
from mtlskit.certs import generate_private_key, private_key_pem
from mtlskit.issue import CLIENT_AUTH, Issuer, build_ca_certificate, build_leaf, parse_identity
from mtlskit.verify import TrustStore, Verifier, load_crl

SIZES = (1, 10, 100, 1_000, 10_000, 100_000, 1_000_000)
QUICK_SIZES = (1, 100, 10_000)
CACHE = OUT_DIR / "crl"
EPOCH = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)  # fixed dates: cached files stay identical


def serial(index: int) -> int:
    """A deterministic 159-bit serial per CRL position, spread like real random serials."""
    return (int.from_bytes(hashlib.sha256(b"%d" % index).digest()[:20], "big") >> 1) | 1


def _root() -> Issuer:
    """The cached root; a new one invalidates every cached CRL (they are signed by it)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = CACHE / "root.pem", CACHE / "root.key"
    if cert_path.exists() and key_path.exists():
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        return Issuer(cert=cert, key=key, chain=(cert,))  # type: ignore[arg-type]
    for stale in CACHE.glob("crl-*.der"):
        stale.unlink()
    key = generate_private_key()
    cert = build_ca_certificate(
        common_name="bench CRL root",
        key=key,
        signer=None,
        not_before=EPOCH - dt.timedelta(days=1),
        not_after=EPOCH + dt.timedelta(days=3650),
        path_length=0,
    )
    key_path.write_bytes(private_key_pem(key))
    cert_path.write_bytes(cert.public_bytes(Encoding.PEM))
    return Issuer(cert=cert, key=key, chain=(cert,))


def crl_bytes(root: Issuer, size: int) -> tuple[bytes, float | None]:
    """DER of the n-serial CRL, from the cache or built now (then also the seconds it took)."""
    path = CACHE / f"crl-{size}.der"
    if path.exists():
        return path.read_bytes(), None
    started = time.perf_counter()
    entries = [
        x509.RevokedCertificateBuilder()
        .serial_number(serial(index))
        .revocation_date(EPOCH + dt.timedelta(seconds=index))
        .build()
        for index in range(size)
    ]
    # The constructor takes the list whole: add_revoked_certificate copies it each time.
    builder = x509.CertificateRevocationListBuilder(
        issuer_name=root.cert.subject,
        last_update=EPOCH,
        next_update=EPOCH + dt.timedelta(days=3000),
        extensions=[],
        revoked_certificates=entries,
    ).add_extension(x509.CRLNumber(size), critical=False)
    data = builder.sign(root.key, hashes.SHA256()).public_bytes(Encoding.DER)  # type: ignore[arg-type]
    path.write_bytes(data)
    return data, time.perf_counter() - started


def _leaf(root: Issuer, number: int, now: dt.datetime) -> list[x509.Certificate]:
    cert = build_leaf(
        issuer=root,
        identity=parse_identity(f"spiffe://acme.com/svc/{number}"),
        public_key=generate_private_key().public_key(),
        profile=CLIENT_AUTH,
        not_before=now - dt.timedelta(hours=1),
        not_after=now + dt.timedelta(hours=24),
        serial=number,
    )
    return [cert]


def run(quick: bool) -> Section:
    sizes = QUICK_SIZES if quick else SIZES
    repeats = 3 if quick else 5
    now = dt.datetime.now(dt.UTC)
    root = _root()
    valid = [_leaf(root, 7 + 2 * i, now) for i in range(20)]  # even-free serials: never on a CRL
    plain = Verifier(trust=TrustStore.build(anchors=[root.cert]))
    baseline = per_call(lambda: _verify_all(plain, valid, now), repeats=repeats)
    rows: list[list[object]] = []
    check_valid: list[tuple[float, float]] = []
    check_revoked: list[tuple[float, float]] = []
    reloads: list[tuple[float, float]] = []
    built: list[str] = []
    for size in sizes:
        data, took = crl_bytes(root, size)
        if took is not None:
            built.append(f"{size:,} in {took:.1f}s")
        revoked = [_leaf(root, serial(size - 1), now)]

        def reload(data: bytes = data, probe: list = valid[0]) -> int:
            verifier = Verifier(trust=TrustStore.build(anchors=[root.cert], crls=[load_crl(data)]))
            assert verifier.verify(probe, at=now).accepted
            return 1

        reload_s = per_call(reload, repeats=2 if size >= 1_000_000 else 3)
        parse_s = per_call(lambda data=data: load_crl(data) and 1, repeats=3)
        verifier = Verifier(trust=TrustStore.build(anchors=[root.cert], crls=[load_crl(data)]))
        first = verifier.verify(revoked[0], at=now)
        assert [r.code.value for r in first.reasons] == ["cert_revoked"], first.reasons
        ok_s = per_call(lambda v=verifier: _verify_all(v, valid, now), repeats=repeats)
        bad_s = per_call(lambda v=verifier, r=revoked: _verify_all(v, r * 5, now), repeats=repeats)
        check_valid.append((size, ok_s * 1e6))
        check_revoked.append((size, bad_s * 1e6))
        reloads.append((size, reload_s * 1e3))
        rows.append(
            [
                f"{size:,}",
                f"{len(data) / 1e6:,.2f}",
                f"{parse_s * 1e3:,.2f}",
                f"{reload_s * 1e3:,.1f}",
                f"{ok_s * 1e6:,.0f}",
                f"{bad_s * 1e6:,.0f}",
            ]
        )
    images = [
        plot(
            "crl-check",
            title="Per-request verification vs CRL size",
            xlabel="serials on the CRL",
            ylabel="µs per verification (median)",
            series={
                "client not on the CRL": check_valid,
                "revoked client (last entry)": check_revoked,
                "no CRL configured": [(sizes[0], baseline * 1e6), (sizes[-1], baseline * 1e6)],
            },
            quick=quick,
        ),
        plot(
            "crl-reload",
            title="CRL reload vs CRL size (parse + new TrustStore + first verify)",
            xlabel="serials on the CRL",
            ylabel="ms (median)",
            series={"reload": reloads},
            quick=quick,
            logy=True,
        ),
    ]
    body = "\n".join(
        [
            f"CRL sizes {', '.join(f'{s:,}' for s in sizes)}; medians of {repeats} passes. "
            f"Without a CRL a verification takes {baseline * 1e6:,.0f} µs. "
            + (
                f"CRLs built this run (cryptography, then cached): {'; '.join(built)}."
                if built
                else "All CRLs came from the cache in bench/out/crl/."
            ),
            "",
            table(
                [
                    "serials",
                    "DER MB",
                    "parse ms",
                    "reload ms",
                    "verify, not revoked µs",
                    "verify, revoked µs",
                ],
                rows,
            ),
            "",
            f"- Per-request check, client not on the CRL: {shape(check_valid)}.",
            f"- Per-request check, revoked client: {shape(check_revoked)}.",
            f"- Reload (allowed to be O(n): it runs once per CRL change): {shape(reloads)}.",
            "- `parse` is `load_crl` alone; cryptography parses entries lazily, the revoked-serial "
            "index is built in `TrustStore.build`.",
        ]
    )
    return Section(
        title="Scaling: revocation check and CRL reload vs CRL size",
        body=body,
        images=images,
        goals=[
            flat_goal("revocation check vs CRL size (client not revoked)", check_valid),
            flat_goal("revocation check vs CRL size (revoked client)", check_revoked),
        ],
        peer="the same verification without a CRL",
        method=f"CRLs of {sizes[0]:,}–{sizes[-1]:,} serials, cached in bench/out/crl/",
    )


def _verify_all(verifier: Verifier, chains: list[list[x509.Certificate]], now: dt.datetime) -> int:
    for chain in chains:
        verifier.verify(chain, at=now)
    return len(chains)
