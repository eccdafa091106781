"""``SqlStore``: the CA's records in SQLite (default, WAL) or any SQLAlchemy database.

Every write runs in one transaction that also appends its audit entry, and returns
only after COMMIT. On SQLite, writes take the database lock up front (``BEGIN
IMMEDIATE``) so reading the audit head and appending after it cannot interleave with
another process; ``synchronous=FULL`` (the default here) makes each COMMIT durable
against power loss, ``NORMAL`` only against a crash of the process (WAL mode).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from sqlalchemy import Connection, Engine, create_engine, event, insert, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError

from mtlskit.errors import InputError
from mtlskit.issue import (
    AuditEntry,
    CertificateRecord,
    CertificateStatus,
    SerialTaken,
    UnknownCertificate,
)
from mtlskit.store._schema import (
    SCHEMA_VERSION,
    audit_log,
    certificates,
    counters,
    metadata,
    revocations,
)

__all__ = ["SqlStore", "Synchronous", "database_url"]

Synchronous = Literal["FULL", "NORMAL"]

# Built once: issuing is the hot path, and statement construction costs as much as the insert.
_AUDIT_HEAD = select(audit_log.c.seq, audit_log.c.hash).order_by(audit_log.c.seq.desc()).limit(1)
_INSERT_AUDIT = insert(audit_log)
_INSERT_CERTIFICATE = insert(certificates)


def database_url(directory: str | os.PathLike[str], database: str) -> str:
    """``ca.toml``'s ``database``: a SQLAlchemy URL, or a SQLite file relative to the CA dir."""
    if "://" in database:
        return database
    return f"sqlite:///{Path(directory, database).resolve()}"


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


class SqlStore:
    """The ``mtlskit.issue.Store`` protocol over SQLAlchemy Core."""

    def __init__(self, engine: Engine, *, source: str) -> None:
        self._engine = engine
        self._source = source
        self._writer: Connection | None = None

    @classmethod
    def open(cls, url: str, *, create: bool = False, synchronous: Synchronous = "FULL") -> SqlStore:
        """Open an existing store (``create``: make a new, empty one; it must not exist)."""
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise InputError(f"not a database URL: {url!r}", source="database") from None
        source = parsed.database or url if parsed.get_backend_name() == "sqlite" else url
        if parsed.get_backend_name() == "sqlite" and parsed.database:
            exists = Path(parsed.database).exists()
            if create and exists:
                raise InputError("a CA store already exists here", source=parsed.database)
            if not create and not exists:
                raise InputError(
                    "no CA store (run `mtlskit ca init` first)", source=parsed.database
                )
        engine = create_engine(url)
        if parsed.get_backend_name() == "sqlite":
            _sqlite_pragmas(engine, synchronous)
        store = cls(engine, source=source)
        try:
            if create:
                with engine.begin() as conn:
                    metadata.create_all(conn)
                    conn.execute(
                        insert(counters),
                        [
                            {"name": "schema_version", "value": SCHEMA_VERSION},
                            {"name": "crl_number", "value": 0},
                        ],
                    )
            else:
                store._check_schema()
        except OperationalError as exc:
            raise InputError(f"cannot use the CA store: {exc.orig}", source=source) from None
        return store

    def _check_schema(self) -> None:
        with self._engine.connect() as conn:
            version = conn.scalar(
                select(counters.c.value).where(counters.c.name == "schema_version")
            )
        if version != SCHEMA_VERSION:
            raise InputError(
                f"CA store schema version {version}, this mtlskit reads {SCHEMA_VERSION}",
                source=self._source,
            )

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._engine.dispose()

    # --- writes: one transaction each, audit entry included -------------------------

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """One transaction on the store's own writer connection (kept open: a pool checkout
        per certificate costs a third of an insert). Not thread-safe: one store per thread."""
        if self._writer is None:
            self._writer = self._engine.connect().execution_options(mtlskit_write=True)
        with self._writer.begin():
            yield self._writer

    def _append_audit(
        self, conn: Connection, event_name: str, detail: Mapping[str, Any], at: dt.datetime
    ) -> None:
        head = conn.execute(_AUDIT_HEAD).first()
        entry = AuditEntry.after(
            (head.seq, head.hash) if head else None, at=at, event=event_name, detail=detail
        )
        conn.execute(
            _INSERT_AUDIT,
            {
                "seq": entry.seq,
                "at": entry.at,
                "event": entry.event,
                "detail": entry.detail,
                "prev_hash": entry.prev_hash,
                "hash": entry.hash,
            },
        )

    def add_certificate(self, record: CertificateRecord) -> None:
        try:
            with self._write() as conn:
                conn.execute(
                    _INSERT_CERTIFICATE,
                    {
                        "serial": f"{record.serial:x}",
                        "identity": record.identity,
                        "fingerprint": record.fingerprint,
                        "not_before": record.not_before,
                        "not_after": record.not_after,
                        "profile": record.profile,
                        "status": CertificateStatus.VALID.value,
                        "issued_at": record.issued_at,
                        "pem": record.pem,
                    },
                )
                self._append_audit(
                    conn,
                    "issue",
                    {
                        "serial": f"{record.serial:x}",
                        "identity": record.identity,
                        "fingerprint": record.fingerprint,
                        "not_after": record.not_after.isoformat(),
                        "profile": record.profile,
                    },
                    record.issued_at,
                )
        except IntegrityError as exc:
            if "serial" in str(exc.orig) or "certificates.serial" in str(exc.orig):
                raise SerialTaken(f"serial {record.serial:x} exists") from None
            raise

    def revoke(
        self, serial: int, *, reason: x509.ReasonFlags, at: dt.datetime
    ) -> CertificateRecord:
        key = f"{serial:x}"
        with self._write() as conn:
            row = conn.execute(select(certificates).where(certificates.c.serial == key)).first()
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

    # --- reads ----------------------------------------------------------------------

    def _select(self) -> Any:
        return select(certificates, revocations.c.revoked_at, revocations.c.reason).outerjoin(
            revocations, revocations.c.serial == certificates.c.serial
        )

    def _rows(self, query: Any) -> list[CertificateRecord]:
        with self._engine.connect() as conn:
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
        if status is CertificateStatus.REVOKED:
            query = query.where(certificates.c.status == CertificateStatus.REVOKED.value)
        elif status is CertificateStatus.VALID:
            query = query.where(
                certificates.c.status == CertificateStatus.VALID.value,
                certificates.c.not_after > now,
            )
        elif status is CertificateStatus.EXPIRED:
            query = query.where(
                certificates.c.status == CertificateStatus.VALID.value,
                certificates.c.not_after <= now,
            )
        return self._rows(query)

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
        with self._engine.connect() as conn:
            return [
                AuditEntry(**row._mapping)
                for row in conn.execute(select(audit_log).order_by(audit_log.c.seq))
            ]


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
