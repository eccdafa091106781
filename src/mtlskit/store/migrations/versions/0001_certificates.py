"""Schema version 1: certificates, revocations, counters, the hash-chained audit log.

Revision ID: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "certificates",
        sa.Column("serial", sa.String(40), primary_key=True),
        sa.Column("identity", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.String(71), nullable=False, unique=True),
        sa.Column("not_before", sa.DateTime(), nullable=False),
        sa.Column("not_after", sa.DateTime(), nullable=False),
        sa.Column("profile", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("issued_at", sa.DateTime(), nullable=False),
        sa.Column("pem", sa.LargeBinary(), nullable=False),
    )
    op.create_index("ix_certificates_identity", "certificates", ["identity"])
    op.create_index("ix_certificates_not_after", "certificates", ["not_after"])
    op.create_index("ix_certificates_status", "certificates", ["status"])
    op.create_table(
        "revocations",
        sa.Column("serial", sa.String(40), sa.ForeignKey("certificates.serial"), primary_key=True),
        sa.Column("revoked_at", sa.DateTime(), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
    )
    counters = op.create_table(
        "counters",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("value", sa.Integer(), nullable=False),
    )
    op.create_table(
        "audit_log",
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("at", sa.String(40), nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.bulk_insert(
        counters,
        [{"name": "schema_version", "value": 1}, {"name": "crl_number", "value": 0}],
    )


def downgrade() -> None:
    for table in ("audit_log", "counters", "revocations", "certificates"):
        op.drop_table(table)
