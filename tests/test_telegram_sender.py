"""The Telegram sender through python-telegram-bot's real Bot against the fake Bot API server:
one test per outcome, plus pacing and target parsing."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import SecretStr
from telegram import Bot
from telegram.error import InvalidToken

from bot.delivery.records import OutboxMessage, Rejected, RetryLater, Sent, TargetUnavailable
from bot.delivery.telegram.client import make_bot
from bot.delivery.telegram.pacing import Pacer, PacingRules
from bot.delivery.telegram.render import TelegramMessage
from bot.delivery.telegram.sender import ChatTarget, TelegramSender, parse_target
from tests.support.fake_telegram import TOKEN, FakeTelegram

GROUP = -1001000000001
PRIVATE = 424242


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime(2026, 3, 6, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        yield server


@pytest.fixture
async def bot(fake: FakeTelegram) -> AsyncIterator[Bot]:
    async with make_bot(SecretStr(TOKEN), api_base=fake.base_url, read_timeout=0.5) as client:
        yield client


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sender(bot: Bot, clock: Clock) -> TelegramSender:
    return TelegramSender(bot, clock=clock)


def outbox_message(
    target: str, text: str = "<b>Hello</b> &amp; welcome", **extra: Any
) -> OutboxMessage:
    return OutboxMessage(
        id=7,
        platform="telegram",
        target=target,
        payload={**TelegramMessage(text=text).payload(), **extra},
        nonce="n7",
        attempts=0,
        subscription_id=1,
    )


async def test_success_posts_html_without_preview_and_returns_the_message_id(
    fake: FakeTelegram, sender: TelegramSender
) -> None:
    outcome = await sender.send(outbox_message(str(GROUP)))
    assert outcome == Sent(message_id=f"{GROUP}:1")
    (call,) = fake.calls_to("sendMessage")
    # PTB's real wire format: a form body with nested objects as JSON strings.
    assert call.content_type == "application/x-www-form-urlencoded"
    assert call.params["parse_mode"] == "HTML"
    assert call.params["link_preview_options"] == {"is_disabled": True}
    assert call.params["text"] == "<b>Hello</b> &amp; welcome"
    assert "message_thread_id" not in call.params
    assert fake.calls[0].method == "getMe"  # `async with bot` initialised it


async def test_topic_target_sends_message_thread_id(
    fake: FakeTelegram, sender: TelegramSender
) -> None:
    fake.add_chat(GROUP, "supergroup", is_forum=True)
    outcome = await sender.send(outbox_message(f"{GROUP}:42"))
    assert outcome == Sent(message_id=f"{GROUP}:1")
    assert [s.text for s in fake.sent_to(GROUP, thread_id=42)] == ["<b>Hello</b> &amp; welcome"]


async def test_channel_username_target(fake: FakeTelegram, sender: TelegramSender) -> None:
    fake.add_chat(-1002000000002, "channel", username="counterparty_news")
    outcome = await sender.send(outbox_message("@counterparty_news"))
    assert outcome == Sent(message_id="-1002000000002:1")


async def test_429_gives_retry_after_and_holds_the_chat(
    fake: FakeTelegram, sender: TelegramSender, clock: Clock
) -> None:
    fake.fail(429, method="sendMessage", retry_after=7)
    outcome = await sender.send(outbox_message(str(GROUP)))
    assert isinstance(outcome, RetryLater)
    assert outcome.after == timedelta(seconds=7)
    # Within the hold the sender does not even call Telegram.
    clock.advance(3)
    again = await sender.send(outbox_message(str(GROUP)))
    assert isinstance(again, RetryLater)
    assert again.after == timedelta(seconds=4)
    assert len(fake.calls_to("sendMessage")) == 1
    clock.advance(4)
    assert isinstance(await sender.send(outbox_message(str(GROUP))), Sent)


@pytest.mark.parametrize("status", [500, 502])
async def test_server_errors_are_retried_later(
    fake: FakeTelegram, sender: TelegramSender, status: int
) -> None:
    fake.fail(status, method="sendMessage")
    outcome = await sender.send(outbox_message(str(PRIVATE)))
    assert isinstance(outcome, RetryLater)
    assert outcome.after is None


async def test_a_timeout_is_retried_later(fake: FakeTelegram, sender: TelegramSender) -> None:
    fake.fail(0, method="sendMessage")  # the server never answers
    outcome = await sender.send(outbox_message(str(PRIVATE)))
    assert isinstance(outcome, RetryLater)
    assert "TimedOut" in outcome.error


async def test_kicked_bot_makes_the_target_unavailable(
    fake: FakeTelegram, sender: TelegramSender
) -> None:
    fake.kick(GROUP)
    outcome = await sender.send(outbox_message(str(GROUP)))
    assert isinstance(outcome, TargetUnavailable)
    assert "kicked" in outcome.error


async def test_blocked_by_user_403(fake: FakeTelegram, sender: TelegramSender) -> None:
    fake.fail(403, method="sendMessage", description="Forbidden: bot was blocked by the user")
    outcome = await sender.send(outbox_message(str(PRIVATE)))
    assert isinstance(outcome, TargetUnavailable)


@pytest.mark.parametrize("target", [str(GROUP), "@no_such_channel", f"{GROUP}:5"])
async def test_chat_or_topic_not_found_makes_the_target_unavailable(
    fake: FakeTelegram, sender: TelegramSender, target: str
) -> None:
    if target == str(GROUP):
        fake.forget_chat(GROUP)
    outcome = await sender.send(outbox_message(target))
    assert isinstance(outcome, TargetUnavailable)
    assert "not found" in outcome.error


async def test_bad_html_is_rejected_for_good(fake: FakeTelegram, sender: TelegramSender) -> None:
    outcome = await sender.send(outbox_message(str(PRIVATE), text="<b>unclosed"))
    assert isinstance(outcome, Rejected)
    assert "parse entities" in outcome.error


@pytest.mark.parametrize(
    ("target", "payload"),
    [("not-a-chat", {"text": "x", "parse_mode": "HTML"}), (str(PRIVATE), {"text": ""})],
)
async def test_unusable_rows_are_rejected_without_a_call(
    fake: FakeTelegram, sender: TelegramSender, target: str, payload: dict[str, Any]
) -> None:
    message = OutboxMessage(1, "telegram", target, payload, "n1", 0, None)
    assert isinstance(await sender.send(message), Rejected)
    assert fake.calls_to("sendMessage") == []


async def test_migrated_group_is_resent_to_the_new_id_and_reported(
    fake: FakeTelegram, bot: Bot, clock: Clock
) -> None:
    old, new = -4000000001, -1004000000001
    fake.add_chat(old, "group")
    fake.migrate(old, new)
    moves: list[tuple[str, str]] = []

    async def remember(before: str, after: str) -> None:
        moves.append((before, after))

    sender = TelegramSender(bot, clock=clock, on_chat_migrated=remember)
    assert await sender.send(outbox_message(str(old))) == Sent(message_id=f"{new}:1")
    assert moves == [(str(old), str(new))]
    # Later sends to the old id go straight to the new chat.
    clock.advance(5)
    assert await sender.send(outbox_message(str(old))) == Sent(message_id=f"{new}:2")
    assert [c.params["chat_id"] for c in fake.calls_to("sendMessage")] == [
        str(old),
        str(new),
        str(new),
    ]


async def test_a_wrong_token_keeps_the_message_and_never_leaks_the_token(
    fake: FakeTelegram, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "7000000001:AAE-wrong-token-xxxxxxxxxxxxxxxxxxxx"
    caplog.set_level(logging.DEBUG)
    bot = make_bot(SecretStr(wrong), api_base=fake.base_url, read_timeout=0.5)
    # PTB itself puts the token in this message: the service must not show it (see service).
    with pytest.raises(InvalidToken):
        await bot.initialize()
    try:
        outcome = await TelegramSender(bot).send(outbox_message(str(PRIVATE)))
    finally:
        await bot.shutdown()
    assert isinstance(outcome, RetryLater)
    assert outcome.after == timedelta(minutes=10)
    assert wrong not in outcome.error
    assert all(
        wrong not in record.getMessage()
        for record in caplog.records
        if record.name.startswith("bot")
    )


async def test_pacing_keeps_a_second_per_chat_without_calling_telegram(
    fake: FakeTelegram, sender: TelegramSender, clock: Clock
) -> None:
    assert isinstance(await sender.send(outbox_message(str(PRIVATE))), Sent)
    paced = await sender.send(outbox_message(str(PRIVATE)))
    assert isinstance(paced, RetryLater)
    assert paced.after == timedelta(seconds=1)
    # Another chat is not held back by the first one.
    assert isinstance(await sender.send(outbox_message(str(PRIVATE + 1))), Sent)
    clock.advance(1)
    assert isinstance(await sender.send(outbox_message(str(PRIVATE))), Sent)
    assert len(fake.calls_to("sendMessage")) == 3


# -- pure parts -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("123", ChatTarget(123)),
        ("-1001234567890", ChatTarget(-1001234567890)),
        ("-1001234567890:42", ChatTarget(-1001234567890, 42)),
        ("@channel_name", ChatTarget("@channel_name")),
    ],
)
def test_parse_target(target: str, expected: ChatTarget) -> None:
    assert parse_target(target) == expected
    assert str(parse_target(target)) == target


@pytest.mark.parametrize("target", ["", "abc", "@ab", "12:x", "https://t.me/x", "1:2:3"])
def test_parse_target_refuses(target: str) -> None:
    with pytest.raises(ValueError, match="not a Telegram target"):
        parse_target(target)


T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_group_pacing_allows_twenty_a_minute() -> None:
    pacer = Pacer()
    for i in range(20):
        assert pacer.wait_before("g", group=True, now=at(i * 1.0)) == timedelta(0)
        pacer.note_sent("g", now=at(i * 1.0))
    # The 21st must wait until the first send leaves the one-minute window.
    assert pacer.wait_before("g", group=True, now=at(20)) == timedelta(seconds=40)
    assert pacer.wait_before("g", group=True, now=at(60)) == timedelta(0)
    # A private chat has no per-minute cap, only the one-second gap.
    for i in range(30):
        assert pacer.wait_before("p", group=False, now=at(i)) == timedelta(0)
        pacer.note_sent("p", now=at(i))


def test_custom_rules_and_holds() -> None:
    pacer = Pacer(
        PacingRules(chat_gap=timedelta(0), group_window=timedelta(seconds=10), group_max=2)
    )
    pacer.note_sent("g", now=at(0))
    pacer.note_sent("g", now=at(1))
    assert pacer.wait_before("g", group=True, now=at(2)) == timedelta(seconds=8)
    pacer.hold("g", until=at(30))
    assert pacer.wait_before("g", group=True, now=at(12)) == timedelta(seconds=18)
    pacer.hold("g", until=at(20))  # a shorter hold does not shorten the longer one
    assert pacer.wait_before("g", group=True, now=at(12)) == timedelta(seconds=18)


async def test_topics_of_one_group_share_its_twenty_a_minute(
    fake: FakeTelegram, sender: TelegramSender, clock: Clock
) -> None:
    fake.add_chat(GROUP, "supergroup", is_forum=True)
    for n in range(20):
        outcome = await sender.send(outbox_message(f"{GROUP}:{n % 2 + 1}"))
        assert isinstance(outcome, Sent), n
        clock.advance(1)
    paced = await sender.send(outbox_message(f"{GROUP}:1"))
    assert isinstance(paced, RetryLater)
    assert paced.after == timedelta(seconds=40)
    assert len(fake.sent_to(GROUP, 1)) == len(fake.sent_to(GROUP, 2)) == 10
