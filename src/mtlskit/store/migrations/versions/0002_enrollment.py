"""Schema version 2: enrollment tokens (hash only), requests and their approvals.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tokens",
        sa.Column("hash", sa.String(64), primary_key=True),
        sa.Column("identity", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("used_at", sa.DateTime(), nullable=True),
    )
    op.create_table(
        "enrollment_requests",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("identity", sa.Text(), nullable=False),
        sa.Column("csr", sa.LargeBinary(), nullable=False),
        sa.Column("csr_sha256", sa.String(64), nullable=False),
        sa.Column("required", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("serial", sa.String(40), nullable=True),
        sa.Column("client", sa.Text(), nullable=False),
    )
    op.create_index("ix_enrollment_requests_status", "enrollment_requests", ["status"])
    op.create_table(
        "approvals",
        sa.Column(
            "request_id",
            sa.String(32),
            sa.ForeignKey("enrollment_requests.id"),
            primary_key=True,
        ),
        sa.Column("approver", sa.Text(), primary_key=True),
        sa.Column("csr_sha256", sa.String(64), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
    )
    op.execute("UPDATE counters SET value = 2 WHERE name = 'schema_version'")


def downgrade() -> None:
    for table in ("approvals", "enrollment_requests", "tokens"):
        op.drop_table(table)
    op.execute("UPDATE counters SET value = 1 WHERE name = 'schema_version'")
