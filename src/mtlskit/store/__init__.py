"""``store``: the CA's records (certificates, revocations, CRL number, hash-chained audit log).

IO. SQLite in WAL mode inside the CA directory by default; a ``postgresql://`` URL
(psycopg 3) shares one CA among several ``ca serve`` nodes. The schema is an Alembic
revision chain shared by both (``migrate``, ``mtlskit ca migrate DIR``).
"""

from mtlskit.store._migrate import script_head
from mtlskit.store._sql import SqlStore, Synchronous, database_url, display_url, migrate

__all__ = ["SqlStore", "Synchronous", "database_url", "display_url", "migrate", "script_head"]
