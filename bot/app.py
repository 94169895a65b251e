"""The composition root for ``counterparty run``: open everything, schedule the jobs, stop cleanly.

What runs (APScheduler 3.11 ``AsyncIOScheduler``, time zone UTC, in-memory jobs rebuilt at
every start; the database is the real schedule, so the jobs are short idempotent ticks):

========== ========================== =================================================
job        every                      calls
========== ========================== =================================================
poll       ``[fetch].tick``           :meth:`bot.feeds.pipeline.Poller.poll_due`, then
                                      (when something new was stored) match, digest, drain
match      ``MATCH_EVERY``            :func:`bot.matching.store.match_pending` (in a thread)
digest     ``DIGEST_EVERY``           :func:`bot.digest.service.run_due_digests` (thread)
drain      ``[delivery].drain_interval`` :meth:`bot.delivery.outbox.Outbox.drain`
house      ``HOUSEKEEPING_EVERY``     :func:`housekeeping` (old sent/failed rows)
heartbeat  ``HEARTBEAT_EVERY``        :func:`bot.ops.health.beat`
========== ========================== =================================================

Each step holds its own lock, so a scheduled run and the poll job's follow-up never overlap.

Start-up: migrate the database, sync ``[[feeds]]`` and ``[[subscriptions]]`` from the config,
then one round of poll (never-fetched feeds are due at once) -> match -> digest -> drain, which
also delivers every stored match a subscription has not received yet, whichever process stored
it. Then the jobs take over until SIGTERM or SIGINT.

Platforms: for each chat platform, ``build(settings, engine, catalog)`` from
``bot.delivery.<platform>.service`` returns a :class:`~bot.delivery.platform.PlatformService`
(or ``None`` when that platform is not configured) whose renderers and senders join the outbox
and whose ``start``/``stop`` frame the run. When no platform is configured (no token), the
console platform prints every digest to stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy import Engine, delete, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError

from bot.delivery.console import ConsoleRenderer, ConsoleSender
from bot.delivery.outbox import DeliveryPolicy, Outbox, pending_depth
from bot.delivery.platform import PlatformService, Renderer, by_platform
from bot.delivery.records import Sender
from bot.digest.service import run_due_digests
from bot.matching.catalog import Catalog, load_catalog
from bot.ops import metrics
from bot.ops.leader import LeaderLock, exclusive_section
from bot.settings import Settings
from bot.storage import subscriptions as subs_repo
from bot.storage.db import open_database
from bot.storage.schema import feeds, outbox, subscriptions

log = logging.getLogger(__name__)

MATCH_EVERY = timedelta(seconds=5)
MATCH_BATCH = 500
DIGEST_EVERY = timedelta(seconds=5)
HOUSEKEEPING_EVERY = timedelta(hours=1)
HEARTBEAT_EVERY = timedelta(seconds=30)
KEEP_DELIVERED = timedelta(days=30)
STOP_GRACE = 30.0
# A first console run also shows what was stored (e.g. by `poll --once`) this long before it.
CONSOLE_LOOKBACK = timedelta(hours=24)
# A start-up step the bot cannot do without (the config syncs) is tried again while the database
# is unreachable: after 1 s, then twice as long each time, at most this long apart.
STARTUP_RETRY_FIRST = 1.0
STARTUP_RETRY_MAX = 30.0

# Platform module per token; each exposes build(settings, engine, catalog).
PLATFORM_MODULES = {
    "discord": "bot.delivery.discord.service",
    "telegram": "bot.delivery.telegram.service",
}

# The keyword each platform's build() takes its leader lock by (bot.ops.leader): only the
# replica holding it receives slash commands / updates; every replica sends.
LEADER_KEYWORDS = {"discord": "gateway_lock", "telegram": "updates_lock"}

T = TypeVar("T")


def utcnow() -> datetime:
    return datetime.now(UTC)


def process_name() -> str:
    """This process in leases and heartbeats: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def housekeeping(engine: Engine, *, now: datetime, keep: timedelta = KEEP_DELIVERED) -> int:
    """Delete outbox rows sent or failed more than ``keep`` ago. ``digest_items`` stays (its
    ``outbox_id`` becomes NULL), so nothing is ever delivered twice. Returns rows deleted."""
    with engine.begin() as conn:
        result = conn.execute(
            delete(outbox).where(
                outbox.c.status.in_(["sent", "failed"]), outbox.c.created_at < now - keep
            )
        )
    return int(result.rowcount or 0)


# How the start-up message names each platform's subscriptions.
PLATFORM_LABELS = {
    "discord": "Discord",
    "discord-webhook": "Discord webhooks",
    "telegram": "Telegram",
}


def redacted_url(url: str) -> str:
    """The database URL as it may be shown: the password replaced by ``***``."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(unparseable database URL)"


def startup_message(
    *,
    feed_count: int | None,
    database_url: str,
    subscriptions: Mapping[str, int] | None,
    console: bool,
) -> str:
    """The two lines ``counterparty run`` logs once it is running, for someone new to it:
    what it polls, where it stores, where digests go, how to stop it. ``None`` counts (the
    database did not answer the count) are left out."""
    if console:
        where = "digests are printed here (no Discord or Telegram token is set)"
    elif subscriptions is None:
        where = "digests go to the subscriptions in the database"
    else:
        parts = [
            f"{PLATFORM_LABELS[platform]} ({count} subscription{'' if count == 1 else 's'})"
            for platform, count in sorted(subscriptions.items())
            if platform in PLATFORM_LABELS
        ]
        where = "digests go to " + (", ".join(parts) or "no subscription yet")
    if feed_count is None:
        feeds_text = "the enabled feeds"
    else:
        feeds_text = f"{feed_count} feed{'' if feed_count == 1 else 's'}"
    return (
        f"counterparty is running: polling {feeds_text}, database {redacted_url(database_url)};"
        f" {where}.\nPress Ctrl-C (or send SIGTERM) to stop."
    )


def count_for_startup(engine: Engine) -> tuple[int, dict[str, int]]:
    """Enabled feeds, and active (unpaused) subscriptions per platform."""
    with engine.connect() as conn:
        feed_count = conn.execute(
            select(func.count()).select_from(feeds).where(feeds.c.enabled.is_(True))
        ).scalar_one()
        rows = conn.execute(
            select(subscriptions.c.platform, func.count())
            .where(subscriptions.c.paused.is_(False))
            .group_by(subscriptions.c.platform)
        ).all()
    return int(feed_count), {str(platform): int(count) for platform, count in rows}


def build_platform_services(
    settings: Settings, engine: Engine, catalog: Catalog
) -> list[PlatformService]:
    """The service of every platform that is configured.

    Each platform's ``build`` decides (it returns ``None`` when there is nothing to do: e.g.
    Discord without a token but with webhook subscriptions still builds a webhook-only service).
    A platform module that is missing is an error in the log only when its token is set."""
    tokens = {"discord": settings.env.discord_token, "telegram": settings.env.telegram_token}
    services: list[PlatformService] = []
    for platform, module_name in PLATFORM_MODULES.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            if tokens.get(platform) is not None:
                log.error("%s token is set, but this build has no %s support", platform, platform)
            continue
        extra: dict[str, Any] = {}
        keyword = LEADER_KEYWORDS.get(platform)
        if keyword and keyword in inspect.signature(module.build).parameters:
            extra[keyword] = LeaderLock(
                engine, platform, owner=process_name(), lease=settings.file.bot.leader_lease
            )
        service = module.build(settings, engine, catalog, **extra)
        if service is not None:
            services.append(service)
    return services


@dataclass(slots=True)
class App:
    """One running bot: the engine, the catalog, the platforms and the job steps."""

    settings: Settings
    engine: Engine
    catalog: Catalog
    services: Sequence[PlatformService] = ()
    console: bool = False
    owner: str = field(default_factory=process_name)
    renderers: dict[str, Renderer] = field(init=False)
    outbox: Outbox = field(init=False)
    _poller: Any = field(init=False, default=None)
    _matcher: Any = field(init=False, default=None)
    _locks: dict[str, asyncio.Lock] = field(init=False)
    _stopping: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        renderers: list[Renderer] = []
        senders: list[Sender] = []
        if self.console:
            renderers.append(ConsoleRenderer())
            senders.append(ConsoleSender())
        for service in self.services:
            renderers.extend(service.renderers)
            senders.extend(service.senders)
        self.renderers = dict(by_platform(renderers))
        self.outbox = Outbox(
            self.engine,
            senders=by_platform(senders),
            policy=DeliveryPolicy.from_settings(self.settings.file.delivery),
            owner=self.owner,
        )
        self._locks = {name: asyncio.Lock() for name in ("poll", "match", "digest", "drain")}

    async def _step(self, name: str, work: Callable[[], Awaitable[T]]) -> T:
        async with self._locks[name]:
            return await work()

    # -- the steps (each idempotent) ------------------------------------------------------------
    async def poll(self) -> None:
        summary = await self._step("poll", lambda: self._poller.poll_due(utcnow()))
        if summary.new_entries or summary.updated_entries:
            await self.match()
            await self.digest()
            await self.drain()

    async def match(self) -> int:
        from bot.matching.store import match_pending

        def work() -> Awaitable[int]:
            return asyncio.to_thread(
                match_pending, self.engine, self._matcher, now=utcnow(), limit=MATCH_BATCH
            )

        # Batch after batch until the backlog is gone (a first start may find thousands of
        # entries); the lock is taken per batch so other steps can run in between.
        total = 0
        while True:
            count = await self._step("match", work)
            total += count
            if count < MATCH_BATCH or self._stopping:
                break
        if total:
            log.info("matched %d entries", total)
        return total

    async def digest(self) -> int:
        def work() -> Awaitable[Any]:
            return asyncio.to_thread(
                run_due_digests,
                self.engine,
                catalog=self.catalog,
                renderers=self.renderers,
                now=utcnow(),
            )

        summary = await self._step("digest", work)
        if summary.digests:
            log.info("enqueued %d digests (%d messages)", summary.digests, summary.messages)
        return int(summary.digests)

    async def drain(self) -> None:
        summary = await self._step("drain", lambda: self.outbox.drain(now=utcnow()))
        metrics.set_outbox_depth(await asyncio.to_thread(pending_depth, self.engine))
        if summary.sent or summary.failed or summary.paused:
            log.info(
                "delivery: %d sent, %d retried, %d paused, %d failed",
                summary.sent,
                summary.retried,
                summary.paused,
                summary.failed,
            )

    async def heartbeat(self) -> None:
        from bot.ops.health import beat

        await asyncio.to_thread(beat, self.engine, owner=self.owner, now=utcnow())

    async def housekeeping(self) -> None:
        deleted = await asyncio.to_thread(housekeeping, self.engine, now=utcnow())
        if deleted:
            log.info("housekeeping: deleted %d old outbox rows", deleted)

    # -- life cycle -----------------------------------------------------------------------------
    def sync_subscriptions(self) -> None:
        with self.engine.begin() as conn:
            # Replicas starting together would otherwise insert the same subscriptions.
            exclusive_section(conn, "config-sync:subscriptions")
            subs_repo.sync_from_config(conn, self.settings.subscriptions, now=utcnow())
            now = utcnow()
            subs_repo.ensure_console(
                conn, active=self.console, now=now, since=now - CONSOLE_LOOKBACK
            )

    def _schedule(self, scheduler: AsyncIOScheduler) -> None:
        jobs: list[tuple[str, Callable[[], Awaitable[Any]], timedelta]] = [
            ("poll", self.poll, self.settings.file.fetch.tick),
            ("match", self.match, MATCH_EVERY),
            ("digest", self.digest, DIGEST_EVERY),
            ("drain", self.drain, self.settings.file.delivery.drain_interval),
            ("housekeeping", self.housekeeping, HOUSEKEEPING_EVERY),
            ("heartbeat", self.heartbeat, HEARTBEAT_EVERY),
        ]
        for name, work, every in jobs:
            scheduler.add_job(
                _logged(name, work),
                "interval",
                seconds=every.total_seconds(),
                id=name,
                name=name,
                coalesce=True,
                max_instances=1,
                misfire_grace_time=max(int(every.total_seconds()), 1),
                replace_existing=True,
            )

    async def run(self, stop: asyncio.Event) -> None:
        """Start everything, run until ``stop`` is set, then stop everything."""
        # Raises OSError when the address is taken: a clear start-up failure, not a silent one.
        metrics_server = await asyncio.to_thread(metrics.serve, self.settings)
        if metrics_server is not None:
            host = self.settings.file.metrics.host
            log.info("metrics at http://%s:%d/metrics", host, metrics_server.port)
        try:
            await self._run(stop)
        finally:
            if metrics_server is not None:
                await asyncio.to_thread(metrics_server.close)

    async def _run(self, stop: asyncio.Event) -> None:
        from bot.feeds.pipeline import Poller
        from bot.matching.matcher import Matcher

        self._matcher = Matcher(self.catalog)
        # After the migrations, no start-up step may end the process on a database outage: the
        # config syncs wait for the database, the rest log and go on (the jobs catch up).
        subscriptions_synced = await _until_done(
            "subscriptions sync", lambda: asyncio.to_thread(self.sync_subscriptions), stop
        )
        if not subscriptions_synced:
            return
        async with Poller(self.settings, self.engine, owner=self.owner) as poller:
            self._poller = poller
            if not await _until_done("feeds sync", poller.sync_config, stop):
                self._poller = None
                return
            started: list[PlatformService] = []
            try:
                for service in self.services:
                    await service.start()
                    started.append(service)
                await _logged("heartbeat", self.heartbeat)()
                # Start-up round: never-fetched feeds, then everything stored but undelivered.
                await _logged("poll", self._poll_only)()
                await _logged("match", self.match)()
                await _logged("digest", self.digest)()
                await _logged("drain", self.drain)()
                scheduler = AsyncIOScheduler(timezone=UTC)
                self._schedule(scheduler)
                scheduler.start()
                feed_count: int | None = None
                per_platform: dict[str, int] | None = None
                try:
                    feed_count, per_platform = await asyncio.to_thread(
                        count_for_startup, self.engine
                    )
                except SQLAlchemyError:
                    # Only the message's numbers are missing; the jobs are running already.
                    log.warning(
                        "could not count feeds and subscriptions for the start-up message",
                        exc_info=True,
                    )
                log.info(
                    "%s",
                    startup_message(
                        feed_count=feed_count,
                        database_url=self.settings.database_url,
                        subscriptions=per_platform,
                        console=self.console,
                    ),
                )
                try:
                    await stop.wait()
                finally:
                    log.info("stopping")
                    self._stopping = True
                    scheduler.shutdown(wait=False)
                    await self._wait_for_steps()
            finally:
                for service in reversed(started):
                    try:
                        await service.stop()
                    except Exception:
                        log.exception("platform service %s did not stop cleanly", service.name)
        self._poller = None

    async def _poll_only(self) -> None:
        await self._step("poll", lambda: self._poller.poll_due(utcnow()))

    async def _wait_for_steps(self) -> None:
        """Let a running step finish (it is short) so nothing is cut half-way."""

        async def all_locks() -> None:
            for lock in self._locks.values():
                async with lock:
                    pass

        try:
            await asyncio.wait_for(all_locks(), timeout=STOP_GRACE)
        except TimeoutError:
            log.warning("a job was still running after %.0f s; stopping anyway", STOP_GRACE)


async def _until_done(name: str, work: Callable[[], Awaitable[Any]], stop: asyncio.Event) -> bool:
    """Run a start-up step the bot needs, again while the database is unreachable
    (``OperationalError``), waiting longer each time. ``False`` when ``stop`` was set first."""
    delay = STARTUP_RETRY_FIRST
    while not stop.is_set():
        try:
            await work()
        except OperationalError:
            log.warning(
                "start-up step %s: the database did not answer; trying again in %.0f s",
                name,
                delay,
                exc_info=True,
            )
        else:
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        delay = min(delay * 2, STARTUP_RETRY_MAX)
    return False


def _logged(name: str, func: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[None]]:
    """Wrap a job so one failed run is logged with its traceback and the next run still
    happens (the scheduler would otherwise only log it without context)."""

    async def job() -> None:
        try:
            await func()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("job %s failed; it runs again at its next tick", name)

    job.__name__ = f"job_{name}"
    return job


async def run(
    settings: Settings, *, catalog: Catalog | None = None, stop: asyncio.Event | None = None
) -> int:
    """``counterparty run``: the whole bot until SIGTERM/SIGINT (or ``stop``). Returns 0.

    ``catalog`` defaults to the packaged theme file (or ``[bot].themes_file``); the CLI loads it
    first so a broken theme file is a clear usage error, not a traceback."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            # Not available off the main thread or on Windows; the caller's ``stop`` still works.
            loop.add_signal_handler(sig, stop.set)
            handled.append(sig)
    engine = await asyncio.to_thread(open_database, settings.database_url)
    try:
        if catalog is None:
            themes_file = settings.file.bot.themes_file
            catalog = load_catalog(settings.resolve(themes_file) if themes_file else None)
        services = build_platform_services(settings, engine, catalog)
        app = App(settings, engine, catalog, services=services, console=not services)
        await app.run(stop)
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
        engine.dispose()
    return 0
