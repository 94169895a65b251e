"""Discord as a platform for ``counterparty run``: ``build(settings, engine, catalog)``.

The service logs the bot in over REST (enough for the sender), syncs the slash commands, and
keeps the gateway connection (which delivers the slash-command interactions) in a background
task. ``stop`` closes the gateway, the REST session and the sender's webhook session.

Endpoints: ``COUNTERPARTY_DISCORD_API_BASE`` replaces discord.py's REST base
(``discord.http.Route.BASE``, which also carries webhooks and interaction callbacks) and
``COUNTERPARTY_DISCORD_GATEWAY`` its gateway websocket URL; both default to Discord's own. The
token comes from ``DISCORD_TOKEN`` only and is never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

import discord
import yarl
from discord.gateway import DiscordWebSocket
from pydantic import SecretStr
from sqlalchemy import Engine

from bot.commands.core import CommandCore
from bot.delivery.discord.client import CounterpartyClient
from bot.delivery.discord.render import DiscordRenderer
from bot.delivery.discord.sender import DiscordSender, make_trace_config
from bot.delivery.platform import Renderer, first_of
from bot.delivery.records import Sender
from bot.matching.catalog import Catalog
from bot.ops.leader import LeaderLock
from bot.settings import DiscordSection, Settings

log = logging.getLogger(__name__)

STOP_TIMEOUT = 10.0


def configure_endpoints(*, api_base: str | None, gateway: str | None) -> None:
    """Point discord.py at another REST base and gateway (process-wide, as discord.py keeps
    both on classes). ``None`` leaves Discord's defaults."""
    if api_base:
        discord.http.Route.BASE = api_base.rstrip("/")
    if gateway:
        DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway)


class DiscordService:
    """The Discord :class:`bot.delivery.platform.PlatformService`."""

    name = "discord"

    def __init__(
        self,
        *,
        token: SecretStr,
        core: CommandCore,
        options: DiscordSection,
        gateway_lock: LeaderLock | None = None,
    ) -> None:
        self._token = token
        # With several replicas, only the holder of this lock connects the gateway (two
        # sessions would both receive every slash command); the others only post.
        self._lock = gateway_lock
        self._leading: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.client = CounterpartyClient(
            core,
            sync_commands=options.sync_commands,
            guild_ids=options.guild_ids,
            http_trace=make_trace_config(),
        )
        self._sender = DiscordSender(self.client)
        self._renderer = DiscordRenderer()
        self._gateway: asyncio.Task[None] | None = None

    @property
    def renderers(self) -> Sequence[Renderer]:
        return [self._renderer]

    @property
    def senders(self) -> Sequence[Sender]:
        return [self._sender]

    async def start(self) -> None:
        """Log in (REST), sync commands, and connect the gateway in the background.

        Returns once logged in; the sender works from then on, slash commands once the gateway
        is ready (:meth:`wait_until_ready`). A bad token raises ``discord.LoginFailure``."""
        await self.client.login(self._token.get_secret_value())
        if self._lock is None:
            self._gateway = asyncio.create_task(self._run_gateway(), name="discord-gateway")
        else:
            self._leading = asyncio.create_task(self._lead(self._lock), name="discord-leader")

    async def _lead(self, lock: LeaderLock) -> None:
        """Hold the gateway exactly while holding ``lock``: connect when it is taken, disconnect
        when it is lost (another replica has it now), wait for it again, until stopped."""
        if not await lock.acquire():
            log.info("discord: another replica holds the gateway; this one only posts")
        while await lock.wait_until_acquired(self._stopping):
            log.info("discord: this replica holds the gateway")
            self._gateway = asyncio.create_task(self._run_gateway(), name="discord-gateway")
            await first_of(self._stopping, lock.lost)
            if self._stopping.is_set():
                return
            log.error("discord: lost the gateway role; disconnecting until it is regained")
            await self._disconnect_gateway()

    async def _disconnect_gateway(self) -> None:
        """Close the gateway session only (the REST session stays, so posting goes on)."""
        gateway, self._gateway = self._gateway, None
        if gateway is not None:
            gateway.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await gateway
        if self.client.ws is not None:
            await self.client.ws.close(code=1000)

    async def _run_gateway(self) -> None:
        try:
            await self.client.connect(reconnect=True)
        except discord.DiscordException:
            log.exception("the Discord gateway connection ended; slash commands are offline")

    async def wait_until_ready(self) -> None:
        """Until the gateway said READY (wrap in ``asyncio.timeout`` to bound it)."""
        await self.client.wait_until_ready()

    async def stop(self) -> None:
        self._stopping.set()
        if self._leading is not None:
            await self._leading
            self._leading = None
        await self.client.close()
        if self._gateway is not None:
            try:
                await asyncio.wait_for(self._gateway, STOP_TIMEOUT)
            except TimeoutError:
                self._gateway.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._gateway
            self._gateway = None
        await self._sender.aclose()
        if self._lock is not None:
            await self._lock.release()


class WebhookOnlyService:
    """Discord without a bot token: posts to ``discord-webhook`` subscriptions, no commands."""

    name = "discord-webhook"

    def __init__(self) -> None:
        self._sender = DiscordSender(None)
        self._renderer = DiscordRenderer(platforms=("discord-webhook",))

    @property
    def renderers(self) -> Sequence[Renderer]:
        return [self._renderer]

    @property
    def senders(self) -> Sequence[Sender]:
        return [self._sender]

    async def start(self) -> None:
        """Nothing to connect: webhooks need no login."""

    async def stop(self) -> None:
        await self._sender.aclose()


def build(
    settings: Settings,
    engine: Engine,
    catalog: Catalog,
    *,
    gateway_lock: LeaderLock | None = None,
) -> DiscordService | WebhookOnlyService | None:
    """The Discord service. Without ``DISCORD_TOKEN``: a webhook-only service when
    ``feeds.toml`` has ``discord-webhook`` subscriptions, else ``None``. ``gateway_lock``
    elects the one replica that connects the gateway (default: this process always does)."""
    token = settings.env.discord_token
    configure_endpoints(
        api_base=settings.env.discord_api_base, gateway=settings.env.discord_gateway
    )
    if token is None:
        if any(s.platform == "discord-webhook" for s in settings.subscriptions):
            return WebhookOnlyService()
        return None
    core = CommandCore(
        engine,
        catalog,
        allow_private_feeds=settings.file.fetch.allow_private_addresses_from_commands,
    )
    return DiscordService(
        token=token, core=core, options=settings.file.discord, gateway_lock=gateway_lock
    )
