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
    Approval,
    AuditEntry,
    CertificateRecord,
    CertificateStatus,
    EnrollmentRefused,
    EnrollmentRequest,
    RequestStatus,
    SerialTaken,
    TokenRecord,
    UnknownCertificate,
    approvals_counted,
    unredeemable,
)
from mtlskit.store._schema import (
    SCHEMA_VERSION,
    approvals,
    audit_log,
    certificates,
    counters,
    enrollment_requests,
    metadata,
    revocations,
    tokens,
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
            Approval(approver=item.approver, csr_sha256=item.csr_sha256, at=item.at)
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
        if version == 1:  # version 2 only added the enrollment tables
            with self._write() as conn:
                metadata.create_all(conn, tables=[tokens, enrollment_requests, approvals])
                conn.execute(
                    update(counters)
                    .where(counters.c.name == "schema_version")
                    .values(value=SCHEMA_VERSION)
                )
            version = SCHEMA_VERSION
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
        with self._engine.connect() as conn:
            row = conn.execute(select(tokens).where(tokens.c.hash == hash)).first()
        return _token(row) if row is not None else None

    def redeem_token(self, hash: str, *, at: dt.datetime, detail: Mapping[str, Any]) -> TokenRecord:
        refusal: EnrollmentRefused | None = None
        with self._write() as conn:
            # The whole race is this one statement: only an unused, unexpired row matches.
            done = conn.execute(
                update(tokens)
                .where(tokens.c.hash == hash, tokens.c.used_at.is_(None), tokens.c.expires_at > at)
                .values(used_at=at)
            )
            row = conn.execute(select(tokens).where(tokens.c.hash == hash)).first()
            if done.rowcount == 1 and row is not None:
                self._append_audit(conn, "redeem", {"token_sha256": hash, **detail}, at)
            else:
                refusal = unredeemable(_token(row) if row is not None else None, at)
                if row is not None:
                    self._append_audit(
                        conn,
                        "redeem_refused",
                        {"token_sha256": hash, "code": refusal.code, **detail},
                        at,
                    )
        if refusal is not None or row is None:
            raise refusal or unredeemable(None, at)
        return _token(row)

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
        with self._engine.connect() as conn:
            return self._request(conn, request_id)

    def requests(self, *, status: RequestStatus | None = None) -> Sequence[EnrollmentRequest]:
        query = select(enrollment_requests.c.id).order_by(enrollment_requests.c.created_at)
        if status is not None:
            query = query.where(enrollment_requests.c.status == status.value)
        with self._engine.connect() as conn:
            ids = list(conn.scalars(query))
            return [found for key in ids if (found := self._request(conn, key)) is not None]

    def _pending(self, conn: Connection, request_id: str) -> EnrollmentRequest:
        request = self._request(conn, request_id)
        if request is None:
            raise InputError(f"no enrollment request {request_id!r}", source="ID")
        if request.status not in {RequestStatus.PENDING, RequestStatus.APPROVED}:
            raise InputError(
                f"request {request_id} is {request.status.value}, no longer open", source="ID"
            )
        return request

    def approve_request(
        self, request_id: str, *, approver: str, csr_sha256: str, at: dt.datetime
    ) -> tuple[EnrollmentRequest, bool]:
        with self._write() as conn:
            request = self._pending(conn, request_id)
            if csr_sha256 != request.csr_sha256:
                raise InputError(
                    f"request {request_id} is for CSR sha256 {request.csr_sha256}, "
                    f"not {csr_sha256}: approve what you reviewed",
                    source="--csr-sha256",
                )
            added = approver not in {a.approver for a in request.approvals}
            if added:
                conn.execute(
                    insert(approvals).values(
                        request_id=request_id, approver=approver, csr_sha256=csr_sha256, at=at
                    )
                )
            counted = approvals_counted(
                (*request.approvals, Approval(approver=approver, csr_sha256=csr_sha256, at=at)),
                request.csr_sha256,
            )
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
