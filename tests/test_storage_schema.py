"""The migrations build exactly the schema in bot/storage/schema.py, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import insert, select
from sqlalchemy.exc import StatementError

from bot.storage.db import DatabaseUrlError, normalise_url, open_database
from bot.storage.schema import feeds, metadata


def test_migrated_database_matches_schema(database_url: str) -> None:
    engine = open_database(database_url)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        differences = compare_metadata(context, metadata)
    assert differences == []


def test_migrate_twice_is_harmless(database_url: str) -> None:
    open_database(database_url).dispose()
    engine = open_database(database_url)
    with engine.connect() as conn:
        assert conn.execute(select(feeds.c.id)).all() == []


def test_datetimes_come_back_aware_utc(database_url: str) -> None:
    engine = open_database(database_url)
    kyiv_noon = datetime(2026, 3, 6, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    with engine.begin() as conn:
        conn.execute(insert(feeds).values(url="https://example.org/feed", created_at=kyiv_noon))
        stored = conn.execute(select(feeds.c.created_at)).scalar_one()
    assert stored == kyiv_noon
    assert stored.utcoffset() == timedelta(0)
    assert stored.hour == 10


def test_naive_datetimes_are_refused(database_url: str) -> None:
    engine = open_database(database_url)
    with pytest.raises(StatementError, match="naive datetime"), engine.begin() as conn:
        conn.execute(
            insert(feeds).values(url="https://example.org/feed", created_at=datetime(2026, 3, 6))
        )


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgresql://u@h/db", "postgresql+psycopg://u@h/db"),
        ("sqlite:///data/x.db", "sqlite:///data/x.db"),
    ],
)
def test_database_urls_are_normalised(given: str, expected: str) -> None:
    assert normalise_url(given) == expected


@pytest.mark.parametrize("bad", ["not a url", "mysql://u@h/db"])
def test_unusable_database_urls_are_refused(bad: str) -> None:
    with pytest.raises(DatabaseUrlError):
        normalise_url(bad)


def test_sqlite_parent_folder_is_created(tmp_path) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'nested' / 'deeper' / 'bot.db'}"
    engine = open_database(url)
    with engine.begin() as conn:
        conn.execute(insert(feeds).values(url="https://e.org/f", created_at=datetime.now(UTC)))
    assert (tmp_path / "nested" / "deeper" / "bot.db").exists()
