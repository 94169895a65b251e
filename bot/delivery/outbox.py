"""The outbox: every post is a row before it is sent, and is marked sent only after the platform
answered.

Two halves:

* :func:`enqueue_digest` writes a rendered digest's messages **and** the ``digest_items`` rows
  that mark its entries as delivered to the subscription, in the caller's transaction. Either
  both exist or neither: a crash cannot lose a digest or compose it twice (``digest_items``'s
  primary key also makes two processes composing at once fail safely; one of them rolls back).
* :class:`Outbox.drain` claims due rows with a lease, hands each to the platform's
  :class:`~bot.delivery.records.Sender` and records the outcome:

  - ``Sent`` -> ``status='sent'`` with the platform's message id and ``sent_at``;
  - ``RetryLater`` -> back to pending after the given delay or exponential backoff
    (``base_delay * 2**(attempts-1)``, capped at ``max_retry_delay``); ``failed`` after
    ``max_attempts``;
  - ``TargetUnavailable`` -> the subscription is paused with the reason (shown by ``/status``)
    and its rows are ``held`` until it is resumed;
  - ``Rejected`` -> ``failed`` with the error; the next message goes on.

Exactly-once across crashes: each row carries a random ``nonce`` fixed at enqueue time. If the
process dies between the platform's answer and the database update, the lease runs out, the row
is claimed again and sent with the **same** nonce, which Discord answers with the first message
instead of a duplicate. (Telegram has no such key: delivery there is at-least-once.)

Order and pacing: rows of one target go out in id order; a target whose oldest pending row is
not due (backoff) waits as a whole, so a digest's parts never overtake each other. After each
post, ``targets.next_send_at`` is set ``pacing[platform]`` ahead, shared by every process.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    and_,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from bot.delivery.records import (
    OutboxMessage,
    RetryLater,
    Sender,
    SendOutcome,
    Sent,
    TargetUnavailable,
)
from bot.ops import metrics
from bot.settings import DeliverySection
from bot.storage import subscriptions as subs_repo
from bot.storage.schema import digest_items, outbox, subscriptions, targets

log = logging.getLogger(__name__)

# Minimum gap between two posts to one target. Telegram allows ~20 messages a minute per group;
# Discord's per-channel and per-webhook buckets are about 5 per 5 seconds.
DEFAULT_PACING: Mapping[str, timedelta] = {
    "console": timedelta(0),
    "discord": timedelta(milliseconds=250),
    "discord-webhook": timedelta(seconds=1),
    "telegram": timedelta(seconds=3),
}


# Most messages one drain sends to one target (a digest is rarely more than a few).
RUN_PER_TARGET = 20


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """Retry, lease and pacing rules for the drain."""

    max_attempts: int = 12
    max_retry_delay: timedelta = timedelta(hours=1)
    base_delay: timedelta = timedelta(seconds=5)
    lease: timedelta = timedelta(minutes=2)
    pacing: Mapping[str, timedelta] = field(default_factory=lambda: dict(DEFAULT_PACING))

    @classmethod
    def from_settings(cls, section: DeliverySection) -> DeliveryPolicy:
        return cls(
            max_attempts=section.max_attempts,
            max_retry_delay=section.max_retry_delay,
            lease=section.lease,
        )

    def backoff(self, attempts: int) -> timedelta:
        """Delay before attempt ``attempts + 1`` after ``attempts`` failed ones."""
        exponent = min(max(attempts - 1, 0), 30)
        return min(self.base_delay * (1 << exponent), self.max_retry_delay)


def new_nonce() -> str:
    """A random idempotency key: 24 hex characters (Discord allows at most 25)."""
    return secrets.token_hex(12)


def enqueue_digest(
    conn: Connection,
    *,
    subscription_id: int,
    platform: str,
    target: str,
    payloads: Sequence[Mapping[str, Any]],
    entry_ids: Sequence[int],
    skipped_entry_ids: Sequence[int] = (),
    now: datetime,
) -> list[int]:
    """Write one digest's messages and its ``digest_items`` in the caller's transaction.

    ``entry_ids`` are recorded as delivered by the first message; ``skipped_entry_ids`` (stories
    that did not fit a periodic digest) are recorded with no message, so they are not offered
    again. Returns the new outbox ids in posting order. Raises ``ValueError`` for an empty
    digest and lets ``IntegrityError`` through when another process already recorded one of the
    entries (the caller's transaction then rolls back, which is the point)."""
    if not payloads:
        raise ValueError("a digest must have at least one message to enqueue")
    ids: list[int] = []
    for seq, payload in enumerate(payloads):
        # Fail here, inside the transaction, rather than at send time.
        json.dumps(payload)
        result = conn.execute(
            insert(outbox)
            .values(
                subscription_id=subscription_id,
                platform=platform,
                target=target,
                payload=dict(payload),
                nonce=new_nonce(),
                seq=seq,
                status="pending",
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
            .returning(outbox.c.id)
        )
        ids.append(int(result.scalar_one()))
    rows = [
        {"subscription_id": subscription_id, "entry_id": e, "outbox_id": ids[0], "created_at": now}
        for e in sorted(set(entry_ids))
    ]
    rows += [
        {"subscription_id": subscription_id, "entry_id": e, "outbox_id": None, "created_at": now}
        for e in sorted(set(skipped_entry_ids) - set(entry_ids))
    ]
    if rows:
        conn.execute(insert(digest_items), rows)
    return ids


@dataclass(frozen=True, slots=True)
class DrainSummary:
    """What one drain did."""

    sent: int = 0
    retried: int = 0
    paused: int = 0
    failed: int = 0

    def __add__(self, other: DrainSummary) -> DrainSummary:
        return DrainSummary(
            self.sent + other.sent,
            self.retried + other.retried,
            self.paused + other.paused,
            self.failed + other.failed,
        )


def pending_depth(engine: Engine) -> int:
    """How many outbox messages wait to be delivered (status ``pending``)."""
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).select_from(outbox).where(outbox.c.status == "pending")
            ).scalar_one()
        )


def _count(platform: str, outcome: SendOutcome) -> None:
    """The platform's answer in the metrics (what the drain then records is its own count)."""
    if isinstance(outcome, Sent):
        metrics.message_sent(platform)
    elif isinstance(outcome, RetryLater):
        metrics.platform_error(platform, "retry")
    elif isinstance(outcome, TargetUnavailable):
        metrics.platform_error(platform, "unavailable")
    else:
        metrics.platform_error(platform, "rejected")


def _message(row: Any) -> OutboxMessage:
    return OutboxMessage(
        id=int(row.id),
        platform=row.platform,
        target=row.target,
        payload=dict(row.payload),
        nonce=row.nonce,
        attempts=int(row.attempts),
        subscription_id=None if row.subscription_id is None else int(row.subscription_id),
    )


class Outbox:
    """Drains the ``outbox`` table through the registered senders.

    ``senders`` maps a platform name to its sender; rows of other platforms are left alone (they
    wait until a process with that platform's token drains them). ``owner`` names this process
    in leases. Database work runs in worker threads so the event loop keeps serving."""

    def __init__(
        self,
        engine: Engine,
        *,
        senders: Mapping[str, Sender],
        policy: DeliveryPolicy | None = None,
        owner: str | None = None,
        concurrency: int = 8,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._concurrency = concurrency
        self._engine = engine
        self._senders = dict(senders)
        self._policy = policy or DeliveryPolicy()
        self.owner = owner or f"outbox-{secrets.token_hex(4)}"

    async def drain(self, *, now: datetime, limit: int = 500) -> DrainSummary:
        """Send due messages once: up to ``limit`` targets, each in id order, concurrently."""
        if not self._senders:
            return DrainSummary()
        candidates = await asyncio.to_thread(self._candidates, now, limit)
        # Targets go out concurrently, but only a few at a time: platforms count a bot's
        # requests globally too, and each send holds a database connection briefly.
        gate = asyncio.Semaphore(self._concurrency)

        async def one(platform: str, target: str) -> DrainSummary:
            async with gate:
                return await self._drain_target(platform, target, now)

        results = await asyncio.gather(*(one(*key) for key in candidates))
        total = DrainSummary()
        for result in results:
            total += result
        return total

    def _live(self) -> ColumnElement[bool]:
        """Pending rows this process can send (its platforms, subscription not paused)."""
        return and_(
            outbox.c.status == "pending",
            outbox.c.platform.in_(list(self._senders)),
            or_(outbox.c.subscription_id.is_(None), subscriptions.c.paused.is_(False)),
        )

    def _candidates(self, now: datetime, limit: int) -> list[tuple[str, str]]:
        """Targets whose oldest pending row looked ready, oldest head first (a plan, no lock).

        Targets are found by their oldest pending row, so a target with a long blocked queue
        (backoff, pacing) never hides the others; at most ``limit`` per drain. Each is claimed
        later, row by row, by :meth:`_claim_head`, which checks everything again."""
        joined = outbox.outerjoin(subscriptions, subscriptions.c.id == outbox.c.subscription_id)
        heads = (
            select(func.min(outbox.c.id).label("head"))
            .select_from(joined)
            .where(self._live())
            .group_by(outbox.c.platform, outbox.c.target)
        )
        with self._engine.connect() as conn:
            paced = {
                (r.platform, r.target)
                for r in conn.execute(select(targets).where(targets.c.next_send_at > now))
            }
            head_rows = conn.execute(
                select(outbox).where(outbox.c.id.in_(heads.scalar_subquery())).order_by(outbox.c.id)
            ).all()
        ready = [
            (row.platform, row.target)
            for row in head_rows
            if (row.platform, row.target) not in paced and self._ready(row, now)
        ]
        return ready[:limit]

    @staticmethod
    def _ready(row: Any, now: datetime) -> bool:
        leased = row.lease_until is not None and row.lease_until > now
        return bool(row.next_attempt_at <= now and not leased)

    def _claim_head(self, platform: str, target: str, now: datetime) -> Any | None:
        """Lease the target's oldest pending row if it is ready now; None when it is not.

        Ready means: due, lease free, and the target not paced. Only the head is ever taken,
        so a target's rows go out in id order whoever sends them. On PostgreSQL the head is
        locked with ``FOR UPDATE SKIP LOCKED`` and leased in the same transaction: a replica
        claiming the same target at that moment skips it instead of waiting, and the pacing
        is read after the lock, so a post another replica committed meanwhile is seen. On
        SQLite the claim is a single ``UPDATE ... RETURNING`` (one writer at a time)."""
        joined = outbox.outerjoin(subscriptions, subscriptions.c.id == outbox.c.subscription_id)
        head_id = (
            select(func.min(outbox.c.id))
            .select_from(joined)
            .where(self._live(), outbox.c.platform == platform, outbox.c.target == target)
            .correlate(None)
            .scalar_subquery()
        )
        ready = and_(
            outbox.c.id == head_id,
            outbox.c.status == "pending",
            outbox.c.next_attempt_at <= now,
            or_(outbox.c.lease_until.is_(None), outbox.c.lease_until <= now),
        )
        paced = (
            select(targets.c.next_send_at)
            .where(
                targets.c.platform == platform,
                targets.c.target == target,
                targets.c.next_send_at > now,
            )
            .correlate(None)
        )
        lease = {"lease_owner": self.owner, "lease_until": now + self._policy.lease}
        with self._engine.begin() as conn:
            if conn.dialect.name != "postgresql":
                return conn.execute(
                    update(outbox)
                    .where(ready, ~paced.exists())
                    .values(**lease)
                    .returning(*outbox.c)
                ).first()
            locked = select(outbox).where(ready).with_for_update(skip_locked=True)
            row = conn.execute(locked).first()
            if row is None or conn.execute(paced).first() is not None:
                return None
            conn.execute(update(outbox).where(outbox.c.id == row.id).values(**lease))
            return row

    async def _drain_target(self, platform: str, target: str, now: datetime) -> DrainSummary:
        """Send the target's ready rows in order: one when the platform is paced, else up to
        ``RUN_PER_TARGET``; stop at the first that is not sent."""
        total = DrainSummary()
        for _ in range(RUN_PER_TARGET):
            row = await asyncio.to_thread(self._claim_head, platform, target, now)
            if row is None:
                break
            message = _message(row)
            outcome = await self._send(message)
            _count(message.platform, outcome)
            result = await asyncio.to_thread(self._record, message, outcome, now)
            total += result
            if not isinstance(outcome, Sent) or self._pace(message.platform) > timedelta(0):
                break
        return total

    async def _send(self, message: OutboxMessage) -> SendOutcome:
        sender = self._senders[message.platform]
        try:
            return await sender.send(message)
        except Exception as exc:
            # A sender is supposed to map every failure to an outcome; a bug there must not
            # lose the post, so it is retried with backoff and the traceback is logged.
            log.exception("sender for %s raised on outbox row %s", message.platform, message.id)
            return RetryLater(f"sender error: {type(exc).__name__}: {exc}")

    def _pace(self, platform: str) -> timedelta:
        return self._policy.pacing.get(platform, timedelta(seconds=1))

    def _record(self, message: OutboxMessage, outcome: SendOutcome, now: datetime) -> DrainSummary:
        mine = and_(outbox.c.id == message.id, outbox.c.lease_owner == self.owner)
        attempts = message.attempts + 1
        with self._engine.begin() as conn:
            if isinstance(outcome, Sent):
                conn.execute(
                    update(outbox)
                    .where(mine)
                    .values(
                        status="sent",
                        platform_message_id=outcome.message_id,
                        sent_at=now,
                        attempts=attempts,
                        last_error=None,
                        lease_owner=None,
                        lease_until=None,
                    )
                )
                self._set_next_send(conn, message, now + self._pace(message.platform))
                return DrainSummary(sent=1)
            if isinstance(outcome, RetryLater):
                if attempts >= self._policy.max_attempts:
                    self._fail(conn, message, attempts, f"gave up: {outcome.error}")
                    log.warning("outbox row %s failed after %s attempts", message.id, attempts)
                    return DrainSummary(failed=1)
                delay = (
                    outcome.after if outcome.after is not None else self._policy.backoff(attempts)
                )
                conn.execute(
                    update(outbox)
                    .where(mine)
                    .values(
                        attempts=attempts,
                        next_attempt_at=now + delay,
                        last_error=outcome.error,
                        lease_owner=None,
                        lease_until=None,
                    )
                )
                if outcome.after is not None:
                    self._set_next_send(conn, message, now + outcome.after)
                log.info("outbox row %s: retry in %s (%s)", message.id, delay, outcome.error)
                return DrainSummary(retried=1)
            if isinstance(outcome, TargetUnavailable) and message.subscription_id is not None:
                conn.execute(
                    update(outbox)
                    .where(mine)
                    .values(
                        status="held",
                        attempts=attempts,
                        last_error=outcome.error,
                        lease_owner=None,
                        lease_until=None,
                    )
                )
                subs_repo.pause(conn, message.subscription_id, outcome.error)
                log.warning("subscription %s paused: %s", message.subscription_id, outcome.error)
                return DrainSummary(paused=1)
            # Rejected, or TargetUnavailable for a row with no subscription to pause.
            self._fail(conn, message, attempts, outcome.error)
            log.warning("outbox row %s rejected: %s", message.id, outcome.error)
            return DrainSummary(failed=1)

    def _fail(self, conn: Connection, message: OutboxMessage, attempts: int, error: str) -> None:
        conn.execute(
            update(outbox)
            .where(outbox.c.id == message.id, outbox.c.lease_owner == self.owner)
            .values(
                status="failed",
                attempts=attempts,
                last_error=error,
                lease_owner=None,
                lease_until=None,
            )
        )

    @staticmethod
    def _set_next_send(conn: Connection, message: OutboxMessage, when: datetime) -> None:
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        statement = dialect.insert(targets).values(
            platform=message.platform, target=message.target, next_send_at=when
        )
        conn.execute(
            statement.on_conflict_do_update(
                index_elements=[targets.c.platform, targets.c.target],
                set_={"next_send_at": statement.excluded.next_send_at},
            )
        )
