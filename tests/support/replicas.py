"""Helpers for tests that run ``counterparty run`` as real subprocesses (replicas, crashes).

Sample feeds here are written for the tests; every item says it is test sample text.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, inspect, select

from bot.storage.schema import outbox
from tests.support.sample_feeds import SampleItem, rss_document

PLACES = [
    "Oslo",
    "Lima",
    "Accra",
    "Quito",
    "Hanoi",
    "Perth",
    "Tunis",
    "Dakar",
    "Riga",
    "Sofia",
    "Minsk",
    "Baku",
    "Yerevan",
    "Tbilisi",
    "Astana",
    "Bishkek",
    "Dushanbe",
    "Ashgabat",
    "Tashkent",
    "Ulaanbaatar",
    "Colombo",
    "Dhaka",
    "Kathmandu",
    "Thimphu",
    "Male",
]

# Two stories the packaged themes are known to match, and one that matches nothing.
_STORIES = (
    (
        "[Test sample] Oil prices jump and Russia gains export revenue as Hormuz shipping halts, "
        "traders in {place} say",
        "Test sample text: analysts in {place} said higher oil prices boost Russian oil export "
        "revenues.",
    ),
    (
        "[Test sample] Kremlin rejects the US ceasefire proposal as Witkoff arrives in Moscow "
        "from {place}",
        "Test sample text: the Kremlin said Putin would not accept the ceasefire terms proposed "
        "by Washington envoy Witkoff, officials in {place} reported.",
    ),
)
QUIET_TITLE = "[Test sample] Town library in {place} extends opening hours"


def item_marker(n: int) -> str:
    """Words that only feed ``n``'s items carry (``n`` below 10,000; fixed width, so no marker
    is a prefix of another)."""
    return f"{PLACES[n % len(PLACES)]} {n:04d}"


def sample_rss(n: int, now: datetime, *, quiet: bool = True) -> bytes:
    """Feed ``n``: one item the themes match (carrying :func:`item_marker`) and, with ``quiet``,
    one they do not."""
    place = item_marker(n)
    title_format, summary_format = _STORIES[n % 2]
    items = [
        SampleItem(
            title_format.format(place=place),
            summary_format.format(place=place),
            f"https://sample.example/{n}/m",
            f"sample-{n}-m",
        )
    ]
    if quiet:
        items.append(
            SampleItem(
                QUIET_TITLE.format(place=place),
                "Test sample text: nothing to see.",
                f"https://sample.example/{n}/q",
                f"sample-{n}-q",
            )
        )
    return rss_document(
        title=f"Test sample wire {n}",
        link=f"https://sample.example/{n}",
        description="test sample",
        items=items,
        published=now,
    )


def fanout_config(feed_urls: Iterable[str], channels: Iterable[str]) -> str:
    """Config text: a ``[[feeds]]`` table polled hourly for each URL, and an instant
    ``[[subscriptions]]`` table (up to 100 items) for each Discord channel."""
    feeds = "".join(f'[[feeds]]\nurl = "{url}"\ninterval = "1h"\n\n' for url in feed_urls)
    subscriptions = "".join(
        f'[[subscriptions]]\nplatform = "discord"\ntarget = "{channel}"\n'
        'cadence = "instant"\nmax_items = 100\n\n'
        for channel in channels
    )
    return feeds + subscriptions


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment without any bot token or COUNTERPARTY_* setting, plus
    ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DISCORD_TOKEN", "TELEGRAM_TOKEN") and not k.startswith("COUNTERPARTY_")
    }
    env.update(PYTHONUNBUFFERED="1", **extra)
    return env


async def start_run(
    cwd: Path,
    config: Path,
    db_url: str,
    env: dict[str, str],
    log: Path,
    *,
    own_group: bool = False,
) -> asyncio.subprocess.Process:
    """Start ``python -m bot --config CONFIG --db URL run`` with output appended to ``log``;
    with ``own_group``, in a process group of its own (like a shell job)."""
    with log.open("ab") as output:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            "--config",
            str(config),
            "--db",
            db_url,
            "run",
            stdout=output,
            stderr=output,
            env=env,
            cwd=cwd,
            process_group=0 if own_group else None,
        )


@asynccontextmanager
async def running(
    cwd: Path,
    config: Path,
    db_url: str,
    env: dict[str, str],
    log: Path,
    *,
    own_group: bool = False,
) -> AsyncIterator[asyncio.subprocess.Process]:
    """:func:`start_run`, killed (with its whole group under ``own_group``) if still alive when
    the block ends."""
    process = await start_run(cwd, config, db_url, env, log, own_group=own_group)
    try:
        yield process
    finally:
        if process.returncode is None:
            if own_group:
                os.killpg(process.pid, signal.SIGKILL)
            else:
                process.kill()
            await process.wait()


async def stop_all(processes: list[asyncio.subprocess.Process]) -> None:
    for process in processes:
        if process.returncode is None:
            process.kill()
    for process in processes:
        await process.wait()


def outbox_rows(db_url: str) -> list[Any]:
    """Every outbox row; none while the bot has not created its tables yet."""
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            if not inspect(conn).has_table(outbox.name):
                return []
            return list(conn.execute(select(outbox)).all())
    finally:
        engine.dispose()
