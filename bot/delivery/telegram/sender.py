"""The outbox :class:`~bot.delivery.records.Sender` for platform ``telegram``.

It posts one stored payload (``render.TelegramMessage.payload``) with python-telegram-bot's real
``Bot.send_message`` and maps what Telegram answers to one outcome:

=============================================  ==============================================
Telegram's answer                              outcome
=============================================  ==============================================
200 with a message                             ``Sent(message_id)`` (``"CHAT:MESSAGE_ID"``)
429 ``retry_after`` (``RetryAfter``)           ``RetryLater(after=retry_after)``, chat held
5xx, timeout, connection error                 ``RetryLater``
this process's pacing says "not yet"           ``RetryLater(after=wait)``, nothing sent
403 (bot kicked, blocked, not a member)        ``TargetUnavailable``
400 chat / topic not found, no rights to post  ``TargetUnavailable``
400 ``migrate_to_chat_id`` (``ChatMigrated``)  resent once to the new chat id; the
                                               ``on_chat_migrated`` hook is told
any other 400 (bad HTML, too long...)          ``Rejected``
401/404 invalid token                          ``RetryLater`` (a configuration problem: the
                                               message is kept until the token is fixed)
=============================================  ==============================================

Targets are ``"CHAT_ID"``, ``"CHAT_ID:TOPIC_ID"`` (a forum topic, ``message_thread_id``) or
``"@channelname"``. The sender never sleeps and never touches the database; error texts it
returns or logs never contain the token.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from telegram import Bot, LinkPreviewOptions
from telegram.constants import ParseMode
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Conflict,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.warnings import PTBDeprecationWarning

from bot.delivery.records import (
    OutboxMessage,
    Rejected,
    RetryLater,
    SendOutcome,
    Sent,
    TargetUnavailable,
)
from bot.delivery.telegram.pacing import Pacer, is_group_chat
from bot.delivery.telegram.render import TelegramMessage

log = logging.getLogger(__name__)

PLATFORM = "telegram"
_TARGET = re.compile(r"^(?P<chat>-?\d+|@[A-Za-z][A-Za-z0-9_]{3,})(?::(?P<topic>\d+))?$")
# 400 answers that mean "this chat cannot receive from us", not "this message is bad".
_UNAVAILABLE_400 = (
    "chat not found",
    "thread not found",
    "topic_closed",
    "topic_deleted",
    "not enough rights",
    "need administrator rights",
    "have no rights to send",
    "chat_write_forbidden",
    "chat_admin_required",
    "bot is not a member",
    "user is deactivated",
)
_INVALID_TOKEN_DELAY = timedelta(minutes=10)

ChatMigratedHook = Callable[[str, str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ChatTarget:
    """Where a message goes: a chat (numeric id or ``@channel``) and optionally a forum topic."""

    chat_id: int | str
    thread_id: int | None = None

    @property
    def key(self) -> str:
        """The chat's key for pacing (a topic shares its chat's limits)."""
        return str(self.chat_id)

    def __str__(self) -> str:
        return (
            f"{self.chat_id}:{self.thread_id}" if self.thread_id is not None else str(self.chat_id)
        )


def parse_target(target: str) -> ChatTarget:
    """``"-1001234"``, ``"-1001234:42"`` or ``"@channel"``; raises ``ValueError`` otherwise."""
    found = _TARGET.match(target.strip())
    if not found:
        raise ValueError(
            f"{target!r} is not a Telegram target; use 'CHAT_ID', 'CHAT_ID:TOPIC_ID' or '@channel'"
        )
    chat = found["chat"]
    topic = found["topic"]
    return ChatTarget(
        chat_id=chat if chat.startswith("@") else int(chat),
        thread_id=int(topic) if topic is not None else None,
    )


def retry_after_of(exc: RetryAfter) -> timedelta:
    """``exc.retry_after`` as a timedelta, whichever type PTB is configured to return.

    PTB 22 warns (``PTBDeprecationWarning``) on reading it unless ``PTB_TIMEDELTA`` is set; the
    value is the same either way, so the warning is silenced here only."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value = exc.retry_after
    return value if isinstance(value, timedelta) else timedelta(seconds=float(value))


def _utc_now() -> datetime:
    return datetime.now(UTC)


class TelegramSender:
    """Posts outbox messages to Telegram chats, topics and channels through ``bot``.

    ``bot`` must be initialised (``await bot.initialize()``) by whoever owns it; the sender
    neither opens nor closes it. ``on_chat_migrated(old_target, new_target)`` is awaited when a
    group turned into a supergroup, so the owner can store the new target."""

    platforms: tuple[str, ...] = (PLATFORM,)

    def __init__(
        self,
        bot: Bot,
        *,
        pacer: Pacer | None = None,
        clock: Callable[[], datetime] = _utc_now,
        on_chat_migrated: ChatMigratedHook | None = None,
    ) -> None:
        self.bot = bot
        self.pacer = pacer or Pacer()
        self.clock = clock
        self.on_chat_migrated = on_chat_migrated
        self._migrated: dict[str, int] = {}  # old chat id -> new chat id, learned this process

    def _redact(self, text: str) -> str:
        token = self.bot.token
        return text.replace(token, "***") if token else text

    def _describe(self, exc: BaseException) -> str:
        return self._redact(f"{type(exc).__name__}: {exc}")

    async def send(self, message: OutboxMessage) -> SendOutcome:
        """Post ``message`` once and report what happened (see the module docstring)."""
        try:
            target = parse_target(message.target)
            content = TelegramMessage.from_payload(message.payload)
        except ValueError as exc:
            return Rejected(str(exc))
        moved = self._migrated.get(target.key)
        if moved is not None:
            target = ChatTarget(moved, target.thread_id)
        now = self.clock()
        group = is_group_chat(target.chat_id)
        wait = self.pacer.wait_before(target.key, group=group, now=now)
        if wait > timedelta(0):
            return RetryLater(f"paced: next message to {target.key} in {wait}", after=wait)
        self.pacer.note_sent(target.key, now=now)
        return await self._post(target, content, message)

    async def _post(
        self, target: ChatTarget, content: TelegramMessage, message: OutboxMessage, *, hop: int = 0
    ) -> SendOutcome:
        try:
            posted = await self.bot.send_message(
                chat_id=target.chat_id,
                text=content.text,
                parse_mode=ParseMode.HTML,
                link_preview_options=LinkPreviewOptions(is_disabled=not content.link_preview),
                message_thread_id=target.thread_id,
            )
        except RetryAfter as exc:
            after = retry_after_of(exc)
            self.pacer.hold(target.key, until=self.clock() + after)
            log.info("telegram: flood control for chat %s, retry in %s", target.key, after)
            return RetryLater(self._describe(exc), after=after)
        except ChatMigrated as exc:
            return await self._migrate(target, content, message, exc, hop=hop)
        except Forbidden as exc:
            log.warning("telegram: no access to chat %s: %s", target, self._describe(exc))
            return TargetUnavailable(self._describe(exc))
        except BadRequest as exc:
            text = str(exc).lower()
            if any(marker in text for marker in _UNAVAILABLE_400):
                log.warning("telegram: chat %s unavailable: %s", target, self._describe(exc))
                return TargetUnavailable(self._describe(exc))
            log.error("telegram: message %s refused: %s", message.id, self._describe(exc))
            return Rejected(self._describe(exc))
        except InvalidToken as exc:
            log.error("telegram: the bot token was refused; check TELEGRAM_TOKEN")
            return RetryLater(self._describe(exc), after=_INVALID_TOKEN_DELAY)
        except (TimedOut, Conflict, NetworkError) as exc:
            log.info("telegram: send to %s will be retried: %s", target, self._describe(exc))
            return RetryLater(self._describe(exc))
        except TelegramError as exc:  # anything new in the Bot API: keep the message, retry
            log.warning("telegram: unexpected error for %s: %s", target, self._describe(exc))
            return RetryLater(self._describe(exc))
        return Sent(message_id=f"{posted.chat_id}:{posted.message_id}")

    async def _migrate(
        self,
        target: ChatTarget,
        content: TelegramMessage,
        message: OutboxMessage,
        exc: ChatMigrated,
        *,
        hop: int,
    ) -> SendOutcome:
        new_chat = exc.new_chat_id
        new_target = ChatTarget(new_chat, target.thread_id)
        log.info("telegram: chat %s became %s", target.chat_id, new_chat)
        self._migrated[target.key] = new_chat
        if self.on_chat_migrated is not None:
            try:
                await self.on_chat_migrated(message.target, str(new_target))
            except Exception:
                # Storing the new id is the owner's business; the message can still go out,
                # and the next send to the old id is migrated again.
                log.exception("telegram: could not record that %s moved to %s", target, new_chat)
        if hop > 0:  # a second migration in one send: let the outbox come back later
            return RetryLater(f"chat {target.chat_id} moved to {new_chat}")
        return await self._post(new_target, content, message, hop=hop + 1)
