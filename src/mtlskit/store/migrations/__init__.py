"""Alembic migrations of the CA store, one chain for SQLite and PostgreSQL.

Run by ``mtlskit.store.migrate`` (``mtlskit ca migrate DIR``), never by the ``alembic``
command: the connection comes from mtlskit, with its locks, in one transaction.
"""
