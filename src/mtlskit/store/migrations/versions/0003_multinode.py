"""Schema version 3: several CA nodes on one database.

A serial answers at most one enrollment request (a unique index: two nodes finishing
the same request cannot both record a certificate for it), and ``schema_version``
moves to 3 so that an mtlskit from before Alembic refuses this store instead of
writing to it.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_enrollment_requests_serial", "enrollment_requests", ["serial"], unique=True)
    op.execute("UPDATE counters SET value = 3 WHERE name = 'schema_version'")


def downgrade() -> None:
    op.drop_index("ix_enrollment_requests_serial", "enrollment_requests")
    op.execute("UPDATE counters SET value = 2 WHERE name = 'schema_version'")
