"""Stored certificates per second: `ca issue` and `ca sign` beside the crypto limit and OpenSSL.

Single process; every certificate is durably recorded (committed at the stated SQLite
``synchronous`` level) before it is returned. Two ways of committing: one transaction
per certificate, each committed before the next begins (one caller at a time); and
group commit, ``SqlStore.group`` around GROUP certificates (what `ca serve` does for the
requests that queue while its CA thread is busy), one COMMIT for the group, nothing
returned before it. The database lives on the project's disk (not a
tmpfs), because an fsync that costs nothing measures nothing; a bare sqlite3 commit loop
on the same disk, in the same run, shows how many commits/s FULL could have had at all
(a disk shared with other processes' fsyncs drops it several-fold).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import sqlite3
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from bench.report import ROOT, Goal, Section, machine, table
from mtlskit.certs import generate_private_key, private_key_pem
from mtlskit.issue import (
    CLIENT_AUTH,
    CertificateAuthority,
    IdentityPattern,
    IdentityPolicy,
    Issuer,
    build_ca_certificate,
    build_leaf,
    lint_errors,
    parse_identity,
)
from mtlskit.store import SqlStore

ID = "spiffe://acme.com/billing/payments"
OPENSSL_EXT = """[v3]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectAltName = URI:spiffe://acme.com/billing/payments
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


def _issuer(now: dt.datetime) -> Issuer:
    root_key, key = generate_private_key(), generate_private_key()
    root_cert = build_ca_certificate(
        common_name="bench root",
        key=root_key,
        signer=None,
        not_before=now,
        not_after=now + dt.timedelta(days=3650),
        path_length=1,
    )
    root = Issuer(cert=root_cert, key=root_key, chain=(root_cert,))
    cert = build_ca_certificate(
        common_name="bench issuing",
        key=key,
        signer=root,
        not_before=now,
        not_after=now + dt.timedelta(days=1825),
        path_length=0,
    )
    return Issuer(cert=cert, key=key, chain=(cert, root_cert))


SOFTHSM_MODULES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
)


def _token_issuer(now: dt.datetime, work: Path) -> Issuer | None:
    """The same kind of issuing CA with its P-256 key generated in a throwaway SoftHSM2
    token under ``work`` (None when softhsm2 is not installed). Must run before anything
    else in this process loads the PKCS#11 library: SoftHSM2 reads $SOFTHSM2_CONF once."""
    module = next((path for path in SOFTHSM_MODULES if Path(path).is_file()), None)
    if module is None or shutil.which("softhsm2-util") is None:
        return None
    from mtlskit.certs import KeyType
    from mtlskit.keystore import Pkcs11Uri, generate_token_key

    (work / "tokens").mkdir()
    (work / "token").mkdir()  # the token CA's own store
    conf = work / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {work / 'tokens'}\nobjectstore.backend = file\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    subprocess.run(
        ["softhsm2-util", "--init-token", "--free", "--label", "bench", "--pin", "1234",
         "--so-pin", "12345678"],
        check=True, capture_output=True,
    )  # fmt: skip
    key = generate_token_key(
        module, Pkcs11Uri(token="bench", object="bench-issuing"), b"1234", KeyType.EC_P256
    )
    root_key = generate_private_key()
    root_cert = build_ca_certificate(
        common_name="bench root",
        key=root_key,
        signer=None,
        not_before=now,
        not_after=now + dt.timedelta(days=3650),
        path_length=1,
    )
    cert = build_ca_certificate(
        common_name="bench issuing (SoftHSM2)",
        key=key,
        signer=Issuer(cert=root_cert, key=root_key, chain=(root_cert,)),
        not_before=now,
        not_after=now + dt.timedelta(days=1825),
        path_length=0,
    )
    return Issuer(cert=cert, key=key, chain=(cert, root_cert))


def _csrs(count: int) -> list[x509.CertificateSigningRequest]:
    out = []
    for _ in range(count):
        builder = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ID)]))
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(ID)]), critical=False
            )
        )
        out.append(builder.sign(generate_private_key(), hashes.SHA256()))  # type: ignore[arg-type]
    return out


GROUP = 32  # caserver.MAX_BATCH: `ca serve` under load
TOKEN_ROW = f"`ca sign` path, group commit of {GROUP}, synchronous=FULL, issuing key in SoftHSM2"


def in_groups(store: SqlStore, work, items: list) -> int:
    """``work`` over ``items``, GROUP of them per ``SqlStore.group`` (one COMMIT each)."""
    for start in range(0, len(items), GROUP):
        with store.group():
            for item in items[start : start + GROUP]:
                work(item)
    return len(items)


def _timed_groups(store: SqlStore, work, items: list, repeats: int) -> float:
    """Median items/s over ``repeats`` passes of ``in_groups``."""
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        in_groups(store, work, items)
        rates.append(len(items) / (time.perf_counter() - start))
    return statistics.median(rates)


def _timed(work, items, repeats: int) -> float:
    """Median items/s over ``repeats`` passes over ``items``."""
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for item in items:
            work(item)
        rates.append(len(items) / (time.perf_counter() - start))
    return statistics.median(rates)


def _authority(
    issuer: Issuer, directory: Path, synchronous: str
) -> tuple[CertificateAuthority, SqlStore]:
    store = SqlStore.open(
        f"sqlite:///{directory / f'ca-{synchronous.lower()}.db'}",
        create=True,
        synchronous=synchronous,  # type: ignore[arg-type]
    )
    authority = CertificateAuthority(
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
    return authority, store


def _fsync_floor(database: Path, count: int, repeats: int) -> float:
    """Commits/s of a bare sqlite3 loop on the same disk: one small row per transaction, WAL,
    synchronous=FULL. No store that commits each certificate at FULL can beat it, and under
    other processes' fsyncs it falls, so it says how far the disk let FULL go in this run."""
    db = sqlite3.connect(database, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")

        def commit(_: object) -> None:
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO t (v) VALUES (?)", ("x" * 64,))
            db.execute("COMMIT")

        return _timed(commit, range(count), repeats)
    finally:
        db.close()


def _openssl_loop(issuer: Issuer, csrs: list[x509.CertificateSigningRequest], work: Path) -> float:
    (work / "issuing.pem").write_bytes(issuer.cert.public_bytes(serialization.Encoding.PEM))
    (work / "issuing.key").write_bytes(private_key_pem(issuer.key))
    (work / "ext.cnf").write_text(OPENSSL_EXT)
    requests = work / "csr"
    requests.mkdir()
    for index, csr in enumerate(csrs):
        (requests / f"{index:05}.csr").write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    script = (
        f'cd "{work}" && for f in csr/*.csr; do openssl x509 -req -in "$f" -CA issuing.pem '
        "-CAkey issuing.key -CAserial serial -CAcreateserial -days 1 -sha256 "
        '-extfile ext.cnf -extensions v3 -out "${f%.csr}.pem" 2>/dev/null || exit 1; done'
    )
    start = time.perf_counter()
    subprocess.run(["sh", "-c", script], check=True)
    return len(csrs) / (time.perf_counter() - start)


def run(quick: bool) -> Section:
    count = 150 if quick else 1500
    repeats = 1 if quick else 3
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    issuer = _issuer(now)
    identity = parse_identity(ID)
    csrs = _csrs(count)
    rows: list[list[object]] = []
    rates: dict[str, float] = {}

    def bare_sign(csr: x509.CertificateSigningRequest) -> None:
        assert csr.is_signature_valid
        build_leaf(
            issuer=issuer,
            identity=identity,
            public_key=csr.public_key(),  # type: ignore[arg-type]
            profile=CLIENT_AUTH,
            not_before=now,
            not_after=now + dt.timedelta(hours=24),
            serial=x509.random_serial_number(),
        )

    def bare_keygen(_: object) -> None:
        build_leaf(
            issuer=issuer,
            identity=identity,
            public_key=generate_private_key().public_key(),
            profile=CLIENT_AUTH,
            not_before=now,
            not_after=now + dt.timedelta(hours=24),
            serial=x509.random_serial_number(),
        )

    rates["bare CSR verify + sign (cryptography, no lint, no store)"] = _timed(
        bare_sign, csrs, repeats
    )
    rates["bare keygen + sign (cryptography, no lint, no store)"] = _timed(
        bare_keygen, csrs, repeats
    )
    sample = build_leaf(
        issuer=issuer,
        identity=identity,
        public_key=csrs[0].public_key(),  # type: ignore[arg-type]
        profile=CLIENT_AUTH,
        not_before=now,
        not_after=now + dt.timedelta(hours=24),
        serial=1,
    )
    rates["lint of leaf + chain alone"] = _timed(
        lambda _: lint_errors((sample, *issuer.chain), CLIENT_AUTH, now), csrs, repeats
    )
    with tempfile.TemporaryDirectory(dir=ROOT, prefix=".bench-issue-") as temp:
        work = Path(temp)
        # Before and after the FULL passes: other processes' fsyncs come and go.
        floors = [_fsync_floor(work / "floor-before.db", count, repeats)]
        token_issuer = _token_issuer(now, work)
        for synchronous in ("FULL", "NORMAL"):
            authority, store = _authority(issuer, work, synchronous)
            try:
                rates[f"`ca issue` path, stored, synchronous={synchronous}"] = _timed(
                    lambda _, authority=authority: authority.issue(
                        identity, generate_private_key().public_key(), now=now
                    ),
                    csrs,
                    repeats,
                )
                rates[f"`ca sign` path, stored, synchronous={synchronous}"] = _timed(
                    lambda csr, authority=authority: authority.sign(csr, identity, now=now),
                    csrs,
                    repeats,
                )
                passes = 2
                if synchronous == "FULL":
                    rates[f"`ca issue` path, group commit of {GROUP}, synchronous=FULL"] = (
                        _timed_groups(
                            store,
                            lambda _, authority=authority: authority.issue(
                                identity, generate_private_key().public_key(), now=now
                            ),
                            csrs,
                            repeats,
                        )
                    )
                    rates[f"`ca sign` path, group commit of {GROUP}, synchronous=FULL"] = (
                        _timed_groups(
                            store,
                            lambda csr, authority=authority: authority.sign(csr, identity, now=now),
                            csrs,
                            repeats,
                        )
                    )
                    passes = 4
                    if token_issuer is not None:
                        token_ca, token_store = _authority(
                            token_issuer, work / "token", synchronous
                        )
                        try:
                            rates[TOKEN_ROW] = _timed_groups(
                                token_store,
                                lambda csr, authority=token_ca: authority.sign(
                                    csr, identity, now=now
                                ),
                                csrs,
                                repeats,
                            )
                            assert len(token_store.certificates(now=now)) == count * repeats
                        finally:
                            token_store.close()
                stored = len(store.certificates(now=now))
            finally:
                store.close()
            assert stored == passes * count * repeats, stored
            if synchronous == "FULL":
                floors.append(_fsync_floor(work / "floor-after.db", count, repeats))
        openssl_count = min(count, 300)
        rates["`openssl x509 -req` in a shell loop (no store)"] = _openssl_loop(
            issuer, csrs[:openssl_count], work
        )
    crypto_limit = rates["bare CSR verify + sign (cryptography, no lint, no store)"]
    openssl = rates["`openssl x509 -req` in a shell loop (no store)"]
    for name, value in rates.items():
        rows.append(
            [name, f"{value:,.0f}", f"{value / crypto_limit:.2f}×", f"{value / openssl:.1f}×"]
        )
    rows.append(
        [
            "bare sqlite3 commit loop, one small row, synchronous=FULL (this disk's floor; "
            "commits/s, no certificate; before / after the FULL passes)",
            " / ".join(f"{floor:,.0f}" for floor in floors),
            "—",
            "—",
        ]
    )
    one_by_one = rates["`ca sign` path, stored, synchronous=FULL"]
    goal = rates[f"`ca sign` path, group commit of {GROUP}, synchronous=FULL"]
    if TOKEN_ROW in rates:
        token_note = (
            f"With the issuing key in a SoftHSM2 token (PKCS#11; each leaf's TBS signed in "
            f"the token, assembled with asn1crypto and verified before it is returned), the "
            f"same group-commit `ca sign` path stored {rates[TOKEN_ROW]:,.0f}/s in this run: "
            f"{rates[TOKEN_ROW] / goal:.2f}× the file key's {goal:,.0f}/s."
        )
    else:
        token_note = "SoftHSM2 is not installed here: the PKCS#11 row was not measured."
    body = "\n".join(
        [
            f"Machine: {machine()}. EC P-256 leaves, client-auth profile, {count} per pass, "
            f"median of {repeats} pass(es); SQLite WAL on {_filesystem(ROOT)} in the project "
            'directory. "stored": one transaction (certificate + hash-chained audit entry) '
            'per certificate, committed before the next starts. "group commit": '
            f"`SqlStore.group` around {GROUP} certificates, each in its own savepoint, one "
            "COMMIT for all, none returned before it: what `mtlskit ca serve` does with the "
            "requests that queue while its CA thread is busy. Every stored certificate was "
            "linted with its full chain first.",
            "",
            table(["path", "certificates/s", "vs bare CSR sign", "vs openssl loop"], rows),
            "",
            f"Goal ≥ 1,000 stored certificates/s: `ca sign` at synchronous=FULL, every "
            f"certificate durable before it is returned, reached {goal:,.0f}/s with group "
            f"commit ({'met' if goal >= 1000 else 'NOT met'}) and {one_by_one:,.0f}/s with one "
            "caller at a time, where each certificate pays a whole fsync; in the same run the disk "
            f"allowed {min(floors):,.0f}–{max(floors):,.0f} bare commits/s "
            f"({1e6 / max(floors):,.0f}–{1e6 / min(floors):,.0f} µs each). FULL fsyncs the "
            "WAL on every commit, so a certificate handed out survives power loss; NORMAL skips "
            "that fsync (WAL keeps the database consistent, and a crash of mtlskit loses nothing, "
            "but an OS crash or power cut can lose the last commits: certificates already handed "
            "out would then be missing from the records and the audit log). ca.toml's "
            "`durability` chooses; the default is `full`.",
            "The openssl loop pays a process start per certificate and records nothing; "
            "it is the shell-script CA many teams start with.",
            "",
            token_note,
        ]
    )
    return Section(
        title="Issuance: stored certificates per second",
        body=body,
        goals=[
            Goal(
                name="issuance, stored certificates/s on SQLite (`ca sign`, synchronous=FULL)",
                target="≥ 1,000/s",
                measured=f"{goal:,.0f}/s with group commit of {GROUP} "
                f"({goal / crypto_limit:.2f}× the bare crypto limit); one at a time "
                f"{one_by_one:,.0f}/s",
                met=goal >= 1000,
                issue="#3",
            )
        ],
        peer="bare cryptography sign loop (no store); `openssl x509 -req` shell loop",
        method=f"{count} P-256 certificates per pass, median of {repeats}; one commit each, "
        f"and group commit of {GROUP}",
    )


def _filesystem(path: Path) -> str:
    try:
        out = subprocess.run(
            ["df", "--output=fstype", str(path)], capture_output=True, text=True, check=True
        ).stdout.split()
        return out[-1]
    except (OSError, subprocess.CalledProcessError):
        return os.name
