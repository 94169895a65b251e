"""Outbox: enqueue with digest_items in one transaction, drain outcomes, exactly-once, pacing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError

from bot.delivery.console import ConsoleRenderer
from bot.delivery.outbox import DeliveryPolicy, Outbox, enqueue_digest
from bot.delivery.records import (
    OutboxMessage,
    Rejected,
    RetryLater,
    SendOutcome,
    Sent,
    TargetUnavailable,
)
from bot.digest.service import run_due_digests
from bot.storage import subscriptions as repo
from bot.storage.schema import digest_items, outbox, subscriptions
from tests.digest_fixtures import CATALOG
from tests.store_fixtures import add_entry, add_feed, add_match

T0 = datetime(2026, 3, 6, 12, 0, tzinfo=UTC)
PLATFORM = "fakechat"


class FakeSender:
    """Plays a chat platform: answers from a script, dedups by nonce like Discord does."""

    platforms = (PLATFORM,)

    def __init__(self, script: list[SendOutcome | BaseException] | None = None) -> None:
        self.script = list(script or [])
        self.calls: list[OutboxMessage] = []
        self.posts: dict[str, str] = {}  # nonce -> message id (what the platform shows)

    async def send(self, message: OutboxMessage) -> SendOutcome:
        self.calls.append(message)
        step = self.script.pop(0) if self.script else None
        if isinstance(step, RetryLater | TargetUnavailable | Rejected):
            return step
        message_id = self.posts.setdefault(message.nonce, f"m{len(self.posts) + 1}")
        if isinstance(step, BaseException):
            raise step  # the post went out, then the process died before recording it
        return Sent(message_id)


class Crash(BaseException):
    """Stands for the process dying (not an error a sender would report)."""


class FakeRenderer:
    platforms = (PLATFORM,)

    def render(self, digest: object) -> list[dict[str, object]]:
        text = ConsoleRenderer().render(digest)[0]["text"]  # type: ignore[arg-type]
        return [{"part": 1, "text": text}, {"part": 2}]


def subscribe(engine: Engine, **kwargs: object) -> repo.Subscription:
    with engine.begin() as conn:
        return repo.upsert(conn, platform=PLATFORM, target="room-1", now=T0, **kwargs)  # type: ignore[arg-type]


def seed(engine: Engine, count: int = 2, *, at: datetime = T0) -> list[int]:
    feed = add_feed(engine, name=f"Outlet {at.timestamp():.0f}", now=at)
    ids = []
    for n in range(count):
        entry = add_entry(engine, feed_id=feed, key=f"e{n}-{at.timestamp()}", now=at)
        add_match(engine, entry_id=entry, ref_id="putin-deal", now=at)
        ids.append(entry)
    return ids


def rows(engine: Engine) -> list[dict[str, object]]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(outbox).order_by(outbox.c.id)).mappings()]


def compose_now(engine: Engine, now: datetime = T0) -> int:
    summary = run_due_digests(
        engine, catalog=CATALOG, renderers={PLATFORM: FakeRenderer()}, now=now
    )
    return summary.digests


def one_digest_composed(engine: Engine) -> None:
    """A subscription, one matched entry, and its digest composed into the outbox at ``T0``."""
    subscribe(engine)
    seed(engine, 1)
    compose_now(engine)


def unpaced_outbox(engine: Engine, sender: FakeSender) -> Outbox:
    """An outbox delivering through ``sender`` with no pacing between posts."""
    return Outbox(
        engine, senders={PLATFORM: sender}, policy=DeliveryPolicy(pacing={PLATFORM: timedelta(0)})
    )


def test_enqueue_writes_messages_and_digest_items_together(engine: Engine) -> None:
    sub = subscribe(engine)
    entry_ids = seed(engine, 2)
    assert compose_now(engine) == 1
    outbox_rows = rows(engine)
    assert [r["seq"] for r in outbox_rows] == [0, 1]
    assert len({r["nonce"] for r in outbox_rows}) == 2
    with engine.connect() as conn:
        items = conn.execute(select(digest_items)).mappings().all()
    assert {i["entry_id"] for i in items} == set(entry_ids)
    assert {i["outbox_id"] for i in items} == {outbox_rows[0]["id"]}
    assert all(i["subscription_id"] == sub.id for i in items)
    # Nothing new: a second run composes nothing.
    assert compose_now(engine, T0 + timedelta(seconds=5)) == 0


def test_a_second_enqueue_of_the_same_entries_rolls_back_whole(engine: Engine) -> None:
    sub = subscribe(engine)
    (entry,) = seed(engine, 1)
    with engine.begin() as conn:
        enqueue_digest(
            conn,
            subscription_id=sub.id,
            platform=PLATFORM,
            target="room-1",
            payloads=[{"text": "a"}],
            entry_ids=[entry],
            now=T0,
        )
    with pytest.raises(IntegrityError), engine.begin() as conn:
        enqueue_digest(
            conn,
            subscription_id=sub.id,
            platform=PLATFORM,
            target="room-1",
            payloads=[{"text": "b"}],
            entry_ids=[entry],
            now=T0,
        )
    assert [r["payload"] for r in rows(engine)] == [{"text": "a"}]


async def test_sent_records_message_id_in_order(engine: Engine) -> None:
    one_digest_composed(engine)
    sender = FakeSender()
    policy = DeliveryPolicy(pacing={PLATFORM: timedelta(0)})
    summary = await Outbox(engine, senders={PLATFORM: sender}, policy=policy).drain(now=T0)
    assert summary.sent == 2
    assert [m.payload.get("part") for m in sender.calls] == [1, 2]
    assert [(r["status"], r["platform_message_id"]) for r in rows(engine)] == [
        ("sent", "m1"),
        ("sent", "m2"),
    ]
    assert all(r["sent_at"] == T0 and r["lease_owner"] is None for r in rows(engine))


async def test_retry_later_backs_off_and_keeps_order(engine: Engine) -> None:
    one_digest_composed(engine)
    sender = FakeSender([RetryLater("503 from platform")])
    policy = DeliveryPolicy(base_delay=timedelta(seconds=10), pacing={PLATFORM: timedelta(0)})
    box = Outbox(engine, senders={PLATFORM: sender}, policy=policy)
    summary = await box.drain(now=T0)
    assert summary.retried == 1
    assert len(sender.calls) == 1  # the second part did not overtake the first
    first = rows(engine)[0]
    assert first["status"] == "pending"
    assert first["attempts"] == 1
    assert first["next_attempt_at"] == T0 + timedelta(seconds=10)
    assert first["last_error"] == "503 from platform"
    assert (await box.drain(now=T0 + timedelta(seconds=9))).sent == 0
    assert (await box.drain(now=T0 + timedelta(seconds=10))).sent == 2
    assert [m.payload.get("part") for m in sender.calls] == [1, 1, 2]


async def test_retry_after_is_honoured_for_the_target(engine: Engine) -> None:
    one_digest_composed(engine)
    sender = FakeSender([RetryLater("429", after=timedelta(seconds=42))])
    box = unpaced_outbox(engine, sender)
    await box.drain(now=T0)
    assert rows(engine)[0]["next_attempt_at"] == T0 + timedelta(seconds=42)
    assert (await box.drain(now=T0 + timedelta(seconds=41))).sent == 0
    assert (await box.drain(now=T0 + timedelta(seconds=42))).sent == 2


async def test_gives_up_after_max_attempts(engine: Engine) -> None:
    one_digest_composed(engine)
    sender = FakeSender([RetryLater("timeout"), RetryLater("timeout")])
    policy = DeliveryPolicy(
        max_attempts=2, base_delay=timedelta(seconds=1), pacing={PLATFORM: timedelta(0)}
    )
    box = Outbox(engine, senders={PLATFORM: sender}, policy=policy)
    await box.drain(now=T0)
    summary = await box.drain(now=T0 + timedelta(seconds=1))
    assert summary.failed == 1
    assert rows(engine)[0]["status"] == "failed"
    assert "timeout" in str(rows(engine)[0]["last_error"])


async def test_target_unavailable_pauses_and_holds_until_resumed(engine: Engine) -> None:
    sub = subscribe(engine)
    seed(engine, 1)
    compose_now(engine)
    sender = FakeSender([TargetUnavailable("403 Missing Access")])
    box = unpaced_outbox(engine, sender)
    summary = await box.drain(now=T0)
    assert summary.paused == 1
    with engine.connect() as conn:
        paused = repo.get(conn, sub.id)
    assert paused is not None
    assert paused.paused
    assert paused.pause_reason == "403 Missing Access"
    assert [r["status"] for r in rows(engine)] == ["held", "held"]
    # New matches for a paused subscription are not composed either, and nothing is sent.
    seed(engine, 1, at=T0 + timedelta(minutes=1))
    assert compose_now(engine, T0 + timedelta(minutes=1)) == 0
    assert (await box.drain(now=T0 + timedelta(minutes=2))).sent == 0
    with engine.begin() as conn:
        repo.resume(conn, sub.id, now=T0 + timedelta(minutes=3))
    assert (await box.drain(now=T0 + timedelta(minutes=3))).sent == 2
    assert [m.payload.get("part") for m in sender.calls] == [1, 1, 2]


async def test_rejected_fails_that_message_and_goes_on(engine: Engine) -> None:
    one_digest_composed(engine)
    sender = FakeSender([Rejected("400 embed too long")])
    box = unpaced_outbox(engine, sender)
    summary = await box.drain(now=T0)
    assert summary.failed == 1
    await box.drain(now=T0)
    assert [r["status"] for r in rows(engine)] == ["failed", "sent"]


async def test_sender_exception_is_retried_not_lost(engine: Engine) -> None:
    one_digest_composed(engine)
    sender = FakeSender([RuntimeError("bug in adapter")])
    box = unpaced_outbox(engine, sender)
    summary = await box.drain(now=T0)
    assert summary.retried == 1
    assert "bug in adapter" in str(rows(engine)[0]["last_error"])


async def test_crash_between_send_and_record_neither_loses_nor_repeats(engine: Engine) -> None:
    one_digest_composed(engine)
    platform = FakeSender([Crash()])
    policy = DeliveryPolicy(lease=timedelta(minutes=2), pacing={PLATFORM: timedelta(0)})
    first = Outbox(engine, senders={PLATFORM: platform}, policy=policy, owner="proc-1")
    with pytest.raises(Crash):
        await first.drain(now=T0)
    crashed = rows(engine)[0]
    assert crashed["status"] == "pending"
    assert crashed["lease_owner"] == "proc-1"
    # A restarted process cannot take the row while the lease holds...
    second = Outbox(engine, senders={PLATFORM: platform}, policy=policy, owner="proc-2")
    assert (await second.drain(now=T0 + timedelta(minutes=1))).sent == 0
    # ...and after it runs out, retries the same row with the same nonce.
    assert (await second.drain(now=T0 + timedelta(minutes=2))).sent == 2
    nonces = [m.nonce for m in platform.calls]
    assert nonces[0] == nonces[1] == crashed["nonce"]
    assert len(platform.posts) == 2  # two parts, each posted exactly once
    assert rows(engine)[0]["platform_message_id"] == "m1"


async def test_pacing_spaces_posts_to_one_target(engine: Engine) -> None:
    one_digest_composed(engine)
    sender = FakeSender()
    box = Outbox(
        engine,
        senders={PLATFORM: sender},
        policy=DeliveryPolicy(pacing={PLATFORM: timedelta(seconds=3)}),
    )
    assert (await box.drain(now=T0)).sent == 1
    assert (await box.drain(now=T0 + timedelta(seconds=2))).sent == 0
    assert (await box.drain(now=T0 + timedelta(seconds=3))).sent == 1


async def test_rows_without_a_sender_wait(engine: Engine) -> None:
    one_digest_composed(engine)
    box = Outbox(engine, senders={"other": FakeSender()})
    assert (await box.drain(now=T0)).sent == 0
    assert {r["status"] for r in rows(engine)} == {"pending"}


def test_filters_min_score_themes_since_and_announce(engine: Engine) -> None:
    sub = subscribe(engine, themes=["putin-deal"], claims=["not-our-war"], min_score=0.6)
    feed = add_feed(engine, name="Outlet A", now=T0)
    before = add_entry(engine, feed_id=feed, key="old", now=T0 - timedelta(hours=1))
    add_match(engine, entry_id=before, ref_id="putin-deal", now=T0 - timedelta(hours=1))
    low = add_entry(engine, feed_id=feed, key="low", now=T0)
    add_match(engine, entry_id=low, ref_id="putin-deal", now=T0, score=0.59)
    other = add_entry(engine, feed_id=feed, key="other", now=T0)
    add_match(engine, entry_id=other, ref_id="words-not-deeds", now=T0)
    quiet = add_entry(engine, feed_id=feed, key="quiet", now=T0, announce=False)
    add_match(engine, entry_id=quiet, ref_id="putin-deal", now=T0)
    good = add_entry(engine, feed_id=feed, key="good", now=T0)
    add_match(engine, entry_id=good, ref_id="putin-deal", now=T0, score=0.6)
    claim = add_entry(engine, feed_id=feed, key="claim", now=T0)
    add_match(engine, entry_id=claim, ref_id="not-our-war", kind="claim", now=T0)
    with engine.connect() as conn:
        pending = repo.pending_matches(conn, sub)
    assert sorted(p.entry_id for p in pending) == sorted([good, claim])


def test_periodic_digest_skips_leftovers_and_reschedules(engine: Engine) -> None:
    sub = subscribe(engine, cadence="daily 08:00 Europe/Kyiv", max_items=1)
    seed(engine, 3)
    assert compose_now(engine) == 1  # never sent before: due at once
    with engine.connect() as conn:
        after = repo.get(conn, sub.id)
        items = conn.execute(select(digest_items)).mappings().all()
    assert after is not None
    assert after.next_digest_at == datetime(2026, 3, 7, 6, 0, tzinfo=UTC)
    assert sorted(i["outbox_id"] is None for i in items) == [False, True, True]
    seed(engine, 1, at=T0 + timedelta(hours=1))
    assert compose_now(engine, T0 + timedelta(hours=1)) == 0  # not due until tomorrow 08:00


def test_config_sync_creates_updates_and_removes(engine: Engine) -> None:
    from bot.settings import SubscriptionConfig

    first = SubscriptionConfig(platform="telegram", target="-100123", cadence="6h")
    with engine.begin() as conn:
        repo.upsert(conn, platform="telegram", target="-100999", now=T0, origin="command")
        repo.sync_from_config(conn, [first], now=T0)
        repo.sync_from_config(
            conn, [SubscriptionConfig(platform="telegram", target="-100456")], now=T0
        )
        listed = [(s.target, s.origin) for s in repo.list_subscriptions(conn)]
    assert listed == [("-100999", "command"), ("-100456", "config")]
    with engine.connect() as conn:
        assert conn.execute(select(subscriptions.c.since)).scalars().all() == [T0, T0]


async def test_two_drains_at_once_send_each_message_once(engine: Engine) -> None:
    import asyncio

    for n in range(3):
        with engine.begin() as conn:
            repo.upsert(conn, platform=PLATFORM, target=f"room-{n}", now=T0)
    seed(engine, 2)
    compose_now(engine)
    platform = FakeSender()
    policy = DeliveryPolicy(pacing={PLATFORM: timedelta(0)})
    boxes = [
        Outbox(engine, senders={PLATFORM: platform}, policy=policy, owner=f"proc-{n}")
        for n in range(2)
    ]
    summaries = await asyncio.gather(*(box.drain(now=T0) for box in boxes))
    assert sum(s.sent for s in summaries) == 6  # 3 subscriptions x 2 messages
    assert len(platform.calls) == 6
    assert len({m.id for m in platform.calls}) == 6
    assert {r["status"] for r in rows(engine)} == {"sent"}


def test_housekeeping_drops_old_delivered_rows_but_keeps_the_record(engine: Engine) -> None:
    from sqlalchemy import update

    from bot.app import housekeeping

    one_digest_composed(engine)
    with engine.begin() as conn:
        conn.execute(update(outbox).where(outbox.c.seq == 0).values(status="sent"))
    assert housekeeping(engine, now=T0 + timedelta(days=29)) == 0
    assert housekeeping(engine, now=T0 + timedelta(days=31)) == 1
    assert [r["seq"] for r in rows(engine)] == [1]  # the pending part stays
    with engine.connect() as conn:
        items = conn.execute(select(digest_items)).mappings().all()
    assert len(items) == 1
    assert items[0]["outbox_id"] is None
    assert compose_now(engine, T0 + timedelta(days=31)) == 0  # still counted as delivered


def test_console_subscription_is_paused_when_a_token_is_set(engine: Engine) -> None:
    with engine.begin() as conn:
        created = repo.ensure_console(conn, active=True, now=T0, since=T0 - timedelta(hours=24))
        assert created is not None
        assert created.since == T0 - timedelta(hours=24)
        paused = repo.ensure_console(conn, active=False, now=T0)
        assert paused is not None
        assert repo.get(conn, created.id).paused  # type: ignore[union-attr]
        again = repo.ensure_console(conn, active=True, now=T0)
    assert again is not None
    assert not again.paused
    assert again.since == T0 - timedelta(hours=24)  # kept across restarts


async def test_a_blocked_target_does_not_hold_up_the_others(engine: Engine) -> None:
    for room in ("room-1", "room-2"):
        with engine.begin() as conn:
            repo.upsert(conn, platform=PLATFORM, target=room, now=T0)
    seed(engine, 1)
    compose_now(engine)  # room-1's rows come first (lower ids)
    sender = FakeSender([RetryLater("503")])
    policy = DeliveryPolicy(base_delay=timedelta(minutes=5), pacing={PLATFORM: timedelta(0)})
    box = Outbox(engine, senders={PLATFORM: sender}, policy=policy)
    await box.drain(now=T0, limit=1)  # room-1 fails and backs off
    assert [m.target for m in sender.calls] == ["room-1"]
    summary = await box.drain(now=T0 + timedelta(seconds=1), limit=1)
    assert summary.sent == 2
    assert [m.target for m in sender.calls] == ["room-1", "room-2", "room-2"]


def test_a_failing_renderer_does_not_stop_other_subscriptions(engine: Engine) -> None:
    class Broken:
        platforms = ("broken",)

        def render(self, digest: object) -> list[dict[str, object]]:
            raise RuntimeError("renderer bug")

    with engine.begin() as conn:
        repo.upsert(conn, platform="broken", target="x", now=T0)
    subscribe(engine)
    seed(engine, 1)
    summary = run_due_digests(
        engine,
        catalog=CATALOG,
        renderers={PLATFORM: FakeRenderer(), "broken": Broken()},
        now=T0,
    )
    assert summary.digests == 1
    assert {r["platform"] for r in rows(engine)} == {PLATFORM}
    with engine.connect() as conn:
        recorded = conn.execute(select(digest_items.c.subscription_id)).scalars().all()
        broken = repo.find(conn, "broken", "x")
    assert broken is not None
    assert broken.id not in recorded  # rolled back: it is offered again next time


def test_every_n_hours_waits_for_its_period(engine: Engine) -> None:
    subscribe(engine, cadence="6h")
    seed(engine, 1)
    assert compose_now(engine) == 1
    seed(engine, 1, at=T0 + timedelta(hours=1))
    assert compose_now(engine, T0 + timedelta(hours=5, minutes=59)) == 0
    assert compose_now(engine, T0 + timedelta(hours=6)) == 1


def test_instant_leftovers_go_out_in_the_next_run(engine: Engine) -> None:
    subscribe(engine, max_items=2)
    seed(engine, 3)
    assert compose_now(engine) == 1
    assert compose_now(engine, T0 + timedelta(seconds=5)) == 1  # the third story
    assert compose_now(engine, T0 + timedelta(seconds=10)) == 0
    with engine.connect() as conn:
        items = conn.execute(select(digest_items)).mappings().all()
    assert len(items) == 3
    assert all(i["outbox_id"] is not None for i in items)  # every story was sent, none skipped
