"""Flood control end to end: 200 matched items reach a Telegram group through the real digest
job, the shared outbox and the Telegram sender (python-telegram-bot against the fake Bot API),
while the fake answers some sends with 429 ``retry_after``. Nothing is lost or repeated and the
group never gets more than 20 messages in a minute.

Time is simulated: the test moves one clock for the digest job, the outbox and the sender's
pacer, so minutes of pacing take no wall-clock time and nothing sleeps."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, select

from bot.delivery.outbox import DeliveryPolicy, Outbox
from bot.delivery.telegram.client import make_bot
from bot.delivery.telegram.render import TelegramRenderer
from bot.delivery.telegram.sender import TelegramSender
from bot.digest.service import run_due_digests
from bot.matching.catalog import load_catalog
from bot.storage import subscriptions as subs_repo
from bot.storage.schema import outbox
from tests.store_fixtures import add_entry, add_feed, add_match
from tests.support.fake_telegram import TOKEN, FakeTelegram, check_telegram_html

GROUP = -1009990001
T0 = datetime(2026, 3, 6, 12, 0, tzinfo=UTC)
ITEMS = 200


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        server.add_chat(GROUP, "supergroup", title="Flood desk")
        yield server


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def seed(engine: Engine) -> list[int]:
    feeds = [add_feed(engine, name=f"Invented outlet {n}", now=T0) for n in range(5)]
    ids = []
    for n in range(ITEMS):
        entry = add_entry(
            engine,
            feed_id=feeds[n % 5],
            key=f"flood-{n:03d}",
            now=T0,
            # Long titles: each digest of 10 items needs two messages.
            title=f"Flood item {n:03d} & <co> " + "with a long invented headline " * 12,
        )
        add_match(engine, entry_id=entry, ref_id="putin-deal", now=T0, score=0.6 + (n % 7) / 20)
        ids.append(entry)
    return ids


@pytest.mark.slow
async def test_a_burst_of_200_items_reaches_a_group_once_each_within_flood_limits(
    fake: FakeTelegram, engine: Engine
) -> None:
    with engine.begin() as conn:
        subs_repo.upsert(conn, platform="telegram", target=str(GROUP), now=T0 - timedelta(hours=1))
    seed(engine)
    catalog = load_catalog()
    clock = Clock()
    renderers = {"telegram": TelegramRenderer()}
    async with make_bot(SecretStr(TOKEN), api_base=fake.base_url) as bot:
        sender = TelegramSender(bot, clock=clock)
        box = Outbox(engine, senders={"telegram": sender}, policy=DeliveryPolicy())
        sent_at: list[datetime] = []
        for step in range(2000):
            if step % 9 == 4:
                fake.fail(429, method="sendMessage", retry_after=5)
            run_due_digests(engine, catalog=catalog, renderers=renderers, now=clock.now)
            before = len(fake.sent)
            await box.drain(now=clock.now)
            sent_at.extend([clock.now] * (len(fake.sent) - before))
            with engine.connect() as conn:
                statuses = set(conn.execute(select(outbox.c.status)).scalars())
            delivered = sum(t.count("Flood item") for t in (s.text for s in fake.sent))
            if delivered >= ITEMS and statuses == {"sent"}:
                break
            clock.now += timedelta(seconds=1)
        else:
            pytest.fail(f"not delivered after {step} simulated seconds: {statuses}")

    with engine.connect() as conn:
        rows = conn.execute(select(outbox).order_by(outbox.c.id)).mappings().all()
    posts = fake.sent_to(GROUP)
    assert len(posts) >= 40  # 20 digests of 10 long items, two messages each
    # Every outbox row went out exactly once, and the fake saw nothing else.
    assert len(posts) == len(rows) == len(fake.sent)
    assert all(r["status"] == "sent" for r in rows)
    assert len({r["platform_message_id"] for r in rows}) == len(rows)
    assert [f"{GROUP}:{p.message_id}" for p in posts] == [r["platform_message_id"] for r in rows]
    # Posts are the stored payloads, in outbox order.
    assert [p.text for p in posts] == [r["payload"]["text"] for r in rows]
    # Each of the 200 items appears exactly once across all posts.
    visible = "\n".join(check_telegram_html(p.text) for p in posts)
    for n in range(ITEMS):
        assert visible.count(f"Flood item {n:03d} & <co>") == 1, n
    # 429s happened and were honoured: every sendMessage call is a post or a 429.
    refused = len(fake.calls_to("sendMessage")) - len(posts)
    assert refused >= 3
    # Never more than 20 posts in any minute, never two within three seconds.
    for i, moment in enumerate(sent_at):
        window = [t for t in sent_at[i:] if t < moment + timedelta(minutes=1)]
        assert len(window) <= 20
    gaps = [b - a for a, b in itertools.pairwise(sent_at)]
    assert min(gaps) >= timedelta(seconds=3)


async def test_a_kicked_bot_pauses_the_subscription_and_keeps_its_posts(
    fake: FakeTelegram, engine: Engine
) -> None:
    with engine.begin() as conn:
        sub = subs_repo.upsert(
            conn, platform="telegram", target=str(GROUP), now=T0 - timedelta(hours=1)
        )
    seed(engine)
    fake.kick(GROUP)
    renderers = {"telegram": TelegramRenderer()}
    run_due_digests(engine, catalog=load_catalog(), renderers=renderers, now=T0)
    async with make_bot(SecretStr(TOKEN), api_base=fake.base_url) as bot:
        box = Outbox(engine, senders={"telegram": TelegramSender(bot, clock=Clock())})
        summary = await box.drain(now=T0)
    assert summary.paused == 1
    assert fake.sent == []
    with engine.connect() as conn:
        paused = subs_repo.get(conn, sub.id)
        statuses = set(conn.execute(select(outbox.c.status)).scalars())
    assert paused is not None
    assert paused.paused
    assert "kicked" in (paused.pause_reason or "")
    assert statuses == {"held"}  # kept, to go out once the bot is back and resubscribed
