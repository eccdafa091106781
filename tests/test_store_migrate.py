"""The store on SQLite and PostgreSQL: one Alembic chain, the CLI's database URL, and the
cross-node races (serials, approvals, the audit chain) on a real PostgreSQL cluster.

The PostgreSQL cluster is a throwaway one on 127.0.0.1 (``pg_cluster``); without
PostgreSQL these tests skip with a reason, and fail under MTLSKIT_REQUIRE_INTEGRATION=1.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, text

from mtlskit.certs import generate_private_key, load_certificates, load_private_key
from mtlskit.issue import (
    PROFILES,
    AuditEntry,
    CertificateAuthority,
    CertificateRecord,
    EnrollmentRequest,
    Issuer,
    RequestStatus,
    SerialTaken,
    StoreUnavailable,
    new_token,
    parse_ca_config,
    parse_identity,
    token_hash,
    verify_audit_chain,
)
from mtlskit.store import SqlStore, database_url, migrate, script_head
from mtlskit.store._migrate import upgrade
from mtlskit.store._schema import SCHEMA_REVISION, audit_log, certificates, metadata
from pg_cluster import PASSWORD, postgres_cluster  # noqa: F401 - the session fixture

NOW = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)
WEB = parse_identity("spiffe://acme.com/web")


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request, tmp_path) -> str:
    """A URL where no store exists yet, on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ca.db'}"
    cluster = request.getfixturevalue("postgres_cluster")
    return cluster.create_database(f"m_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def pg_url(postgres_cluster) -> str:  # noqa: F811
    return postgres_cluster.create_database(f"t_{uuid.uuid4().hex[:12]}")


def _legacy_store(url: str, revision: str) -> None:
    """A store as mtlskit made it before Alembic: the schema of ``revision``, no
    alembic_version table, a certificate and a two-entry audit chain."""
    store = SqlStore._connect(url, create=True, synchronous="FULL")
    try:
        with store._write() as conn:
            upgrade(conn, source=url, target=revision)
            conn.execute(text("DROP TABLE alembic_version"))
            first = AuditEntry.after(None, at=NOW, event="init", detail={"name": "old"})
            second = AuditEntry.after(
                (first.seq, first.hash), at=NOW, event="issue", detail={"serial": "abc"}
            )
            for entry in (first, second):
                conn.execute(
                    insert(audit_log),
                    {name: getattr(entry, name) for name in audit_log.c.keys()},  # noqa: SIM118,
                )
            conn.execute(
                insert(certificates),
                {
                    "serial": "abc",
                    "identity": WEB.value,
                    "fingerprint": "sha256:" + "ab" * 32,
                    "not_before": NOW,
                    "not_after": NOW + dt.timedelta(days=1),
                    "profile": "client-auth",
                    "status": "valid",
                    "issued_at": NOW,
                    "pem": b"-",
                },
            )
    finally:
        store.close()


def _schema_drift(store: SqlStore) -> list[object]:
    """What Alembic's autogenerate would still change: nothing, if the chain is the schema."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with store._engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn), metadata)


def test_schema_module_names_the_script_head():
    assert script_head() == SCHEMA_REVISION


@pytest.mark.parametrize("legacy", ["0001", "0002"])
def test_pre_alembic_stores_migrate_to_the_head(empty_url, legacy):
    _legacy_store(empty_url, legacy)
    assert migrate(empty_url) == (legacy, SCHEMA_REVISION)
    assert migrate(empty_url) == (SCHEMA_REVISION, SCHEMA_REVISION)  # idempotent
    store = SqlStore.open(empty_url)
    try:
        assert _schema_drift(store) == []
        assert [record.serial for record in store.certificates(now=NOW)] == [0xABC]
        token, record = new_token(WEB, now=NOW, ttl=dt.timedelta(minutes=5))
        store.add_token(record)
        store.redeem_token(token_hash(token), at=NOW, detail={})
        entries = store.audit_entries()
        assert [entry.event for entry in entries] == ["init", "issue", "token", "redeem"]
        assert verify_audit_chain(entries) is None
        with store._engine.connect() as conn:
            version = conn.scalar(text("SELECT value FROM counters WHERE name='schema_version'"))
        assert version == 5  # an mtlskit from before Alembic refuses this store now
    finally:
        store.close()


def test_new_stores_match_the_schema_module(empty_url):
    store = SqlStore.open(empty_url, create=True)
    try:
        assert _schema_drift(store) == []
    finally:
        store.close()


def test_postgresql_store_behind_the_head_waits_for_ca_migrate(
    pg_url, tmp_path, run_cli, monkeypatch
):
    _legacy_store(pg_url, "0002")
    with pytest.raises(Exception, match="run `mtlskit ca migrate DIR` once"):
        SqlStore.open(pg_url)
    directory = tmp_path / "ca"
    directory.mkdir()
    recorded = pg_url.replace(f":{PASSWORD.replace(' ', '%20')}@", "@")
    (directory / "ca.toml").write_text(f'name = "m"\ndatabase = "{recorded}"\n')
    monkeypatch.setenv("MTLSKIT_DB_URL", pg_url)
    result = run_cli("ca", "migrate", directory)
    assert result.code == 0, result.err
    assert (
        result.out.strip()
        == f"migrated the CA store from schema revision 0002 to {SCHEMA_REVISION}"
    )
    result = run_cli("ca", "migrate", directory)
    assert result.out.strip() == f"the CA store is already at schema revision {SCHEMA_REVISION}"
    assert run_cli("ca", "list", directory, "--json").code == 0


def test_sqlite_store_behind_the_head_is_upgraded_by_ca_migrate(tmp_path, run_cli):
    directory = tmp_path / "ca"
    directory.mkdir()
    (directory / "ca.toml").write_text('name = "m"\n')
    _legacy_store(f"sqlite:///{directory / 'ca.db'}", "0001")
    result = run_cli("ca", "migrate", directory)
    assert result.code == 0, result.err
    assert "from schema revision 0001 to" in result.out


# --- the CLI and the database URL ----------------------------------------------------


def _init(run_cli, directory: Path, *extra: str):
    return run_cli(
        "ca",
        "init",
        directory,
        "--trust-domain",
        "acme.com",
        "--insecure-no-passphrase",
        *extra,
    )


def test_password_never_reaches_ca_toml(pg_url, tmp_path, run_cli, monkeypatch):
    directory = tmp_path / "ca"
    result = _init(run_cli, directory, "--db", pg_url)
    assert result.code == 0, result.err
    config = (directory / "ca.toml").read_text()
    assert "pg%20test" not in config and PASSWORD not in config
    assert "postgresql://mtlskit@127.0.0.1" in config
    assert "MTLSKIT_DB_URL" in result.err
    # Without the password the store is refused in one line, exit 2, nothing leaked.
    denied = run_cli("ca", "list", directory)
    assert denied.code == 2
    assert len(denied.err.strip().splitlines()) == 1 and "Traceback" not in denied.err
    assert "password" in denied.err and PASSWORD not in denied.err
    monkeypatch.setenv("MTLSKIT_DB_URL", pg_url)
    assert run_cli("ca", "list", directory, "--json").code == 0
    assert run_cli("ca", "audit", "verify", directory).code == 0


def test_password_file_is_recorded_by_path(pg_url, tmp_path, run_cli):
    secret = tmp_path / "db.pass"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o600)  # a password file others may read is refused
    without = pg_url.replace(f":{PASSWORD.replace(' ', '%20')}@", "@")
    directory = tmp_path / "ca"
    result = _init(run_cli, directory, "--db", without, "--db-password-file", secret)
    assert result.code == 0, result.err
    config = (directory / "ca.toml").read_text()
    assert f'database_password_file = "{secret}"' in config and PASSWORD not in config
    issued = run_cli(
        "ca", "issue", directory, "--id", "spiffe://acme.com/a", "--out", tmp_path / "a"
    )
    assert issued.code == 0, issued.err
    # A second CA cannot take over the same database.
    again = _init(run_cli, tmp_path / "other", "--db", pg_url)
    assert again.code == 2 and "already exists in this database" in again.err


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://mtlskit:wrong@127.0.0.1:{port}/postgres", "password authentication failed"),
        ("postgresql://mtlskit@127.0.0.1:1/postgres", "Connection refused"),
        # psycopg's wording: 3.2 resolves names itself, 3.1 leaves it to libpq
        ("postgresql://[bad", ("failed to resolve host", "Name or service not known")),
    ],
)
def test_bad_database_urls_are_one_line_exit_2(
    postgres_cluster,  # noqa: F811
    tmp_path,
    run_cli,
    url,
    expected,
):
    result = _init(run_cli, tmp_path / "ca", "--db", url.format(port=postgres_cluster.port))
    assert result.code == 2
    assert len(result.err.strip().splitlines()) == 1, result.err
    wordings = (expected,) if isinstance(expected, str) else expected
    assert any(text in result.err for text in wordings) and "wrong" not in result.err
    assert not (tmp_path / "ca" / "ca.toml").exists()


def test_a_password_in_ca_toml_is_a_config_error(tmp_path, run_cli):
    directory = tmp_path / "ca"
    directory.mkdir()
    (directory / "ca.toml").write_text('name = "m"\ndatabase = "postgresql://u:secret@h/db"\n')
    result = run_cli("ca", "list", directory)
    assert result.code == 2 and "holds a password" in result.err and "secret" not in result.err


# --- races between nodes, on PostgreSQL (and between processes, on SQLite) -------------


def _record(
    serial: int, fingerprint: str, *, at: dt.datetime = NOW, pem: bytes = b"-"
) -> CertificateRecord:
    """A certificate row for WEB valid one hour from ``at``; ``fingerprint`` is two hex digits."""
    return CertificateRecord(
        serial=serial,
        identity=WEB.value,
        fingerprint="sha256:" + fingerprint * 32,
        not_before=at,
        not_after=at + dt.timedelta(hours=1),
        profile="client-auth",
        pem=pem,
        issued_at=at,
    )


def test_a_taken_serial_writes_nothing(empty_url):
    store = SqlStore.open(empty_url, create=True)
    record = _record(0x1234, "cd")
    try:
        store.add_certificate(record)
        with pytest.raises(SerialTaken):  # another certificate, drawn the same serial
            store.add_certificate(replace(record, fingerprint="sha256:" + "cf" * 32))
        assert len(store.audit_entries()) == 1
        store.add_certificate(replace(record, serial=0x5678, fingerprint="sha256:" + "ce" * 32))
        assert [entry.seq for entry in store.audit_entries()] == [1, 2]
        assert verify_audit_chain(store.audit_entries()) is None
    finally:
        store.close()


def test_sqlite_issuance_stores_rows_exactly_as_sqlalchemy_does(tmp_path):
    """Issuance on SQLite runs on the driver; its rows must be byte-for-byte what
    SQLAlchemy's own INSERT writes (times as SQLAlchemy formats them, the PEM a BLOB)."""
    url = f"sqlite:///{tmp_path / 'ca.db'}"
    store = SqlStore.open(url, create=True)
    at = NOW.replace(microsecond=123456)
    record = _record(0xABC, "ab", at=at, pem=b"-----BEGIN CERTIFICATE-----\n")
    try:
        store.add_certificate(record)
        with store._write() as conn:
            conn.execute(
                insert(certificates),
                {
                    **{
                        name: getattr(record, name)
                        for name in certificates.c.keys()  # noqa: SIM118
                        if name not in {"serial", "fingerprint", "status"}
                    },
                    "serial": "def",
                    "fingerprint": "sha256:" + "cd" * 32,
                    "status": "valid",
                },
            )
        assert store.get(0xABC) == record
    finally:
        store.close()
    columns = "not_before, not_after, issued_at, typeof(pem), pem, status, identity, profile"
    with sqlite3.connect(tmp_path / "ca.db") as db:
        driver = db.execute(f"SELECT {columns} FROM certificates WHERE serial = 'abc'").fetchone()
        alchemy = db.execute(f"SELECT {columns} FROM certificates WHERE serial = 'def'").fetchone()
    assert driver == alchemy
    assert driver[:4] == (
        "2026-05-01 12:00:00.123456",
        "2026-05-01 13:00:00.123456",
        "2026-05-01 12:00:00.123456",
        "blob",
    )


@pytest.mark.parametrize(("durability", "level"), [("FULL", 2), ("NORMAL", 1)])
def test_sqlite_issuance_is_one_transaction_committed_at_the_chosen_durability(
    tmp_path, durability, level
):
    """Certificate row and audit entry: one BEGIN IMMEDIATE, one COMMIT (one fsync at
    FULL), on the connection whose ``synchronous`` is the configured one."""
    store = SqlStore.open(f"sqlite:///{tmp_path / 'ca.db'}", create=True, synchronous=durability)
    record = _record(0xA1, "a1")
    try:
        store.add_certificate(record)
        driver = store._writer.connection.driver_connection  # type: ignore[union-attr]
        assert driver.execute("PRAGMA synchronous").fetchone() == (level,)
        assert driver.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        statements: list[str] = []
        driver.set_trace_callback(statements.append)
        store.add_certificate(replace(record, serial=0xA2, fingerprint="sha256:" + "a2" * 32))
        driver.set_trace_callback(None)
    finally:
        store.close()
    assert statements[0] == "BEGIN IMMEDIATE" and statements[-1] == "COMMIT"
    assert [sql.split()[0] for sql in statements[1:-1]] == ["INSERT", "SELECT", "INSERT"]
    assert "certificates" in statements[1] and "audit_log" in statements[3]


def test_sqlite_store_that_cannot_take_the_lock_is_unavailable_then_recovers(tmp_path):
    url = f"sqlite:///{tmp_path / 'ca.db'}"
    store = SqlStore.open(url, create=True)
    record = _record(0x1, "01")
    other = sqlite3.connect(tmp_path / "ca.db", isolation_level=None)
    try:
        store.add_certificate(record)
        # Wait 50 ms for the lock, not the store's 5 s.
        store._writer.connection.driver_connection.execute("PRAGMA busy_timeout=50")  # type: ignore[union-attr]
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreUnavailable, match="database is locked"):
            store.add_certificate(replace(record, serial=0x2, fingerprint="sha256:" + "02" * 32))
        other.execute("ROLLBACK")
        store.add_certificate(replace(record, serial=0x3, fingerprint="sha256:" + "03" * 32))
        assert [r.serial for r in store.certificates(now=NOW)] == [0x1, 0x3]
        assert verify_audit_chain(store.audit_entries()) is None
    finally:
        other.close()
        store.close()


def _request(identity: str, required: int) -> EnrollmentRequest:
    return EnrollmentRequest(
        id=uuid.uuid4().hex,
        identity=identity,
        csr_pem=b"-",
        csr_sha256="ef" * 32,
        required=required,
        status=RequestStatus.PENDING,
        created_at=NOW,
        client="test",
    )


def test_approvals_from_two_nodes_at_once_are_both_counted(pg_url):
    """Two approvers on two nodes, at the same instant, on 12 requests that need both:
    every request ends approved; the same approver twice at once is one approval."""
    setup = SqlStore.open(pg_url, create=True)
    requests = [_request(f"spiffe://acme.com/r{index}", 2) for index in range(12)]
    for request in requests:
        setup.add_request(request)
    nodes = [SqlStore.open(pg_url) for _ in range(4)]
    added: list[bool] = []
    try:
        for request in requests:
            barrier = threading.Barrier(4)

            def approve(store: SqlStore, who: str, request=request, barrier=barrier) -> None:
                barrier.wait()
                _, fresh = store.approve_request(
                    request.id,
                    approver=who,
                    csr_sha256=request.csr_sha256,
                    at=NOW,
                    fingerprint=f"sha256:{who}",  # the store counts; the CA checks signatures
                    signature=b"signed",
                )
                if who == "carol":
                    added.append(fresh)

            threads = [
                threading.Thread(target=approve, args=(store, who))
                for store, who in zip(nodes, ["alice", "bob", "carol", "carol"], strict=True)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        for request in requests:
            stored = setup.get_request(request.id)
            assert stored is not None
            assert stored.status is RequestStatus.APPROVED
            assert sorted(stored.approved_by) == ["alice", "bob", "carol"]
        assert added.count(True) == len(requests)  # carol's second approval never counts
        assert verify_audit_chain(setup.audit_entries()) is None
    finally:
        for store in (setup, *nodes):
            store.close()


def _authority(directory: Path, url: str) -> CertificateAuthority:
    """The CA of ``directory`` on its own store: one 'node'."""
    config = parse_ca_config((directory / "ca.toml").read_bytes(), source="ca.toml")
    key = load_private_key((directory / "issuing.key").read_bytes())
    chain = tuple(load_certificates((directory / "chain.pem").read_bytes()))
    default_ttl, _, crl_validity = config.durations()
    return CertificateAuthority(
        issuer=Issuer(cert=chain[0], key=key, chain=chain),
        profile=PROFILES[config.profile],
        policy=config.policy(),
        store=SqlStore.open(url),
        default_ttl=default_ttl,
        crl_validity=crl_validity,
    )


def _issue_from_three_nodes(
    directory: Path, url: str, *, per_node: int, crl_every: int
) -> tuple[set[int], set[int], list[Any]]:
    """Three CAs on one store, issuing concurrently (CRLs interleaved); the serials they
    acknowledged, the serials stored, and the audit entries."""
    nodes = [_authority(directory, url) for _ in range(3)]
    keys = [generate_private_key().public_key() for _ in range(20)]
    serials: list[list[int]] = [[] for _ in nodes]
    errors: list[BaseException] = []
    now = dt.datetime.now(dt.UTC)

    def work(index: int) -> None:
        try:
            for count in range(per_node):
                issued = nodes[index].issue(
                    parse_identity(f"spiffe://acme.com/n{index}/{count}"),
                    keys[count % len(keys)],
                    now=now,
                )
                serials[index].append(issued.cert.serial_number)
                if count % crl_every == 0:  # CRL numbers and revocations interleave too
                    nodes[index].crl(now=now)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(index,)) for index in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for node in nodes:
        node.store.close()  # type: ignore[attr-defined]
    assert errors == []
    store = SqlStore.open(url)
    try:
        stored = {record.serial for record in store.certificates(now=now)}
        entries = list(store.audit_entries())
    finally:
        store.close()
    return {serial for part in serials for serial in part}, stored, entries


def test_three_nodes_issue_3000_distinct_serials_on_one_audit_chain(pg_url, tmp_path, run_cli):
    directory = tmp_path / "ca"
    assert _init(run_cli, directory, "--db", pg_url).code == 0
    acknowledged, stored, entries = _issue_from_three_nodes(
        directory, pg_url, per_node=1000, crl_every=250
    )
    assert len(acknowledged) == 3000
    assert stored == acknowledged
    assert verify_audit_chain(entries) is None
    assert [entry.event for entry in entries].count("issue") == 3000
    crl_numbers = [
        entry.as_dict()["detail"]["crl_number"] for entry in entries if entry.event == "crl"
    ]
    assert sorted(crl_numbers) == list(range(1, 13))


def test_three_processes_on_one_sqlite_file_keep_one_audit_chain(tmp_path, run_cli):
    """Three stores on one SQLite file (as three ``mtlskit`` processes would be): every
    append reads the head under the file lock, so none extends a stale one."""
    directory = tmp_path / "ca"
    assert _init(run_cli, directory).code == 0
    url = database_url(directory, "ca.db")
    acknowledged, stored, entries = _issue_from_three_nodes(
        directory, url, per_node=60, crl_every=20
    )
    assert stored == acknowledged and len(stored) == 180
    assert verify_audit_chain(entries) is None
    assert [entry.event for entry in entries].count("issue") == 180
