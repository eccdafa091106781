"""Alembic's entry point: migrate the connection mtlskit hands over, inside its transaction.

``mtlskit.store.migrate`` opens the connection, takes the write lock (``BEGIN
IMMEDIATE`` on SQLite, an advisory lock on PostgreSQL) and passes it in
``config.attributes["connection"]``; the whole upgrade commits or rolls back at once.
"""

from __future__ import annotations

from alembic import context

from mtlskit.store._schema import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters by copying tables
    transactional_ddl=True,
)
with context.begin_transaction():
    context.run_migrations()
