"""``store``: the CA's records (certificates, revocations, CRL number, hash-chained audit log).

IO. SQLite in WAL mode inside the CA directory by default; the schema uses only types
PostgreSQL also has, so a ``postgresql+psycopg://`` URL is the way to share one CA
among several nodes once its driver is installed.
"""

from mtlskit.store._sql import SqlStore, Synchronous, database_url

__all__ = ["SqlStore", "Synchronous", "database_url"]
