"""The Discord sender through discord.py's real HTTP code against the local fake Discord server."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import discord
import pytest

from bot.commands.answers import Notice
from bot.delivery.discord.render import render_answer
from bot.delivery.discord.sender import DiscordSender
from bot.delivery.records import OutboxMessage, Rejected, RetryLater, Sent, TargetUnavailable
from tests.support.discord_client import fake_discord_rest, logged_in_sender
from tests.support.fake_discord import WEBHOOK_ID, WEBHOOK_URL, FakeDiscord

CHANNEL = "123456789012345678"


@pytest.fixture
async def fake(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeDiscord]:
    async with fake_discord_rest(monkeypatch) as server:
        yield server


@pytest.fixture
async def sender(fake: FakeDiscord) -> AsyncIterator[DiscordSender]:
    async with logged_in_sender() as sender:
        yield sender


def message(
    *, platform: str = "discord", target: str = CHANNEL, nonce: str = "ob-1", payload: Any = None
) -> OutboxMessage:
    return OutboxMessage(
        id=1,
        platform=platform,
        target=target,
        payload=payload or render_answer(Notice("A sample digest line."))[0],
        nonce=nonce,
        attempts=0,
        subscription_id=7,
    )


async def test_channel_send_posts_embeds_with_nonce_and_no_mentions(
    fake: FakeDiscord, sender: DiscordSender
) -> None:
    outcome = await sender.send(message())
    assert isinstance(outcome, Sent)
    [posted] = fake.messages[CHANNEL]
    assert outcome.message_id == posted["id"]
    [request] = fake.requests_to("POST", f"/channels/{CHANNEL}/messages")
    assert request.body["nonce"] == "ob-1"
    assert request.body["enforce_nonce"] is True
    assert request.body["allowed_mentions"] == {"parse": []}
    assert request.body["embeds"][0]["description"] == "A sample digest line."


async def test_resend_with_the_same_nonce_returns_the_first_message(
    fake: FakeDiscord, sender: DiscordSender
) -> None:
    first = await sender.send(message(nonce="ob-42"))
    again = await sender.send(message(nonce="ob-42"))
    other = await sender.send(message(nonce="ob-43"))
    assert isinstance(first, Sent)
    assert again == first
    assert isinstance(other, Sent)
    assert other != first
    assert len(fake.messages[CHANNEL]) == 2


async def test_webhook_send_waits_for_the_message(fake: FakeDiscord, sender: DiscordSender) -> None:
    outcome = await sender.send(message(platform="discord-webhook", target=WEBHOOK_URL))
    assert isinstance(outcome, Sent)
    [request] = fake.requests_to("POST", f"/webhooks/{WEBHOOK_ID}/")
    assert request.query.get("wait") in ("1", "true")
    assert request.body["allowed_mentions"] == {"parse": []}
    assert outcome.message_id == fake.messages[str(WEBHOOK_ID)][0]["id"]


@pytest.mark.parametrize("platform", ["discord", "discord-webhook"])
async def test_long_429_is_retry_later_with_retry_after_and_no_sleep(
    fake: FakeDiscord, sender: DiscordSender, platform: str
) -> None:
    fake.fail(429, retry_after=45.5)
    target = CHANNEL if platform == "discord" else WEBHOOK_URL
    started = time.monotonic()
    outcome = await sender.send(message(platform=platform, target=target))
    assert outcome == RetryLater("Discord answered 429 rate limited", after=timedelta(seconds=45.5))
    assert time.monotonic() - started < 5
    assert fake.messages == {}


async def test_short_429_is_retried_by_discord_py_and_sent_once(
    fake: FakeDiscord, sender: DiscordSender
) -> None:
    fake.fail(429, retry_after=0.05)
    outcome = await sender.send(message())
    assert isinstance(outcome, Sent)
    assert len(fake.requests_to("POST", "/messages")) == 2
    assert len(fake.messages[CHANNEL]) == 1


@pytest.mark.parametrize("platform", ["discord", "discord-webhook"])
@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors_are_retry_later_at_once(
    fake: FakeDiscord, sender: DiscordSender, platform: str, status: int
) -> None:
    fake.fail(status, times=5)
    target = CHANNEL if platform == "discord" else WEBHOOK_URL
    started = time.monotonic()
    outcome = await sender.send(message(platform=platform, target=target))
    assert isinstance(outcome, RetryLater)
    assert str(status) in outcome.error
    assert time.monotonic() - started < 5
    assert len(fake.requests) - 2 == 1  # login's two requests, then exactly one attempt


@pytest.mark.parametrize("platform", ["discord", "discord-webhook"])
@pytest.mark.parametrize("status", [403, 404])
async def test_no_access_or_gone_is_target_unavailable(
    fake: FakeDiscord, sender: DiscordSender, platform: str, status: int
) -> None:
    fake.fail(status)
    target = CHANNEL if platform == "discord" else WEBHOOK_URL
    outcome = await sender.send(message(platform=platform, target=target))
    assert isinstance(outcome, TargetUnavailable)
    assert outcome.error.startswith(str(status))


async def test_other_4xx_is_rejected(fake: FakeDiscord, sender: DiscordSender) -> None:
    fake.fail(400)
    outcome = await sender.send(message())
    assert isinstance(outcome, Rejected)
    assert "400" in outcome.error


async def test_cloudflare_429_without_via_is_retry_later(
    fake: FakeDiscord, sender: DiscordSender
) -> None:
    fake.fail(429, retry_after=120, via=False)
    outcome = await sender.send(message())
    assert isinstance(outcome, RetryLater)
    assert outcome.after == timedelta(seconds=120)


async def test_oversized_payload_is_rejected_without_a_request(
    fake: FakeDiscord, sender: DiscordSender
) -> None:
    requests_before = len(fake.requests)
    outcome = await sender.send(message(payload={"content": "x" * 2001, "embeds": []}))
    assert isinstance(outcome, Rejected)
    assert "content" in outcome.error
    assert len(fake.requests) == requests_before


async def test_bad_targets_are_rejected(fake: FakeDiscord, sender: DiscordSender) -> None:
    assert isinstance(await sender.send(message(target="general")), Rejected)
    hook = await sender.send(message(platform="discord-webhook", target="https://example.com/x"))
    assert isinstance(hook, Rejected)
    assert "example.com" not in hook.error


async def test_unreachable_server_is_retry_later(
    sender: DiscordSender, monkeypatch: pytest.MonkeyPatch, unused_tcp_port: int
) -> None:
    monkeypatch.setattr(discord.http.Route, "BASE", f"http://127.0.0.1:{unused_tcp_port}/api/v10")
    outcome = await sender.send(message())
    assert isinstance(outcome, RetryLater)
    assert "network error" in outcome.error


async def test_without_a_bot_only_webhooks_are_served(fake: FakeDiscord) -> None:
    webhook_only = DiscordSender(None)
    try:
        assert webhook_only.platforms == ("discord-webhook",)
        sent = await webhook_only.send(message(platform="discord-webhook", target=WEBHOOK_URL))
        assert isinstance(sent, Sent)
        waiting = await webhook_only.send(message())
        assert isinstance(waiting, RetryLater)
        assert "DISCORD_TOKEN" in waiting.error
    finally:
        await webhook_only.aclose()
    assert fake.requests_to("POST", "/channels/") == []
