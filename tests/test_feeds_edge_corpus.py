"""Every file of feedparser's own test suite, served through the local server and polled in one
batch: nothing escapes, bad documents become feed errors, good ones are stored."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from bot.feeds.parse import FeedParseError, parse_feed
from bot.feeds.pipeline import Poller
from bot.feeds.records import ERROR_KINDS
from bot.settings import Environment, FileConfig, Settings
from bot.storage.schema import entries, feeds
from tests.conftest import shared_path
from tests.support.feedserver import FeedServer

pytestmark = pytest.mark.slow


def expected_entries(path: Path, url: str) -> int | None:
    """What the parser alone makes of the file (None: not a feed). The server sends every
    ``.xml`` as application/xml, so the parser is given the same header."""
    try:
        return len(parse_feed(path.read_bytes(), url=url, content_type="application/xml").entries)
    except FeedParseError:
        return None


async def test_every_feedparser_test_file_is_handled(engine: Engine, database_url: str) -> None:
    root = shared_path("corpus", "feedparser-tests")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in (".xml", ".json"))
    assert len(files) > 2000
    with FeedServer(root) as server:
        urls = {server.url(p.relative_to(root).as_posix()): p for p in files}
        config = FileConfig.model_validate(
            {
                "feeds": [{"url": url} for url in urls],
                # One local host serves them all: let the batch use more than 2 connections.
                "fetch": {"per_host_concurrency": 16, "global_concurrency": 32},
            }
        )
        settings = Settings(
            file=config, env=Environment(), config_path=None, database_url=database_url
        )
        now = datetime.now(UTC)
        async with Poller(settings, engine) as poller:
            await poller.sync_config(now)
            summary = await poller.poll_all(now)

    assert summary.feeds == len(files)
    assert summary.fetched + summary.failed == len(files)
    assert summary.not_modified == 0

    with engine.connect() as conn:
        rows = conn.execute(
            select(
                feeds.c.url,
                feeds.c.last_error_kind,
                feeds.c.consecutive_failures,
                feeds.c.entry_count,
                feeds.c.enabled,
            )
        ).all()
        stored = conn.execute(select(func.count()).select_from(entries)).scalar_one()
    assert len(rows) == len(files)
    assert stored == summary.new_entries
    failed = [row for row in rows if row.last_error_kind is not None]
    assert len(failed) == summary.failed
    assert all(row.last_error_kind in ERROR_KINDS for row in failed)
    assert all(row.consecutive_failures == 1 and row.enabled for row in failed)

    # Each file ends where the parser alone says it should: stored with its entries, or a
    # parse error on record.
    mismatches = []
    for row in rows:
        expected = expected_entries(urls[row.url], row.url)
        if expected is None:
            outcome_ok = row.last_error_kind == "parse" and row.entry_count == 0
        else:
            outcome_ok = row.last_error_kind is None and row.entry_count == expected
        if not outcome_ok:
            mismatches.append((row.url, expected, row.last_error_kind, row.entry_count))
    assert mismatches == []
    assert summary.failed > 0, "the suite has documents that are not feeds"
    assert summary.new_entries > 1000
