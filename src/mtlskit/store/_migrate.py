"""Schema migrations: Alembic's one revision chain, run on mtlskit's connection and lock.

A store made before Alembic has no ``alembic_version`` table, only
``counters.schema_version`` (1 or 2): it is stamped with the matching revision first,
then upgraded like any other. The whole upgrade is one transaction, under the same
write lock the CA takes (``BEGIN IMMEDIATE`` on SQLite; on PostgreSQL an advisory lock,
so two nodes started at once cannot migrate the same database twice).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Final

from sqlalchemy import Connection, inspect, text

from mtlskit.errors import InputError
from mtlskit.store._schema import LEGACY_REVISIONS

__all__ = ["MIGRATION_LOCK", "is_known", "script_head", "stored_revision", "upgrade"]

MIGRATION_LOCK: Final = 0x6D746C73_0002  # pg_advisory_xact_lock key of `ca migrate`
_VERSIONS: Final = Path(__file__).resolve().parent / "migrations"


def _config(connection: Connection | None = None) -> object:
    from alembic.config import Config  # only migrations pay for importing Alembic

    config = Config()
    config.set_main_option("script_location", str(_VERSIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@cache
def script_head() -> str:
    """The newest revision this mtlskit knows (``SCHEMA_REVISION`` says the same)."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_config()).get_current_head()  # type: ignore[arg-type]
    assert head is not None
    return head


@cache
def _known() -> frozenset[str]:
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(_config())  # type: ignore[arg-type]
    return frozenset(script.revision for script in scripts.walk_revisions())


def stored_revision(conn: Connection, *, source: str) -> tuple[str | None, bool]:
    """(revision of the store, whether it predates Alembic); (None, False) for no store."""
    names = set(inspect(conn).get_table_names())
    if "alembic_version" in names:
        return conn.scalar(text("SELECT version_num FROM alembic_version")), False
    if "counters" not in names:
        return None, False
    version = conn.scalar(text("SELECT value FROM counters WHERE name = 'schema_version'"))
    if version not in LEGACY_REVISIONS:
        raise InputError(f"CA store schema version {version} is unknown here", source=source)
    return LEGACY_REVISIONS[version], True


def is_known(revision: str) -> bool:
    """Whether this mtlskit has the revision (a store ahead of it was made by a newer one)."""
    return revision in _known()


def upgrade(conn: Connection, *, source: str, target: str = "head") -> tuple[str | None, str]:
    """Bring the store on ``conn`` (in a write transaction) to ``target``: (before, after).

    An empty database becomes a new, empty store: creation and upgrade are one path."""
    from alembic import command

    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
    before, legacy = stored_revision(conn, source=source)
    if before is not None and not is_known(before):
        raise InputError(
            f"the store is at schema revision {before}, newer than this mtlskit knows "
            f"(head {script_head()}): upgrade mtlskit",
            source=source,
        )
    config = _config(conn)
    if legacy:
        command.stamp(config, before)  # type: ignore[arg-type]
    command.upgrade(config, target)  # type: ignore[arg-type]
    after, _ = stored_revision(conn, source=source)
    assert after is not None
    return before, after
