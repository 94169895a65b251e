"""Start-up after the migrations survives a database outage.

``counterparty run`` (:class:`bot.app.App`, in this process) on a database that stops answering
right after the migrations: the config syncs wait for it and are tried again, the start-up count
logs and goes on, and the bot reaches its running state; asked to stop during the outage, it
returns cleanly instead of raising. The outage is played at the driver boundary: every statement
fails with the driver's own ``OperationalError`` while it lasts.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, select

import bot.app as app_module
from bot.app import App
from bot.matching.catalog import load_catalog
from bot.settings import Environment, FileConfig, Settings
from bot.storage.db import open_database
from bot.storage.schema import subscriptions
from tests.support.waiting import until

RUNNING = "counterparty is running"


class Outage:
    """Makes the engine's statements fail like an unreachable database: every statement while
    ``down`` is set, and the next ``count_failures`` start-up feed counts."""

    def __init__(self, engine: Engine) -> None:
        self.down = False
        self.failed = 0
        self.count_failures = 0
        event.listen(engine, "before_cursor_execute", self._before)

    def _before(self, *args: Any) -> None:
        statement = str(args[2])
        counting = "count(*)" in statement and "FROM feeds" in statement
        if counting and self.count_failures:
            self.count_failures -= 1
            self.failed += 1
            raise sqlite3.OperationalError("unable to open database file")
        if self.down:
            self.failed += 1
            if self.failed >= 3:
                self.down = False  # the database is back after three failed statements
            raise sqlite3.OperationalError("database is locked")


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = open_database(f"sqlite:///{tmp_path / 'counterparty.db'}")
    yield engine
    engine.dispose()


def settings_for(engine: Engine) -> Settings:
    return Settings(
        file=FileConfig.model_validate({}),
        env=Environment(),
        config_path=None,
        database_url=str(engine.url),
    )


def logged(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return any(text in record.getMessage() for record in caplog.records)


async def test_outage_right_after_migrations_is_waited_out_not_fatal(
    engine: Engine, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app_module, "STARTUP_RETRY_FIRST", 0.05)
    caplog.set_level(logging.INFO, logger="bot")
    outage = Outage(engine)
    outage.down = True
    outage.count_failures = 1
    app = App(settings_for(engine), engine, load_catalog(None), console=True)
    stop = asyncio.Event()
    running = asyncio.create_task(app.run(stop))
    try:
        await until(lambda: logged(caplog, RUNNING) or running.done(), "the running state", 30)
        assert not running.done(), "run ended during the outage"
    finally:
        stop.set()
        await asyncio.wait_for(running, 30)
    assert running.result() is None  # stopped cleanly: no exception escaped
    assert logged(caplog, "start-up step subscriptions sync: the database did not answer")
    assert logged(caplog, "could not count feeds and subscriptions")
    assert outage.failed == 4  # three statements during the outage, one start-up count
    with engine.connect() as conn:
        # The subscriptions sync went through once the database was back.
        platforms = conn.execute(select(subscriptions.c.platform)).scalars().all()
    assert platforms == ["console"]


async def test_stop_during_a_start_up_outage_returns_cleanly(
    engine: Engine, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app_module, "STARTUP_RETRY_FIRST", 0.05)
    caplog.set_level(logging.INFO, logger="bot")
    outage = Outage(engine)
    outage.down = True
    outage.failed = -(10**9)  # the outage outlasts the test
    app = App(settings_for(engine), engine, load_catalog(None), console=True)
    stop = asyncio.Event()
    running = asyncio.create_task(app.run(stop))
    await until(
        lambda: logged(caplog, "trying again") or running.done(), "a retried start-up step", 30
    )
    stop.set()
    await asyncio.wait_for(running, 30)
    assert running.result() is None
    assert not logged(caplog, RUNNING)
