"""Platform outages: the fake Discord and Telegram servers answer 500 or 429 for a minute; the
outbox waits and then delivers everything, each message exactly once.

The real pieces run end to end in this process: digests composed from stored matches, rendered
by the Discord and Telegram renderers, written to the outbox, drained through the real senders
(discord.py and python-telegram-bot over HTTP) into the fake servers. Time is the outbox's
``now``, moved by the test in 5-second steps, so "a minute" of outage costs no real minute.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, select

from bot.delivery.discord.render import DiscordRenderer
from bot.delivery.discord.sender import DiscordSender
from bot.delivery.outbox import DeliveryPolicy, Outbox
from bot.delivery.platform import Renderer
from bot.delivery.telegram.client import make_bot
from bot.delivery.telegram.render import TelegramRenderer
from bot.delivery.telegram.sender import TelegramSender
from bot.digest.service import run_due_digests
from bot.storage import subscriptions as subs_repo
from bot.storage.schema import outbox
from tests.digest_fixtures import CATALOG
from tests.store_fixtures import add_entry, add_feed, add_match
from tests.support.discord_client import fake_discord_rest, logged_in_sender
from tests.support.fake_discord import FakeDiscord
from tests.support.fake_telegram import TOKEN, FakeTelegram

T0 = datetime(2026, 3, 6, 12, 0, tzinfo=UTC)
OUTAGE = timedelta(minutes=1)
STEP = timedelta(seconds=5)
CHANNELS = ("700000000000000201", "700000000000000202")
CHAT = -1001000000077
ENTRIES = 25


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def fake_discord(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeDiscord]:
    async with fake_discord_rest(monkeypatch) as server:
        yield server


@pytest.fixture
async def fake_telegram() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        server.add_chat(CHAT, "supergroup", title="Test group")
        yield server


@pytest.fixture
async def discord_sender(fake_discord: FakeDiscord) -> AsyncIterator[DiscordSender]:
    async with logged_in_sender() as sender:
        yield sender


def seed_digests(engine: Engine) -> None:
    """Stored matches for three subscriptions, composed into outbox rows."""
    feed = add_feed(engine, name="Outage wire", now=T0)
    for n in range(ENTRIES):
        entry = add_entry(
            engine, feed_id=feed, key=f"outage-{n}", now=T0, title=f"Invented headline {n:03d}"
        )
        add_match(engine, entry_id=entry, ref_id="putin-deal", now=T0)
    with engine.begin() as conn:
        for channel in CHANNELS:
            subs_repo.upsert(
                conn,
                platform="discord",
                target=channel,
                now=T0 - timedelta(hours=1),
                max_items=100,
            )
        subs_repo.upsert(
            conn, platform="telegram", target=str(CHAT), now=T0 - timedelta(hours=1), max_items=100
        )
    renderers: dict[str, Renderer] = {"discord": DiscordRenderer(), "telegram": TelegramRenderer()}
    summary = run_due_digests(engine, catalog=CATALOG, renderers=renderers, now=T0)
    assert summary.digests == 3


def outbox_rows(engine: Engine) -> list[dict[str, object]]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(outbox).order_by(outbox.c.id)).mappings()]


async def drain_through_outage(
    outbox_: Outbox, engine: Engine, clock: Clock, end_outage: object
) -> datetime:
    """Drain every STEP of simulated time; the outage ends at T0 + OUTAGE. Returns when every
    row is sent (or fails the test after an hour of simulated time)."""
    while clock.now < T0 + timedelta(hours=1):
        if clock.now >= T0 + OUTAGE:
            end_outage()  # type: ignore[operator]
        await outbox_.drain(now=clock.now)
        rows = outbox_rows(engine)
        if all(r["status"] == "sent" for r in rows):
            return clock.now
        assert all(r["status"] == "pending" for r in rows if r["status"] != "sent"), rows
        clock.now += STEP
    raise AssertionError(f"not delivered within an hour: {outbox_rows(engine)}")


def assert_each_message_once(
    engine: Engine, fake_discord: FakeDiscord, fake_telegram: FakeTelegram
) -> None:
    rows = outbox_rows(engine)
    for channel in CHANNELS:
        mine = [r for r in rows if r["target"] == channel]
        posts = fake_discord.messages.get(channel, [])
        assert len(posts) == len(mine) > 0
        assert sorted(str(p["id"]) for p in posts) == sorted(
            str(r["platform_message_id"]) for r in mine
        )
        for n in range(ENTRIES):
            assert sum(f"Invented headline {n:03d}" in str(p) for p in posts) == 1, (channel, n)
    telegram_rows = [r for r in rows if r["platform"] == "telegram"]
    sent = fake_telegram.sent_to(CHAT)
    assert len(sent) == len(telegram_rows) > 0
    for n in range(ENTRIES):
        assert sum(f"Invented headline {n:03d}" in s.text for s in sent) == 1, n
    # Nothing went out before the outage ended.
    assert all(r["sent_at"] >= T0 + OUTAGE for r in rows)  # type: ignore[operator]


@pytest.mark.parametrize("status", [500, 429])
async def test_outage_of_a_minute_delays_but_loses_and_repeats_nothing(
    engine: Engine,
    fake_discord: FakeDiscord,
    fake_telegram: FakeTelegram,
    discord_sender: DiscordSender,
    status: int,
) -> None:
    seed_digests(engine)
    clock = Clock()
    # A long Retry-After: the senders must report it (never sleep on it) and the outbox wait.
    fake_discord.fail(status, times=10_000, path_contains="/messages", retry_after=30.0)
    fake_telegram.fail(status, times=10_000, method="sendMessage", retry_after=30)

    def end_outage() -> None:
        fake_discord.failures.clear()
        fake_telegram.failures.clear()

    # The client's default read timeout: a shorter one can run out on a loaded machine after
    # the fake already posted, and the retry would then post twice (Telegram has no nonce).
    async with make_bot(SecretStr(TOKEN), api_base=fake_telegram.base_url) as bot:
        telegram_sender = TelegramSender(bot, clock=clock)
        outbox_ = Outbox(
            engine,
            senders={
                "discord": discord_sender,
                "discord-webhook": discord_sender,
                "telegram": telegram_sender,
            },
            policy=DeliveryPolicy(max_attempts=12),
            owner="outage-test",
        )
        done_at = await drain_through_outage(outbox_, engine, clock, end_outage)

    assert done_at < T0 + OUTAGE + timedelta(minutes=5)
    # The outage was real: every target was refused at least once before it ended.
    refused_discord = [
        r for r in fake_discord.requests if r.method == "POST" and "/messages" in r.path
    ]
    assert len(refused_discord) > sum(len(fake_discord.messages.get(c, [])) for c in CHANNELS)
    assert len(fake_telegram.calls_to("sendMessage")) > len(fake_telegram.sent_to(CHAT))
    assert all(r["attempts"] >= 2 for r in outbox_rows(engine) if r["seq"] == 0)  # type: ignore[operator]
    assert_each_message_once(engine, fake_discord, fake_telegram)
