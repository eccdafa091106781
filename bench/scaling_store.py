"""Issuance throughput vs the number of certificates already in the store (0 to 1,000,000).

The store is pre-filled with bulk inserts through the store's own schema
(``mtlskit.store._schema``: the ``certificates`` rows and a correctly hash-chained
``audit_log``), not by real issuance: a million signatures would take the whole time
budget and measure nothing new. The bulk load is then checkpointed and fsynced, so the
measurements do not pay for its write-back. Pre-filled rows carry a real certificate's PEM (the
same one each time) with their own serial, identity and fingerprint, so indexes and
file size grow as in a real CA. At each size the real ``CertificateAuthority.sign``
path (CSR review, sign, lint, insert + audit entry, COMMIT) issues a batch at
``synchronous=FULL`` (the default, fsync per certificate) and ``NORMAL``, and once more at
FULL with group commit (``SqlStore.group`` around GROUP certificates, as `ca serve` under load).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import secrets
import shutil
import tempfile
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID
from sqlalchemy import create_engine, event, insert, select

from bench.issue import GROUP, in_groups
from bench.report import OUT_DIR, Goal, Section, flat_goal, per_call, plot, shape, table
from mtlskit.certs import generate_private_key
from mtlskit.issue import (
    CLIENT_AUTH,
    AuditEntry,
    CertificateAuthority,
    IdentityPattern,
    IdentityPolicy,
    Issuer,
    build_ca_certificate,
    parse_identity,
)
from mtlskit.store import SqlStore
from mtlskit.store._schema import audit_log, audit_row, certificates

SIZES = (0, 1_000, 10_000, 100_000, 1_000_000)
QUICK_SIZES = (0, 1_000, 10_000)
ID = "spiffe://acme.com/billing/payments"
CHUNK = 20_000


def _issuer(now: dt.datetime) -> Issuer:
    key = generate_private_key()
    cert = build_ca_certificate(
        common_name="bench store CA",
        key=key,
        signer=None,
        not_before=now - dt.timedelta(days=1),
        not_after=now + dt.timedelta(days=3650),
        path_length=0,
    )
    return Issuer(cert=cert, key=key, chain=(cert,))


def _csrs(count: int) -> list[x509.CertificateSigningRequest]:
    key = generate_private_key()  # one key: CSR creation is not what is measured
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ID)]))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(ID)]), critical=False
        )
    )
    csr = builder.sign(key, hashes.SHA256())  # type: ignore[arg-type]
    return [csr] * count


def _authority(issuer: Issuer, store: SqlStore) -> CertificateAuthority:
    return CertificateAuthority(
        issuer=issuer,
        profile=CLIENT_AUTH,
        policy=IdentityPolicy(
            allowed_ids=(IdentityPattern.parse("spiffe://acme.com/**"),),
            max_ttl=dt.timedelta(days=7),
            key_types=frozenset({"ec-p256"}),
        ),
        store=store,
        default_ttl=dt.timedelta(hours=24),
        crl_validity=dt.timedelta(days=7),
    )


def prefill(url: str, start: int, stop: int, pem: bytes, now: dt.datetime) -> None:
    """Rows ``start``..``stop`` in chunked transactions, audit chain continued from its head."""
    engine = create_engine(url)

    @event.listens_for(engine, "connect")
    def _fast(dbapi_connection, _record) -> None:
        dbapi_connection.execute("PRAGMA synchronous=OFF")  # a bulk load, not issuance
        dbapi_connection.execute("PRAGMA cache_size=-200000")

    with engine.begin() as conn:
        head = conn.execute(
            select(audit_log.c.seq, audit_log.c.hash).order_by(audit_log.c.seq.desc()).limit(1)
        ).first()
    last = (head.seq, head.hash) if head else None
    not_after = now + dt.timedelta(hours=24)
    for chunk in range(start, stop, CHUNK):
        certs, audits = [], []
        for index in range(chunk, min(chunk + CHUNK, stop)):
            serial = f"{secrets.randbits(159) | 1 << 150:x}"
            fingerprint = "sha256:" + hashlib.sha256(b"%d" % index).hexdigest().upper()
            identity = f"spiffe://acme.com/prefill/{index}"
            certs.append(
                {
                    "serial": serial,
                    "identity": identity,
                    "fingerprint": fingerprint,
                    "not_before": now,
                    "not_after": not_after,
                    "profile": "client-auth",
                    "status": "valid",
                    "issued_at": now,
                    "pem": pem,
                }
            )
            entry = AuditEntry.after(
                last,
                at=now,
                event="issue",
                detail={
                    "serial": serial,
                    "identity": identity,
                    "fingerprint": fingerprint,
                    "not_after": not_after.isoformat(),
                    "profile": "client-auth",
                },
            )
            last = (entry.seq, entry.hash)
            audits.append(audit_row(entry))
        with engine.begin() as conn:
            conn.execute(insert(certificates), certs)
            conn.execute(insert(audit_log), audits)
    # The bulk load ran without fsync: checkpoint the WAL and flush the file now, or the
    # first measured COMMIT's checkpoint pays for writing back gigabytes of pre-fill.
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    database = url.removeprefix("sqlite:///")
    handle = os.open(database, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def run(quick: bool) -> Section:
    sizes = QUICK_SIZES if quick else SIZES
    batch, repeats = (40, 3) if quick else (150, 3)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    issuer = _issuer(now)
    identity = parse_identity(ID)
    csrs = _csrs(batch)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    # On the project's disk, like bench/issue: an fsync that costs nothing measures nothing.
    directory = Path(tempfile.mkdtemp(dir=OUT_DIR, prefix="store-"))
    url = f"sqlite:///{directory / 'ca.db'}"
    grouped_name = f"synchronous=FULL, group commit of {GROUP}"
    curves: dict[str, list[tuple[float, float]]] = {
        "synchronous=FULL": [],
        "synchronous=NORMAL": [],
        grouped_name: [],
    }
    rows: list[list[object]] = []
    fill_total = 0.0
    reached = 0
    try:
        SqlStore.open(url, create=True).close()
        pem = b""
        filled = 0
        for size in sizes:
            if size > filled:
                started = time.perf_counter()
                prefill(url, filled, size, pem or _sample_pem(issuer, identity, csrs[0], now), now)
                fill_s = time.perf_counter() - started
                fill_total += fill_s
                filled = size
            else:
                fill_s = 0.0
            rates = {}
            for level in ("FULL", "NORMAL"):
                store = SqlStore.open(url, synchronous=level)  # type: ignore[arg-type]
                authority = _authority(issuer, store)
                try:

                    def work(authority: CertificateAuthority = authority) -> int:
                        for csr in csrs:
                            authority.sign(csr, identity, now=now)
                        return len(csrs)

                    rates[level] = 1 / per_call(work, repeats=repeats)
                    if level == "FULL":
                        rates["grouped"] = 1 / per_call(
                            lambda authority=authority, store=store: in_groups(
                                store, lambda csr: authority.sign(csr, identity, now=now), csrs
                            ),
                            repeats=repeats,
                        )
                        curves[grouped_name].append((size, rates["grouped"]))
                finally:
                    store.close()
                curves[f"synchronous={level}"].append((size, rates[level]))
            reached = size
            size_mb = (directory / "ca.db").stat().st_size / 1e6
            rows.append(
                [
                    f"{size:,}",
                    f"{fill_s:,.1f}",
                    f"{size_mb:,.0f}",
                    f"{rates['FULL']:,.0f}",
                    f"{rates['grouped']:,.0f}",
                    f"{rates['NORMAL']:,.0f}",
                ]
            )
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    # Time per certificate is the per-request cost the O(log n) goal is about.
    cost = {name: [(max(x, 1), 1e6 / y) for x, y in points] for name, points in curves.items()}
    image = plot(
        "issue-store-size",
        title="Issuance (ca sign, stored) vs certificates already in the store",
        xlabel="certificates already in the SQLite store (0 plotted at 1)",
        ylabel="certificates/s (median)",
        series={name: [(max(x, 1), y) for x, y in points] for name, points in curves.items()},
        quick=quick,
    )
    full, grouped_full = curves["synchronous=FULL"], curves[grouped_name]
    body = "\n".join(
        [
            f"Store sizes {', '.join(f'{s:,}' for s in sizes)} (largest reached: {reached:,}); "
            f"at each, `ca sign` issues {batch} certificates per pass, median of {repeats} "
            f"passes, one COMMIT per certificate (and, in the grouped column, one per {GROUP}), "
            "SQLite WAL on the project's disk. Pre-filling "
            f"took {fill_total:,.0f}s in all, by bulk insert through the store's schema (see "
            "the module docstring), not by issuing.",
            "",
            table(
                [
                    "already stored",
                    "pre-fill s",
                    "database MB",
                    "FULL certs/s",
                    f"FULL, group commit of {GROUP}",
                    "NORMAL certs/s",
                ],
                rows,
            ),
            "",
            *(f"- time per certificate, {name}: {shape(points)}." for name, points in cost.items()),
            "",
            "Each issuance inserts a certificate row (serial primary key plus four indexes: "
            "identity, fingerprint, notAfter, status) and an audit row after reading the audit "
            "head by its primary key: B-tree work, O(log n) in the store size.",
        ]
    )
    return Section(
        title="Scaling: issuance throughput vs store size",
        body=body,
        images=[image],
        goals=[
            flat_goal(
                "issuance time per certificate vs store size (FULL)", cost["synchronous=FULL"]
            ),
            flat_goal(
                "issuance time per certificate vs store size (NORMAL)", cost["synchronous=NORMAL"]
            ),
            Goal(
                name=f"issuance ≥ 1,000 stored certs/s with {reached:,} already stored (FULL)",
                target="≥ 1,000/s",
                measured=f"{grouped_full[-1][1]:,.0f}/s with group commit of {GROUP}; "
                f"one at a time {full[-1][1]:,.0f}/s",
                met=grouped_full[-1][1] >= 1000,
                issue="#3",
            ),
        ],
        peer="— (the same store, empty)",
        method=f"bulk pre-fill to {reached:,}; `ca sign` batches of {batch}",
    )


def _sample_pem(issuer: Issuer, identity, csr, now: dt.datetime) -> bytes:
    from mtlskit.certs import certificate_pem
    from mtlskit.issue import build_leaf

    cert = build_leaf(
        issuer=issuer,
        identity=identity,
        public_key=csr.public_key(),
        profile=CLIENT_AUTH,
        not_before=now,
        not_after=now + dt.timedelta(hours=24),
        serial=1,
    )
    return certificate_pem(cert)
