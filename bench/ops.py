"""Benchmark: the cost of the ops layer on the hot paths, each against a baseline in the same run.

* **logging**: one INFO record with two arguments through ``setup_logging``'s redacting handler
  (two tokens plus a database password to redact), against the same record through a plain
  ``StreamHandler`` with the same formatter. Both write to an in-memory stream.
* **metrics**: ``metrics.feed_polled(ok=True)`` (a labelled counter increment), against calling
  an empty Python function with the same arguments.
* **migrate-db**: ``copy_database`` SQLite -> SQLite of a database with ``--entries`` entries
  (plus a match per entry), against reading the same rows (``SELECT *`` of both tables) alone.

    .venv/bin/python bench/ops.py [--seconds 2] [--entries 20000]
"""

from __future__ import annotations

import argparse
import io
import logging
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import insert, select

from bot.ops import metrics
from bot.ops.logging import TEXT_FORMAT, setup_logging
from bot.ops.transfer import copy_database
from bot.settings import load_settings
from bot.storage.db import make_engine, migrate
from bot.storage.schema import entries, feeds, matches

T0 = datetime(2026, 3, 6, tzinfo=UTC)


def per_call(function: Callable[[], None], seconds: float) -> float:
    """Nanoseconds per call, running ``function`` in batches for at least ``seconds``."""
    calls, batch = 0, 1000
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(batch):
            function()
        calls += batch
    return elapsed / calls * 1e9


def bench_logging(seconds: float, folder: Path) -> tuple[float, float]:
    config = folder / "feeds.toml"
    config.write_text('[bot]\nlog_level = "INFO"\n', encoding="utf-8")
    settings = load_settings(
        config,
        environ={
            "TELEGRAM_TOKEN": "7712345678:AAH-benchmark-telegram-token",
            "DISCORD_TOKEN": "MTIzNDU2Nzg5MDEyMzQ1Njc4.GhIjKl.benchmark-discord",
            "COUNTERPARTY_DATABASE_URL": "postgresql://bot:bench-pass@db/counterparty",
        },
    )
    log = logging.getLogger("bench.ops")
    url = "https://api.telegram.org/bot<redacted-anyway>/sendMessage"

    def emit() -> None:
        log.info("sent %d messages to %s", 3, url)

    plain = logging.StreamHandler(io.StringIO())
    plain.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.addHandler(plain)
    root.setLevel(logging.INFO)
    baseline = per_call(emit, seconds)
    root.removeHandler(plain)
    handler = setup_logging(settings, stream=io.StringIO())
    redacting = per_call(emit, seconds)
    root.removeHandler(handler)
    return baseline, redacting


def bench_metrics(seconds: float) -> tuple[float, float]:
    def empty(ok: bool, *, error_kind: str | None = None) -> None:
        return None

    baseline = per_call(lambda: empty(True), seconds)
    counted = per_call(lambda: metrics.feed_polled(True), seconds)
    return baseline, counted


def bench_migrate_db(folder: Path, count: int) -> tuple[float, float]:
    source = make_engine(f"sqlite:///{folder / 'source.db'}")
    migrate(source)
    with source.begin() as c:
        c.execute(insert(feeds).values(url="https://bench.example/rss", created_at=T0))
        c.execute(
            insert(entries),
            [
                {
                    "feed_id": 1,
                    "entry_key": f"guid-{n}",
                    "title": f"Benchmark item {n}",
                    "summary": "summary text " * 20,
                    "content_hash": f"{n:064x}",
                    "story_key": f"story-{n}",
                    "first_seen_at": T0,
                    "updated_at": T0,
                    "matched_at": T0,
                }
                for n in range(count)
            ],
        )
        c.execute(
            insert(matches),
            [
                {
                    "entry_id": n + 1,
                    "kind": "theme",
                    "ref_id": "putin-deal",
                    "score": 0.7,
                    "excerpt": "an excerpt " * 10,
                    "evidence": {"terms": ["deal"]},
                    "created_at": T0,
                }
                for n in range(count)
            ],
        )
    start = time.perf_counter()
    with source.connect() as c:
        for table in (entries, matches):
            for _ in c.execute(select(table)):
                pass
    read_only = time.perf_counter() - start
    target = make_engine(f"sqlite:///{folder / 'target.db'}")
    start = time.perf_counter()
    copy_database(source, target)
    copying = time.perf_counter() - start
    source.dispose()
    target.dispose()
    return read_only, copying


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--entries", type=int, default=20000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        plain, redacting = bench_logging(args.seconds, folder)
        print(
            f"logging: plain {plain:,.0f} ns/record, redacting {redacting:,.0f} ns/record, "
            f"ratio {redacting / plain:.2f}x"
        )
        empty, counted = bench_metrics(args.seconds)
        print(
            f"metrics: empty call {empty:,.0f} ns, feed_polled {counted:,.0f} ns, "
            f"ratio {counted / empty:.1f}x"
        )
        read_only, copying = bench_migrate_db(folder, args.entries)
        rows = 2 * args.entries
        print(
            f"migrate-db: {rows:,} rows; read only {read_only:.2f} s, copy (incl. migrating the "
            f"target) {copying:.2f} s = {rows / copying:,.0f} rows/s, "
            f"ratio {copying / read_only:.1f}x"
        )


if __name__ == "__main__":
    main()
