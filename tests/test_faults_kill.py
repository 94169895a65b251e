"""``kill -9`` of ``counterparty run`` during polling and during delivery, then a restart: every
matched item reaches every subscription exactly once (counted on the fake Discord server).

Real subprocesses, the test database (a SQLite file, or PostgreSQL in that run of the suite),
the local feed server (answering slowly, so the kill lands mid-poll) and the fake Discord server
(holding its answers, so the kill lands between a post and the bot hearing about it). The kill
points are drawn from a seeded generator; the seed is in the test id so a failure can be replayed.
"""

from __future__ import annotations

import asyncio
import random
import signal
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.support.fake_discord import FakeDiscord
from tests.support.feedserver import FeedServer, slow
from tests.support.replicas import (
    child_env,
    fanout_config,
    item_marker,
    outbox_rows,
    sample_rss,
    start_run,
    stop_all,
)
from tests.support.waiting import until

pytestmark = pytest.mark.slow

CHANNELS = ("700000000000000301", "700000000000000302")
FEEDS = 8
TIMEOUT = 90.0


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    now = datetime.now(UTC)
    with FeedServer() as server:
        for n in range(FEEDS):
            server.put(f"k{n}.xml", sample_rss(n, now))
            server.behave(f"k{n}.xml", slow(0.4))
        yield server


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as server:
        yield server


def write_config(tmp_path: Path, server: FeedServer) -> Path:
    feeds = [server.url(f"k{n}.xml") for n in range(FEEDS)]
    config = tmp_path / "feeds.toml"
    config.write_text(
        # A short feed lease and delivery lease: work a killed process held is taken over soon.
        '[fetch]\nparse_workers = 1\ntick = "1s"\ndeadline = "2s"\nlease = "3s"\n'
        "per_host_concurrency = 2\n\n"
        '[delivery]\ndrain_interval = "1s"\nlease = "3s"\n\n' + fanout_config(feeds, CHANNELS),
        encoding="utf-8",
    )
    return config


def every_item_posted(fake: FakeDiscord) -> bool:
    return all(
        any(item_marker(n) in str(post) for post in fake.messages.get(channel, []))
        for channel in CHANNELS
        for n in range(FEEDS)
    )


@pytest.mark.parametrize("seed", [7, 1913])
async def test_kill_during_poll_and_delivery_then_restart_delivers_each_item_once(
    feed_server: FeedServer, fake: FakeDiscord, tmp_path: Path, seed: int, database_url: str
) -> None:
    rng = random.Random(seed)
    config = write_config(tmp_path, feed_server)
    db_url = database_url  # SQLite by default; PostgreSQL in the PostgreSQL run of the suite
    env = child_env(
        DISCORD_TOKEN="fake-token-for-tests",
        COUNTERPARTY_DISCORD_API_BASE=fake.api_base,
        COUNTERPARTY_DISCORD_GATEWAY=fake.gateway_url,
    )
    log = tmp_path / "run.log"
    processes: list[asyncio.subprocess.Process] = []
    try:
        # 1. Killed in the middle of the first poll (some feeds answered, others in flight).
        fetched_before_kill = rng.randint(1, FEEDS - 2)
        first = await start_run(tmp_path, config, db_url, env, log)
        processes.append(first)
        await until(
            lambda: len(feed_server.requests) >= fetched_before_kill, "feed requests", TIMEOUT
        )
        first.send_signal(signal.SIGKILL)
        await first.wait()
        assert not every_item_posted(fake)

        # 2. Killed after Discord created a post but before the bot heard back.
        fake.hold()
        second = await start_run(tmp_path, config, db_url, env, log)
        processes.append(second)
        await fake.wait_for_request("POST", "/messages", within=TIMEOUT)
        second.send_signal(signal.SIGKILL)
        await second.wait()
        fake.release()
        assert any(r.status != "sent" for r in outbox_rows(db_url)) or not every_item_posted(fake)

        # 3. A clean run finishes the work.
        third = await start_run(tmp_path, config, db_url, env, log)
        processes.append(third)

        def done() -> bool:
            rows = outbox_rows(db_url)
            return every_item_posted(fake) and all(r.status == "sent" for r in rows)

        await until(done, "every item posted and every outbox row sent", TIMEOUT)
        third.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(third.wait(), 60)
    finally:
        await stop_all(processes)
    output = log.read_text(encoding="utf-8", errors="replace")
    assert code == 0, output[-3000:]
    rows = outbox_rows(db_url)
    for channel in CHANNELS:
        posts = fake.messages.get(channel, [])
        for n in range(FEEDS):
            carrying = [p for p in posts if item_marker(n) in str(p)]
            assert len(carrying) == 1, (channel, n, len(carrying))
        assert "Town library" not in str(posts)
        mine = [r for r in rows if r.target == channel]
        assert len(posts) == len(mine)
        assert sorted(p["id"] for p in posts) == sorted(r.platform_message_id for r in mine)
    # Each feed fetched again only where the kill cut its first fetch short.
    for n in range(FEEDS):
        assert 1 <= len(feed_server.requests_for(f"k{n}.xml")) <= 2
