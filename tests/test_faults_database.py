"""The database misbehaves: locked by another process for a while, or out of disk space.

* Locked: the whole bot (``App.run``, in this process, with the real Discord service against the
  fake Discord server) keeps running while another connection holds SQLite's write lock; the
  failing jobs log and run again, and once the lock is gone the bot catches up, posting the item
  that arrived meanwhile exactly once.
* Disk full: SQLite's ``max_page_count`` caps the file, as a full disk would; storing a big feed
  fails with a clear error for that feed, nothing is half-written, ``PRAGMA integrity_check``
  says ``ok``, and with room again the same feed is stored completely.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select
from sqlalchemy.engine import make_url

from bot.app import App
from bot.delivery.discord import service as discord_service
from bot.feeds.pipeline import Poller
from bot.matching.catalog import load_catalog
from bot.settings import Environment, FileConfig, Settings
from bot.storage.db import open_database
from bot.storage.schema import entries, feeds
from tests.support.discord_client import fake_discord_for_the_bot
from tests.support.fake_discord import FakeDiscord
from tests.support.feedserver import FeedServer
from tests.support.replicas import item_marker, sample_rss
from tests.support.sample_feeds import SampleItem, rss_document
from tests.support.waiting import until

CHANNEL = "700000000000000401"
TIMEOUT = 60.0


@pytest.fixture
async def fake(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeDiscord]:
    async with fake_discord_for_the_bot(monkeypatch) as server:
        yield server


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    with FeedServer() as server:
        yield server


def short_busy_timeout(engine: Engine, milliseconds: int) -> None:
    """Make lock waits short (the bot's default is 30 s): runs after the engine's own pragmas."""

    def pragma(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={int(milliseconds)}")
        cursor.close()

    event.listen(engine, "connect", pragma)
    engine.dispose()


def is_running(caplog: pytest.LogCaptureFixture) -> bool:
    return any("counterparty is running" in r.getMessage() for r in caplog.records)


def posts_carrying(fake: FakeDiscord, marker: str) -> int:
    return sum(marker in str(post) for post in fake.messages.get(CHANNEL, []))


def bot_settings(feed_server: FeedServer, fake: FakeDiscord, database_url: str) -> Settings:
    """One feed polled every second and one instant Discord subscription, with short leases."""
    file = FileConfig.model_validate(
        {
            "fetch": {
                "parse_workers": 1,
                "tick": "1s",
                "min_interval": "1s",
                "jitter": "1s",
                "deadline": "2s",
                "lease": "3s",
            },
            "delivery": {"drain_interval": "1s", "lease": "3s"},
            "feeds": [{"url": feed_server.url("wire.xml"), "interval": "1s"}],
            "subscriptions": [
                {"platform": "discord", "target": CHANNEL, "cadence": "instant", "max_items": 100}
            ],
        }
    )
    env = Environment.from_mapping(fake.bot_env())
    return Settings(file=file, env=env, config_path=None, database_url=database_url)


def start_app(
    settings: Settings, engine: Engine, caplog: pytest.LogCaptureFixture
) -> tuple[asyncio.Task[None], asyncio.Event]:
    """The bot, its Discord service aimed at the fake, running as a task in this loop with INFO
    logs captured; set the returned event to stop it."""
    catalog = load_catalog(None)
    service = discord_service.build(settings, engine, catalog)
    assert service is not None
    app = App(settings, engine, catalog, services=[service])
    stop = asyncio.Event()
    caplog.set_level(logging.INFO)
    return asyncio.create_task(app.run(stop)), stop


async def first_item_posted(fake: FakeDiscord, caplog: pytest.LogCaptureFixture) -> None:
    """Wait until feed 0's matching item is posted once and the bot has said it is running."""
    await fake.wait_for(lambda f: posts_carrying(f, item_marker(0)) == 1, within=TIMEOUT)
    await until(lambda: is_running(caplog), "the bot's start-up message", TIMEOUT)


def feed_with_a_second_item() -> bytes:
    """Feed 0's items and, after them, feed 1's matching item (``item_marker(1)``)."""
    first = sample_rss(0, datetime.now(UTC), quiet=False)
    return first.replace(b"</channel>", _extra_item(1) + b"</channel>")


async def test_locked_database_jobs_log_retry_and_catch_up(
    fake: FakeDiscord, feed_server: FeedServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db_path = tmp_path / "bot.db"
    feed_server.put("wire.xml", sample_rss(0, datetime.now(UTC), quiet=False))
    settings = bot_settings(feed_server, fake, f"sqlite:///{db_path}")
    engine = open_database(settings.database_url)
    short_busy_timeout(engine, 100)
    running, stop = start_app(settings, engine, caplog)
    locker: sqlite3.Connection | None = None
    try:
        await first_item_posted(fake, caplog)

        # Another process takes the write lock and keeps it; meanwhile a new item appears.
        locker = sqlite3.connect(db_path, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        feed_server.put("wire.xml", feed_with_a_second_item())

        def locked_failures() -> int:
            return sum(
                "database is locked" in (r.exc_text or r.getMessage())
                for r in caplog.records
                if r.levelno >= logging.WARNING
            )

        await until(lambda: locked_failures() >= 3, "jobs failing on the lock", TIMEOUT)
        assert not running.done()
        assert posts_carrying(fake, item_marker(1)) == 0
        locker.execute("ROLLBACK")
        locker.close()
        locker = None

        await fake.wait_for(lambda f: posts_carrying(f, item_marker(1)) == 1, within=TIMEOUT)
    finally:
        if locker is not None:
            locker.close()
        stop.set()
        await asyncio.wait_for(running, 60)
        engine.dispose()
    assert posts_carrying(fake, item_marker(0)) == 1
    assert posts_carrying(fake, item_marker(1)) == 1
    failed_jobs = [r for r in caplog.records if "failed; it runs again" in r.getMessage()]
    assert failed_jobs, "the lock should have made at least one job fail and be rescheduled"


def _extra_item(n: int) -> bytes:
    """One more matching item (feed ``n``'s story, with ``item_marker(n)`` in it)."""
    body = sample_rss(n, datetime.now(UTC), quiet=False)
    start = body.index(b"<item>")
    end = body.index(b"</item>") + len(b"</item>")
    return body[start:end]


def big_feed(count: int, now: datetime) -> bytes:
    items = [
        SampleItem(
            f"Test sample item {n}",
            f"Test sample text number {n}, padded {'x' * 200}",
            f"https://sample.example/big/{n}",
            f"big-{n}",
        )
        for n in range(count)
    ]
    return rss_document(
        title="Test sample big",
        link="https://sample.example/big",
        description="d",
        items=items,
        published=now,
    )


def integrity(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


def stored(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(entries)).scalar_one())


async def test_disk_full_gives_a_clear_error_and_no_corruption(
    feed_server: FeedServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db_path = tmp_path / "full.db"
    url = f"sqlite:///{db_path}"
    now = datetime.now(UTC)
    feed_server.put("big.xml", big_feed(2000, now))
    feed_server.put("small.xml", sample_rss(3, now))
    file = FileConfig.model_validate(
        {
            "fetch": {"parse_workers": 1, "jitter": "1s"},
            "feeds": [{"url": feed_server.url("big.xml")}, {"url": feed_server.url("small.xml")}],
        }
    )
    settings = Settings(file=file, env=Environment(), config_path=None, database_url=url)
    engine = open_database(url)
    with sqlite3.connect(db_path) as raw:
        pages = int(raw.execute("PRAGMA page_count").fetchone()[0])

    def cap(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA max_page_count={pages + 40}")  # ~160 KB more: the disk fills
        cursor.close()

    event.listen(engine, "connect", cap)
    engine.dispose()
    caplog.set_level(logging.INFO)
    async with Poller(settings, engine, owner="disk-test") as poller:
        await poller.sync_config(now)
        summary = await poller.poll_all(now)
    assert summary.failed >= 1
    full = [r for r in caplog.records if "database or disk is full" in (r.exc_text or "")]
    assert full, "the log must say the disk is full"
    assert any(feed_server.url("big.xml") in r.getMessage() for r in full)
    assert integrity(db_path) == "ok"
    with engine.connect() as conn:
        big_id = conn.execute(
            select(feeds.c.id).where(feeds.c.url == feed_server.url("big.xml"))
        ).scalar_one()
        half = conn.execute(
            select(func.count()).select_from(entries).where(entries.c.feed_id == big_id)
        ).scalar_one()
    assert half == 0  # the big feed's transaction rolled back whole
    engine.dispose()

    # Room again (a new engine, no cap): the same feeds are stored completely.
    roomy = open_database(url)
    try:
        async with Poller(settings, roomy, owner="disk-test") as poller:
            await poller.poll_all(now + timedelta(minutes=1))
        assert stored(roomy) >= 2000
        assert integrity(db_path) == "ok"
    finally:
        roomy.dispose()


class TcpProxy:
    """A loopback TCP proxy in front of PostgreSQL that can be cut (every connection dropped,
    new ones refused) and restored on the same port: the database "unreachable for a while"."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._client, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        await self._server.wait_closed()

    async def restore(self) -> None:
        await self.start()


async def test_unreachable_postgres_jobs_log_retry_and_catch_up(
    fake: FakeDiscord,
    feed_server: FeedServer,
    postgres_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    real = make_url(postgres_url)
    proxy = TcpProxy(real.port or 5432)
    await proxy.start()
    url = real.set(port=proxy.port).render_as_string(hide_password=False)
    feed_server.put("wire.xml", sample_rss(0, datetime.now(UTC), quiet=False))
    settings = bot_settings(feed_server, fake, url)
    # In a thread: the proxy runs on this event loop.
    engine = await asyncio.to_thread(open_database, url)
    running, stop = start_app(settings, engine, caplog)
    try:
        await first_item_posted(fake, caplog)

        await proxy.cut()
        feed_server.put("wire.xml", feed_with_a_second_item())

        def failed_runs() -> int:
            return sum("failed; it runs again" in r.getMessage() for r in caplog.records)

        await until(lambda: failed_runs() >= 3, "jobs failing while the database is away", TIMEOUT)
        assert not running.done()
        assert posts_carrying(fake, item_marker(1)) == 0
        await proxy.restore()

        await fake.wait_for(lambda f: posts_carrying(f, item_marker(1)) == 1, within=TIMEOUT)
    finally:
        stop.set()
        await asyncio.wait_for(running, 60)
        await asyncio.to_thread(engine.dispose)
        await proxy.cut()
    assert posts_carrying(fake, item_marker(0)) == 1
    assert posts_carrying(fake, item_marker(1)) == 1
    errors = [r for r in caplog.records if "failed; it runs again" in r.getMessage()]
    assert any("OperationalError" in (r.exc_text or "") for r in errors)
