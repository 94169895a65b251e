"""Sub-commands of the feeds capability: ``poll`` and ``feeds``.

* ``counterparty poll --once [--json]``: fetch every configured feed once, print a summary; with
  ``--json`` the last line is one JSON object with the keys of :meth:`PollSummary.to_json`.
* ``counterparty poll``: keep polling due feeds every ``[fetch].tick`` until interrupted (the
  bot's ``run`` command does the same beside everything else).
* ``counterparty feeds``: every feed with its health.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from datetime import UTC, datetime
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy import Engine

from bot.feeds.pipeline import Poller, PollSummary
from bot.settings import Settings
from bot.storage import feeds_repo
from bot.storage.db import open_database
from bot.storage.feeds_repo import FeedHealth

log = logging.getLogger(__name__)


def register(commands: argparse._SubParsersAction[Any]) -> None:
    """Add this capability's sub-commands to the `counterparty` parser."""
    poll = commands.add_parser(
        "poll",
        help="fetch feeds and store new entries",
        description="Fetch the configured feeds and store new or changed entries.",
    )
    poll.add_argument("--once", action="store_true", help="poll every feed once, then exit")
    poll.add_argument(
        "--json", action="store_true", help="end with one JSON summary line (with --once)"
    )
    poll.set_defaults(handler=_poll_command)
    listing = commands.add_parser(
        "feeds", help="list feeds with their health", description="List feeds with their health."
    )
    listing.set_defaults(handler=_feeds_command)


def _now() -> datetime:
    return datetime.now(UTC)


def _summary_line(summary: PollSummary) -> str:
    return (
        f"{summary.feeds} feeds: {summary.fetched} fetched, {summary.not_modified} not modified, "
        f"{summary.failed} failed; {summary.new_entries} new and {summary.updated_entries} "
        "updated entries"
    )


def _open(settings: Settings) -> Engine:
    from bot.cli import UsageError
    from bot.storage.db import DatabaseUrlError

    try:
        return open_database(settings.database_url)
    except DatabaseUrlError as exc:
        raise UsageError(str(exc)) from None


def _poll_command(args: argparse.Namespace) -> int:
    from bot.cli import settings_from_args
    from bot.ops.logging import setup_logging

    settings = settings_from_args(args)
    setup_logging(settings)
    if not settings.feeds:
        log.warning("no [[feeds]] in the configuration; only feeds already stored are polled")
    engine = _open(settings)
    try:
        if args.once:
            summary = asyncio.run(_poll_once(settings, engine))
            print(_summary_line(summary))
            if args.json:
                print(json.dumps(summary.to_json()))
            return 0
        asyncio.run(_poll_forever(settings, engine))
        return 0
    finally:
        engine.dispose()


async def _poll_once(settings: Settings, engine: Engine) -> PollSummary:
    async with Poller(settings, engine) as poller:
        await poller.sync_config()
        return await poller.poll_all(_now())


async def _poll_forever(settings: Settings, engine: Engine) -> None:
    """A scheduler tick selects the due feeds; one tick at a time, missed ticks coalesce."""
    async with Poller(settings, engine) as poller:
        await poller.sync_config()
        stopped = asyncio.Event()

        async def tick() -> None:
            summary = await poller.poll_due(_now())
            if summary.feeds:
                print(_summary_line(summary), flush=True)

        scheduler = AsyncIOScheduler(timezone=UTC)
        scheduler.add_job(
            tick,
            "interval",
            seconds=settings.file.fetch.tick.total_seconds(),
            next_run_time=_now(),
            max_instances=1,
            coalesce=True,
        )
        scheduler.start()
        try:
            await stopped.wait()  # until Ctrl-C cancels the run
        finally:
            scheduler.shutdown(wait=False)


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment else "never"


def format_health(feed: FeedHealth) -> str:
    """One line per feed: state, name, entries, last success, next poll, last error."""
    if not feed.enabled:
        state = "disabled"
    elif feed.consecutive_failures:
        state = f"FAILING x{feed.consecutive_failures}"
    elif feed.last_success_at is None:
        state = "new"
    else:
        state = "ok"
    line = (
        f"[{state}] {feed.name or feed.title or feed.url} <{feed.url}> "
        f"entries={feed.entry_count} last_ok={_when(feed.last_success_at)} "
        f"next={_when(feed.next_poll_at)}"
    )
    if feed.last_error_kind:
        line += f" error={feed.last_error_kind}: {feed.last_error}"
    return line


def _feeds_command(args: argparse.Namespace) -> int:
    from bot.cli import settings_from_args

    settings = settings_from_args(args)
    engine = _open(settings)
    try:
        health = feeds_repo.list_feed_health(engine)
    finally:
        engine.dispose()
    if not health:
        print("no feeds stored yet: run `counterparty poll --once` first")
    for feed in health:
        print(format_health(feed))
    return 0
