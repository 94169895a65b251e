"""The Poller end to end: local HTTP server -> fetch -> parse (worker processes) -> database.

Every test asserts what ended up stored, on SQLite or PostgreSQL (``database_url`` fixture).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, update

from bot.feeds.pipeline import Poller, PollSummary
from bot.feeds.schedule import next_slot
from bot.settings import Environment, FileConfig, Settings
from bot.storage.schema import entries, feeds
from tests.conftest import shared_path
from tests.support.feedserver import (
    Behaviour,
    FeedServer,
    error,
    no_validators,
    rate_limited,
    redirect,
)

# Two corpus feeds repeat a <guid> within the same document (the publisher's CMS lists the same
# story several times). An entry is stored once per (feed, guid), so these feeds store fewer rows
# than the manifest's raw entry count. Counted by hand from the files (`grep -o '<guid...'`).
DUPLICATE_GUIDS = {
    "corpus/feeds/al-monitor-2026-02-17.xml": 9,
    "corpus/feeds/suspilne-ukrnet-uk-2023-12-22.xml": 1,
}


def make_settings(database_url: str, urls: list[str], **fetch: Any) -> Settings:
    config = FileConfig.model_validate(
        {"feeds": [{"url": u} for u in urls], "fetch": {"jitter": "1s", **fetch}}
    )
    return Settings(file=config, env=Environment(), config_path=None, database_url=database_url)


@pytest.fixture
def corpus_server() -> Iterator[FeedServer]:
    with FeedServer(shared_path("corpus")) as server:
        yield server


def manifest() -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(
        shared_path("corpus", "manifest.json").read_text(encoding="utf-8")
    )
    return items


def stored_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(feeds.c.config_url, func.count(entries.c.id))
            .select_from(feeds.outerjoin(entries))
            .group_by(feeds.c.config_url)
        ).all()
    return dict(rows)


def feed_row(engine: Engine, config_url: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(feeds).where(feeds.c.config_url == config_url)).one()


def entry_rows(engine: Engine, config_url: str) -> list[Any]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(entries)
                .join(feeds)
                .where(feeds.c.config_url == config_url)
                .order_by(entries.c.id)
            ).all()
        )


async def poll_once(settings: Settings, engine: Engine, now: datetime) -> PollSummary:
    async with Poller(settings, engine) as poller:
        await poller.sync_config(now)
        return await poller.poll_all(now)


# --- the real corpus ---------------------------------------------------------------------------


async def test_corpus_is_stored_once_then_304_then_restart_stores_nothing(
    corpus_server: FeedServer, engine: Engine, database_url: str
) -> None:
    items = manifest()
    urls = {item["file"]: corpus_server.url(item["file"].removeprefix("corpus/")) for item in items}
    settings = make_settings(database_url, list(urls.values()))
    now = datetime.now(UTC)
    expected_total = sum(item["entries"] for item in items) - sum(DUPLICATE_GUIDS.values())

    async with Poller(settings, engine) as poller:
        await poller.sync_config(now)
        first = await poller.poll_all(now)
        assert first.to_json() == {
            "feeds": 46,
            "fetched": 46,
            "not_modified": 0,
            "failed": 0,
            "new_entries": expected_total,
            "updated_entries": 0,
        }
        counts = stored_counts(engine)
        for item in items:
            wanted = item["entries"] - DUPLICATE_GUIDS.get(item["file"], 0)
            assert counts[urls[item["file"]]] == wanted, item["file"]
            assert feed_row(engine, urls[item["file"]]).entry_count == wanted

        second = await poller.poll_all(now + timedelta(minutes=20))
        assert second.to_json() == {
            "feeds": 46,
            "fetched": 0,
            "not_modified": 46,
            "failed": 0,
            "new_entries": 0,
            "updated_entries": 0,
        }
    second_round = corpus_server.requests[46:]
    assert len(second_round) == 46
    assert all(seen.headers.get("If-None-Match") for seen in second_round)
    assert {seen.status for seen in second_round} == {304}

    # A restart: a new Poller on the same database sends conditional requests and adds nothing.
    async with Poller(settings, engine) as poller:
        await poller.sync_config(now)
        third = await poller.poll_all(now + timedelta(hours=1))
    assert third.new_entries == 0
    assert third.not_modified == 46
    assert sum(stored_counts(engine).values()) == expected_total

    with engine.connect() as conn:
        matched = conn.execute(select(func.count()).where(entries.c.matched_at.is_not(None)))
        assert matched.scalar_one() == 0, "entries wait for the matcher with matched_at NULL"
        health = conn.execute(
            select(feeds.c.consecutive_failures, feeds.c.last_error_kind, feeds.c.baseline_done)
        ).all()
    assert all(row == (0, None, True) for row in health)


async def test_a_restart_after_the_first_poll_with_a_fresh_cache_stores_nothing_twice(
    corpus_server: FeedServer, engine: Engine, database_url: str
) -> None:
    # Without the validators (server forgot them), the body hash still prevents duplicates.
    files = [item["file"].removeprefix("corpus/") for item in manifest()[:5]]
    for name in files:
        corpus_server.behave(name, no_validators())
    settings = make_settings(database_url, [corpus_server.url(name) for name in files])
    now = datetime.now(UTC)
    first = await poll_once(settings, engine, now)
    again = await poll_once(settings, engine, now + timedelta(hours=1))
    assert first.new_entries == sum(stored_counts(engine).values()) > 0
    assert again.fetched == 5
    assert again.unchanged == 5, "an unchanged body is not parsed again"
    assert again.new_entries == 0


# --- behaviour on small feeds written for these tests --------------------------------------


def rss(*items: tuple[str, str, datetime | None]) -> bytes:
    parts = []
    for guid, title, published in items:
        date = f"<pubDate>{format_datetime(published, usegmt=True)}</pubDate>" if published else ""
        parts.append(
            f'<item><guid isPermaLink="false">{guid}</guid><title>{title}</title>{date}</item>'
        )
    return (
        '<?xml version="1.0"?><rss version="2.0"><channel><title>Desk</title>'
        + "".join(parts)
        + "</channel></rss>"
    ).encode()


@pytest.fixture
def server() -> Iterator[FeedServer]:
    with FeedServer() as running:
        yield running


async def test_first_poll_is_a_baseline(
    server: FeedServer, engine: Engine, database_url: str
) -> None:
    now = datetime(2026, 3, 6, 12, tzinfo=UTC)
    server.put(
        "desk.xml",
        rss(
            ("fresh", "Fresh", now - timedelta(hours=1)),
            ("old", "Old", now - timedelta(days=3)),
            ("undated", "Undated", None),
        ),
    )
    url = server.url("desk.xml")
    settings = make_settings(database_url, [url], baseline_window="24h")
    async with Poller(settings, engine) as poller:
        await poller.sync_config(now)
        await poller.poll_all(now)
        announce = {row.entry_key: row.announce for row in entry_rows(engine, url)}
        assert announce == {"fresh": True, "old": False, "undated": False}
        # After the baseline everything new is announced, whatever its date.
        server.put(
            "desk.xml",
            rss(
                ("fresh", "Fresh", now - timedelta(hours=1)),
                ("later-old", "Backdated", now - timedelta(days=9)),
                ("later-undated", "Undated later", None),
            ),
        )
        summary = await poller.poll_all(now + timedelta(hours=1))
    assert summary.new_entries == 2
    announce = {row.entry_key: row.announce for row in entry_rows(engine, url)}
    assert announce["later-old"] is True
    assert announce["later-undated"] is True
    # Entries gone from the document stay stored.
    assert set(announce) == {"fresh", "old", "undated", "later-old", "later-undated"}


async def test_changed_entry_is_updated_and_rematched_up_to_the_cap(
    server: FeedServer, engine: Engine, database_url: str
) -> None:
    now = datetime(2026, 3, 6, 12, tzinfo=UTC)
    server.put("desk.xml", rss(("a", "Version 0", now)))
    url = server.url("desk.xml")
    settings = make_settings(database_url, [url], max_updates_per_entry=2)
    async with Poller(settings, engine) as poller:
        await poller.sync_config(now)
        await poller.poll_all(now)
        with engine.begin() as conn:  # the matcher ran
            conn.execute(update(entries).values(matched_at=now))
        results = []
        for version in (1, 2, 3):
            server.put("desk.xml", rss(("a", f"Version {version}", now)))
            results.append(await poller.poll_all(now + timedelta(hours=version)))
    assert [r.updated_entries for r in results] == [1, 1, 0]  # the third change is past the cap
    (row,) = entry_rows(engine, url)
    assert row.title == "Version 2"
    assert row.update_count == 2
    assert row.matched_at is None, "a changed entry is matched again"
    assert row.first_seen_at == now


async def test_failures_back_off_are_recorded_and_recover(
    server: FeedServer, engine: Engine, database_url: str
) -> None:
    now = datetime(2026, 3, 6, 12, tzinfo=UTC)
    server.put("desk.xml", rss(("a", "A", now)))
    url = server.url("desk.xml")
    settings = make_settings(database_url, [url], default_interval="15m")
    server.behave("desk.xml", error(500))
    async with Poller(settings, engine) as poller:
        await poller.sync_config(now)
        first = await poller.poll_all(now)
        row = feed_row(engine, url)
        assert first.failed == 1
        assert (row.consecutive_failures, row.last_error_kind, row.last_status) == (
            1,
            "server",
            500,
        )
        assert (
            now + timedelta(minutes=15)
            <= row.next_poll_at
            <= now + timedelta(minutes=15, seconds=1)
        )

        await poller.poll_all(now + timedelta(minutes=15))
        row = feed_row(engine, url)
        assert row.consecutive_failures == 2
        later = now + timedelta(minutes=45)
        assert later <= row.next_poll_at <= later + timedelta(seconds=1)
        assert row.enabled, "a failing feed is never dropped"

        server.clear("desk.xml")
        recovered = await poller.poll_all(now + timedelta(hours=1))
    row = feed_row(engine, url)
    assert recovered.new_entries == 1
    assert (row.consecutive_failures, row.last_error_kind, row.last_error) == (0, None, None)
    assert row.last_success_at == now + timedelta(hours=1)


@pytest.mark.parametrize(
    ("behaviour", "body", "kind"),
    [
        (error(404), None, "gone"),
        (error(410), None, "gone"),
        (None, b"<html><body>moved to a new site</body></html>", "parse"),
        (rate_limited("7200"), None, "rate_limited"),
    ],
)
async def test_error_kinds_are_stored(
    server: FeedServer,
    engine: Engine,
    database_url: str,
    behaviour: Behaviour | None,
    body: bytes | None,
    kind: str,
) -> None:
    now = datetime(2026, 3, 6, 12, tzinfo=UTC)
    server.put("desk.xml", body or rss(("a", "A", now)), content_type="text/html")
    if behaviour is not None:
        server.behave("desk.xml", behaviour)
    url = server.url("desk.xml")
    summary = await poll_once(make_settings(database_url, [url]), engine, now)
    row = feed_row(engine, url)
    assert summary.failed == 1
    assert row.last_error_kind == kind
    assert row.last_error
    assert entry_rows(engine, url) == []
    if kind == "rate_limited":
        assert row.next_poll_at >= now + timedelta(hours=2), "Retry-After is honoured"


async def test_permanent_redirect_moves_the_feed_and_keeps_config_url(
    server: FeedServer, engine: Engine, database_url: str
) -> None:
    now = datetime(2026, 3, 6, 12, tzinfo=UTC)
    server.put("new.xml", rss(("a", "A", now)))
    server.behave("old.xml", redirect("/new.xml", 301))
    old_url = server.url("old.xml")
    settings = make_settings(database_url, [old_url])
    async with Poller(settings, engine) as poller:
        await poller.sync_config(now)
        await poller.poll_all(now)
        row = feed_row(engine, old_url)
        assert row.url == server.url("new.xml")
        assert row.config_url == old_url
        await poller.sync_config(now)  # the config still names the old URL: same feed
        second = await poller.poll_all(now + timedelta(hours=1))
    assert second.not_modified == 1
    assert [seen.path for seen in server.requests] == ["old.xml", "new.xml", "new.xml"]
    assert len(stored_counts(engine)) == 1


async def test_sync_config_disables_removed_feeds_and_poll_due_respects_schedule(
    server: FeedServer, engine: Engine, database_url: str
) -> None:
    now = datetime(2026, 3, 6, 12, tzinfo=UTC)
    server.put("a.xml", rss(("a", "A", now)))
    server.put("b.xml", rss(("b", "B", now)))
    both = make_settings(database_url, [server.url("a.xml"), server.url("b.xml")])
    # Nothing here depends on the clock or on chance: `now` is passed in, the jitter is drawn
    # from a seeded generator, and each feed's slot (a hash of its URL, whose port differs
    # from run to run) is computed here rather than assumed.
    async with Poller(both, engine, rng=random.Random(6)) as poller:
        await poller.sync_config(now)
        assert (await poller.poll_due(now)).fetched == 2  # never polled: due at once
        assert (await poller.poll_due(now)).feeds == 0  # the next slot is strictly later
        next_at = []
        for url in (server.url("a.xml"), server.url("b.xml")):
            # The feed's next slot within one interval (15 min by default), plus jitter (< 1 s).
            slot = next_slot(url, timedelta(minutes=15), now)
            assert now < slot <= now + timedelta(minutes=15)
            next_at.append(feed_row(engine, url).next_poll_at)
            assert slot <= next_at[-1] <= slot + timedelta(seconds=1)
        assert (await poller.poll_due(min(next_at) - timedelta(microseconds=1))).feeds == 0
        assert (await poller.poll_due(max(next_at))).feeds == 2
    only_a = make_settings(database_url, [server.url("a.xml")])
    async with Poller(only_a, engine) as poller:
        result = await poller.sync_config(now)
        assert result.disabled == 1
        assert (await poller.poll_all(now + timedelta(hours=2))).feeds == 1
    row_b = feed_row(engine, server.url("b.xml"))
    assert row_b.enabled is False
    assert len(entry_rows(engine, server.url("b.xml"))) == 1, "disabled, not deleted"
    async with Poller(both, engine) as poller:
        result = await poller.sync_config(now)
    assert result.updated == 1
    assert feed_row(engine, server.url("b.xml")).enabled is True


@pytest.mark.parametrize(("allow_private", "kind"), [(False, "blocked"), (True, None)])
async def test_feeds_added_by_command_may_only_reach_public_addresses(
    server: FeedServer, engine: Engine, database_url: str, allow_private: bool, kind: str | None
) -> None:
    now = datetime(2026, 3, 6, 12, tzinfo=UTC)
    server.put("desk.xml", rss(("a", "A", now)))
    url = server.url("desk.xml")
    with engine.begin() as conn:  # what the subscribe command stores
        conn.execute(
            feeds.insert().values(url=url, config_url=None, origin="command", created_at=now)
        )
    settings = make_settings(database_url, [], allow_private_addresses_from_commands=allow_private)
    async with Poller(settings, engine) as poller:
        summary = await poller.poll_all(now)
    with engine.connect() as conn:
        row = conn.execute(select(feeds).where(feeds.c.url == url)).one()
    assert row.last_error_kind == kind
    assert summary.failed == (1 if kind else 0)
    assert len(server.requests) == (0 if kind else 1)


async def test_a_restart_polls_nothing_before_its_slot(
    server: FeedServer, engine: Engine, database_url: str
) -> None:
    now = datetime(2026, 3, 6, 12, tzinfo=UTC)
    for name in ("a.xml", "b.xml", "c.xml"):
        server.put(name, rss((name, name, now)))
    settings = make_settings(database_url, [server.url(n) for n in ("a.xml", "b.xml", "c.xml")])
    async with Poller(settings, engine) as poller:
        await poller.sync_config(now)
        assert (await poller.poll_due(now)).fetched == 3
    with engine.connect() as conn:
        first_slot = conn.execute(select(func.min(feeds.c.next_poll_at))).scalar_one()
    assert first_slot > now
    # A new process just before the first stored slot: nothing is due, no burst of requests.
    async with Poller(settings, engine) as poller:
        await poller.sync_config(now)
        assert (await poller.poll_due(first_slot - timedelta(microseconds=1))).feeds == 0
        assert len(server.requests) == 3
        assert (await poller.poll_due(first_slot)).feeds >= 1
