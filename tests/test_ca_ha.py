"""Three real `mtlskit ca serve` nodes on one PostgreSQL database, over HTTPS.

One token redeemed by 60 clients at once across the nodes yields one certificate;
enrollments spread over the nodes all land on one audit chain; a node killed mid-load
loses nothing it acknowledged; a node that loses the database answers 503 and
recovers when it returns. Nodes and the cluster are stopped at teardown.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ca_server import RunningCa, init_ca, serve
from mtlskit.certs import Fingerprint, generate_private_key
from mtlskit.client import build_csr
from mtlskit.issue import new_token, parse_identity, verify_audit_chain
from mtlskit.store import SqlStore
from pg_cluster import PASSWORD, PostgresCluster, postgres_cluster  # noqa: F401

NODES = 3


class Cluster:
    """The CA directory, its database URL and the running nodes."""

    def __init__(self, directory: Path, url: str, nodes: list[RunningCa]) -> None:
        self.directory = directory
        self.url = url
        self.nodes = nodes
        self.context = ssl.create_default_context(cafile=directory / "root.pem")

    def store(self) -> SqlStore:
        return SqlStore.open(self.url)

    def tokens(self, identities: list[str]) -> list[str]:
        now = dt.datetime.now(dt.UTC)
        store = self.store()
        try:
            tokens = []
            for identity in identities:
                token, record = new_token(
                    parse_identity(identity), now=now, ttl=dt.timedelta(minutes=15)
                )
                store.add_token(record)
                tokens.append(token)
            return tokens
        finally:
            store.close()

    def enroll(
        self, node: RunningCa, token: str, identity: str, client: httpx.Client
    ) -> httpx.Response:
        csr = build_csr(generate_private_key(), identity).public_bytes(serialization.Encoding.PEM)
        return client.post(
            f"{node.url}/v1/enroll", json={"token": token, "csr": csr.decode()}, timeout=30
        )


@pytest.fixture(scope="module")
def cluster(postgres_cluster: PostgresCluster, tmp_path_factory) -> Iterator[Cluster]:  # noqa: F811
    url = postgres_cluster.create_database(f"ha_{uuid.uuid4().hex[:8]}")
    base = tmp_path_factory.mktemp("ha")
    secret = base / "db.pass"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o600)  # a password file others may read is refused
    bare = url.replace(f":{PASSWORD.replace(' ', '%20')}@", "@")
    directory = init_ca(base / "ca", "--db", bare, "--db-password-file", str(secret))
    nodes: list[RunningCa] = []
    try:
        for _ in range(NODES):  # the same directory: the same keys and ca.toml
            nodes.append(serve(directory, "--max-token-failures", "1000"))
        yield Cluster(directory, url, nodes)
    finally:
        for node in nodes:
            node.stop()


def _check_chain(cluster: Cluster) -> list:
    store = cluster.store()
    try:
        entries = store.audit_entries()
        assert verify_audit_chain(entries) is None
        return entries
    finally:
        store.close()


def test_every_node_reports_the_database(cluster):
    for node in cluster.nodes:
        health = httpx.get(f"{node.url}/healthz", verify=cluster.context).json()
        assert health["status"] == "ok"
        assert health["database"]["ok"] is True and health["database"]["backend"] == "postgresql"


def test_one_token_sixty_clients_three_nodes_one_certificate(cluster):
    identity = "spiffe://acme.com/race/one"
    (token,) = cluster.tokens([identity])
    barrier = threading.Barrier(60)

    def attempt(index: int) -> httpx.Response:
        with httpx.Client(verify=cluster.context) as client:
            node = cluster.nodes[index % NODES]
            csr = build_csr(generate_private_key(), identity).public_bytes(
                serialization.Encoding.PEM
            )
            barrier.wait()
            return client.post(
                f"{node.url}/v1/enroll", json={"token": token, "csr": csr.decode()}, timeout=30
            )

    with ThreadPoolExecutor(60) as pool:
        responses = list(pool.map(attempt, range(60)))
    statuses = sorted(response.status_code for response in responses)
    assert statuses.count(201) == 1, statuses
    refused = [r.json()["code"] for r in responses if r.status_code != 201]
    assert set(refused) == {"token_used"}
    store = cluster.store()
    try:
        mine = [
            r for r in store.certificates(now=dt.datetime.now(dt.UTC)) if r.identity == identity
        ]
    finally:
        store.close()
    assert len(mine) == 1
    entries = _check_chain(cluster)
    assert [e.event for e in entries].count("redeem") == 1


def test_enrollments_spread_over_the_nodes_share_one_chain(cluster):
    identities = [f"spiffe://acme.com/spread/{index}" for index in range(90)]
    tokens = cluster.tokens(identities)

    def enroll(index: int) -> httpx.Response:
        with httpx.Client(verify=cluster.context) as client:
            return cluster.enroll(
                cluster.nodes[index % NODES], tokens[index], identities[index], client
            )

    with ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(enroll, range(len(tokens))))
    assert [r.status_code for r in responses] == [201] * len(tokens)
    serials = {int(r.json()["serial"], 16) for r in responses}
    assert len(serials) == len(tokens)
    store = cluster.store()
    try:
        stored = {r.serial for r in store.certificates(now=dt.datetime.now(dt.UTC))}
    finally:
        store.close()
    assert serials <= stored
    _check_chain(cluster)


def test_a_node_killed_mid_load_loses_nothing_acknowledged(cluster):
    victim = cluster.nodes[1]
    identities = [f"spiffe://acme.com/kill/{index}" for index in range(150)]
    tokens = cluster.tokens(identities)
    acknowledged: list[dict] = []
    failures: list[str] = []
    lock = threading.Lock()

    def enroll(index: int) -> None:
        with httpx.Client(verify=cluster.context) as client:
            try:
                response = cluster.enroll(
                    cluster.nodes[index % NODES], tokens[index], identities[index], client
                )
            except httpx.TransportError as exc:  # the killed node: not acknowledged
                with lock:
                    failures.append(type(exc).__name__)
                return
        with lock:
            if response.status_code == 201:
                acknowledged.append(response.json())
            else:
                failures.append(f"{response.status_code} {response.text}")

    def killer() -> None:
        while len(acknowledged) < 30:
            time.sleep(0.01)
        os.kill(victim.process.pid, signal.SIGKILL)

    watcher = threading.Thread(target=killer)
    watcher.start()
    with ThreadPoolExecutor(12) as pool:
        list(pool.map(enroll, range(len(tokens))))
    watcher.join()
    assert victim.process.wait(timeout=10) == -signal.SIGKILL
    # Only the dead node's clients failed, and only at the transport level.
    assert all(not item[0].isdigit() for item in failures), failures
    assert len(acknowledged) >= 100 - len(failures)
    store = cluster.store()
    try:
        for document in acknowledged:  # every certificate a client holds is on record
            cert = x509.load_pem_x509_certificate(document["certificate"].encode())
            record = store.get(cert.serial_number)
            assert record is not None and record.fingerprint == str(Fingerprint.of(cert))
    finally:
        store.close()
    _check_chain(cluster)
    for node in (cluster.nodes[0], cluster.nodes[2]):  # the others go on serving
        assert httpx.get(f"{node.url}/healthz", verify=cluster.context).status_code == 200
    cluster.nodes[1] = serve(cluster.directory, "--max-token-failures", "1000")  # back to three


def test_losing_the_database_is_503_then_recovers(cluster, postgres_cluster):  # noqa: F811
    """Last in this module: it stops and restarts the shared cluster."""
    node = cluster.nodes[0]
    (token,) = cluster.tokens(["spiffe://acme.com/outage/1"])
    postgres_cluster.pause()
    try:
        with httpx.Client(verify=cluster.context) as client:
            health = client.get(f"{node.url}/healthz", timeout=30)
            assert health.status_code == 503
            assert health.json()["status"] == "unavailable"
            response = cluster.enroll(node, token, "spiffe://acme.com/outage/1", client)
            assert response.status_code == 503
            assert response.json()["code"] == "store_unavailable"
            assert "Traceback" not in response.text
    finally:
        postgres_cluster.resume()
    with httpx.Client(verify=cluster.context) as client:
        deadline = time.monotonic() + 20
        while client.get(f"{node.url}/healthz").status_code != 200:
            assert time.monotonic() < deadline, "node did not recover"
            time.sleep(0.2)
        response = cluster.enroll(node, token, "spiffe://acme.com/outage/1", client)
        assert response.status_code == 201, response.text  # the refused attempt burned nothing
    assert node.process.poll() is None
    assert "Traceback" not in node.errors
