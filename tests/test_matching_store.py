"""match_pending on a real database (SQLite by default, PostgreSQL with COUNTERPARTY_TEST_DB)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, insert, select, update

from bot.matching.catalog import load_catalog
from bot.matching.matcher import Matcher
from bot.matching.store import match_pending
from bot.ops import metrics
from bot.storage.schema import entries, feeds, matches

T0 = datetime(2026, 3, 6, 12, 0, tzinfo=UTC)
MATCHER = Matcher(load_catalog())


def add_entry(engine: Engine, feed_id: int, key: str, title: str, summary: str = "") -> int:
    with engine.begin() as conn:
        result = conn.execute(
            insert(entries).values(
                feed_id=feed_id,
                entry_key=key,
                title=title,
                summary=summary,
                content_hash=key.ljust(64, "0"),
                story_key=key,
                first_seen_at=T0,
                updated_at=T0,
            )
        )
        return int(result.inserted_primary_key[0])


def add_feed(engine: Engine) -> int:
    with engine.begin() as conn:
        result = conn.execute(insert(feeds).values(url="http://127.0.0.1/feed.xml", created_at=T0))
        return int(result.inserted_primary_key[0])


def rows_for(engine: Engine, entry_id: int) -> list[tuple[str, str, float, str | None]]:
    with engine.connect() as conn:
        return [
            (r.kind, r.ref_id, r.score, r.excerpt)
            for r in conn.execute(
                select(matches).where(matches.c.entry_id == entry_id).order_by(matches.c.id)
            )
        ]


def test_match_pending_writes_theme_and_claim_rows_and_stamps_entries(engine: Engine) -> None:
    feed = add_feed(engine)
    talks = add_entry(
        engine, feed, "a", "Putin says Russia is ready for talks to end the war in Ukraine"
    )
    other = add_entry(engine, feed, "b", "Local bakery wins national bread prize")

    assert match_pending(engine, MATCHER, now=T0) == 2

    rows = rows_for(engine, talks)
    assert ("theme", "putin-deal") in [(k, r) for k, r, _, _ in rows]
    assert ("claim", "putin-ready-to-deal") in [(k, r) for k, r, _, _ in rows]
    theme_row = next(r for r in rows if r[0] == "theme")
    assert 0.5 <= theme_row[2] <= 1.0
    assert theme_row[3]
    assert rows_for(engine, other) == []
    with engine.connect() as conn:
        stamps = conn.execute(select(entries.c.matched_at)).scalars().all()
        evidence = conn.execute(
            select(matches.c.evidence).where(matches.c.kind == "theme")
        ).scalar_one()
    assert stamps == [T0, T0]
    assert isinstance(evidence, list)
    assert evidence


def test_match_pending_is_idempotent_and_replaces_rows_when_content_changes(
    engine: Engine,
) -> None:
    feed = add_feed(engine)
    entry = add_entry(engine, feed, "a", "US warplanes strike nuclear sites in Iran")
    assert match_pending(engine, MATCHER, now=T0) == 1
    first = rows_for(engine, entry)
    assert [r[1] for r in first if r[0] == "theme"] == ["iran-war-diplomacy"]

    assert match_pending(engine, MATCHER, now=T0 + timedelta(minutes=1)) == 0
    assert rows_for(engine, entry) == first

    # The poller stores new content and clears matched_at: the old rows are replaced.
    with engine.begin() as conn:
        conn.execute(
            update(entries)
            .where(entries.c.id == entry)
            .values(
                title="Kremlin rejects the US ceasefire plan for Ukraine",
                matched_at=None,
                updated_at=T0 + timedelta(minutes=2),
            )
        )
    assert match_pending(engine, MATCHER, now=T0 + timedelta(minutes=3)) == 1
    assert [r[1] for r in rows_for(engine, entry) if r[0] == "theme"] == ["putin-deal"]


def _matched_ids(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(entries.c.id).where(entries.c.matched_at.is_not(None)).order_by(entries.c.id)
            )
            .scalars()
            .all()
        )


def test_match_pending_respects_the_limit_and_takes_announced_newest_first(
    engine: Engine,
) -> None:
    feed = add_feed(engine)
    # A backlog of baseline entries (never announced), stored first...
    baseline = [add_entry(engine, feed, f"b{n}", f"Old item {n}") for n in range(4)]
    with engine.begin() as conn:
        conn.execute(update(entries).where(entries.c.id.in_(baseline)).values(announce=False))
    # ...then three announced ones: published an hour ago, just now, and without a date
    # (first seen at T0 + 30 min).
    older = add_entry(engine, feed, "n-old", "New item, older")
    newest = add_entry(engine, feed, "n-new", "New item, newest")
    undated = add_entry(engine, feed, "n-undated", "New item, undated")
    with engine.begin() as conn:
        for entry_id, published in ((older, T0 - timedelta(hours=1)), (newest, T0)):
            conn.execute(
                update(entries).where(entries.c.id == entry_id).values(published_at=published)
            )
        conn.execute(
            update(entries)
            .where(entries.c.id == undated)
            .values(first_seen_at=T0 - timedelta(minutes=30))
        )

    assert match_pending(engine, MATCHER, now=T0, limit=1) == 1
    assert _matched_ids(engine) == [newest]
    assert match_pending(engine, MATCHER, now=T0, limit=1) == 1
    assert _matched_ids(engine) == sorted([newest, undated])
    assert match_pending(engine, MATCHER, now=T0, limit=2) == 2
    assert _matched_ids(engine) == sorted([newest, undated, older, baseline[-1]])
    assert match_pending(engine, MATCHER, now=T0, limit=10) == 3
    assert match_pending(engine, MATCHER, now=T0) == 0


def _matched_count(theme: str) -> float:
    value = metrics.REGISTRY.get_sample_value("counterparty_items_matched_total", {"theme": theme})
    return value or 0.0


def test_match_pending_counts_matches_per_theme_in_the_metrics(engine: Engine) -> None:
    feed = add_feed(engine)
    title = "Putin says Russia is ready for talks to end the war in Ukraine"
    add_entry(engine, feed, "m1", title)
    add_entry(engine, feed, "m2", title + " again")
    add_entry(engine, feed, "m3", "Local bakery wins national bread prize")
    before = _matched_count("putin-deal")
    assert match_pending(engine, MATCHER, now=T0) == 3
    assert _matched_count("putin-deal") == before + 2
    # A second run matches nothing and counts nothing.
    assert match_pending(engine, MATCHER, now=T0) == 0
    assert _matched_count("putin-deal") == before + 2


def test_match_pending_refuses_a_naive_now(engine: Engine) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        match_pending(engine, MATCHER, now=datetime(2026, 3, 6))
