"""SQLite with another process writing at the same time: ingestion waits its turn (busy timeout,
write-first transactions) and loses nothing."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, func, select

from bot.feeds.pipeline import Poller, PollSummary
from bot.settings import Environment, FileConfig, Settings
from bot.storage.db import open_database
from bot.storage.schema import entries, heartbeats
from tests.conftest import shared_path
from tests.support.feedserver import FeedServer

# A second process that keeps taking SQLite's write lock, holding it 20 ms each time.
WRITER = textwrap.dedent(
    """
    import sqlite3, sys, threading, time
    db = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
    db.execute("PRAGMA busy_timeout=30000")
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    print("ready", flush=True)
    n = 0
    while not stop.is_set():
        db.execute("BEGIN IMMEDIATE")
        db.execute(
            "INSERT OR REPLACE INTO heartbeats (name, owner, beat_at) VALUES (?, 'other', ?)",
            (f"writer-{n % 50}", "2026-03-06 12:00:00"),
        )
        time.sleep(0.01)  # hold the lock a while: this is the load, not synchronisation
        db.execute("COMMIT")
        time.sleep(0.005)
        n += 1
    print(n, flush=True)
    """
)


async def ingest(settings: Settings, engine: Engine) -> PollSummary:
    now = datetime.now(UTC)
    async with Poller(settings, engine) as poller:
        await poller.sync_config(now)
        return await poller.poll_all(now)


def test_ingest_beside_another_writer(database_url: str) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("the concurrent-writer test is about SQLite's single-writer lock")
    manifest = json.loads(shared_path("corpus", "manifest.json").read_text(encoding="utf-8"))
    engine = open_database(database_url)
    path = database_url.removeprefix("sqlite:///")
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline().strip() == "ready"
        with FeedServer(shared_path("corpus")) as server:
            urls = [server.url(item["file"].removeprefix("corpus/")) for item in manifest]
            config = FileConfig.model_validate({"feeds": [{"url": u} for u in urls]})
            settings = Settings(
                file=config, env=Environment(), config_path=None, database_url=database_url
            )
            summary = asyncio.run(ingest(settings, engine))
    finally:
        out, _ = writer.communicate(input="", timeout=60)
    assert summary.failed == 0
    assert summary.fetched == 46
    with engine.connect() as conn:
        stored = conn.execute(select(func.count()).select_from(entries)).scalar_one()
        others = conn.execute(select(func.count()).select_from(heartbeats)).scalar_one()
    engine.dispose()
    assert stored == summary.new_entries == sum(item["entries"] for item in manifest) - 10
    assert int(out.strip()) > 0
    assert others > 0, "the other process wrote too"
