"""Several CA nodes on one PostgreSQL: issuance and enrollment throughput with 1, 2 and 3
nodes, beside 1 node on SQLite (the default store).

Issuance: each node is a process with its own ``CertificateAuthority`` and store, issuing
in a loop from one start barrier (keys made before the clock starts); the rate is all
certificates over the span from the first start to the last finish. Enrollment: each
node is a real ``mtlskit ca serve``; 16 keep-alive httpx clients spread round-robin
over the nodes each redeem their own token with a CSR made beforehand. Every write is
durable: PostgreSQL with fsync and synchronous_commit on (a throwaway cluster on
127.0.0.1 in a directory on the project's disk), SQLite with synchronous FULL. Every
run ends by checking the audit chain and the count of distinct serials.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import multiprocessing
import os
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
from cryptography.hazmat.primitives import serialization

from bench.report import ROOT, Section, machine, table
from mtlskit.certs import generate_private_key, load_certificates, load_private_key
from mtlskit.client import build_csr
from mtlskit.issue import (
    PROFILES,
    CertificateAuthority,
    Issuer,
    new_token,
    parse_ca_config,
    parse_identity,
    verify_audit_chain,
)
from mtlskit.store import SqlStore, database_url

CLIENTS = 16
NODE_COUNTS = (1, 2, 3)


def _init(directory: Path, url: str | None) -> str:
    """A CA with unencrypted keys (benchmark only) on ``url`` or SQLite; its full URL."""
    from mtlskit.cli import main

    args = ["ca", "init", str(directory), "--trust-domain", "acme.com", "--insecure-no-passphrase"]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = main([*args, *(["--db", url] if url else [])])
    assert code == 0
    return url or database_url(directory, "ca.db")


def _authority(directory: Path, url: str) -> CertificateAuthority:
    config = parse_ca_config((directory / "ca.toml").read_bytes(), source="ca.toml")
    chain = tuple(load_certificates((directory / "chain.pem").read_bytes()))
    default_ttl, _, crl_validity = config.durations()
    return CertificateAuthority(
        issuer=Issuer(
            cert=chain[0],
            key=load_private_key((directory / "issuing.key").read_bytes()),
            chain=chain,
        ),
        profile=PROFILES[config.profile],
        policy=config.policy(),
        store=SqlStore.open(url),
        default_ttl=default_ttl,
        crl_validity=crl_validity,
    )


def _issue_node(directory: str, url: str, node: int, count: int, barrier, results) -> None:
    """One issuing node (a process): wait for the others, issue ``count``, report its span."""
    authority = _authority(Path(directory), url)
    keys = [generate_private_key().public_key() for _ in range(16)]
    now = dt.datetime.now(dt.UTC)
    barrier.wait()
    start = time.perf_counter()  # CLOCK_MONOTONIC: comparable across processes
    for index in range(count):
        authority.issue(
            parse_identity(f"spiffe://acme.com/n{node}/{index}"), keys[index % len(keys)], now=now
        )
    results.put((start, time.perf_counter()))
    authority.store.close()  # type: ignore[attr-defined]


def _issuance(directory: Path, url: str, nodes: int, count: int) -> float:
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(nodes), context.Queue()
    processes = [
        context.Process(
            target=_issue_node, args=(str(directory), url, node, count, barrier, results)
        )
        for node in range(nodes)
    ]
    for process in processes:
        process.start()
    spans = [results.get(timeout=600) for _ in processes]
    for process in processes:
        process.join(timeout=60)
        if process.exitcode != 0:
            raise RuntimeError(f"an issuing node exited with {process.exitcode}")
    return nodes * count / (max(end for _, end in spans) - min(start for start, _ in spans))


def _serve(directory: Path, url: str) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "mtlskit", "ca", "serve", str(directory)),
            *("--listen", "127.0.0.1:0", "--max-token-failures", "1000000"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "MTLSKIT_DB_URL": url},
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    process.stdout.readline()
    if not line.startswith("serving"):
        process.kill()
        process.wait()
        raise RuntimeError(f"ca serve did not start: {line}")
    return process, line.split()[-1]


def _enrollment(directory: Path, url: str, nodes: int, count: int) -> float:
    now = dt.datetime.now(dt.UTC)
    store = SqlStore.open(url)
    work: list[tuple[str, str]] = []
    try:
        for index in range(count):
            identity = f"spiffe://acme.com/e{nodes}/{index}"
            token, record = new_token(parse_identity(identity), now=now, ttl=dt.timedelta(hours=1))
            store.add_token(record)
            csr = build_csr(generate_private_key(), identity).public_bytes(
                serialization.Encoding.PEM
            )
            work.append((token, csr.decode()))
    finally:
        store.close()
    servers = [_serve(directory, url) for _ in range(nodes)]
    context = ssl.create_default_context(cafile=directory / "root.pem")
    lock = threading.Lock()
    failures: list[str] = []

    def client(index: int) -> None:
        base = servers[index % nodes][1]
        with httpx.Client(verify=context, timeout=60) as http:
            while True:
                with lock:
                    if not work:
                        return
                    token, csr = work.pop()
                response = http.post(f"{base}/v1/enroll", json={"token": token, "csr": csr})
                if response.status_code != 201:
                    failures.append(response.text)

    try:
        threads = [threading.Thread(target=client, args=(index,)) for index in range(CLIENTS)]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - start
    finally:
        for process, _ in servers:
            process.terminate()
            process.wait(timeout=10)
    if failures:
        raise RuntimeError(f"{len(failures)} enrollments failed: {failures[0]}")
    return count / elapsed


def _check(url: str, expected: int) -> None:
    """The run's own evidence: one intact chain, every acknowledged serial distinct."""
    store = SqlStore.open(url)
    try:
        entries = store.audit_entries()
        serials = {record.serial for record in store.certificates(now=dt.datetime.now(dt.UTC))}
    finally:
        store.close()
    if verify_audit_chain(entries) is not None or len(serials) < expected:
        raise RuntimeError(f"audit chain broken or serials missing ({len(serials)}/{expected})")


def run(quick: bool) -> Section:
    sys.path.insert(0, str(ROOT / "tests"))
    from pg_cluster import PostgresCluster  # the tests' throwaway cluster, fsync on here

    per_node = 100 if quick else 1000
    enrollments = 64 if quick else 600
    rows: list[list[object]] = []
    rates: dict[tuple[str, int], tuple[float, float]] = {}
    with tempfile.TemporaryDirectory(dir=ROOT, prefix=".bench-ha-") as temp:
        os.chmod(temp, 0o755)  # the cluster runs as the postgres user under root
        base = Path(temp)
        sqlite_dir = base / "sqlite"
        url = _init(sqlite_dir, None)
        issued = _issuance(sqlite_dir, url, 1, per_node)
        enrolled = _enrollment(sqlite_dir, url, 1, enrollments)
        _check(url, per_node + enrollments)
        rates[("sqlite", 1)] = (issued, enrolled)
        cluster = PostgresCluster(fast=False, root=Path(tempfile.mkdtemp(dir=base))).start()
        try:
            for nodes in NODE_COUNTS:
                directory = base / f"pg{nodes}"
                url = _init(directory, cluster.create_database(f"ha_{uuid.uuid4().hex[:8]}"))
                issued = _issuance(directory, url, nodes, per_node)
                enrolled = _enrollment(directory, url, nodes, enrollments)
                _check(url, nodes * per_node + enrollments)
                rates[("postgresql", nodes)] = (issued, enrolled)
        finally:
            cluster.stop()
    one = rates[("postgresql", 1)]
    for (backend, nodes), (issued, enrolled) in rates.items():
        rows.append(
            [
                backend,
                nodes,
                f"{issued:,.0f}",
                f"{issued / one[0]:.2f}×",
                f"{enrolled:,.0f}",
                f"{enrolled / one[1]:.2f}×",
            ]
        )
    cores = os.cpu_count() or 1
    body = "\n".join(
        [
            f"Machine: {machine()}. {per_node} issuances per node, {enrollments} enrollments "
            f"per configuration over HTTPS ({CLIENTS} keep-alive clients spread over the nodes). "
            "Durable writes on both backends; all nodes and PostgreSQL on this one machine.",
            "",
            table(
                [
                    "store",
                    "nodes",
                    "issuances/s",
                    "vs 1 PG node",
                    "enrollments/s",
                    "vs 1 PG node",
                ],
                rows,
            ),
            "",
            f"All nodes share this machine's {cores} cores with PostgreSQL and the clients, so "
            "more nodes cannot add CPU here: the figures show what the shared store costs "
            "(every write takes the audit chain's advisory lock, so appends are serial by "
            "design) rather than the scaling of nodes on separate machines. Every run ends "
            "with one intact audit chain and every serial distinct.",
        ]
    )
    return Section(
        title="CA nodes on PostgreSQL: issuance and enrollment vs node count",
        body=body,
        peer="1 node on SQLite",
        method=f"{per_node} issuances/node, {enrollments} enrollments, 1-3 nodes, durable",
    )
