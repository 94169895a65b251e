"""discord.py's real client aimed at the fake Discord server, for tests of the Discord sender."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import discord
import pytest

from bot.delivery.discord.sender import DiscordSender, make_trace_config
from tests.support.fake_discord import FakeDiscord


@asynccontextmanager
async def fake_discord_rest(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeDiscord]:
    """A :class:`FakeDiscord` on loopback, with discord.py's REST routes aimed at it for the rest
    of the test (``monkeypatch`` undoes that)."""
    async with FakeDiscord() as server:
        monkeypatch.setattr(discord.http.Route, "BASE", server.api_base)
        yield server


@asynccontextmanager
async def fake_discord_for_the_bot(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeDiscord]:
    """A :class:`FakeDiscord` for tests in which the bot's own code (``build()``,
    ``configure_endpoints``) aims discord.py's class-level REST and gateway endpoints at it:
    ``monkeypatch`` puts Discord's own back when the test ends."""
    async with FakeDiscord() as server:
        monkeypatch.setattr(discord.http.Route, "BASE", discord.http.Route.BASE)
        gateway = discord.gateway.DiscordWebSocket
        monkeypatch.setattr(gateway, "DEFAULT_GATEWAY", gateway.DEFAULT_GATEWAY)
        yield server


@asynccontextmanager
async def logged_in_sender() -> AsyncIterator[DiscordSender]:
    """A :class:`DiscordSender` built as the bot builds one (no intents, no mentions, traced
    HTTP), logged in with a test token against wherever ``Route.BASE`` points."""
    client = discord.Client(
        intents=discord.Intents.none(),
        allowed_mentions=discord.AllowedMentions.none(),
        max_ratelimit_timeout=30,
        http_trace=make_trace_config(),
    )
    try:
        await client.login("fake-token-for-tests")
        async with aiohttp.ClientSession(trace_configs=[make_trace_config()]) as session:
            yield DiscordSender(client, session, timeout=10)
    finally:
        await client.close()
