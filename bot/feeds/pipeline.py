"""The poll service: claim due feeds, fetch them, parse off the event loop, store what is new.

:class:`Poller` is the one object the rest of the bot uses::

    async with Poller(settings, engine) as poller:
        await poller.sync_config()            # [[feeds]] from the settings into the feeds table
        summary = await poller.poll_due(now)  # what a scheduler tick calls
        summary = await poller.poll_all(now)  # `counterparty poll --once`

Division of work: :mod:`bot.feeds.fetch` does HTTP, :mod:`bot.feeds.parse` runs in a worker
process pool (feedparser is pure Python and slow on big feeds; in a process it never blocks the
loop), :mod:`bot.feeds.schedule` decides when to come back, and
:mod:`bot.storage.feeds_repo` does the SQL in a worker thread. Every step is idempotent, so
re-running a poll after a crash stores nothing twice.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import gc
import hashlib
import logging
import multiprocessing
import os
import random
import select
import signal
import threading
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

import httpx
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from bot.feeds.fetch import Fetcher
from bot.feeds.parse import FeedParseError, parse_feed
from bot.feeds.records import Fetched, FetchFailed, NotModified, ParsedFeed
from bot.feeds.schedule import Limits, next_poll_after_failure, next_poll_after_success
from bot.ops import metrics
from bot.settings import Settings
from bot.storage import feeds_repo
from bot.storage.feeds_repo import ConfiguredFeed, FeedState, NotModifiedRecord, SyncResult

log = logging.getLogger(__name__)

# Unchanged feeds are recorded this many at a time: one transaction instead of one per 304.
_BATCH = 256


@dataclass(frozen=True, slots=True)
class PollSummary:
    """What one poll run did. ``to_json()`` has exactly the keys ``poll --json`` promises."""

    feeds: int = 0
    fetched: int = 0
    not_modified: int = 0
    failed: int = 0
    new_entries: int = 0
    updated_entries: int = 0
    unchanged: int = 0
    """Fetched with a 200 whose body hash was the stored one (counted in ``fetched`` too)."""

    def to_json(self) -> dict[str, int]:
        return {
            "feeds": self.feeds,
            "fetched": self.fetched,
            "not_modified": self.not_modified,
            "failed": self.failed,
            "new_entries": self.new_entries,
            "updated_entries": self.updated_entries,
        }

    def __add__(self, other: PollSummary) -> PollSummary:
        return PollSummary(
            feeds=self.feeds + other.feeds,
            fetched=self.fetched + other.fetched,
            not_modified=self.not_modified + other.not_modified,
            failed=self.failed + other.failed,
            new_entries=self.new_entries + other.new_entries,
            updated_entries=self.updated_entries + other.updated_entries,
            unchanged=self.unchanged + other.unchanged,
        )


_FAILED = PollSummary(feeds=1, failed=1)
_NOT_MODIFIED = PollSummary(feeds=1, not_modified=1)


def _parse_job(body: bytes, url: str, content_type: str | None) -> ParsedFeed:
    """Runs in a worker process (a module-level function, so it pickles)."""
    return parse_feed(body, url=url, content_type=content_type)


def _hex_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def _exit_with(bot_pid: int) -> None:
    """Worker initializer: end this worker when the bot process ends, even by SIGKILL.

    Workers are children of the forkserver, not of the bot, and they keep the forkserver alive,
    so without this a killed bot would leave them behind.

    Workers also ignore SIGINT: Ctrl-C in a terminal reaches the whole process group, and a
    worker would otherwise die with a KeyboardInterrupt traceback while the bot shuts the pool
    down in order anyway."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        try:
            handle = os.pidfd_open(bot_pid)
        except (AttributeError, OSError):  # not Linux >= 5.3: poll instead
            while True:
                time.sleep(1.0)
                try:
                    os.kill(bot_pid, 0)
                except ProcessLookupError:
                    os._exit(0)
                except PermissionError:
                    continue
        select.select([handle], [], [])  # readable once the process has exited
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-bot", daemon=True).start()


def _pool_context() -> Any:
    # forkserver: the bot has threads (DB, executors) by the time the pool starts, and forking a
    # threaded process is unsafe; preloading the parser makes each worker start fast.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["bot.feeds.parse"])
    return context


class Poller:
    """See the module docstring. ``transport`` replaces httpx's network transport (tests only);
    ``rng`` draws the jitter (seed it for reproducible schedules)."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        *,
        owner: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._settings = settings
        self._fetch = settings.file.fetch
        self._engine = engine
        self._owner = owner or f"poller-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._transport = transport
        self._rng = rng or random.Random()
        self._limits = Limits(
            min_interval=self._fetch.min_interval,
            max_interval=self._fetch.max_interval,
            max_backoff=self._fetch.max_backoff,
            jitter=self._fetch.jitter,
        )
        # A poll's lease outlives the slowest possible fetch plus parse and store.
        self._lease = self._fetch.lease or self._fetch.deadline * 2 + timedelta(minutes=2)
        self._fetcher: Fetcher | None = None
        self._pool: ProcessPoolExecutor | None = None
        # One writer at a time from this process: SQLite serialises writers anyway, and waiting
        # here is cheaper than waiting on the busy timeout.
        self._write_lock = asyncio.Lock()
        self._unchanged: list[NotModifiedRecord] = []

    async def __aenter__(self) -> Poller:
        self._fetcher = Fetcher(
            self._fetch, contact=self._settings.file.bot.contact, transport=self._transport
        )
        self._pool = self._new_pool()
        # Start the workers now, in a thread: starting processes blocks, and the event loop must
        # not wait for it (the first parse would otherwise stall the loop for a few 100 ms).
        await asyncio.to_thread(self._start_workers, self._pool)
        # What is alive after start-up (modules, settings, engine, schema) lives as long as the
        # process. Freezing it keeps the garbage collector's full collections from walking it
        # again and again during polls: those walks were the event loop's longest stalls. No
        # gc.collect() first: that full collection itself held the loop for ~50 ms, and the
        # little start-up garbage it would free is not worth a stall.
        gc.freeze()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._fetcher is not None:
            await self._fetcher.aclose()
            self._fetcher = None
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)

    def _workers(self) -> int:
        return self._fetch.parse_workers or os.cpu_count() or 1

    def _start_workers(self, pool: ProcessPoolExecutor) -> None:
        for future in [pool.submit(os.getpid) for _ in range(self._workers())]:
            future.result()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self._workers(),
            mp_context=_pool_context(),
            initializer=_exit_with,
            initargs=(os.getpid(),),
        )

    # -- public operations ----------------------------------------------------------------------
    async def sync_config(self, now: datetime | None = None) -> SyncResult:
        """Upsert ``[[feeds]]`` into the feeds table; feeds gone from the file are disabled."""
        moment = now or datetime.now(UTC)
        configured = [ConfiguredFeed(f.url, f.name, f.interval) for f in self._settings.feeds]
        async with self._write_lock:
            result = await asyncio.to_thread(
                feeds_repo.sync_config_feeds, self._engine, configured, moment
            )
        log.info(
            "feeds synced from config: %d added, %d updated, %d disabled",
            result.added,
            result.updated,
            result.disabled,
        )
        return result

    async def poll_due(self, now: datetime) -> PollSummary:
        """Fetch every enabled feed whose ``next_poll_at`` has come (never-polled feeds at once)."""
        return await self._poll(now, due_only=True)

    async def poll_all(self, now: datetime) -> PollSummary:
        """Fetch every enabled feed once, due or not (``poll --once``)."""
        return await self._poll(now, due_only=False)

    # -- the work ---------------------------------------------------------------------------
    async def _poll(self, now: datetime, *, due_only: bool) -> PollSummary:
        if self._fetcher is None:
            raise RuntimeError("use the Poller as `async with Poller(...) as poller`")
        workers = 2 * self._fetch.global_concurrency
        # Due feeds are claimed a chunk at a time (one chunk per worker set), and claimed again
        # while due work is left, so replicas ticking at once split a large due set instead of
        # the first one leasing all of it. Each chunk has an owner of its own: a new claim never
        # re-takes a feed this poll still holds (e.g. a 304 not yet written in its batch).
        # `poll --once` (not due_only) takes every feed in one claim: a second claim would hand
        # out again the feeds this run already fetched.
        chunk = workers if due_only else None
        held: dict[str, list[int]] = {}
        queue: collections.deque[FeedState] = collections.deque()
        claim_lock = asyncio.Lock()
        exhausted = False

        async def next_feed() -> FeedState | None:
            nonlocal exhausted
            async with claim_lock:
                if not queue and not exhausted:
                    # Until this claim succeeds: a claim that fails (database trouble) ends
                    # the claiming; the feeds already claimed are still finished.
                    exhausted = True
                    owner = f"{self._owner}/{len(held)}"
                    batch = await asyncio.to_thread(
                        feeds_repo.claim_feeds,
                        self._engine,
                        now=now,
                        owner=owner,
                        lease=self._lease,
                        due_only=due_only,
                        limit=chunk,
                    )
                    held[owner] = [state.id for state in batch]
                    queue.extend(batch)
                    exhausted = not batch or chunk is None
                return queue.popleft() if queue else None

        async def worker() -> PollSummary:
            # A fixed set of workers take feeds one by one, instead of one task per feed:
            # starting thousands of tasks at once would itself stall the event loop.
            total = PollSummary()
            while (state := await next_feed()) is not None:
                total += await self._poll_one(state, now)
            return total

        try:
            # Every worker runs to its end even when one fails, so no fetch outlives the poll.
            results = await asyncio.gather(
                *(worker() for _ in range(workers)), return_exceptions=True
            )
            await self._flush()
        finally:
            # Leases are released by each record_* call; this only matters after a cancellation
            # or a database error, and never touches another owner's lease.
            for owner, ids in held.items():
                if ids:
                    await asyncio.to_thread(feeds_repo.release_feeds, self._engine, ids, owner)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        if not any(held.values()):
            return PollSummary()
        total = sum((r for r in results if isinstance(r, PollSummary)), PollSummary())
        log.info("poll: %s", total.to_json())
        return total

    async def _poll_one(self, state: FeedState, now: datetime) -> PollSummary:
        assert self._fetcher is not None
        try:
            result = await self._fetcher.fetch(
                state.url,
                now=now,
                etag=state.etag,
                last_modified=state.last_modified,
                # Feeds added by chat command may only reach public addresses (SSRF guard).
                public_only=state.origin == "command"
                and not self._fetch.allow_private_addresses_from_commands,
            )
            if isinstance(result, FetchFailed):
                await self._fail(state, now, result)
                return _FAILED
            if isinstance(result, NotModified):
                await self._not_modified(state, now, result.status, result, result.permanent_url)
                return _NOT_MODIFIED
            return await self._store(state, now, result)
        except SQLAlchemyError:
            log.exception("feed %s: could not record the poll in the database", state.url)
            metrics.feed_polled(False, error_kind="database")
            return _FAILED

    def _interval(self, state: FeedState) -> timedelta:
        return state.interval or self._fetch.default_interval

    async def _write(self, function: Any, /, *args: Any, **kwargs: Any) -> Any:
        async with self._write_lock:
            return await asyncio.to_thread(function, self._engine, *args, **kwargs)

    async def _fail(self, state: FeedState, now: datetime, failure: FetchFailed) -> None:
        failures = state.consecutive_failures + 1
        next_at = next_poll_after_failure(
            now=now,
            failures=failures,
            interval=self._interval(state),
            limits=self._limits,
            retry_after=failure.hints.retry_after,
            jitter_fraction=self._rng.random(),
        )
        log.warning(
            "feed %s failed (%s, %d in a row): %s; next try %s",
            state.url,
            failure.kind,
            failures,
            failure.message,
            next_at.isoformat(timespec="seconds"),
        )
        await self._write(
            feeds_repo.record_failure,
            state.id,
            now=now,
            kind=failure.kind,
            message=failure.message,
            status=failure.status,
            next_poll_at=next_at,
        )
        metrics.feed_polled(False, error_kind=failure.kind)  # after the write: counted once

    def _next_success(self, state: FeedState, now: datetime, max_age: Any, ttl: Any) -> datetime:
        return next_poll_after_success(
            url=state.config_url or state.url,
            now=now,
            interval=self._interval(state),
            limits=self._limits,
            max_age=max_age,
            ttl=ttl,
            jitter_fraction=self._rng.random(),
        )

    async def _not_modified(
        self,
        state: FeedState,
        now: datetime,
        status: int,
        result: Fetched | NotModified,
        permanent_url: str | None,
    ) -> None:
        """Queue the healthy-but-unchanged record; written in batches (see ``_flush``)."""
        metrics.feed_polled(True)
        self._unchanged.append(
            NotModifiedRecord(
                feed_id=state.id,
                now=now,
                status=status,
                next_poll_at=self._next_success(state, now, result.hints.max_age, None),
                permanent_url=permanent_url,
                etag=result.etag,
                last_modified=result.last_modified,
            )
        )
        if len(self._unchanged) >= _BATCH:
            await self._flush()

    async def _flush(self) -> None:
        batch, self._unchanged = self._unchanged, []
        if batch:
            await self._write(feeds_repo.record_not_modified_many, batch)

    async def _store(self, state: FeedState, now: datetime, fetched: Fetched) -> PollSummary:
        # In a thread: hashlib lets go of the GIL on big buffers, so hashing a 1 MB feed runs
        # beside the loop instead of holding it for milliseconds.
        body_hash = await asyncio.to_thread(_hex_digest, fetched.body)
        if body_hash == state.body_hash:
            # Same bytes as last time (a server without validators): nothing to parse.
            await self._not_modified(state, now, fetched.status, fetched, fetched.permanent_url)
            return PollSummary(feeds=1, fetched=1, unchanged=1)
        try:
            parsed = await self._parse(fetched)
        except FeedParseError as exc:
            await self._fail(state, now, FetchFailed("parse", str(exc), fetched.status))
            return _FAILED
        if parsed.warning:
            log.info("feed %s parsed with a warning: %s", state.url, parsed.warning)
        stored = await self._write(
            feeds_repo.store_entries,
            state.id,
            parsed,
            now=now,
            status=fetched.status,
            next_poll_at=self._next_success(state, now, fetched.hints.max_age, parsed.ttl),
            body_hash=body_hash,
            etag=fetched.etag,
            last_modified=fetched.last_modified,
            permanent_url=fetched.permanent_url,
            baseline=not state.baseline_done,
            baseline_window=self._fetch.baseline_window,
            max_updates=self._fetch.max_updates_per_entry,
        )
        metrics.feed_polled(True)
        return PollSummary(
            feeds=1, fetched=1, new_entries=stored.new, updated_entries=stored.updated
        )

    async def _parse(self, fetched: Fetched) -> ParsedFeed:
        """Parse in the worker pool. When the pool breaks (a worker died), the pool is replaced
        and the document tried once more, so one pathological document only fails its own
        feed, not every feed that was waiting in the same pool."""
        job = functools.partial(_parse_job, fetched.body, fetched.final_url, fetched.content_type)
        for attempt in (1, 2):
            pool = self._pool
            assert pool is not None
            try:
                return await asyncio.get_running_loop().run_in_executor(pool, job)
            except FeedParseError:
                raise
            except BrokenProcessPool as exc:
                if self._pool is pool:
                    log.error("the parser pool broke; starting a new one")
                    self._pool = self._new_pool()
                    await asyncio.to_thread(pool.shutdown, wait=False, cancel_futures=True)
                    await asyncio.to_thread(self._start_workers, self._pool)
                if attempt == 2:
                    raise FeedParseError(
                        f"the parser process died on this document: {exc}"
                    ) from exc
            except Exception as exc:
                # A bug in normalising one document must fail that feed, not the whole poll; the
                # traceback (from the worker) goes to the log.
                log.exception("feed document from %s could not be normalised", fetched.final_url)
                raise FeedParseError(f"unexpected {type(exc).__name__} while parsing") from exc
        raise AssertionError("unreachable")  # pragma: no cover
