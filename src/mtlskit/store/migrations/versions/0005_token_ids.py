"""Schema version 5: the ``jti`` of every workload-identity token the CA accepted.

One row per (issuer, jti), its primary key: two CA nodes on one PostgreSQL that receive
the same token at once insert the same key, and only one insert counts. Rows are kept
until the token expires (``expires_at``, clock skew included); then replaying it is
refused by its ``exp`` anyway, and the row is deleted.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "token_ids",
        sa.Column("issuer", sa.Text(), primary_key=True),
        sa.Column("jti", sa.Text(), primary_key=True),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("used_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_token_ids_expires_at", "token_ids", ["expires_at"])
    op.execute("UPDATE counters SET value = 5 WHERE name = 'schema_version'")


def downgrade() -> None:
    op.drop_index("ix_token_ids_expires_at", table_name="token_ids")
    op.drop_table("token_ids")
    op.execute("UPDATE counters SET value = 4 WHERE name = 'schema_version'")
