"""Leader election: which one of several ``counterparty run`` replicas holds a platform's
receiving side (the Discord gateway, the Telegram poller).

Sending needs no leader (the outbox hands each row to one replica); receiving does: Telegram
answers a second ``getUpdates`` with 409 Conflict, and two Discord gateway sessions would both see
every slash command. :class:`LeaderLock` implements the ``UpdatesLock`` hook the platform services
take (``acquire() -> bool``, ``release()``):

* **PostgreSQL**: ``pg_try_advisory_lock`` on a dedicated connection kept open for as long as
  the lock is held. The server releases it the moment that connection ends, so a replica killed
  with ``kill -9`` hands the role over at the next retry of another replica.
* **SQLite**: a lease row ``leader:<name>`` in ``heartbeats`` (owner, ``beat_at``), renewed every
  third of the lease; a row not renewed for a whole lease is free for the taking.

While held, a keeper task checks the lock every third of the lease (PostgreSQL: the connection
still answers; SQLite: the row is still ours). When it is lost, :attr:`lost` is set and the loss
is logged; a service should then stop receiving.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, Engine, and_, delete, insert, or_, select, text, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from bot.storage.schema import heartbeats

log = logging.getLogger(__name__)

DEFAULT_LEASE = timedelta(seconds=30)
ROW_PREFIX = "leader:"


def advisory_key(name: str) -> int:
    """A stable signed 64-bit key for ``pg_try_advisory_lock`` (the same in every process)."""
    digest = hashlib.sha256(f"counterparty:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def exclusive_section(conn: Connection, name: str) -> None:
    """Make the caller's transaction the only one doing ``name`` (e.g. the start-up sync of the
    config file) until it ends, so replicas starting together do not insert the same rows.

    PostgreSQL: a transaction-level advisory lock (``pg_advisory_xact_lock``, released at commit
    or rollback). SQLite: nothing here; SQLite has one writer at a time, and a caller that reads
    before writing starts its transaction with a write (see ``bot.storage.feeds_repo``). It must
    work before the first migration, so it touches no table."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": advisory_key(name)})


def _utcnow() -> datetime:
    return datetime.now(UTC)


class LeaderLock:
    """One named leader role (e.g. ``"discord"``) contested by every replica on one database.

    ``owner`` names this process in the SQLite lease row; ``lease`` bounds how long a dead
    holder keeps the role on SQLite and how often the holder checks it still has it. ``clock``
    is for tests. Database work runs in worker threads, never on the event loop."""

    def __init__(
        self,
        engine: Engine,
        name: str,
        *,
        owner: str,
        lease: timedelta = DEFAULT_LEASE,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        if lease <= timedelta(0):
            raise ValueError("a leader lease must be positive")
        self.name = name
        self.owner = owner
        self.lease = lease
        self.lost = asyncio.Event()
        self._engine = engine
        self._clock = clock
        self._postgres = engine.dialect.name == "postgresql"
        self._conn: Connection | None = None
        self._keeper: asyncio.Task[None] | None = None
        self._held = False
        self._renewed_at: datetime | None = None

    @property
    def held(self) -> bool:
        return self._held

    @property
    def retry_interval(self) -> float:
        """Seconds between two tries of a replica waiting for the role (a third of the lease)."""
        return self.lease.total_seconds() / 3

    async def acquire(self) -> bool:
        """Take the role if it is free; ``False`` when another replica holds it (or the
        database cannot be reached right now: the caller tries again later)."""
        if self._held:
            return True
        try:
            got = await asyncio.to_thread(
                self._try_postgres if self._postgres else self._try_sqlite
            )
        except SQLAlchemyError:
            log.warning("leader %s: the database did not answer; will try again", self.name)
            log.debug("leader %s: acquire failed", self.name, exc_info=True)
            return False
        if got:
            self._held = True
            self.lost.clear()
            self._keeper = asyncio.create_task(self._keep(), name=f"leader-{self.name}")
            log.info("leader %s: this process (%s) holds the role", self.name, self.owner)
        return got

    async def release(self) -> None:
        """Give the role up (idempotent). Errors are logged: the lease or the closed connection
        frees the role anyway."""
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        if not self._held:
            return
        self._held = False
        try:
            await asyncio.to_thread(
                self._release_postgres if self._postgres else self._release_sqlite
            )
        except SQLAlchemyError:
            log.warning("leader %s: could not release cleanly", self.name, exc_info=True)

    async def wait_until_acquired(self, stop: asyncio.Event) -> bool:
        """Try every :attr:`retry_interval` until the role is ours (``True``) or ``stop`` is
        set (``False``)."""
        while not stop.is_set():
            if await self.acquire():
                return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.retry_interval)
        return False

    # -- keeping the role -------------------------------------------------------------------
    async def _keep(self) -> None:
        check = self._check_postgres if self._postgres else self._renew_sqlite
        while True:
            await asyncio.sleep(self.retry_interval)  # a period, not synchronisation
            try:
                still = await asyncio.to_thread(check)
            except SQLAlchemyError:
                log.warning("leader %s: could not confirm the role", self.name, exc_info=True)
                # SQLite: the lease still covers a short outage. PostgreSQL: the lock's session
                # is probably gone with its connection; take the lock again on a new one.
                still = self._lease_left() if not self._postgres else await self._retake()
            if not still:
                self._held = False
                log.error("leader %s: another process holds the role now", self.name)
                self._drop_connection()
                self.lost.set()
                return

    async def _retake(self) -> bool:
        """After the lock's connection failed: ``True`` once the lock is ours again on a new
        connection, ``False`` as soon as another replica turns out to hold it. While this process
        cannot reach the database it keeps the role and keeps trying (a replica that can reach
        it may take the role meanwhile; this process then learns so on its next try)."""
        self._drop_connection()
        while True:
            try:
                return await asyncio.to_thread(self._try_postgres)
            except SQLAlchemyError:
                log.warning("leader %s: database unreachable; trying again", self.name)
                await asyncio.sleep(self.retry_interval)  # a retry period

    # -- PostgreSQL: an advisory lock on a dedicated connection ------------------------------
    def _try_postgres(self) -> bool:
        conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            got = bool(
                conn.execute(
                    text("SELECT pg_try_advisory_lock(:key)"), {"key": advisory_key(self.name)}
                ).scalar_one()
            )
        except BaseException:
            conn.invalidate()
            conn.close()
            raise
        if got:
            self._conn = conn
        else:
            conn.close()
        return got

    def _check_postgres(self) -> bool:
        conn = self._conn
        if conn is None:
            return False
        held = conn.execute(
            text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND pid = pg_backend_pid()"
                " AND ((classid::bigint << 32) | objid::bigint) = (:key)::bigint"
            ),
            {"key": advisory_key(self.name)},
        ).scalar_one()
        return bool(held)

    def _release_postgres(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": advisory_key(self.name)})
        finally:
            conn.close()

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            # The session may be broken; never hand it back to the pool holding a lock.
            with contextlib.suppress(SQLAlchemyError):
                conn.invalidate()
            with contextlib.suppress(SQLAlchemyError):
                conn.close()

    # -- SQLite: a lease row in heartbeats ---------------------------------------------------
    @property
    def _row(self) -> str:
        return ROW_PREFIX + self.name

    def _try_sqlite(self) -> bool:
        now = self._clock()
        mine_or_free = or_(
            heartbeats.c.owner == self.owner, heartbeats.c.beat_at <= now - self.lease
        )
        with self._engine.begin() as conn:
            # Write first, so SQLite takes the write lock before reading (busy timeout applies).
            taken = conn.execute(
                update(heartbeats)
                .where(heartbeats.c.name == self._row, mine_or_free)
                .values(owner=self.owner, beat_at=now, info={"role": "leader"})
            ).rowcount
            if taken == 1:
                self._renewed_at = now
                return True
            exists = conn.execute(
                select(heartbeats.c.name).where(heartbeats.c.name == self._row)
            ).first()
            if exists is not None:
                return False
            try:
                with conn.begin_nested():
                    conn.execute(
                        insert(heartbeats).values(
                            name=self._row, owner=self.owner, beat_at=now, info={"role": "leader"}
                        )
                    )
            except IntegrityError:
                return False  # another replica inserted it first
        self._renewed_at = now
        return True

    def _renew_sqlite(self) -> bool:
        now = self._clock()
        with self._engine.begin() as conn:
            renewed = conn.execute(
                update(heartbeats)
                .where(and_(heartbeats.c.name == self._row, heartbeats.c.owner == self.owner))
                .values(beat_at=now)
            ).rowcount
        if renewed == 1:
            self._renewed_at = now
        return renewed == 1

    def _lease_left(self) -> bool:
        return self._renewed_at is not None and self._clock() - self._renewed_at < self.lease

    def _release_sqlite(self) -> None:
        with self._engine.begin() as conn:
            conn.execute(
                delete(heartbeats).where(
                    heartbeats.c.name == self._row, heartbeats.c.owner == self.owner
                )
            )
