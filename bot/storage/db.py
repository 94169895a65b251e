"""Opening the database and bringing its schema up to date.

SQLite (a file under ``./data/`` by default) is the embedded default; PostgreSQL is reached by
URL (``postgresql+psycopg://user@host/db``; a bare ``postgresql://`` URL is taken to mean
psycopg 3). Every connection to SQLite gets WAL mode, a busy timeout and foreign keys on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from bot.ops.leader import exclusive_section

MIGRATIONS = "bot.storage:migrations"


class DatabaseUrlError(ValueError):
    """The database URL cannot be used."""


def normalise_url(url: str) -> str:
    """Map ``postgres://`` and ``postgresql://`` to the psycopg 3 driver; validate the URL."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseUrlError(f"{url!r} is not a database URL") from None
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise DatabaseUrlError(
            f"unsupported database {parsed.get_backend_name()!r}: use sqlite:///PATH or postgresql://..."
        )
    return parsed.render_as_string(hide_password=False)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def make_engine(url: str) -> Engine:
    """Create an engine; for SQLite files, create the parent folder first."""
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    config.attributes["engine"] = engine
    return config


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision``; safe to call on every start-up."""
    with engine.begin() as connection:
        # Replicas starting together: one migrates, the others wait and then find it done.
        exclusive_section(connection, "migrate")
        config = alembic_config(engine)
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def is_migrated(engine: Engine) -> bool:
    """True when the database has the alembic version table (i.e. was migrated at least once)."""
    return inspect(engine).has_table("alembic_version")


def open_database(url: str, *, run_migrations: bool = True) -> Engine:
    """Engine for ``url``, migrated to the newest schema unless told not to."""
    engine = make_engine(url)
    if run_migrations:
        migrate(engine)
    return engine
