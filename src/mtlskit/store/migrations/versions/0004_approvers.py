"""Schema version 4: registered approvers, and approvals signed by their keys.

``approvers`` holds each approver's certificate and the CA's signature binding its key
to its identity; ``approvals`` gains the approver's key fingerprint and signature.
Approvals recorded before have neither: they stay readable and count for nothing.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "approvers",
        sa.Column("fingerprint", sa.String(71), primary_key=True),
        sa.Column("identity", sa.Text(), nullable=False),
        sa.Column("cert", sa.LargeBinary(), nullable=False),
        sa.Column("signature", sa.LargeBinary(), nullable=False),
        sa.Column("added_at", sa.DateTime(), nullable=False),
    )
    op.add_column("approvals", sa.Column("fingerprint", sa.String(71), nullable=True))
    op.add_column("approvals", sa.Column("signature", sa.LargeBinary(), nullable=True))
    op.execute("UPDATE counters SET value = 4 WHERE name = 'schema_version'")


def downgrade() -> None:
    with op.batch_alter_table("approvals") as batch:
        batch.drop_column("signature")
        batch.drop_column("fingerprint")
    op.drop_table("approvers")
    op.execute("UPDATE counters SET value = 3 WHERE name = 'schema_version'")
