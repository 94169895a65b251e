"""Scale-out: several replicas on one database share the work and never do it twice.

* :class:`bot.ops.leader.LeaderLock` on the test backend (SQLite lease row / PostgreSQL advisory
  lock): one holder at a time, handed over on release, on a dead holder's lease running out
  (SQLite) or its connection ending (PostgreSQL).
* Feed claims on PostgreSQL from many threads at once: every feed goes to exactly one claimer.
* Three ``counterparty run`` replicas as subprocesses on one PostgreSQL, a local feed server and
  the fake Discord server: every feed fetched once in its interval, every message posted once,
  one gateway session; killing the gateway holder hands the gateway to another within one lease.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import re
import signal
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import Engine, text

from bot.ops.leader import LeaderLock
from bot.storage import feeds_repo
from bot.storage.db import open_database
from bot.storage.feeds_repo import ConfiguredFeed
from tests.support.discord_client import fake_discord_for_the_bot
from tests.support.fake_discord import FakeDiscord
from tests.support.fake_telegram import TOKEN, FakeTelegram
from tests.support.feedserver import FeedServer
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

CHANNELS = ("700000000000000101", "700000000000000102")
FEEDS = 12
LEADER_LEASE = 6.0
TIMEOUT = 120.0


# -- the leader lock ------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 6, 12, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


async def test_one_leader_at_a_time_and_handover_on_release(engine: Engine) -> None:
    first = LeaderLock(engine, "discord", owner="replica-1", lease=timedelta(seconds=30))
    second = LeaderLock(engine, "discord", owner="replica-2", lease=timedelta(seconds=30))
    other_role = LeaderLock(engine, "telegram", owner="replica-2", lease=timedelta(seconds=30))
    try:
        assert await first.acquire()
        assert await first.acquire()  # idempotent for the holder
        assert not await second.acquire()
        assert await other_role.acquire()  # roles are independent
        await first.release()
        assert not first.held
        assert await second.acquire()
        assert not await first.acquire()
    finally:
        for lock in (first, second, other_role):
            await lock.release()


async def test_sqlite_lease_of_a_dead_holder_runs_out(sqlite_url: str) -> None:
    engine = open_database(sqlite_url)
    clock = Clock()
    lease = timedelta(seconds=30)
    dead = LeaderLock(engine, "discord", owner="dead", lease=lease, clock=clock)
    heir = LeaderLock(engine, "discord", owner="heir", lease=lease, clock=clock)
    try:
        assert await dead.acquire()
        # The holder dies: its keeper never renews again (cancelled without releasing).
        assert dead._keeper is not None
        dead._keeper.cancel()
        clock.now += lease - timedelta(seconds=1)
        assert not await heir.acquire()
        clock.now += timedelta(seconds=2)
        assert await heir.acquire()
        # The old holder's renewal now fails: it learns it lost the role.
        assert not await asyncio.to_thread(dead._renew_sqlite)
    finally:
        await heir.release()
        engine.dispose()


def terminate_lock_holders(engine: Engine) -> list[tuple[bool]]:
    """What a dead replica (or a broken connection) looks like to PostgreSQL: the sessions
    holding advisory locks in this database end."""
    with engine.connect() as conn:
        return [
            tuple(row)
            for row in conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks"
                    " WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()"
                    " AND database = (SELECT oid FROM pg_database"
                    " WHERE datname = current_database())"
                )
            )
        ]


async def test_postgres_lock_goes_to_a_waiting_replica_when_the_holder_session_dies(
    postgres_url: str,
) -> None:
    """A killed replica's session ends and the advisory lock with it; a waiting replica takes
    the role, and the old holder (had it survived) learns it lost the role."""
    engine_a = open_database(postgres_url)
    engine_b = open_database(postgres_url)
    holder = LeaderLock(engine_a, "discord", owner="a", lease=timedelta(seconds=3))
    heir = LeaderLock(engine_b, "discord", owner="b", lease=timedelta(seconds=3))
    try:
        assert await holder.acquire()
        assert not await heir.acquire()
        assert await asyncio.to_thread(holder._check_postgres)
        assert terminate_lock_holders(engine_b) == [(True,)]
        async with asyncio.timeout(10):
            while not await heir.acquire():  # noqa: ASYNC110 - the server ends the session
                await asyncio.sleep(0.05)
        await asyncio.wait_for(holder.lost.wait(), 10)
        assert not holder.held
        assert heir.held
    finally:
        await holder.release()
        await heir.release()
        engine_a.dispose()
        engine_b.dispose()


async def test_postgres_holder_retakes_the_lock_after_its_connection_broke(
    postgres_url: str,
) -> None:
    """A broken connection with no other replica waiting: the holder takes the lock again on a
    new connection instead of giving the role up."""
    engine = open_database(postgres_url)
    holder = LeaderLock(engine, "telegram", owner="a", lease=timedelta(seconds=0.6))
    try:
        assert await holder.acquire()
        first = holder._conn
        assert terminate_lock_holders(engine) == [(True,)]
        async with asyncio.timeout(10):
            while holder._conn in (first, None):  # noqa: ASYNC110 - the keeper works
                await asyncio.sleep(0.05)
        assert holder.held
        assert not holder.lost.is_set()
        assert await asyncio.to_thread(holder._check_postgres)
    finally:
        await holder.release()
        engine.dispose()


def test_postgres_feed_claims_from_many_threads_never_overlap(postgres_url: str) -> None:
    engine = open_database(postgres_url)
    now = datetime(2026, 3, 6, 12, tzinfo=UTC)
    try:
        configured = [
            ConfiguredFeed(f"http://127.0.0.1:9/f{n}.xml", None, None) for n in range(300)
        ]
        feeds_repo.sync_config_feeds(engine, configured, now)
        claimed: dict[str, list[int]] = {}
        start = threading.Barrier(6)

        def claimer(owner: str) -> None:
            start.wait()
            got: list[int] = []
            # Each call is a separate claimer (a fresh owner), as separate poll ticks would be.
            for call in range(1000):
                batch = feeds_repo.claim_feeds(
                    engine,
                    now=now,
                    owner=f"{owner}-{call}",
                    lease=timedelta(minutes=5),
                    due_only=True,
                    limit=7,
                )
                if not batch:
                    break
                got.extend(state.id for state in batch)
            claimed[owner] = got

        threads = [threading.Thread(target=claimer, args=(f"t{n}",)) for n in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        every = [feed_id for ids in claimed.values() for feed_id in ids]
        assert len(claimed) == 6
        assert len(every) == 300
        assert len(set(every)) == 300
        assert sum(1 for ids in claimed.values() if ids) >= 2  # the work was actually shared
    finally:
        engine.dispose()


def test_replicas_syncing_the_config_at_once_insert_each_feed_once(database_url: str) -> None:
    """Replicas starting together all sync ``[[feeds]]``; none may fail on a duplicate URL."""
    engine = open_database(database_url)
    now = datetime(2026, 3, 6, 12, tzinfo=UTC)
    configured = [ConfiguredFeed(f"http://127.0.0.1:9/s{n}.xml", None, None) for n in range(50)]
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def replica() -> None:
        start.wait()
        try:
            feeds_repo.sync_config_feeds(engine, configured, now)
        except BaseException as exc:  # collected and asserted on below
            errors.append(exc)

    threads = [threading.Thread(target=replica) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    try:
        assert errors == []
        assert len(feeds_repo.list_feed_health(engine)) == 50
    finally:
        engine.dispose()


def test_feed_fetched_by_another_poller_meanwhile_is_not_claimed_again(engine: Engine) -> None:
    """A poller whose candidate list went stale (another poller fetched the feed in between)
    must not fetch it again in the same interval."""
    now = datetime(2026, 3, 6, 12, tzinfo=UTC)
    feeds_repo.sync_config_feeds(engine, [ConfiguredFeed("http://127.0.0.1:9/a", None, None)], now)
    [state] = feeds_repo.claim_feeds(
        engine, now=now, owner="a", lease=timedelta(minutes=5), due_only=True
    )
    feeds_repo.record_not_modified(
        engine,
        state.id,
        now=now,
        status=304,
        next_poll_at=now + timedelta(hours=1),
        permanent_url=None,
        etag=None,
        last_modified=None,
    )
    again = feeds_repo.claim_feeds(
        engine, now=now, owner="b", lease=timedelta(minutes=5), due_only=True
    )
    assert again == []


# -- three replicas on one PostgreSQL --------------------------------------------------------


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    now = datetime.now(UTC)
    with FeedServer() as server:
        for n in range(FEEDS):
            server.put(f"f{n}.xml", sample_rss(n, now))
        yield server


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as server:
        yield server


def write_config(tmp_path: Path, server: FeedServer) -> Path:
    feeds = [server.url(f"f{n}.xml") for n in range(FEEDS)]
    config = tmp_path / "feeds.toml"
    config.write_text(
        f'[bot]\nleader_lease = "{LEADER_LEASE:.0f}s"\n\n'
        '[fetch]\nparse_workers = 1\ntick = "1s"\n\n'
        '[delivery]\ndrain_interval = "1s"\nlease = "20s"\n\n' + fanout_config(feeds, CHANNELS),
        encoding="utf-8",
    )
    return config


def identifies(fake: FakeDiscord) -> int:
    return sum(
        1
        for r in fake.requests
        if r.method == "WS" and isinstance(r.body, dict) and r.body.get("op") == 2
    )


def leader_pids(logs: list[Path], role: str = "discord") -> set[int]:
    """Pids of the replicas whose logs say they took ``role``."""
    pattern = re.compile(rf"leader {role}: this process \([^)]*:(\d+)\) holds the role")
    return {
        int(pid)
        for log in logs
        for pid in pattern.findall(log.read_text(encoding="utf-8", errors="replace"))
    }


@pytest.mark.slow
async def test_three_replicas_share_the_work_once_and_hand_over_the_gateway(
    postgres_url: str, feed_server: FeedServer, fake: FakeDiscord, tmp_path: Path
) -> None:
    config = write_config(tmp_path, feed_server)
    env = child_env(
        DISCORD_TOKEN="fake-token-for-tests",
        COUNTERPARTY_DISCORD_API_BASE=fake.api_base,
        COUNTERPARTY_DISCORD_GATEWAY=fake.gateway_url,
    )
    # No migration beforehand: the replicas start together on an empty database.
    logs = [tmp_path / f"replica-{n}.log" for n in range(3)]
    processes = [await start_run(tmp_path, config, postgres_url, env, log) for log in logs]
    try:

        def everything_sent() -> bool:
            every_item = all(
                any(item_marker(n) in str(post) for post in fake.messages.get(channel, []))
                for channel in CHANNELS
                for n in range(FEEDS)
            )
            rows = outbox_rows(postgres_url) if every_item else []
            return bool(rows) and all(r.status == "sent" for r in rows)

        await until(everything_sent, "every item posted and every outbox row sent", TIMEOUT)
        await until(lambda: identifies(fake) >= 1, "a gateway session", TIMEOUT)
        await until(
            lambda: all("counterparty is running" in log.read_text() for log in logs),
            "all three replicas running",
            TIMEOUT,
        )

        # Every feed fetched exactly once (interval 1 h), by whichever replica claimed it.
        for n in range(FEEDS):
            assert len(feed_server.requests_for(f"f{n}.xml")) == 1, n
        # Every matched item posted once to each channel, and every post once.
        rows = outbox_rows(postgres_url)
        for channel in CHANNELS:
            posts = fake.messages.get(channel, [])
            for n in range(FEEDS):
                carrying = [p for p in posts if item_marker(n) in str(p)]
                assert len(carrying) == 1, (channel, n, len(carrying))
            assert "Town library" not in str(posts)
            nonces = [p["nonce"] for p in posts]
            assert len(nonces) == len(set(nonces))
            assert len(posts) == sum(1 for r in rows if r.target == channel)
        channel_posts = [r for r in fake.requests if r.method == "POST" and "/messages" in r.path]
        assert len(channel_posts) == len({r.body["nonce"] for r in channel_posts})
        # One gateway session across the three replicas.
        assert identifies(fake) == 1
        [holder] = leader_pids(logs)
        assert holder in [p.pid for p in processes]

        # Kill the gateway holder outright: another replica takes the gateway within a lease.
        victim = next(p for p in processes if p.pid == holder)
        killed_at = time.monotonic()
        victim.send_signal(signal.SIGKILL)
        await victim.wait()
        # The role is what must move within a lease; the new gateway session follows it (its
        # connect and IDENTIFY take as long as a loaded machine makes them, so only TIMEOUT).
        await until(lambda: len(leader_pids(logs)) == 2, "a new gateway holder", TIMEOUT)
        handover = time.monotonic() - killed_at
        await until(lambda: identifies(fake) >= 2, "a new gateway session", TIMEOUT)
        assert handover < LEADER_LEASE, f"gateway handed over after {handover:.1f} s"
        [new_holder] = leader_pids(logs) - {holder}
        assert new_holder in [p.pid for p in processes if p is not victim]

        # The survivors still stop cleanly.
        survivors = [p for p in processes if p is not victim]
        for process in survivors:
            process.send_signal(signal.SIGTERM)
        codes = [await asyncio.wait_for(p.wait(), 60) for p in survivors]
        assert codes == [0, 0], [log.read_text()[-2000:] for log in logs]
    finally:
        await stop_all(processes)
    assert identifies(fake) == 2
    every_log = "".join(log.read_text(encoding="utf-8", errors="replace") for log in logs)
    assert "fake-token-for-tests" not in every_log
    assert "duplicate key" not in every_log


@dataclass
class PollSpan:
    """One ``getUpdates`` long poll as the server saw it (``time.monotonic``)."""

    start: float
    end: float | None = None  # None while it is open


class CountingTelegram(FakeTelegram):
    """The fake Bot API, also keeping when each ``getUpdates`` long poll started and ended."""

    def __init__(self) -> None:
        super().__init__(long_poll_cap=0.25)
        self.spans: list[PollSpan] = []

    @property
    def polls(self) -> int:
        return len(self.spans)

    async def _api_getUpdates(self, params: dict[str, Any]) -> web.Response:
        span = PollSpan(time.monotonic())
        self.spans.append(span)
        try:
            return await super()._api_getUpdates(params)
        finally:
            span.end = time.monotonic()

    def overlapping_polls_since(self, start: float) -> list[tuple[PollSpan, PollSpan]]:
        """Pairs of polls begun after ``start`` that were open at the same time."""
        spans = sorted((s for s in self.spans if s.start > start), key=lambda s: s.start)
        return [
            (earlier, later)
            for earlier, later in itertools.pairwise(spans)
            if earlier.end is None or earlier.end > later.start
        ]


@pytest.mark.slow
async def test_one_telegram_poller_among_replicas_and_handover_on_kill(
    postgres_url: str, feed_server: FeedServer, tmp_path: Path
) -> None:
    config = write_config(tmp_path, feed_server)
    telegram = CountingTelegram()
    async with telegram:
        env = child_env(TELEGRAM_TOKEN=TOKEN, COUNTERPARTY_TELEGRAM_API_BASE=telegram.base_url)
        logs = [tmp_path / f"tg-{n}.log" for n in range(2)]
        processes = [await start_run(tmp_path, config, postgres_url, env, log) for log in logs]
        try:
            await until(
                lambda: all("counterparty is running" in log.read_text() for log in logs),
                "both replicas running",
                TIMEOUT,
            )
            await until(lambda: telegram.polls >= 8, "getUpdates long polls", TIMEOUT)
            assert telegram.overlapping_polls_since(-math.inf) == []  # one poller at a time
            [holder] = leader_pids(logs, "telegram")

            victim = next(p for p in processes if p.pid == holder)
            killed_at = time.monotonic()
            victim.send_signal(signal.SIGKILL)
            await victim.wait()
            dead_at = time.monotonic()  # no poll can start from the victim after this
            await until(lambda: len(leader_pids(logs, "telegram")) == 2, "a new poller", TIMEOUT)
            handover = time.monotonic() - killed_at
            polls_at_handover = telegram.polls
            await until(lambda: telegram.polls >= polls_at_handover + 4, "polling resumed", TIMEOUT)
            assert handover < LEADER_LEASE, f"poller handed over after {handover:.1f} s"
            # Every poll begun after the victim died is the survivor's (a long poll the dead
            # process had open may still be running on the server): none may overlap another.
            assert telegram.overlapping_polls_since(dead_at) == []
            [survivor] = [p for p in processes if p is not victim]
            survivor.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(survivor.wait(), 60) == 0
        finally:
            await stop_all(processes)
    every_log = "".join(log.read_text(encoding="utf-8", errors="replace") for log in logs)
    assert TOKEN not in every_log
    assert "409" not in every_log


async def test_discord_gateway_follows_the_role_lost_and_regained(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway holder whose lock went to another replica disconnects (no second session);
    when the role comes back, it connects again. Sending never needed the role."""
    from pydantic import SecretStr

    from bot.commands.core import CommandCore
    from bot.delivery.discord.service import DiscordService, configure_endpoints
    from bot.matching.catalog import load_catalog
    from bot.settings import DiscordSection

    engine_a = open_database(postgres_url)
    engine_b = open_database(postgres_url)
    lock = LeaderLock(engine_a, "discord", owner="a", lease=timedelta(seconds=0.6))
    rival = LeaderLock(engine_b, "discord", owner="b", lease=timedelta(seconds=30))
    async with fake_discord_for_the_bot(monkeypatch) as fake:
        configure_endpoints(api_base=fake.api_base, gateway=fake.gateway_url)
        service = DiscordService(
            token=SecretStr("fake-token-for-tests"),
            core=CommandCore(engine_a, load_catalog(None)),
            options=DiscordSection(sync_commands=False),
            gateway_lock=lock,
        )
        try:
            await service.start()
            await fake.wait_for(lambda f: identifies(f) == 1, within=TIMEOUT)
            # The holder's session dies and a rival replica takes the role at once.
            assert terminate_lock_holders(engine_b) == [(True,)]
            async with asyncio.timeout(10):
                while not await rival.acquire():  # noqa: ASYNC110 - the server ends the session
                    await asyncio.sleep(0.05)
            await asyncio.wait_for(lock.lost.wait(), 10)
            # (polled: the fake notifies waiters on requests, not on closed sockets)
            await until(lambda: not fake._gateway.sockets, "the gateway closed", TIMEOUT)
            assert identifies(fake) == 1
            # The rival goes away: the role, and the gateway, come back.
            await rival.release()
            await fake.wait_for(lambda f: identifies(f) == 2, within=TIMEOUT)
            assert lock.held
            assert len(fake._gateway.sockets) == 1
        finally:
            await service.stop()
            await rival.release()
            engine_a.dispose()
            engine_b.dispose()
