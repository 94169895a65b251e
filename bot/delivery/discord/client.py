"""The discord.py client and its slash commands: thin handlers over :class:`CommandCore`.

Each handler does three things: build a :class:`~bot.commands.core.Caller` from the interaction,
run one core method off the event loop, and send the rendered answer. Work that touches the
database or DNS is deferred first (``interaction.response.defer``), so Discord's 3-second
deadline for the first response is met however slow the work is; answers from the in-memory
catalog are sent at once. Every message goes out with ``AllowedMentions.none()``.

The client asks for no privileged intent (slash commands need none). ``/feeds add`` and
``/feeds remove`` need the Manage Server permission: Discord hides nothing for them, so the
check runs here (``app_commands.checks.has_permissions``) and again in the core.
``/subscribe`` and ``/unsubscribe`` in a server need Manage Server too (or Administrator),
checked here: their default permission only hides them, and a server's admins can change that
per role or channel. In a DM with the bot the user changes their own conversation: allowed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp
import discord
from discord import app_commands

from bot.commands.answers import Answer, CommandError
from bot.commands.core import Caller, CommandCore
from bot.delivery.discord.render import Payload, render_answer, render_error

log = logging.getLogger(__name__)

NO_MENTIONS = discord.AllowedMentions.none()


def caller_of(interaction: discord.Interaction[Any]) -> Caller:
    """Where the command came from and what the user may do there."""
    channel_id = interaction.channel_id
    target = str(channel_id) if channel_id is not None else f"dm-{interaction.user.id}"
    return Caller(
        platform="discord",
        target=target,
        target_label=f"<#{channel_id}>" if channel_id is not None else "this conversation",
        user_id=str(interaction.user.id),
        guild_id=str(interaction.guild_id) if interaction.guild_id is not None else None,
        can_manage=interaction.permissions.manage_guild or interaction.permissions.administrator,
    )


class SubscriptionChangeRefused(app_commands.CheckFailure):
    """The user may not change the subscription where they ran the command."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def may_change_subscription(interaction: discord.Interaction[Any]) -> bool:
    """The server-side check of ``/subscribe`` and ``/unsubscribe``: in a server the user needs
    Manage Server (or Administrator); outside a server only their own DM with the bot counts.
    Raises :class:`SubscriptionChangeRefused` with the sentence to show."""
    if interaction.guild_id is None:
        if interaction.context.dm_channel or isinstance(interaction.channel, discord.DMChannel):
            return True
        raise SubscriptionChangeRefused(
            "Subscriptions can be changed in a server channel or in a direct message with the "
            "bot, not in a group conversation."
        )
    permissions = interaction.permissions
    if permissions.manage_guild or permissions.administrator:
        return True
    raise SubscriptionChangeRefused(
        "You need the Manage Server permission to change this channel's subscription."
    )


def _kwargs(payload: Payload) -> dict[str, Any]:
    embeds = [discord.Embed.from_dict(raw) for raw in payload.get("embeds") or []]
    content = payload.get("content")
    return {
        "embeds": embeds,
        "content": content if content else discord.utils.MISSING,
        "allowed_mentions": NO_MENTIONS,
    }


async def send_payloads(
    interaction: discord.Interaction[Any], payloads: Sequence[Payload], *, ephemeral: bool
) -> None:
    """Answer with every message: the response if not yet given, then follow-ups."""
    for payload in payloads:
        if not interaction.response.is_done():
            await interaction.response.send_message(ephemeral=ephemeral, **_kwargs(payload))
        else:
            await interaction.followup.send(ephemeral=ephemeral, **_kwargs(payload))


async def answer(
    interaction: discord.Interaction[Any],
    work: Callable[[], Answer],
    *,
    ephemeral: bool = False,
    defer: bool = True,
) -> None:
    """Run ``work`` (off the loop when deferring) and send its rendered answer; a
    :class:`CommandError` becomes a refusal message."""
    if defer:
        await interaction.response.defer(ephemeral=ephemeral, thinking=True)
    try:
        result = await asyncio.to_thread(work) if defer else work()
    except CommandError as exc:
        payloads = [render_error(exc.message)]
    else:
        payloads = render_answer(result)
    await send_payloads(interaction, payloads, ephemeral=ephemeral)


class CommandTree(app_commands.CommandTree[Any]):
    """The tree with one error handler: refusals users understand, tracebacks in the log."""

    async def on_error(
        self, interaction: discord.Interaction[Any], error: app_commands.AppCommandError
    ) -> None:
        if isinstance(error, SubscriptionChangeRefused):
            text = error.message
        elif isinstance(error, app_commands.MissingPermissions):
            text = "You need the Manage Server permission to add or remove feeds."
        elif isinstance(error, app_commands.NoPrivateMessage):
            text = "This command works in a server channel only."
        else:
            name = interaction.command.qualified_name if interaction.command else "?"
            log.error("slash command /%s failed", name, exc_info=error)
            text = "Something went wrong on the bot's side; the error is in its log."
        try:
            await send_payloads(interaction, [render_error(text)], ephemeral=True)
        except discord.HTTPException:
            log.warning("could not tell the user about a failed command", exc_info=True)


def add_commands(tree: app_commands.CommandTree[Any], core: CommandCore) -> None:
    """Register every slash command on ``tree``."""

    async def theme_autocomplete(
        _interaction: discord.Interaction[Any], current: str
    ) -> list[app_commands.Choice[str]]:
        # several ids may be typed, comma-separated: complete the last one
        head, _, last = current.rpartition(",")
        prefix = f"{head}, " if head else ""
        return [
            app_commands.Choice(name=label, value=(prefix + value)[:100])
            for label, value in core.theme_choices(last)
        ]

    async def claim_autocomplete(
        _interaction: discord.Interaction[Any], current: str
    ) -> list[app_commands.Choice[str]]:
        return [
            app_commands.Choice(name=label, value=value)
            for label, value in core.claim_choices(current)
        ]

    @tree.command(name="subscribe", description="Post digests of the essay's themes here.")
    @app_commands.describe(
        themes="Theme ids, comma-separated (default: all)",
        claims="Claim ids to follow as well, comma-separated",
        cadence="instant, every N hours (6h) or daily 08:00 Europe/Kyiv",
        min_score="Only items scoring at least this (0-1, default 0.5)",
        max_items="At most this many items per digest (1-100, default 10)",
    )
    @app_commands.default_permissions(manage_channels=True)
    @app_commands.check(may_change_subscription)
    @app_commands.autocomplete(themes=theme_autocomplete)
    async def subscribe(
        interaction: discord.Interaction[Any],
        themes: str | None = None,
        claims: str | None = None,
        cadence: str | None = None,
        min_score: app_commands.Range[float, 0.0, 1.0] | None = None,
        max_items: app_commands.Range[int, 1, 100] | None = None,
    ) -> None:
        caller = caller_of(interaction)
        await answer(
            interaction,
            lambda: core.subscribe(
                caller,
                themes=themes,
                claims=claims,
                cadence=cadence,
                min_score=min_score,
                max_items=max_items,
            ),
        )

    @tree.command(name="unsubscribe", description="Stop posting digests here.")
    @app_commands.default_permissions(manage_channels=True)
    @app_commands.check(may_change_subscription)
    async def unsubscribe(interaction: discord.Interaction[Any]) -> None:
        caller = caller_of(interaction)
        await answer(interaction, lambda: core.unsubscribe(caller))

    @tree.command(name="subscriptions", description="This server's subscriptions.")
    async def subscriptions(interaction: discord.Interaction[Any]) -> None:
        caller = caller_of(interaction)
        await answer(interaction, lambda: core.subscriptions(caller), ephemeral=True)

    @tree.command(name="themes", description="The essay's themes the bot watches for.")
    async def themes(interaction: discord.Interaction[Any]) -> None:
        await answer(interaction, core.themes, defer=False)

    @tree.command(name="theme", description="One theme: its framing, claims and latest items.")
    @app_commands.describe(theme="Theme id")
    @app_commands.autocomplete(theme=theme_autocomplete)
    async def theme(interaction: discord.Interaction[Any], theme: str) -> None:
        await answer(interaction, lambda: core.theme(theme))

    @tree.command(name="claims", description="The claims the bot tracks evidence for.")
    async def claims(interaction: discord.Interaction[Any]) -> None:
        await answer(interaction, core.claims, defer=False)

    @tree.command(
        name="claim", description="One claim: who said it, the essay's comment, evidence."
    )
    @app_commands.describe(claim="Claim id (type to search ids, claimants and quotes)")
    @app_commands.autocomplete(claim=claim_autocomplete)
    async def claim(interaction: discord.Interaction[Any], claim: str) -> None:
        await answer(interaction, lambda: core.claim(claim))

    @tree.command(
        name="digest", description="Preview what would be posted here now (only you see it)."
    )
    async def digest(interaction: discord.Interaction[Any]) -> None:
        caller = caller_of(interaction)
        await answer(interaction, lambda: core.digest_preview(caller), ephemeral=True)

    @tree.command(name="search", description="Recent matched items containing these words.")
    @app_commands.describe(words="Words that must all appear")
    async def search(
        interaction: discord.Interaction[Any], words: app_commands.Range[str, 1, 200]
    ) -> None:
        await answer(interaction, lambda: core.search(words))

    @tree.command(name="status", description="Paused subscriptions, outbox and feed health.")
    async def status(interaction: discord.Interaction[Any]) -> None:
        caller = caller_of(interaction)
        await answer(interaction, lambda: core.status(caller), ephemeral=True)

    feeds = app_commands.Group(name="feeds", description="The feeds the bot polls.")

    @feeds.command(name="list", description="Every feed with its health.")
    async def feeds_list(interaction: discord.Interaction[Any]) -> None:
        await answer(interaction, core.feeds, ephemeral=True)

    @feeds.command(name="add", description="Follow a new feed (Manage Server).")
    @app_commands.describe(url="The feed's http(s) URL")
    @app_commands.checks.has_permissions(manage_guild=True)
    async def feeds_add(interaction: discord.Interaction[Any], url: str) -> None:
        caller = caller_of(interaction)
        await answer(interaction, lambda: core.add_feed(caller, url), ephemeral=True)

    @feeds.command(name="remove", description="Stop following a feed (Manage Server).")
    @app_commands.describe(url="The feed's URL, as /feeds list shows it")
    @app_commands.checks.has_permissions(manage_guild=True)
    async def feeds_remove(interaction: discord.Interaction[Any], url: str) -> None:
        caller = caller_of(interaction)
        await answer(interaction, lambda: core.remove_feed(caller, url), ephemeral=True)

    tree.add_command(feeds)


class CounterpartyClient(discord.Client):
    """The bot: no privileged intents, no mentions, slash commands synced at start-up."""

    def __init__(
        self,
        core: CommandCore,
        *,
        sync_commands: bool = True,
        guild_ids: Sequence[int] = (),
        http_trace: aiohttp.TraceConfig | None = None,
    ) -> None:
        options: dict[str, Any] = {"http_trace": http_trace} if http_trace is not None else {}
        super().__init__(
            intents=discord.Intents(guilds=True),
            allowed_mentions=NO_MENTIONS,
            max_ratelimit_timeout=30.0,
            **options,
        )
        self.tree = CommandTree(self)
        add_commands(self.tree, core)
        self._sync_commands = sync_commands
        self._guild_ids = list(guild_ids)

    async def setup_hook(self) -> None:
        if not self._sync_commands:
            return
        for guild_id in self._guild_ids:
            guild = discord.Object(id=guild_id)
            self.tree.copy_global_to(guild=guild)
            await self.tree.sync(guild=guild)
        await self.tree.sync()
        log.info("slash commands synced (global, and %d guilds)", len(self._guild_ids))
