"""Helpers that put hand-made feeds, entries and matches into a test database."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, insert

from bot.storage.schema import entries, feeds, matches


def add_feed(engine: Engine, *, name: str, now: datetime) -> int:
    with engine.begin() as conn:
        result = conn.execute(
            insert(feeds)
            .values(url=f"http://127.0.0.1:9/{name}.xml", name=name, created_at=now)
            .returning(feeds.c.id)
        )
        return int(result.scalar_one())


def add_entry(
    engine: Engine,
    *,
    feed_id: int,
    key: str,
    now: datetime,
    story_key: str | None = None,
    announce: bool = True,
    title: str | None = None,
) -> int:
    with engine.begin() as conn:
        result = conn.execute(
            insert(entries)
            .values(
                feed_id=feed_id,
                entry_key=key,
                link=f"https://example.org/{key}",
                title=title or f"Invented headline {key}",
                summary="Invented summary.",
                published_at=now,
                content_hash=key,
                story_key=story_key or key,
                announce=announce,
                first_seen_at=now,
                updated_at=now,
                matched_at=now,
            )
            .returning(entries.c.id)
        )
        return int(result.scalar_one())


def add_match(
    engine: Engine,
    *,
    entry_id: int,
    ref_id: str,
    now: datetime,
    kind: str = "theme",
    score: float = 0.8,
) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(matches).values(
                entry_id=entry_id,
                kind=kind,
                ref_id=ref_id,
                score=score,
                excerpt="An invented excerpt.",
                created_at=now,
            )
        )
