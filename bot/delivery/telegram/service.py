"""Telegram as a platform for ``counterparty run``: ``build(settings, engine, catalog)``.

The service runs a python-telegram-bot ``Application`` inside the bot's own event loop (no
``run_polling``: the loop belongs to ``counterparty run``). ``start`` checks the token
(``getMe``), registers the commands (``setMyCommands``) and starts receiving updates, by long
polling (``getUpdates``) or, with ``[telegram] mode = "webhook"``, on a small aiohttp server
that Telegram calls at ``webhook_url``. ``stop`` undoes all of it.

Commands are thin: parse the arguments, call :class:`~bot.commands.core.CommandCore` in a worker
thread, render the answer (:mod:`bot.delivery.telegram.answers`). In groups, supergroups and
their topics, ``/subscribe`` and ``/unsubscribe`` need a chat administrator (checked with
``getChatMember``); in a private chat the person owns it; in a channel only administrators can
post at all.

Only one process may receive a token's updates (Telegram answers a second ``getUpdates`` with
409 Conflict). :class:`UpdatesLock` is the hook for that: ``bot.app`` passes
``build(..., updates_lock=LeaderLock(...))`` (``bot.ops.leader``: a PostgreSQL advisory lock, or
a lease row on SQLite); without one, :class:`LocalUpdatesLock` always grants it. A process that
does not get the lock still posts digests (sending needs no lock) and retries the lock every
``retry_interval`` seconds, so a standby takes over when the holder goes away.

The token comes from ``TELEGRAM_TOKEN`` only and never reaches a log line or an error this
module raises. ``COUNTERPARTY_TELEGRAM_API_BASE`` (PTB's ``base_url`` form, the token is
appended) points the bot at another Bot API server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from collections.abc import Callable, Coroutine, Sequence
from datetime import timedelta
from typing import Any, Protocol
from urllib.parse import urlsplit

from aiohttp import web
from pydantic import SecretStr
from sqlalchemy import Engine
from telegram import BotCommand, InlineKeyboardMarkup, LinkPreviewOptions, Update
from telegram.constants import ChatMemberStatus, ChatType, ParseMode
from telegram.error import InvalidToken, TelegramError
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    filters,
)
from telegram.request import HTTPXRequest

from bot.commands.answers import Answer, CommandError, Notice
from bot.commands.core import Caller, CommandCore
from bot.delivery.platform import Renderer, first_of
from bot.delivery.records import Sender
from bot.delivery.telegram.answers import (
    CLAIM_CALLBACK_PREFIX,
    HELP_TEXT,
    claim_keyboard,
    render_answer,
)
from bot.delivery.telegram.client import DEFAULT_API_BASE
from bot.delivery.telegram.render import TelegramMessage, TelegramRenderer
from bot.delivery.telegram.sender import PLATFORM, TelegramSender
from bot.matching.catalog import Catalog
from bot.settings import Settings, TelegramSection
from bot.storage import subscriptions as subs_repo

log = logging.getLogger(__name__)

AnyApplication = Application[Any, Any, Any, Any, Any, Any]
Context = ContextTypes.DEFAULT_TYPE

POLL_TIMEOUT = timedelta(seconds=10)
LOCK_RETRY = 30.0
# Telegram's account that speaks for anonymous group administrators.
GROUP_ANONYMOUS_BOT_ID = 1087968824
ADMIN_STATUSES = frozenset({ChatMemberStatus.ADMINISTRATOR, ChatMemberStatus.OWNER})
ALLOWED_UPDATES = ["message", "channel_post", "callback_query"]

BOT_COMMANDS = (
    BotCommand("subscribe", "Post digests here (themes, claims, cadence)"),
    BotCommand("unsubscribe", "Stop posting digests here"),
    BotCommand("subscriptions", "Show this chat's subscription"),
    BotCommand("themes", "List the essay's themes"),
    BotCommand("theme", "One theme with its claims and latest items"),
    BotCommand("claims", "List the tracked claims"),
    BotCommand("claim", "One claim and the latest evidence"),
    BotCommand("digest", "Preview what would be posted here now"),
    BotCommand("search", "Search recent matched items"),
    BotCommand("feeds", "List the feeds and their health"),
    BotCommand("status", "Delivery status of this chat"),
    BotCommand("help", "What this bot does and how to use it"),
)


class TelegramStartError(RuntimeError):
    """The Telegram service cannot start; the message says why (and never holds the token)."""


class UpdatesLock(Protocol):
    """Grants one process the right to receive a token's updates (``bot.ops.leader.LeaderLock``
    is one)."""

    @property
    def retry_interval(self) -> float:
        """Seconds between two tries of a process waiting for the lock."""
        ...

    @property
    def lost(self) -> asyncio.Event:
        """Set when a held lock is lost (e.g. its database connection ended)."""
        ...

    async def acquire(self) -> bool:
        """Take the lock if it is free; ``False`` when another process holds it."""
        ...

    async def release(self) -> None: ...


class LocalUpdatesLock:
    """The single-process lock: always granted, never lost. Enough for one process."""

    def __init__(self) -> None:
        self._lost = asyncio.Event()

    @property
    def retry_interval(self) -> float:
        return LOCK_RETRY

    @property
    def lost(self) -> asyncio.Event:
        return self._lost

    async def acquire(self) -> bool:
        return True

    async def release(self) -> None:
        return None


# ---------------------------------------------------------------------------------------------
# Who is asking


def caller_of(update: Update) -> Caller | None:
    """The command core's :class:`Caller` for a message or button press (``None`` without a
    chat). ``can_manage`` is left ``False``; :func:`is_chat_admin` decides it when needed."""
    chat = update.effective_chat
    if chat is None:
        return None
    message = update.effective_message
    thread_id = None
    if message is not None and getattr(message, "is_topic_message", False):
        thread_id = message.message_thread_id
    target = f"{chat.id}:{thread_id}" if thread_id is not None else str(chat.id)
    user = update.effective_user
    if chat.type == ChatType.PRIVATE:
        label = f"private chat with {user.full_name}" if user else "this private chat"
    else:
        label = chat.title or (f"@{chat.username}" if chat.username else str(chat.id))
        if thread_id is not None:
            label += f" (topic {thread_id})"
    return Caller(
        platform=PLATFORM,
        target=target,
        target_label=label,
        user_id=str(user.id) if user else str(chat.id),
        guild_id=None if chat.type == ChatType.PRIVATE else str(chat.id),
    )


async def is_chat_admin(update: Update, context: Context) -> bool:
    """May this sender change the chat's subscription? Private chat: yes; channel post: yes
    (only administrators post); group: the sender is its creator or an administrator."""
    chat = update.effective_chat
    if chat is None:
        return False
    if chat.type == ChatType.PRIVATE or update.channel_post is not None:
        return True
    message = update.effective_message
    if message is not None and message.sender_chat is not None:
        # An anonymous administrator speaks as the group itself.
        return message.sender_chat.id == chat.id
    user = update.effective_user
    if user is None or user.id == GROUP_ANONYMOUS_BOT_ID:
        return False
    member = await context.bot.get_chat_member(chat.id, user.id)
    return member.status in ADMIN_STATUSES


# ---------------------------------------------------------------------------------------------
# Arguments

_SUBSCRIBE_KEYS = {"themes", "claims", "cadence", "min", "max"}


def parse_subscribe_args(args: Sequence[str]) -> dict[str, str]:
    """``putin-deal energy-windfall claims=a,b cadence=daily 08:00 Europe/Kyiv min=0.6 max=5``:
    bare words before any ``key=`` are themes; a value runs until the next ``key=``.
    Raises :class:`CommandError` for an unknown key."""
    values: dict[str, list[str]] = {}
    key = "themes"
    for word in args:
        name, sep, rest = word.partition("=")
        if sep:
            if name.lower() not in _SUBSCRIBE_KEYS:
                raise CommandError(
                    f"Unknown option {name!r}. Use themes=, claims=, cadence=, min= or max=."
                )
            key = name.lower()
            values.setdefault(key, [])
            if rest:
                values[key].append(rest)
        else:
            values.setdefault(key, []).append(word)
    return {k: " ".join(v) for k, v in values.items()}


def _number(text: str | None, kind: type[float] | type[int], what: str) -> Any:
    if text is None or not text.strip():
        return None
    try:
        return kind(text.strip())
    except ValueError:
        raise CommandError(f"{what} must be a number, not {text!r}.") from None


# ---------------------------------------------------------------------------------------------
# Handlers


class TelegramCommands:
    """The command handlers: a few lines each around :class:`CommandCore`."""

    def __init__(self, core: CommandCore) -> None:
        self.core = core

    def handlers(self) -> list[Any]:
        messages = filters.UpdateType.MESSAGE | filters.UpdateType.CHANNEL_POST
        table: list[tuple[str, Callable[[Update, Context], Coroutine[Any, Any, None]]]] = [
            ("start", self.help),
            ("help", self.help),
            ("subscribe", self.subscribe),
            ("unsubscribe", self.unsubscribe),
            ("subscriptions", self.subscriptions),
            ("themes", self.themes),
            ("theme", self.theme),
            ("claims", self.claims),
            ("claim", self.claim),
            ("digest", self.digest),
            ("search", self.search),
            ("feeds", self.feeds),
            ("status", self.status),
        ]
        built: list[Any] = [
            CommandHandler(name, callback, filters=messages) for name, callback in table
        ]
        built.append(CallbackQueryHandler(self.claim_button, pattern=f"^{CLAIM_CALLBACK_PREFIX}"))
        return built

    # -- plumbing ----------------------------------------------------------------------------

    async def reply(
        self,
        update: Update,
        context: Context,
        messages: Sequence[TelegramMessage],
        *,
        keyboard: InlineKeyboardMarkup | None = None,
    ) -> None:
        """Send ``messages`` to the chat (and topic) the update came from, in order."""
        chat = update.effective_chat
        if chat is None:
            return
        message = update.effective_message
        thread_id = None
        if message is not None and getattr(message, "is_topic_message", False):
            thread_id = message.message_thread_id
        for index, item in enumerate(messages):
            last = index == len(messages) - 1
            await context.bot.send_message(
                chat_id=chat.id,
                text=item.text,
                parse_mode=ParseMode.HTML,
                link_preview_options=LinkPreviewOptions(is_disabled=not item.link_preview),
                message_thread_id=thread_id,
                reply_markup=keyboard if last else None,
            )

    async def answer(self, update: Update, context: Context, work: Callable[[], Answer]) -> None:
        """Run ``work`` (a core call) off the event loop and reply with what it returns; a
        :class:`CommandError` becomes a refusal in one sentence."""
        try:
            result = await asyncio.to_thread(work)
        except CommandError as exc:
            result = Notice(exc.message, ok=False)
        await self.reply(update, context, render_answer(result))

    async def admin_or_refuse(self, update: Update, context: Context) -> bool:
        """True for a chat admin; anyone else is told why the change is refused."""
        if await is_chat_admin(update, context):
            return True
        await self.refuse(
            update, context, "Only an administrator of this chat can change its subscription."
        )
        return False

    async def refuse(self, update: Update, context: Context, text: str) -> None:
        await self.reply(update, context, render_answer(Notice(text, ok=False)))

    async def on_error(self, update: object, context: Context) -> None:
        """The Application's error handler: log the traceback, and tell the person in one
        sentence that their command failed (if that reply fails too, the log says so)."""
        log.error("telegram: handling an update failed", exc_info=context.error)
        if not isinstance(update, Update) or update.effective_chat is None:
            return
        try:
            await self.refuse(
                update, context, "Sorry, that command failed. The problem is in the bot's log."
            )
        except TelegramError as exc:
            log.warning("telegram: could not report the failure to the chat either: %s", exc)

    # -- commands ----------------------------------------------------------------------------

    async def help(self, update: Update, context: Context) -> None:
        await self.reply(update, context, [TelegramMessage(text=HELP_TEXT)])

    async def subscribe(self, update: Update, context: Context) -> None:
        caller = caller_of(update)
        if caller is None:
            return
        if not await self.admin_or_refuse(update, context):
            return
        try:
            options = parse_subscribe_args(context.args or [])
            min_score = _number(options.get("min"), float, "min")
            max_items = _number(options.get("max"), int, "max")
        except CommandError as exc:
            await self.refuse(update, context, exc.message)
            return
        await self.answer(
            update,
            context,
            lambda: self.core.subscribe(
                caller,
                themes=options.get("themes"),
                claims=options.get("claims"),
                cadence=options.get("cadence"),
                min_score=min_score,
                max_items=max_items,
            ),
        )

    async def unsubscribe(self, update: Update, context: Context) -> None:
        caller = caller_of(update)
        if caller is None:
            return
        if not await self.admin_or_refuse(update, context):
            return
        await self.answer(update, context, lambda: self.core.unsubscribe(caller))

    async def subscriptions(self, update: Update, context: Context) -> None:
        caller = caller_of(update)
        if caller is not None:
            await self.answer(update, context, lambda: self.core.subscriptions(caller))

    async def themes(self, update: Update, context: Context) -> None:
        await self.answer(update, context, self.core.themes)

    async def theme(self, update: Update, context: Context) -> None:
        args = context.args or []
        if not args:
            await self.answer(update, context, self.core.themes)
            return
        await self.answer(update, context, lambda: self.core.theme(args[0]))

    async def claims(self, update: Update, context: Context) -> None:
        await self.answer(update, context, self.core.claims)

    async def claim(self, update: Update, context: Context) -> None:
        args = context.args or []
        if args:
            await self.answer(update, context, lambda: self.core.claim(args[0]))
            return
        listing = await asyncio.to_thread(self.core.claims)
        await self.reply(
            update,
            context,
            [TelegramMessage(text="Which claim? Pick one:")],
            keyboard=claim_keyboard(listing.claims),
        )

    async def claim_button(self, update: Update, context: Context) -> None:
        query = update.callback_query
        if query is None or query.data is None:
            return
        await query.answer()
        claim_id = query.data.removeprefix(CLAIM_CALLBACK_PREFIX)
        await self.answer(update, context, lambda: self.core.claim(claim_id))

    async def digest(self, update: Update, context: Context) -> None:
        caller = caller_of(update)
        if caller is not None:
            await self.answer(update, context, lambda: self.core.digest_preview(caller))

    async def search(self, update: Update, context: Context) -> None:
        words = " ".join(context.args or [])
        await self.answer(update, context, lambda: self.core.search(words))

    async def feeds(self, update: Update, context: Context) -> None:
        await self.answer(update, context, self.core.feeds)

    async def status(self, update: Update, context: Context) -> None:
        caller = caller_of(update)
        if caller is not None:
            await self.answer(update, context, lambda: self.core.status(caller))


# ---------------------------------------------------------------------------------------------
# Chat migration


# ---------------------------------------------------------------------------------------------
# The service


def make_application(
    token: SecretStr, *, api_base: str | None, read_timeout: float = 20.0
) -> AnyApplication:
    """A PTB Application for ``token`` (no job queue: scheduling is the bot's own)."""
    os.environ.setdefault("PTB_TIMEDELTA", "1")  # see client.make_bot
    request = HTTPXRequest(
        connection_pool_size=8,
        read_timeout=read_timeout,
        write_timeout=read_timeout,
        pool_timeout=read_timeout,
    )
    updates_request = HTTPXRequest(
        connection_pool_size=1,
        read_timeout=read_timeout,
        write_timeout=read_timeout,
        pool_timeout=read_timeout,
    )
    return (
        ApplicationBuilder()
        .token(token.get_secret_value())
        .base_url(api_base or DEFAULT_API_BASE)
        .request(request)
        .get_updates_request(updates_request)
        .job_queue(None)
        .concurrent_updates(True)
        .build()
    )


class TelegramService:
    """The Telegram :class:`bot.delivery.platform.PlatformService`."""

    name = "telegram"

    def __init__(
        self,
        *,
        application: AnyApplication,
        core: CommandCore,
        options: TelegramSection,
        engine: Engine,
        updates_lock: UpdatesLock | None = None,
    ) -> None:
        self.application = application
        self.options = options
        self.commands = TelegramCommands(core)
        self._engine = engine
        self._lock = updates_lock or LocalUpdatesLock()
        self._has_lock = False
        self._receiving = False
        self._webhook: web.AppRunner | None = None
        self._webhook_secret = secrets.token_urlsafe(32)
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._renderer = TelegramRenderer()
        self._sender = TelegramSender(application.bot, on_chat_migrated=self._chat_migrated)
        for handler in self.commands.handlers():
            application.add_handler(handler)
        application.add_error_handler(self.commands.on_error)

    @property
    def renderers(self) -> Sequence[Renderer]:
        return [self._renderer]

    @property
    def senders(self) -> Sequence[Sender]:
        return [self._sender]

    @property
    def receiving(self) -> bool:
        """Whether this process receives updates (holds the updates lock)."""
        return self._receiving

    async def _chat_migrated(self, old_target: str, new_target: str) -> None:
        def record() -> None:
            with self._engine.begin() as conn:
                subs_repo.record_chat_migration(conn, PLATFORM, old_target, new_target)

        await asyncio.to_thread(record)

    async def start(self) -> None:
        """Check the token, register the commands, start receiving updates (if this process
        gets the updates lock; otherwise keep trying in the background). Returns once running.

        Raises :class:`TelegramStartError` when Telegram refuses the token."""
        try:
            await self.application.initialize()
        except InvalidToken:
            await self.application.bot.shutdown()  # close the connections initialize opened
            # PTB's own message quotes the token: say it without it.
            raise TelegramStartError(
                "Telegram refused TELEGRAM_TOKEN (getMe failed); check the token with @BotFather"
            ) from None
        try:
            await self.application.bot.set_my_commands(list(BOT_COMMANDS))
        except TelegramError:
            log.warning("telegram: could not register the command list", exc_info=True)
        await self.application.start()
        if await self._lock.acquire():
            await self._start_receiving()
        else:
            log.info("telegram: another process receives updates; this one only posts")
        self._supervisor = asyncio.create_task(self._supervise(), name="telegram-updates-lock")

    async def _supervise(self) -> None:
        """While running: without the lock, retry it every ``retry_interval``; with it, watch
        for its loss (``lock.lost``) and then stop receiving until it is regained."""
        while not self._stopping.is_set():
            if self._has_lock:
                await first_of(self._stopping, self._lock.lost)
                if self._stopping.is_set():
                    return
                log.error("telegram: lost the updates lock; receiving stops until it is regained")
                await self._stop_receiving()
                await self._lock.release()
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._lock.retry_interval)
            if not self._stopping.is_set() and await self._lock.acquire():
                await self._start_receiving()

    async def _start_receiving(self) -> None:
        self._has_lock = True
        if self.options.mode == "webhook":
            await self._start_webhook()
        else:
            updater = self.application.updater
            assert updater is not None
            await updater.start_polling(
                timeout=POLL_TIMEOUT,
                allowed_updates=ALLOWED_UPDATES,
                error_callback=self._polling_error,
            )
        self._receiving = True
        log.info("telegram: receiving updates by %s", self.options.mode)

    @staticmethod
    def _polling_error(error: TelegramError) -> None:
        log.warning("telegram: getUpdates failed (PTB retries): %s", error)

    async def _start_webhook(self) -> None:
        url = self.options.webhook_url
        assert url is not None  # the settings refuse webhook mode without it
        path = urlsplit(url).path or "/"
        app = web.Application()
        app.router.add_post(path, self._webhook_update)
        self._webhook = web.AppRunner(app, access_log=None)
        await self._webhook.setup()
        site = web.TCPSite(self._webhook, self.options.webhook_listen, self.options.webhook_port)
        await site.start()
        await self.application.bot.set_webhook(
            url=url, allowed_updates=ALLOWED_UPDATES, secret_token=self._webhook_secret
        )

    async def _webhook_update(self, request: web.Request) -> web.Response:
        given = request.headers.get("X-Telegram-Bot-Api-Secret-Token", "")
        if not secrets.compare_digest(given, self._webhook_secret):
            return web.Response(status=403)
        try:
            data = await request.json()
        except ValueError:
            return web.Response(status=400)
        update_obj = Update.de_json(data, self.application.bot)
        await self.application.update_queue.put(update_obj)
        return web.Response(status=200)

    async def _stop_receiving(self) -> None:
        updater = self.application.updater
        if updater is not None and updater.running:
            await updater.stop()
        if self._webhook is not None:
            try:
                await self.application.bot.delete_webhook()
            except TelegramError as exc:
                log.warning("telegram: could not remove the webhook: %s", exc)
            await self._webhook.cleanup()
            self._webhook = None
        self._receiving = False
        self._has_lock = False

    async def stop(self) -> None:
        """Stop receiving, let running handlers finish, close every connection, give the
        updates lock back."""
        self._stopping.set()
        if self._supervisor is not None:
            await self._supervisor
            self._supervisor = None
        held = self._has_lock
        await self._stop_receiving()
        if self.application.running:
            await self.application.stop()
        await self.application.shutdown()
        if held:
            await self._lock.release()


def build(
    settings: Settings,
    engine: Engine,
    catalog: Catalog,
    *,
    updates_lock: UpdatesLock | None = None,
) -> TelegramService | None:
    """The Telegram service, or ``None`` when ``TELEGRAM_TOKEN`` is not set."""
    token = settings.env.telegram_token
    if token is None:
        return None
    core = CommandCore(
        engine,
        catalog,
        allow_private_feeds=settings.file.fetch.allow_private_addresses_from_commands,
    )
    application = make_application(token, api_base=settings.env.telegram_api_base)
    return TelegramService(
        application=application,
        core=core,
        options=settings.file.telegram,
        engine=engine,
        updates_lock=updates_lock,
    )
