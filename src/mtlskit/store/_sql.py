"""``SqlStore``: the CA's records in SQLite (default, WAL) or PostgreSQL (several nodes).

Every write runs in one transaction that also appends its audit entry, and returns
only after COMMIT. On SQLite, writes take the database lock up front (``BEGIN
IMMEDIATE``) so reading the audit head and appending after it cannot interleave with
another process; ``synchronous=FULL`` (the default here) makes each COMMIT durable
against power loss, ``NORMAL`` only against a crash of the process (WAL mode).
Issuance, the hot path, runs its three statements on the SQLite driver itself
(``_driver_write``), with the SQL and value conversions SQLAlchemy compiled once.

On PostgreSQL (READ COMMITTED) each race has its own guard, because nodes no longer
share one file lock: token redemption is one conditional UPDATE; serials are a primary
key (a collision raises ``SerialTaken`` and the CA signs again); approvals lock their
request row and are one row per approver; the audit chain's appends are serialized by
a transaction-level advisory lock (see ``SqlStore._append_audit`` for why that one).
A database that stops answering raises ``StoreUnavailable``: the caller learns that
nothing is known to have happened, never a wrong answer.
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

from cryptography import x509
from sqlalchemy import (
    Connection,
    Engine,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import URL, Dialect, RootTransaction, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    IntegrityError,
    InterfaceError,
    NoSuchModuleError,
    OperationalError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.sql import Executable, Select

from mtlskit.errors import InputError
from mtlskit.issue import (
    Approval,
    ApproverRecord,
    AuditEntry,
    CertificateRecord,
    CertificateStatus,
    EnrollmentRefused,
    EnrollmentRequest,
    RequestStatus,
    SerialTaken,
    StoreUnavailable,
    TokenRecord,
    UnknownCertificate,
    approvals_counted,
    unredeemable,
)
from mtlskit.issue._provisioner import TokenRefused
from mtlskit.store._migrate import is_known, stored_revision, upgrade
from mtlskit.store._schema import (
    SCHEMA_REVISION,
    approvals,
    approvers,
    audit_log,
    audit_row,
    certificates,
    counters,
    enrollment_requests,
    revocations,
    token_ids,
    tokens,
)

__all__ = ["SqlStore", "Synchronous", "database_url", "display_url", "migrate"]

Synchronous = Literal["FULL", "NORMAL"]

# Built once: issuing is the hot path, and statement construction costs as much as the insert.
_AUDIT_HEAD = select(audit_log.c.seq, audit_log.c.hash).order_by(audit_log.c.seq.desc()).limit(1)
_INSERT_AUDIT = insert(audit_log)
_INSERT_CERTIFICATE = insert(certificates)
# Built once: an enrollment runs both, and building the expression cost more than the SQL.
_FIND_TOKEN = select(tokens).where(tokens.c.hash == bindparam("token_hash"))
_REDEEM_TOKEN = (
    update(tokens)
    .where(
        tokens.c.hash == bindparam("token_hash"),
        tokens.c.used_at.is_(None),
        tokens.c.expires_at > bindparam("at"),
    )
    .values(used_at=bindparam("at"))
)
# pg_advisory_xact_lock key of the audit chain's head ("mtls" + 1); released at COMMIT.
AUDIT_LOCK = 0x6D746C73_0001
_LOCK_AUDIT = text("SELECT pg_advisory_xact_lock(:key)").bindparams(key=AUDIT_LOCK)
# Errors that mean "the database did not answer", not "the request was wrong".
_UNAVAILABLE = (OperationalError, InterfaceError, PoolTimeout)
# libpq: give up connecting after 5 s; notice a dead peer within ~15 s; a node stopped
# mid-transaction (SIGSTOP, a hung VM) releases its locks after 30 s; no statement
# (waiting for the audit lock included) runs longer than 20 s.
_PG_CONNECT = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "application_name": "mtlskit-ca",
    "options": "-c statement_timeout=20000 -c idle_in_transaction_session_timeout=30000",
}


def database_url(directory: str | os.PathLike[str], database: str) -> str:
    """``ca.toml``'s ``database``: a SQLAlchemy URL, or a SQLite file relative to the CA dir."""
    if "://" in database:
        return database
    return f"sqlite:///{Path(directory, database).resolve()}"


def display_url(url: str | URL) -> str:
    """The URL as it may be printed or logged: any password replaced by ``***``."""
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except ArgumentError:
        return "<not a database URL>"
    return parsed.render_as_string(hide_password=True)


def _driver_url(parsed: URL) -> URL:
    """``postgresql://`` means psycopg 3 here (SQLAlchemy's default would be psycopg2)."""
    if parsed.drivername in {"postgresql", "postgres"}:
        return parsed.set(drivername="postgresql+psycopg")
    return parsed


def _unavailable(exc: BaseException, source: str) -> StoreUnavailable:
    orig = getattr(exc, "orig", None) or exc
    first = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    return StoreUnavailable(f"the CA database is unavailable: {first}", source=source)


def migrate(url: str, *, target: str = "head") -> tuple[str | None, str]:
    """Upgrade an existing store to ``target`` (``mtlskit ca migrate``): (before, after)."""
    store = SqlStore._connect(url, create=False, synchronous="FULL")
    try:
        with store._write() as conn:
            before, _ = stored_revision(conn, source=store._source)
            if before is None:
                raise InputError("no CA store (run `mtlskit ca init` first)", source=store._source)
            return upgrade(conn, source=store._source, target=target)
    except StoreUnavailable as exc:
        raise InputError(f"cannot use the CA store: {exc.detail}", source=exc.source) from None
    finally:
        store.close()


@dataclass(frozen=True, slots=True)
class _DriverStatement:
    """A statement compiled by SQLAlchemy once, run on the DBAPI driver (SQLite's hot paths).

    SQLAlchemy writes the SQL and converts the values both ways (its own bind and result
    processors, so a row is stored and read exactly as through ``conn.execute``); only
    its per-statement execution machinery (~45 µs, more than SQLite's insert) is skipped.
    """

    sql: str
    binds: tuple[tuple[str, Callable[[Any], Any] | None], ...]
    results: tuple[tuple[str, Callable[[Any], Any] | None], ...]

    @classmethod
    def of(cls, statement: Executable, dialect: Dialect) -> _DriverStatement:
        compiled = statement.compile(dialect=dialect)
        columns = statement.selected_columns if isinstance(statement, Select) else ()
        return cls(
            sql=str(compiled),
            binds=tuple(
                (name, compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect))
                for name in compiled.positiontup or ()
            ),
            results=tuple(
                (
                    column.key,
                    column.type.dialect_impl(dialect).result_processor(dialect, None),
                )
                for column in columns
            ),
        )

    def params(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(
            values[name] if process is None else process(values[name])
            for name, process in self.binds
        )

    def first(self, driver: sqlite3.Connection, values: Mapping[str, Any]) -> Any | None:
        """The first row, its columns by name as SQLAlchemy's rows have them; None if none."""
        rows = driver.execute(self.sql, self.params(values)).fetchall()  # resets the statement
        if not rows:
            return None
        return SimpleNamespace(
            **{
                name: value if process is None else process(value)
                for (name, process), value in zip(self.results, rows[0], strict=True)
            }
        )


def _redemption(
    done: int, row: Any | None, hash: str, detail: Mapping[str, Any], at: dt.datetime
) -> tuple[EnrollmentRefused | None, tuple[str, dict[str, Any]] | None]:
    """What a redemption came to, from its UPDATE's row count and the token's row as it now
    stands: the refusal (None when this one won) and the audit entry (event, detail) to
    append, None for a token that does not exist."""
    if done == 1 and row is not None:
        return None, ("redeem", {"token_sha256": hash, **detail})
    refusal = unredeemable(_token(row) if row is not None else None, at)
    if row is None:
        return refusal, None
    return refusal, ("redeem_refused", {"token_sha256": hash, "code": refusal.code, **detail})


def _status_conditions(status: CertificateStatus | None, now: dt.datetime) -> list[Any]:
    """The WHERE clauses for a status: revoked is stored; valid and expired are the
    unrevoked ones on either side of ``now``."""
    if status is CertificateStatus.REVOKED:
        return [certificates.c.status == CertificateStatus.REVOKED.value]
    if status is CertificateStatus.VALID:
        return [
            certificates.c.status == CertificateStatus.VALID.value,
            certificates.c.not_after > now,
        ]
    if status is CertificateStatus.EXPIRED:
        return [
            certificates.c.status == CertificateStatus.VALID.value,
            certificates.c.not_after <= now,
        ]
    return []


def _record(row: Any, revoked: Any | None = None) -> CertificateRecord:
    return CertificateRecord(
        serial=int(row.serial, 16),
        identity=row.identity,
        fingerprint=row.fingerprint,
        not_before=row.not_before,
        not_after=row.not_after,
        profile=row.profile,
        pem=row.pem,
        issued_at=row.issued_at,
        revoked_at=revoked.revoked_at if revoked is not None else None,
        revocation_reason=x509.ReasonFlags(revoked.reason) if revoked is not None else None,
    )


def _token(row: Any) -> TokenRecord:
    return TokenRecord(
        hash=row.hash,
        identity=row.identity,
        created_at=row.created_at,
        expires_at=row.expires_at,
        used_at=row.used_at,
    )


def _enrollment_request(row: Any, given: Any) -> EnrollmentRequest:
    return EnrollmentRequest(
        id=row.id,
        identity=row.identity,
        csr_pem=row.csr,
        csr_sha256=row.csr_sha256,
        required=row.required,
        status=RequestStatus(row.status),
        created_at=row.created_at,
        approvals=tuple(
            Approval(
                approver=item.approver,
                csr_sha256=item.csr_sha256,
                at=item.at,
                fingerprint=item.fingerprint or "",
                signature=item.signature or b"",
            )
            for item in given
        ),
        serial=int(row.serial, 16) if row.serial else None,
        client=row.client,
    )


class SqlStore:
    """The ``mtlskit.issue.Store`` and ``EnrollmentStore`` protocols over SQLAlchemy Core."""

    def __init__(self, engine: Engine, *, source: str) -> None:
        self._engine = engine
        self._source = source
        self._writer: Connection | None = None
        self._grouping = False  # inside ``group`` (SQLite)
        self._group: RootTransaction | None = None  # its transaction, begun by its first write
        dialect = engine.dialect
        self._sqlite = dialect.name == "sqlite"
        # Issuance on SQLite runs on the driver (``_driver_write``); compiled here, once.
        self._insert_certificate = _DriverStatement.of(insert(certificates), dialect)
        self._insert_audit = _DriverStatement.of(insert(audit_log), dialect)
        self._find_token = _DriverStatement.of(_FIND_TOKEN, dialect)
        self._redeem_token = _DriverStatement.of(_REDEEM_TOKEN, dialect)
        self._audit_head = str(
            _AUDIT_HEAD.compile(dialect=dialect, compile_kwargs={"literal_binds": True})
        )

    @classmethod
    def open(
        cls,
        url: str,
        *,
        create: bool = False,
        synchronous: Synchronous = "FULL",
        upgrade_schema: bool | None = None,
    ) -> SqlStore:
        """Open an existing store (``create``: make a new, empty one; it must not exist).

        A store behind this mtlskit's schema is upgraded on open when it is SQLite (one
        machine, one file: what ``ca migrate`` would do anyway); a shared PostgreSQL one
        is refused until someone runs ``mtlskit ca migrate``, so nodes of two versions
        never race to alter it. ``upgrade_schema`` overrides that choice.
        """
        store = cls._connect(url, create=create, synchronous=synchronous)
        if upgrade_schema is None:
            upgrade_schema = store.backend == "sqlite"
        try:
            store._prepare(create=create, upgrade_schema=upgrade_schema)
        except StoreUnavailable as exc:
            store.close()
            raise InputError(f"cannot use the CA store: {exc.detail}", source=exc.source) from None
        except BaseException:
            store.close()
            raise
        return store

    @classmethod
    def _connect(cls, url: str, *, create: bool, synchronous: Synchronous) -> SqlStore:
        """The engine for ``url``, schema unchecked (``open`` checks it, ``migrate`` moves it)."""
        try:
            parsed = _driver_url(make_url(url))
        except ArgumentError:
            raise InputError(
                f"not a database URL: {display_url(url)!r}", source="database"
            ) from None
        backend = parsed.get_backend_name()
        source = parsed.database or url if backend == "sqlite" else display_url(url)
        if backend == "sqlite" and parsed.database:
            exists = Path(parsed.database).exists()
            if create and exists:
                raise InputError("a CA store already exists here", source=parsed.database)
            if not create and not exists:
                raise InputError(
                    "no CA store (run `mtlskit ca init` first)", source=parsed.database
                )
            if parsed.database != ":memory:":
                _private_sqlite_files(Path(parsed.database), create=create)
        try:
            if backend == "postgresql":
                engine = create_engine(
                    parsed,
                    pool_pre_ping=True,
                    isolation_level="READ COMMITTED",  # _append_audit relies on it
                    connect_args=_PG_CONNECT,
                )
            else:
                engine = create_engine(parsed)
        except (NoSuchModuleError, ImportError) as exc:
            raise InputError(f"no driver for this database: {exc}", source=source) from None
        if backend == "sqlite":
            _sqlite_pragmas(engine, synchronous)
        return cls(engine, source=source)

    def _prepare(self, *, create: bool, upgrade_schema: bool) -> None:
        """Create the schema, or check (and maybe upgrade) the one that is there."""
        with self._write() as conn:
            revision, legacy = stored_revision(conn, source=self._source)
            if create:
                if revision is not None:
                    raise InputError(
                        "a CA store already exists in this database", source=self._source
                    )
                upgrade(conn, source=self._source)
                return
            if revision is None:
                raise InputError("no CA store (run `mtlskit ca init` first)", source=self._source)
            if revision == SCHEMA_REVISION and not legacy:
                return
            if not is_known(revision):
                raise InputError(
                    f"CA store schema revision {revision} is newer than this mtlskit "
                    f"({SCHEMA_REVISION}): upgrade mtlskit",
                    source=self._source,
                )
            if not upgrade_schema:
                raise InputError(
                    f"CA store schema revision {revision}, this mtlskit needs "
                    f"{SCHEMA_REVISION}: run `mtlskit ca migrate DIR` once",
                    source=self._source,
                )
            upgrade(conn, source=self._source)

    @property
    def backend(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._engine.dialect.name

    def ping(self) -> float:
        """Seconds one ``SELECT 1`` took; ``StoreUnavailable`` if the database is gone."""
        started = time.perf_counter()
        with self._read() as conn:
            conn.execute(text("SELECT 1"))
        return time.perf_counter() - started

    def close(self) -> None:
        self._drop_writer()
        self._engine.dispose()

    def _drop_writer(self) -> None:
        if self._writer is not None:
            with suppress(DBAPIError):  # the connection is already gone; nothing to give back
                self._writer.close()
            self._writer = None

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        """A pooled connection for reads; a database that does not answer → ``StoreUnavailable``."""
        try:
            with self._engine.connect() as conn:
                yield conn
        except _UNAVAILABLE as exc:
            raise _unavailable(exc, self._source) from exc
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise _unavailable(exc, self._source) from exc
            raise

    # --- writes: one transaction each, audit entry included -------------------------

    @contextmanager
    def group(self) -> Iterator[None]:
        """Many writes, one durable COMMIT: group commit, for a caller that holds every
        answer until the group is over (``mtlskit ca serve`` batches concurrent requests).

        SQLite only; elsewhere each write commits itself, as outside a group. Inside, each
        write is a SAVEPOINT in one ``BEGIN IMMEDIATE`` transaction, begun by the first
        write (a group that only reads takes no lock): a write that fails
        (a taken serial, a refused redemption) is rolled back alone, and the others stand.
        Nothing is durable, or visible to another connection, until the group ends without
        an exception; then one COMMIT (one fsync at synchronous=FULL) covers every write.
        An exception, or a database that stops answering, rolls the whole group back and
        raises: the caller must then treat every write in it as never made.
        """
        if not self._sqlite or self._grouping:
            yield
            return
        self._grouping = True
        try:
            yield
            if self._group is not None:  # a group that only read never took the lock
                self._grouped_writer()  # raises if a write inside lost the connection
                self._group.commit()
        except _UNAVAILABLE as exc:
            self._drop_writer()
            raise _unavailable(exc, self._source) from exc
        finally:
            group, self._group, self._grouping = self._group, None, False
            if group is not None and group.is_active:
                with suppress(DBAPIError):
                    group.rollback()

    def _writer_connection(self) -> Connection:
        """The store's own writer connection, opened on first use and kept open."""
        if self._writer is None:
            self._writer = self._engine.connect().execution_options(mtlskit_write=True)
        return self._writer

    def _grouped_writer(self) -> Connection:
        """The group's connection, its transaction begun (``BEGIN IMMEDIATE``) by the first
        write. Once a write in the group lost the connection, every later one fails the
        same way: a fresh connection would write outside the group's transaction."""
        if self._group is None:
            self._group = self._writer_connection().begin()
        elif self._writer is None or not self._group.is_active:
            raise StoreUnavailable(
                "the CA database is unavailable: the connection was lost mid-group",
                source=self._source,
            )
        return self._writer

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """One write transaction. SQLite: on the store's own writer connection (kept open: a
        pool checkout per certificate costs a third of an insert there); inside ``group``, a
        SAVEPOINT in the group's transaction. Not thread-safe: one store per thread.

        If the database stops answering, the transaction is abandoned (the server rolls
        it back), the connection dropped, and ``StoreUnavailable`` raised; the next write
        connects afresh."""
        try:
            if self._grouping:
                writer = self._grouped_writer()
                with writer.begin_nested():
                    yield writer
                return
            if self._engine.dialect.name == "postgresql":
                # A pooled connection per transaction: pool_pre_ping replaces one the
                # server dropped (a restart, a failover) before BEGIN, so only a write that
                # was really cut short answers 503, and none is ever retried blindly.
                with self._engine.connect() as conn, conn.begin():
                    yield conn
                return
            writer = self._writer_connection()
            with writer.begin():
                yield writer
        except _UNAVAILABLE as exc:
            self._drop_writer()
            raise _unavailable(exc, self._source) from exc
        except DBAPIError as exc:
            if exc.connection_invalidated:
                self._drop_writer()
                raise _unavailable(exc, self._source) from exc
            raise

    def _append_audit(
        self, conn: Connection, event_name: str, detail: Mapping[str, Any], at: dt.datetime
    ) -> None:
        """Append after the current head, in the caller's transaction; always its last step.

        SQLite: the writer already holds the database lock (``BEGIN IMMEDIATE``).
        PostgreSQL: ``pg_advisory_xact_lock`` first, then read the head. Chosen over the
        alternatives because the chain is one global sequence that every write extends:
        ``SELECT … FOR UPDATE`` on the newest row locks a row that stops being the head
        once the holder commits, so a waiter would read a stale head (it needs a separate
        head row to lock); SERIALIZABLE makes every concurrent append a conflict, so
        under load most transactions fail and retry after signing. The advisory lock
        queues appenders in order, costs no table, and is released by COMMIT, ROLLBACK
        or a dropped connection (a killed node cannot leave it held). Under READ
        COMMITTED the head query after the lock sees the previous holder's commit. Taken
        last, after the row locks of the change itself, and nothing locks after it, so
        it cannot deadlock; ``audit_log.seq`` being the primary key backs it up.
        """
        if conn.dialect.name == "postgresql":
            conn.execute(_LOCK_AUDIT)
        head = conn.execute(_AUDIT_HEAD).first()
        entry = AuditEntry.after(
            (head.seq, head.hash) if head else None, at=at, event=event_name, detail=detail
        )
        conn.execute(_INSERT_AUDIT, audit_row(entry))

    @contextmanager
    def _driver_write(self) -> Iterator[sqlite3.Connection]:
        """``_write`` for SQLite's hot path (issuance), on the driver's connection.

        The same writer connection, the same lock taken up front (``BEGIN IMMEDIATE``),
        the same COMMIT at the configured ``synchronous`` before returning, and the same
        ``StoreUnavailable`` when the database does not answer; SQLAlchemy's per-statement
        overhead, which cost more than the certificate's insert and audit append, is not
        paid. The SQLAlchemy connection stays idle meanwhile (no transaction of its own).
        """
        try:
            if self._grouping:
                driver: sqlite3.Connection = self._grouped_writer().connection.driver_connection
                # SQLAlchemy's own savepoints are named sa_savepoint_N; this one is not.
                driver.execute("SAVEPOINT mtlskit_write")
                try:
                    yield driver
                except BaseException:
                    driver.execute("ROLLBACK TO SAVEPOINT mtlskit_write")
                    raise
                finally:
                    driver.execute("RELEASE SAVEPOINT mtlskit_write")
                return
            driver = self._writer_connection().connection.driver_connection
            driver.execute("BEGIN IMMEDIATE")
            try:
                yield driver
                driver.execute("COMMIT")
            except BaseException:
                if driver.in_transaction:
                    driver.rollback()
                raise
        except (sqlite3.OperationalError, sqlite3.InterfaceError) as exc:
            self._drop_writer()
            raise _unavailable(exc, self._source) from exc

    @contextmanager
    def _driver_read(self) -> Iterator[sqlite3.Connection]:
        """A read on the writer's own driver connection (SQLite's hot path, enrollment's
        token lookup): inside a group it sees the group's writes; outside, each statement
        reads the latest commit."""
        try:
            yield self._writer_connection().connection.driver_connection
        except (sqlite3.OperationalError, sqlite3.InterfaceError) as exc:
            self._drop_writer()
            raise _unavailable(exc, self._source) from exc

    def _driver_append_audit(
        self,
        driver: sqlite3.Connection,
        event_name: str,
        detail: Mapping[str, Any],
        at: dt.datetime,
    ) -> None:
        """``_append_audit`` inside ``_driver_write`` (SQLite: the lock is already held)."""
        head = driver.execute(self._audit_head).fetchone()
        entry = AuditEntry.after(head, at=at, event=event_name, detail=detail)
        driver.execute(self._insert_audit.sql, self._insert_audit.params(audit_row(entry)))

    def add_certificate(self, record: CertificateRecord) -> None:
        row = {
            "serial": f"{record.serial:x}",
            "identity": record.identity,
            "fingerprint": record.fingerprint,
            "not_before": record.not_before,
            "not_after": record.not_after,
            "profile": record.profile,
            "status": CertificateStatus.VALID.value,
            "issued_at": record.issued_at,
            "pem": record.pem,
        }
        detail = {
            "serial": row["serial"],
            "identity": record.identity,
            "fingerprint": record.fingerprint,
            "not_after": record.not_after.isoformat(),
            "profile": record.profile,
        }
        try:
            if self._sqlite:
                with self._driver_write() as driver:
                    driver.execute(
                        self._insert_certificate.sql, self._insert_certificate.params(row)
                    )
                    self._driver_append_audit(driver, "issue", detail, record.issued_at)
                return
            with self._write() as conn:
                conn.execute(_INSERT_CERTIFICATE, row)
                self._append_audit(conn, "issue", detail, record.issued_at)
        except (IntegrityError, sqlite3.IntegrityError) as exc:
            # SQLAlchemy wraps the driver's error; the SQLite hot path meets it bare.
            orig = exc.orig if isinstance(exc, IntegrityError) else exc
            if _violates(orig, "certificates_pkey", "certificates.serial"):
                raise SerialTaken(f"serial {record.serial:x} exists") from None
            raise

    def revoke(
        self, serial: int, *, reason: x509.ReasonFlags, at: dt.datetime
    ) -> CertificateRecord:
        key = f"{serial:x}"
        with self._write() as conn:
            # FOR UPDATE: two nodes revoking one certificate at once → one revocation.
            row = conn.execute(
                select(certificates).where(certificates.c.serial == key).with_for_update()
            ).first()
            if row is None:
                raise UnknownCertificate(f"no certificate with serial {key} in this CA")
            if row.status == CertificateStatus.REVOKED.value:
                raise UnknownCertificate(f"certificate {key} is already revoked")
            conn.execute(
                update(certificates)
                .where(certificates.c.serial == key)
                .values(status=CertificateStatus.REVOKED.value)
            )
            conn.execute(insert(revocations).values(serial=key, revoked_at=at, reason=reason.value))
            self._append_audit(
                conn,
                "revoke",
                {"serial": key, "identity": row.identity, "reason": reason.value},
                at,
            )
        return replace(_record(row), revoked_at=at, revocation_reason=reason)

    def next_crl_number(self, *, at: dt.datetime, detail: Mapping[str, Any]) -> int:
        with self._write() as conn:
            conn.execute(
                update(counters)
                .where(counters.c.name == "crl_number")
                .values(value=counters.c.value + 1)
            )
            number = conn.scalar(select(counters.c.value).where(counters.c.name == "crl_number"))
            self._append_audit(conn, "crl", {"crl_number": number, **detail}, at)
        return int(number or 0)

    def record_event(self, event: str, detail: Mapping[str, Any], *, at: dt.datetime) -> None:
        with self._write() as conn:
            self._append_audit(conn, event, detail, at)

    # --- enrollment: tokens, requests, approvals ---------------------------------------

    def add_token(self, record: TokenRecord) -> None:
        with self._write() as conn:
            conn.execute(
                insert(tokens).values(
                    hash=record.hash,
                    identity=record.identity,
                    created_at=record.created_at,
                    expires_at=record.expires_at,
                )
            )
            self._append_audit(
                conn,
                "token",
                {
                    "token_sha256": record.hash,
                    "identity": record.identity,
                    "expires_at": record.expires_at.isoformat(),
                },
                record.created_at,
            )

    def find_token(self, hash: str) -> TokenRecord | None:
        if self._sqlite:  # an enrollment's first step: on the driver, like issuance
            with self._driver_read() as driver:
                row = self._find_token.first(driver, {"token_hash": hash})
        else:
            with self._read() as conn:
                row = conn.execute(_FIND_TOKEN, {"token_hash": hash}).first()
        return _token(row) if row is not None else None

    def redeem_token(self, hash: str, *, at: dt.datetime, detail: Mapping[str, Any]) -> TokenRecord:
        if self._sqlite:
            with self._driver_write() as driver:
                # The whole race is this one statement: only an unused, unexpired row matches.
                done = driver.execute(
                    self._redeem_token.sql,
                    self._redeem_token.params({"token_hash": hash, "at": at}),
                ).rowcount
                row = self._find_token.first(driver, {"token_hash": hash})
                refusal, audit = _redemption(done, row, hash, detail, at)
                if audit is not None:
                    self._driver_append_audit(driver, *audit, at)
        else:
            with self._write() as conn:
                done = conn.execute(_REDEEM_TOKEN, {"token_hash": hash, "at": at}).rowcount
                row = conn.execute(_FIND_TOKEN, {"token_hash": hash}).first()
                refusal, audit = _redemption(done, row, hash, detail, at)
                if audit is not None:
                    self._append_audit(conn, *audit, at)
        if refusal is not None:
            raise refusal
        assert row is not None  # no refusal: the UPDATE matched this row
        return _token(row)

    def use_token_id(
        self,
        issuer: str,
        jti: str,
        *,
        expires_at: dt.datetime,
        at: dt.datetime,
        detail: Mapping[str, Any],
    ) -> None:
        """Burn a workload-identity token's ``jti``: one INSERT … ON CONFLICT DO NOTHING on
        its (issuer, jti) key, so of two nodes inserting it at once exactly one gets a row;
        the other (and any later replay) is ``token_replayed``, audited with its detail.
        Rows of tokens past their ``exp`` go in the same transaction: such a token is
        refused for its ``exp`` before it gets here."""
        # RETURNING, not rowcount: psycopg reports -1 for this INSERT, done or not.
        dialect = pg_dialect if self._engine.dialect.name == "postgresql" else sqlite_dialect
        statement = (
            dialect.insert(token_ids)
            .values(issuer=issuer, jti=jti, expires_at=expires_at, used_at=at)
            .on_conflict_do_nothing(index_elements=["issuer", "jti"])
            .returning(token_ids.c.jti)  # a row only if this insert made one
        )
        with self._write() as conn:
            conn.execute(delete(token_ids).where(token_ids.c.expires_at < at))
            done = conn.execute(statement).first() is not None
            record = {"jti": jti, **detail}
            if done:
                self._append_audit(conn, "id_token", record, at)
            else:
                self._append_audit(
                    conn, "id_token_refused", {"code": "token_replayed", **record}, at
                )
        if not done:
            raise TokenRefused("token_replayed", f"jti {jti!r} of {issuer} was used before")

    def add_request(self, request: EnrollmentRequest) -> None:
        with self._write() as conn:
            conn.execute(
                insert(enrollment_requests).values(
                    id=request.id,
                    identity=request.identity,
                    csr=request.csr_pem,
                    csr_sha256=request.csr_sha256,
                    required=request.required,
                    status=request.status.value,
                    created_at=request.created_at,
                    serial=None,
                    client=request.client,
                )
            )
            self._append_audit(
                conn,
                "request",
                {
                    "request": request.id,
                    "identity": request.identity,
                    "csr_sha256": request.csr_sha256,
                    "required": request.required,
                    "client": request.client,
                },
                request.created_at,
            )

    def _request(self, conn: Connection, request_id: str) -> EnrollmentRequest | None:
        row = conn.execute(
            select(enrollment_requests).where(enrollment_requests.c.id == request_id)
        ).first()
        if row is None:
            return None
        given = conn.execute(
            select(approvals).where(approvals.c.request_id == request_id).order_by(approvals.c.at)
        )
        return _enrollment_request(row, given)

    def get_request(self, request_id: str) -> EnrollmentRequest | None:
        with self._read() as conn:
            return self._request(conn, request_id)

    def requests(self, *, status: RequestStatus | None = None) -> Sequence[EnrollmentRequest]:
        query = select(enrollment_requests.c.id).order_by(enrollment_requests.c.created_at)
        if status is not None:
            query = query.where(enrollment_requests.c.status == status.value)
        with self._read() as conn:
            ids = list(conn.scalars(query))
            return [found for key in ids if (found := self._request(conn, key)) is not None]

    def _pending(self, conn: Connection, request_id: str) -> EnrollmentRequest:
        """The open request, its row locked until COMMIT: approvals and denials of one
        request, from any node, are counted one after the other on fresh reads."""
        conn.execute(
            select(enrollment_requests.c.id)
            .where(enrollment_requests.c.id == request_id)
            .with_for_update()
        )
        request = self._request(conn, request_id)
        if request is None:
            raise InputError(f"no enrollment request {request_id!r}", source="ID")
        if request.status not in {RequestStatus.PENDING, RequestStatus.APPROVED}:
            raise InputError(
                f"request {request_id} is {request.status.value}, no longer open", source="ID"
            )
        return request

    def approve_request(
        self,
        request_id: str,
        *,
        approver: str,
        csr_sha256: str,
        at: dt.datetime,
        fingerprint: str = "",
        signature: bytes = b"",
    ) -> tuple[EnrollmentRequest, bool]:
        """Record an approval (the caller has checked ``signature``: ``check_approval``);
        one row per approver and request, so the same person at once on two nodes is one."""
        with self._write() as conn:
            request = self._pending(conn, request_id)
            if csr_sha256 != request.csr_sha256:
                raise InputError(
                    f"request {request_id} is for CSR sha256 {request.csr_sha256}, "
                    f"not {csr_sha256}: approve what you reviewed",
                    source="--csr-sha256",
                )
            given = Approval(
                approver=approver,
                csr_sha256=csr_sha256,
                at=at,
                fingerprint=fingerprint,
                signature=signature,
            )
            before = {a.approver: a for a in request.approvals}
            added = approver not in before or not before[approver].signature
            row = {"csr_sha256": csr_sha256, "at": at}
            row |= {"fingerprint": fingerprint or None, "signature": signature or None}
            if approver in before and added:  # an unsigned row from before schema 4
                conn.execute(
                    update(approvals)
                    .where(approvals.c.request_id == request_id, approvals.c.approver == approver)
                    .values(**row)
                )
            elif added:
                conn.execute(
                    insert(approvals).values(request_id=request_id, approver=approver, **row)
                )
            counted = approvals_counted((*request.approvals, given), request.csr_sha256)
            if len(counted) >= request.required and request.status is RequestStatus.PENDING:
                conn.execute(
                    update(enrollment_requests)
                    .where(enrollment_requests.c.id == request_id)
                    .values(status=RequestStatus.APPROVED.value)
                )
            self._append_audit(
                conn,
                "approve",
                {
                    "request": request_id,
                    "identity": request.identity,
                    "approver": approver,
                    "fingerprint": fingerprint,
                    "csr_sha256": csr_sha256,
                    "counted": len(counted),
                    "required": request.required,
                    "repeat": not added,
                },
                at,
            )
            updated = self._request(conn, request_id)
        assert updated is not None
        return updated, added

    def add_approver(self, record: ApproverRecord) -> None:
        """Register an approver (made by ``register_approver``, with the CA's key)."""
        with self._write() as conn:
            exists = conn.scalar(
                select(approvers.c.fingerprint).where(approvers.c.fingerprint == record.fingerprint)
            )
            if exists is not None:
                raise InputError(
                    f"key {record.fingerprint} is already a registered approver", source="--cert"
                )
            conn.execute(
                insert(approvers).values(
                    fingerprint=record.fingerprint,
                    identity=record.identity,
                    cert=record.cert_pem,
                    signature=record.signature,
                    added_at=record.added_at,
                )
            )
            self._append_audit(
                conn,
                "approver_add",
                {"identity": record.identity, "fingerprint": record.fingerprint},
                record.added_at,
            )

    def approvers(self) -> Sequence[ApproverRecord]:
        with self._read() as conn:
            rows = conn.execute(select(approvers).order_by(approvers.c.added_at))
            return [
                ApproverRecord(
                    fingerprint=row.fingerprint,
                    identity=row.identity,
                    cert_pem=row.cert,
                    signature=row.signature,
                    added_at=row.added_at,
                )
                for row in rows
            ]

    def remove_approver(self, fingerprint: str, *, at: dt.datetime) -> str:
        """Unregister an approver: their approvals no longer count. Returns the identity."""
        with self._write() as conn:
            identity = conn.scalar(
                select(approvers.c.identity).where(approvers.c.fingerprint == fingerprint)
            )
            if identity is None:
                raise InputError(f"no registered approver {fingerprint}", source="FINGERPRINT")
            conn.execute(approvers.delete().where(approvers.c.fingerprint == fingerprint))
            self._append_audit(
                conn, "approver_remove", {"identity": identity, "fingerprint": fingerprint}, at
            )
        return str(identity)

    def deny_request(
        self, request_id: str, *, approver: str, reason: str, at: dt.datetime
    ) -> EnrollmentRequest:
        with self._write() as conn:
            request = self._pending(conn, request_id)
            conn.execute(
                update(enrollment_requests)
                .where(enrollment_requests.c.id == request_id)
                .values(status=RequestStatus.DENIED.value)
            )
            self._append_audit(
                conn,
                "deny",
                {
                    "request": request_id,
                    "identity": request.identity,
                    "approver": approver,
                    "reason": reason,
                },
                at,
            )
            updated = self._request(conn, request_id)
        assert updated is not None
        return updated

    def claim_request(self, request_id: str) -> bool:
        with self._write() as conn:
            done = conn.execute(
                update(enrollment_requests)
                .where(
                    enrollment_requests.c.id == request_id,
                    enrollment_requests.c.status == RequestStatus.APPROVED.value,
                )
                .values(status=RequestStatus.ISSUING.value)
            )
        return done.rowcount == 1

    def finish_request(
        self, request_id: str, *, serial: int | None, at: dt.datetime
    ) -> EnrollmentRequest:
        with self._write() as conn:
            status = RequestStatus.APPROVED if serial is None else RequestStatus.ISSUED
            conn.execute(
                update(enrollment_requests)
                .where(
                    enrollment_requests.c.id == request_id,
                    enrollment_requests.c.status == RequestStatus.ISSUING.value,
                )
                .values(status=status.value, serial=f"{serial:x}" if serial is not None else None)
            )
            if serial is not None:
                self._append_audit(
                    conn, "request_issued", {"request": request_id, "serial": f"{serial:x}"}, at
                )
            updated = self._request(conn, request_id)
        assert updated is not None
        return updated

    # --- reads ----------------------------------------------------------------------

    def _select(self) -> Any:
        return select(certificates, revocations.c.revoked_at, revocations.c.reason).outerjoin(
            revocations, revocations.c.serial == certificates.c.serial
        )

    def _rows(self, query: Any) -> list[CertificateRecord]:
        with self._read() as conn:
            return [
                _record(row, row if row.revoked_at is not None else None)
                for row in conn.execute(query)
            ]

    def get(self, serial: int) -> CertificateRecord | None:
        found = self._rows(self._select().where(certificates.c.serial == f"{serial:x}"))
        return found[0] if found else None

    def certificates(
        self, *, status: CertificateStatus | None = None, now: dt.datetime
    ) -> Sequence[CertificateRecord]:
        query = self._select().order_by(certificates.c.issued_at, certificates.c.serial)
        return self._rows(query.where(*_status_conditions(status, now)))

    def certificate_page(
        self,
        *,
        now: dt.datetime,
        query: str = "",
        status: CertificateStatus | None = None,
        expiring_within: dt.timedelta | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[Sequence[CertificateRecord], int]:
        """One page of certificates and how many match in all, both counted by the database
        (LIMIT/OFFSET and COUNT): the console lists 10,000 without loading them. ``query``
        matches part of the identity (any case), or a whole serial (hex) or fingerprint;
        ``expiring_within``: unrevoked ones that expire in that window, soonest first."""
        conditions: list[Any] = []
        if query:
            text_query = query.strip()
            hex_query = text_query.lower().removeprefix("sha256:").removeprefix("0x")
            hex_query = hex_query.replace(":", "")
            conditions.append(
                or_(
                    func.lower(certificates.c.identity).contains(
                        text_query.lower(), autoescape=True
                    ),
                    certificates.c.serial == hex_query.lstrip("0"),
                    certificates.c.fingerprint == f"sha256:{hex_query}",
                )
            )
        if expiring_within is not None and status is not CertificateStatus.REVOKED:
            status = CertificateStatus.VALID  # expiring: unrevoked and not yet expired
        conditions += _status_conditions(status, now)
        if expiring_within is not None:
            conditions.append(certificates.c.not_after <= now + expiring_within)
        order = (
            (certificates.c.not_after, certificates.c.serial)
            if expiring_within is not None
            else (certificates.c.issued_at.desc(), certificates.c.serial)
        )
        page = self._select().where(*conditions).order_by(*order).limit(limit).offset(offset)
        counting = select(func.count()).select_from(certificates).where(*conditions)
        with self._read() as conn:
            total = int(conn.scalar(counting) or 0)
        return self._rows(page), total

    def revoked_unexpired(self, now: dt.datetime) -> Sequence[CertificateRecord]:
        return self._rows(
            self._select()
            .where(
                certificates.c.status == CertificateStatus.REVOKED.value,
                certificates.c.not_after > now,
            )
            .order_by(revocations.c.revoked_at)
        )

    def audit_entries(self) -> Sequence[AuditEntry]:
        with self._read() as conn:
            return [
                AuditEntry(**row._mapping)
                for row in conn.execute(select(audit_log).order_by(audit_log.c.seq))
            ]


def _violates(orig: BaseException, pg_constraint: str, sqlite_column: str) -> bool:
    """Which unique key a driver's duplicate error hit: PostgreSQL names the constraint,
    SQLite the column."""
    diag = getattr(orig, "diag", None)
    if diag is not None and getattr(diag, "constraint_name", None):
        return diag.constraint_name == pg_constraint
    return sqlite_column in str(orig)


def _private_sqlite_files(path: Path, *, create: bool) -> None:
    """The database (and its WAL and shared-memory files, which SQLite creates with the
    database's mode) is 0600 whatever the umask: it holds every record and token hash.
    A new one is created so; an existing one readable by others is narrowed, if ours."""
    if create:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        os.chmod(path, 0o600)
        return
    for name in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with suppress(OSError):  # not there, or not ours: the store still opens
            if name.stat().st_mode & 0o077:
                os.chmod(name, 0o600)


def _sqlite_pragmas(engine: Engine, synchronous: Synchronous) -> None:
    """WAL, the chosen fsync level, a busy timeout, and BEGIN IMMEDIATE for writers."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        # Writers take the lock before reading the audit head; readers never block anyone.
        write = conn.get_execution_options().get("mtlskit_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
