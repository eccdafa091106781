"""The CA's tables, in SQLAlchemy Core types that SQLite and PostgreSQL both have.

Serials are 159-bit integers, wider than any SQL integer, so they are stored as
lower-case hex text; times are naive UTC ``DateTime`` (aware values in Python),
except the audit log's, which is the exact ISO text that was hashed.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import (
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)
from sqlalchemy.engine import Dialect

if TYPE_CHECKING:
    from mtlskit.issue import AuditEntry

__all__ = [
    "LEGACY_REVISIONS",
    "SCHEMA_REVISION",
    "SCHEMA_VERSION",
    "approvals",
    "approvers",
    "audit_log",
    "audit_row",
    "certificates",
    "counters",
    "enrollment_requests",
    "metadata",
    "revocations",
    "token_ids",
    "tokens",
]

# The schema is Alembic's revision chain in ``migrations/versions``; this module is its
# head, written out (``test_store_migrate`` proves the two agree on SQLite and PostgreSQL).
# 1: certificates, revocations, counters, audit log. 2: enrollment tokens, requests and
# approvals. 3: one enrollment request per serial, for several CA nodes on one database.
# 4: registered approvers, and approvals signed by their keys. 5: used ``jti`` of
# workload-identity tokens, one row per (issuer, jti), shared by every node.
# ``counters.schema_version`` follows it, so an mtlskit from before Alembic refuses a
# newer store instead of writing to it.
SCHEMA_VERSION: Final = 5
SCHEMA_REVISION: Final = "0005"
# Stores made before Alembic carry only ``counters.schema_version``: its revision.
LEGACY_REVISIONS: Final = {1: "0001", 2: "0002"}


class UtcDateTime(TypeDecorator[dt.datetime]):
    """Aware UTC in Python, naive UTC in the database (SQLite has no time zones)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        return value.astimezone(dt.UTC).replace(tzinfo=None)

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        return None if value is None else value.replace(tzinfo=dt.UTC)


metadata = MetaData()

certificates = Table(
    "certificates",
    metadata,
    Column("serial", String(40), primary_key=True),  # uniqueness of serials, enforced here
    Column("identity", Text, nullable=False, index=True),
    Column("fingerprint", String(71), nullable=False, unique=True),
    Column("not_before", UtcDateTime, nullable=False),
    Column("not_after", UtcDateTime, nullable=False, index=True),
    Column("profile", String(32), nullable=False),
    Column("status", String(16), nullable=False, index=True),  # valid | revoked
    Column("issued_at", UtcDateTime, nullable=False),
    Column("pem", LargeBinary, nullable=False),
)

revocations = Table(
    "revocations",
    metadata,
    Column("serial", String(40), ForeignKey("certificates.serial"), primary_key=True),
    Column("revoked_at", UtcDateTime, nullable=False),
    Column("reason", String(32), nullable=False),
)

counters = Table(
    "counters",
    metadata,
    Column("name", String(32), primary_key=True),  # crl_number, schema_version
    Column("value", Integer, nullable=False),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),  # gap-free, set by us
    Column("at", String(40), nullable=False),
    Column("event", String(32), nullable=False),
    Column("detail", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)

tokens = Table(
    "tokens",
    metadata,
    Column("hash", String(64), primary_key=True),  # SHA-256 of the token; the token is not kept
    Column("identity", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("used_at", UtcDateTime, nullable=True),  # set once, by one conditional UPDATE
)

enrollment_requests = Table(
    "enrollment_requests",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("identity", Text, nullable=False),
    Column("csr", LargeBinary, nullable=False),
    Column("csr_sha256", String(64), nullable=False),
    Column("required", Integer, nullable=False),
    Column("status", String(16), nullable=False),  # pending|approved|issuing|issued|denied
    Column("created_at", UtcDateTime, nullable=False),
    Column("serial", String(40), nullable=True),
    Column("client", Text, nullable=False),
    Index("ix_enrollment_requests_status", "status"),
    # A certificate answers at most one request, whichever node finished it.
    Index("ix_enrollment_requests_serial", "serial", unique=True),
)

approvals = Table(
    "approvals",
    metadata,
    Column("request_id", String(32), ForeignKey("enrollment_requests.id"), primary_key=True),
    # The unique key that makes approvals countable across nodes: one row per approver
    # and request (a request has one CSR hash), however many nodes record it at once.
    Column("approver", Text, primary_key=True),
    Column("csr_sha256", String(64), nullable=False),
    Column("at", UtcDateTime, nullable=False),
    # The approver's key and signature (schema 4); NULL in approvals from before, which
    # stay readable and count for nothing.
    Column("fingerprint", String(71), nullable=True),
    Column("signature", LargeBinary, nullable=True),
)

approvers = Table(
    "approvers",
    metadata,
    Column("fingerprint", String(71), primary_key=True),  # SHA-256 of the key's SPKI
    Column("identity", Text, nullable=False),  # verified, case-folded
    Column("cert", LargeBinary, nullable=False),
    Column("signature", LargeBinary, nullable=False),  # the CA's, over the three above
    Column("added_at", UtcDateTime, nullable=False),
)

token_ids = Table(
    "token_ids",
    metadata,
    # The key that makes a jti single-use across nodes: the second insert of it is a no-op.
    Column("issuer", Text, primary_key=True),
    Column("jti", Text, primary_key=True),
    Column("expires_at", UtcDateTime, nullable=False, index=True),  # then it can go
    Column("used_at", UtcDateTime, nullable=False),
)


def audit_row(entry: AuditEntry) -> dict[str, Any]:
    """An ``audit_log`` row: the entry's fields, exactly as they were hashed."""
    return {
        "seq": entry.seq,
        "at": entry.at,
        "event": entry.event,
        "detail": entry.detail,
        "prev_hash": entry.prev_hash,
        "hash": entry.hash,
    }
