"""Claims between replicas on PostgreSQL: work split by ``FOR UPDATE SKIP LOCKED`` leases.

* Two outbox drains at once (two replicas): no row is sent twice, every row is sent, a target's
  rows go out in id order, and both drains send some (one cannot take everything while the
  other waits).
* Two pollers on one PostgreSQL polling a large due set: every feed fetched exactly once (counted
  on the feed server), and a poller that starts while the other is busy still gets a share
  (due feeds are claimed in chunks, not all at once).
* A later chunk's claim failing on the database ends the poll with that error only after the
  feeds already claimed were fetched and recorded (no fetch outlives the poll).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select
from sqlalchemy.exc import OperationalError

from bot.delivery.outbox import DeliveryPolicy, Outbox, enqueue_digest
from bot.delivery.records import OutboxMessage, SendOutcome, Sent
from bot.feeds.pipeline import Poller
from bot.settings import Environment, FileConfig, Settings
from bot.storage import subscriptions as subs_repo
from bot.storage.db import open_database
from bot.storage.schema import feeds, outbox
from tests.support.feedserver import FeedServer, slow
from tests.support.replicas import sample_rss

T0 = datetime(2026, 3, 6, 12, tzinfo=UTC)
PLATFORM = "fakechat"


@pytest.fixture
def pg_engine(postgres_url: str) -> Iterator[Engine]:
    engine = open_database(postgres_url)
    yield engine
    engine.dispose()


class GatedSender:
    """Counts posts; the first posts wait until ``quorum`` are in flight at once.

    One drain never has more than its ``concurrency`` posts in flight, so a quorum above that
    is reached only when the other drain claimed work while the first one held its leases."""

    platforms: tuple[str, ...] = (PLATFORM,)

    def __init__(self, quorum: int) -> None:
        self.quorum = quorum
        self.in_flight = 0
        self.met = asyncio.Event()
        self.calls: list[OutboxMessage] = []

    async def send(self, message: OutboxMessage) -> SendOutcome:
        self.calls.append(message)
        self.in_flight += 1
        if self.in_flight >= self.quorum:
            self.met.set()
        try:
            async with asyncio.timeout(20):
                await self.met.wait()
        finally:
            self.in_flight -= 1
        return Sent(f"m{message.id}")


async def test_two_drains_on_postgres_split_the_rows_and_never_send_one_twice(
    pg_engine: Engine,
) -> None:
    targets = [f"room-{n}" for n in range(10)]
    with pg_engine.begin() as conn:
        for target in targets:
            sub = subs_repo.upsert(conn, platform=PLATFORM, target=target, now=T0)
            enqueue_digest(
                conn,
                subscription_id=sub.id,
                platform=PLATFORM,
                target=target,
                payloads=[{"part": part} for part in range(3)],
                entry_ids=[],
                now=T0,
            )
    sender = GatedSender(quorum=3)
    policy = DeliveryPolicy(pacing={PLATFORM: timedelta(0)})
    drains = [
        Outbox(
            pg_engine, senders={PLATFORM: sender}, policy=policy, owner=f"proc-{n}", concurrency=2
        )
        for n in range(2)
    ]
    first, second = await asyncio.gather(*(box.drain(now=T0) for box in drains))

    sent_ids = [message.id for message in sender.calls]
    assert len(sent_ids) == len(set(sent_ids)) == 30  # every row once, none twice
    assert sender.met.is_set()  # both drains had posts in flight at the same time
    assert first.sent > 0
    assert second.sent > 0
    assert first.sent + second.sent == 30
    assert first.retried == second.retried == 0
    for target in targets:
        order = [m.id for m in sender.calls if m.target == target]
        assert order == sorted(order), f"{target}'s rows went out of order: {order}"
    with pg_engine.connect() as conn:
        statuses = conn.execute(select(outbox.c.status, outbox.c.lease_owner)).all()
    assert {(status, owner) for status, owner in statuses} == {("sent", None)}


async def test_two_pollers_on_postgres_split_a_large_due_set_and_fetch_each_feed_once(
    postgres_url: str, tmp_path: Path
) -> None:
    feeds = 60
    now = datetime.now(UTC)
    with FeedServer(tmp_path) as server:
        paths = [f"wire-{n}.xml" for n in range(feeds)]
        for n, path in enumerate(paths):
            server.put(path, sample_rss(n, now))
            # Each answer takes a moment, so the first poller is still busy when the second
            # one ticks: the due set is what they must split.
            server.behave(path, slow(0.05))
        config = FileConfig.model_validate(
            {
                "feeds": [{"url": server.url(path)} for path in paths],
                # 2 x 2 workers per poller, so a chunk is 4 feeds.
                "fetch": {"jitter": "1s", "global_concurrency": 2},
            }
        )
        settings = Settings(
            file=config, env=Environment(), config_path=None, database_url=postgres_url
        )
        engine = open_database(postgres_url)
        try:
            async with (
                Poller(settings, engine, owner="replica-1") as first,
                Poller(settings, engine, owner="replica-2") as second,
            ):
                await first.sync_config(now)
                first_poll = asyncio.create_task(first.poll_due(now))
                # The second replica ticks once the first one is under way.
                assert await asyncio.to_thread(server.wait_for_requests, 1, timeout=30)
                second_summary = await second.poll_due(now)
                first_summary = await first_poll
        finally:
            engine.dispose()
        per_path = Counter(seen.path for seen in server.requests)
    assert per_path == Counter(dict.fromkeys(paths, 1))  # every feed once, none twice
    assert first_summary.fetched + second_summary.fetched == feeds
    assert first_summary.fetched > 0
    assert second_summary.fetched > 0  # the second replica was not left with nothing
    assert first_summary.failed == second_summary.failed == 0


async def test_a_failed_later_claim_ends_the_poll_after_the_claimed_feeds_are_done(
    engine: Engine, database_url: str, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    failing_owner = "replica-1/1"  # the poll's second chunk

    def database_trouble(*args: Any) -> None:
        statement, parameters = str(args[2]), args[3]
        if statement.startswith("UPDATE feeds SET lease_owner") and failing_owner in str(
            parameters
        ):
            raise engine.dialect.loaded_dbapi.OperationalError("server closed the connection")

    with FeedServer(tmp_path) as server:
        paths = [f"wire-{n}.xml" for n in range(10)]
        for n, path in enumerate(paths):
            server.put(path, sample_rss(n, now))
            server.behave(path, slow(0.05))  # still fetching when the next claim fails
        config = FileConfig.model_validate(
            {
                "feeds": [{"url": server.url(path)} for path in paths],
                "fetch": {"jitter": "1s", "global_concurrency": 2},  # chunks of 4
            }
        )
        settings = Settings(
            file=config, env=Environment(), config_path=None, database_url=database_url
        )
        event.listen(engine, "before_cursor_execute", database_trouble)
        async with Poller(settings, engine, owner="replica-1") as poller:
            await poller.sync_config(now)
            with pytest.raises(OperationalError):
                await poller.poll_due(now)
            # At the moment the poll raised, every feed of the first chunk was done.
            with engine.connect() as conn:
                recorded = conn.execute(
                    select(func.count()).where(feeds.c.next_poll_at.is_not(None))
                ).scalar_one()
                leased = conn.execute(
                    select(func.count()).where(feeds.c.lease_owner.is_not(None))
                ).scalar_one()
            assert recorded == len(server.requests) == 4
            assert leased == 0
            # The next tick (the database back) polls the rest.
            event.remove(engine, "before_cursor_execute", database_trouble)
            assert (await poller.poll_due(now)).fetched == 6
