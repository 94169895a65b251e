"""A local fake of the Telegram Bot API for tests, on 127.0.0.1 only.

python-telegram-bot's real ``Bot`` talks to it with ``base_url=fake.base_url`` (PTB appends the
token): ``POST /bot{token}/{method}``. PTB sends ``application/x-www-form-urlencoded`` with nested
objects JSON-encoded as strings (``shared/notes/platforms.md`` §3); JSON bodies and query strings
are accepted too. Every call is recorded as a :class:`Call` with its parameters decoded.

What it serves: ``getMe``, ``setMyCommands``/``getMyCommands``/``deleteMyCommands``,
``sendMessage`` (per-chat message ids; the HTML is checked the way Telegram does: only its tags,
balanced, known entities, at most 4,096 characters), ``editMessageText``, ``getUpdates`` (long
polling over updates a test injects with :meth:`FakeTelegram.command`,
:meth:`FakeTelegram.callback` or :meth:`FakeTelegram.push_update`), ``getChatMember``,
``getChat``, ``answerCallbackQuery``, ``deleteWebhook``/``setWebhook``/``getWebhookInfo``.

Failures: :meth:`FakeTelegram.fail` answers the next calls of a method with 429 (``retry_after``),
403, 500 or anything else; :meth:`FakeTelegram.kick` makes a chat answer 403 for good,
:meth:`FakeTelegram.forget_chat` makes it "chat not found", :meth:`FakeTelegram.migrate`
answers with ``migrate_to_chat_id``. Nothing here sleeps: waiting is done on a condition.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

from aiohttp import web

from tests.support.loopback import LoopbackFake

BOT_ID = 7000000001
BOT_USERNAME = "counterparty_test_bot"
GROUP_ANONYMOUS_BOT_ID = 1087968824  # Telegram's stand-in user for anonymous admins
TOKEN = "7000000001:AAE-fake-token-for-tests-only_0123456789"

ALLOWED_TAGS = {
    "b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "a", "code", "pre",
    "blockquote", "tg-spoiler", "span", "tg-emoji",
}  # fmt: skip
_NAMED_ENTITIES = {"lt", "gt", "amp", "quot"}


def utf16_length(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


class TelegramHtmlError(ValueError):
    """The text is not HTML Telegram would accept (the message mirrors Telegram's)."""


class _HtmlChecker(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.stack: list[str] = []
        self.visible: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ALLOWED_TAGS:
            raise TelegramHtmlError(f'Unsupported start tag "{tag}"')
        if tag == "a" and not any(name == "href" and value for name, value in attrs):
            raise TelegramHtmlError("Can't find end of a URL: <a> needs href")
        self.stack.append(tag)
        self.tags.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        raise TelegramHtmlError(f'Unsupported self-closing tag "{tag}"')

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            raise TelegramHtmlError(f'Unmatched end tag "{tag}"')
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        if "<" in data or ">" in data:
            raise TelegramHtmlError("Unexpected < or > in text")
        if "&" in data:
            raise TelegramHtmlError("Unexpected & in text: escape it as &amp;")
        self.visible.append(data)

    def handle_entityref(self, name: str) -> None:
        if name not in _NAMED_ENTITIES:
            raise TelegramHtmlError(f"Unsupported entity &{name};")
        self.visible.append({"lt": "<", "gt": ">", "amp": "&", "quot": '"'}[name])

    def handle_charref(self, name: str) -> None:
        self.visible.append(chr(int(name[1:], 16) if name[:1] in "xX" else int(name)))

    def handle_comment(self, data: str) -> None:
        raise TelegramHtmlError("Comments are not supported")

    def handle_decl(self, decl: str) -> None:
        raise TelegramHtmlError("Declarations are not supported")


def check_telegram_html(text: str) -> str:
    """Validate ``text`` as Telegram HTML and return its visible text (entities decoded).

    Raises :class:`TelegramHtmlError` for a tag Telegram does not know, an unbalanced or
    misnested tag, a bare ``&``/``<``/``>``, an unknown entity, or a text longer than 4,096."""
    checker = _HtmlChecker()
    checker.feed(text)
    checker.close()
    if checker.stack:
        raise TelegramHtmlError(f'Unclosed start tag "{checker.stack[-1]}"')
    visible = "".join(checker.visible)
    if not visible.strip():
        raise TelegramHtmlError("message text is empty")
    if utf16_length(visible) > 4096 or utf16_length(text) > 4096:
        raise TelegramHtmlError("message is too long")
    return visible


@dataclass(frozen=True, slots=True)
class Call:
    """One Bot API call the fake received."""

    method: str
    token: str
    params: dict[str, Any]
    content_type: str


@dataclass(slots=True)
class Failure:
    """Answer the next ``times`` calls of ``method`` (any method when empty) with ``status``."""

    status: int
    times: int = 1
    method: str = ""
    retry_after: int = 1
    description: str = ""


@dataclass(slots=True)
class Chat:
    id: int
    type: str  # private, group, supergroup, channel
    title: str | None = None
    username: str | None = None
    is_forum: bool = False
    kicked: bool = False
    migrate_to: int | None = None

    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "type": self.type}
        if self.type == "private":
            data["first_name"] = self.title or "Reader"
        else:
            data["title"] = self.title or f"chat {self.id}"
        if self.username:
            data["username"] = self.username
        if self.is_forum:
            data["is_forum"] = True
        return data


@dataclass(slots=True)
class Sent:
    """A message the bot posted, as the fake stored it."""

    chat_id: int
    message_id: int
    text: str
    params: dict[str, Any]
    thread_id: int | None = None


@dataclass(slots=True)
class _State:
    updates: list[dict[str, Any]] = field(default_factory=list)
    webhook_url: str = ""


_ERRORS = {
    400: "Bad Request: message text is empty",
    403: "Forbidden: bot was kicked from the group chat",
    404: "Not Found",
    409: "Conflict: terminated by other getUpdates request; make sure that only one bot "
    "instance is running",
    500: "Internal Server Error",
    502: "Bad Gateway",
}


def user_payload(user_id: int, name: str = "Reader", *, bot: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {"id": user_id, "is_bot": bot, "first_name": name}
    if bot:
        data["username"] = BOT_USERNAME
    return data


class FakeTelegram(LoopbackFake):
    """The fake server. ``async with FakeTelegram() as fake:`` starts it on a free loopback port."""

    def __init__(self, *, long_poll_cap: float = 0.25) -> None:
        super().__init__()
        self.calls: list[Call] = []
        self.sent: list[Sent] = []
        self.commands: dict[str, list[dict[str, Any]]] = {}  # scope type -> commands
        self.chats: dict[int, Chat] = {}
        self.usernames: dict[str, int] = {}
        self.members: dict[tuple[int, int], str] = {}  # (chat, user) -> status
        self.failures: list[Failure] = []
        self.long_poll_cap = long_poll_cap  # how long getUpdates waits at most, in seconds
        self._state = _State()
        self._update_ids = itertools.count(1)
        self._message_ids: dict[int, itertools.count[int]] = {}
        self._new_update = asyncio.Event()
        self._released = asyncio.Event()
        self._forgotten: set[int] = set()

    # -- lifecycle ---------------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/bot{token}/{method}", self._handle)

    async def stop(self) -> None:
        self._released.set()
        await super().stop()

    @property
    def base_url(self) -> str:
        """What ``COUNTERPARTY_TELEGRAM_API_BASE`` holds: PTB appends the token."""
        return f"http://127.0.0.1:{self.port}/bot"

    # -- test controls -----------------------------------------------------------------------

    def add_chat(
        self,
        chat_id: int,
        chat_type: str,
        *,
        title: str | None = None,
        username: str | None = None,
        is_forum: bool = False,
    ) -> Chat:
        chat = Chat(chat_id, chat_type, title, username, is_forum)
        self.chats[chat_id] = chat
        if username:
            self.usernames[username.lower()] = chat_id
        return chat

    def set_member(self, chat_id: int, user_id: int, status: str) -> None:
        """``status``: creator, administrator, member, restricted, left or kicked."""
        self.members[(chat_id, user_id)] = status

    def kick(self, chat_id: int) -> None:
        """From now on the bot is out of this chat: every send answers 403."""
        self._chat(chat_id).kicked = True

    def forget_chat(self, chat_id: int) -> None:
        """The chat no longer exists: sends answer 400 "chat not found"."""
        self.chats.pop(chat_id, None)
        self._forgotten.add(chat_id)

    def migrate(self, chat_id: int, new_chat_id: int) -> None:
        """The group became a supergroup: sends to the old id answer ``migrate_to_chat_id``."""
        old = self._chat(chat_id)
        old.migrate_to = new_chat_id
        self.add_chat(new_chat_id, "supergroup", title=old.title)

    def fail(
        self,
        status: int,
        *,
        times: int = 1,
        method: str = "",
        retry_after: int = 1,
        description: str = "",
    ) -> None:
        """Answer the next ``times`` calls of ``method`` (or any) with ``status``; status 0
        means "never answer" (until the server stops), for client timeouts."""
        self.failures.append(Failure(status, times, method, retry_after, description))

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def sent_to(self, chat_id: int, thread_id: int | None = None) -> list[Sent]:
        return [s for s in self.sent if s.chat_id == chat_id and s.thread_id == thread_id]

    def push_update(self, update: dict[str, Any]) -> int:
        """Queue a raw update (its ``update_id`` is assigned here) for ``getUpdates``."""
        update_id = next(self._update_ids)
        self._state.updates.append({"update_id": update_id, **update})
        self._new_update.set()
        return update_id

    def message_update(
        self, chat_id: int, user_id: int, text: str, *, thread_id: int | None = None
    ) -> dict[str, Any]:
        """An update carrying a text message; a leading ``/command`` gets its entity."""
        chat = self._chat(chat_id)
        message: dict[str, Any] = {
            "message_id": self._next_message_id(chat_id),
            "date": 1_767_000_000,
            "chat": chat.payload(),
            "from": user_payload(user_id),
            "text": text,
        }
        if text.startswith("/"):
            command = text.split()[0]
            message["entities"] = [
                {"type": "bot_command", "offset": 0, "length": utf16_length(command)}
            ]
        if thread_id is not None:
            message["message_thread_id"] = thread_id
            message["is_topic_message"] = True
        return {"message": message}

    def channel_post(self, chat_id: int, text: str) -> int:
        """Queue a post in a channel (no sender user: channels speak as themselves)."""
        update = self.message_update(chat_id, 0, text)
        message = update["message"]
        del message["from"]
        message["sender_chat"] = self._chat(chat_id).payload()
        return self.push_update({"channel_post": message})

    def anonymous_admin_command(self, chat_id: int, text: str) -> int:
        """Queue a command from an anonymous group administrator (sent as the group itself)."""
        update = self.message_update(chat_id, GROUP_ANONYMOUS_BOT_ID, text)
        update["message"]["sender_chat"] = self._chat(chat_id).payload()
        return self.push_update(update)

    def command(
        self, chat_id: int, user_id: int, text: str, *, thread_id: int | None = None
    ) -> int:
        """Queue a message such as ``/claim putin-deal`` from ``user_id`` in ``chat_id``."""
        return self.push_update(self.message_update(chat_id, user_id, text, thread_id=thread_id))

    def callback_update(
        self, chat_id: int, user_id: int, data: str, *, message_id: int = 1
    ) -> dict[str, Any]:
        chat = self._chat(chat_id)
        return {
            "callback_query": {
                "id": f"cb{next(self._update_ids)}",
                "from": user_payload(user_id),
                "chat_instance": f"ci{chat_id}",
                "data": data,
                "message": {
                    "message_id": message_id,
                    "date": 1_767_000_000,
                    "chat": chat.payload(),
                    "from": user_payload(BOT_ID, "counterparty", bot=True),
                    "text": "Pick a claim",
                },
            }
        }

    def callback(self, chat_id: int, user_id: int, data: str, *, message_id: int = 1) -> int:
        """Queue a press on an inline button carrying ``data``."""
        return self.push_update(self.callback_update(chat_id, user_id, data, message_id=message_id))

    async def wait_for_calls(
        self, method: str, *, count: int = 1, within: float = 10.0
    ) -> list[Call]:
        await self.wait_for(lambda f: len(f.calls_to(method)) >= count, within=within)
        return self.calls_to(method)

    # -- internals ---------------------------------------------------------------------------

    def _chat(self, chat_id: int) -> Chat:
        if chat_id not in self.chats:
            chat_type = "private" if chat_id > 0 else "supergroup"
            self.add_chat(chat_id, chat_type)
        return self.chats[chat_id]

    def _next_message_id(self, chat_id: int) -> int:
        counter = self._message_ids.setdefault(chat_id, itertools.count(1))
        return next(counter)

    @staticmethod
    def _decode_value(value: str) -> Any:
        # PTB JSON-encodes nested objects and lists inside form fields.
        if value[:1] in "{[":
            try:
                return json.loads(value)
            except json.JSONDecodeError:
                return value
        return value

    async def _params(self, request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = {k: self._decode_value(v) for k, v in request.query.items()}
        if not request.can_read_body:
            return params
        if request.content_type == "application/json":
            body = await request.json()
            if isinstance(body, dict):
                params.update(body)
        elif request.content_type == "application/x-www-form-urlencoded":
            form = await request.post()
            params.update({k: self._decode_value(str(v)) for k, v in form.items()})
        elif request.content_type.startswith("multipart/"):
            form = await request.post()
            params.update({k: self._decode_value(v) for k, v in form.items() if isinstance(v, str)})
        return params

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        token = request.match_info["token"]
        method = request.match_info["method"]
        params = await self._params(request)
        call = Call(method, token, params, request.content_type)
        async with self._changed:
            self.calls.append(call)
            self._changed.notify_all()
        if token != TOKEN:
            return self._error(401, "Unauthorized")
        failure = self._take_failure(method)
        if failure is not None and failure.status == 0:
            # A server that never answers: held until stop(), so the client's timeout fires.
            await self._released.wait()
            return self._error(500, "Internal Server Error")
        if failure is not None:
            return self._failure(failure)
        handler = getattr(self, f"_api_{method}", None)
        if handler is None:
            return self._error(404, "Not Found: method not found")
        response: web.Response
        if method == "getUpdates":
            response = await self._api_getUpdates(params)
        else:
            response = handler(params)
        async with self._changed:
            self._changed.notify_all()
        return response

    def _take_failure(self, method: str) -> Failure | None:
        for failure in self.failures:
            if failure.method in ("", method) and failure.times > 0:
                failure.times -= 1
                if failure.times == 0:
                    self.failures.remove(failure)
                return failure
        return None

    @staticmethod
    def _ok(result: Any) -> web.Response:
        return web.json_response({"ok": True, "result": result})

    @staticmethod
    def _error(
        status: int, description: str, parameters: dict[str, Any] | None = None
    ) -> web.Response:
        body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
        if parameters:
            body["parameters"] = parameters
        return web.json_response(body, status=status)

    def _failure(self, failure: Failure) -> web.Response:
        if failure.status == 429:
            return self._error(
                429,
                failure.description or f"Too Many Requests: retry after {failure.retry_after}",
                {"retry_after": failure.retry_after},
            )
        description = failure.description or _ERRORS.get(failure.status, "Error")
        return self._error(failure.status, description)

    def _resolve_chat(self, raw: Any) -> Chat | web.Response:
        text = str(raw)
        if text.startswith("@"):
            chat_id = self.usernames.get(text[1:].lower())
            if chat_id is None:
                return self._error(400, "Bad Request: chat not found")
        else:
            try:
                chat_id = int(text)
            except ValueError:
                return self._error(400, "Bad Request: chat not found")
        chat = self.chats.get(chat_id)
        if chat is None:
            if text.startswith("@") or chat_id in self._forgotten:
                return self._error(400, "Bad Request: chat not found")
            chat = self._chat(chat_id)
        if chat.migrate_to is not None:
            return self._error(
                400,
                "Bad Request: group chat was upgraded to a supergroup chat",
                {"migrate_to_chat_id": chat.migrate_to},
            )
        if chat.kicked:
            return self._error(403, _ERRORS[403])
        return chat

    # -- Bot API methods ---------------------------------------------------------------------

    def _api_getMe(self, params: dict[str, Any]) -> web.Response:
        return self._ok(
            {
                **user_payload(BOT_ID, "counterparty", bot=True),
                "can_join_groups": True,
                "can_read_all_group_messages": False,
                "supports_inline_queries": False,
            }
        )

    def _api_setMyCommands(self, params: dict[str, Any]) -> web.Response:
        commands = params.get("commands")
        if not isinstance(commands, list) or not commands:
            return self._error(400, "Bad Request: commands must be a non-empty list")
        for command in commands:
            name = command.get("command", "")
            if not (1 <= len(name) <= 32) or not all(
                c.islower() or c.isdigit() or c == "_" for c in name
            ):
                return self._error(400, f"Bad Request: BOT_COMMAND_INVALID {name!r}")
            if not (1 <= len(command.get("description", "")) <= 256):
                return self._error(400, "Bad Request: BOT_COMMAND_DESCRIPTION_INVALID")
        scope = params.get("scope") or {"type": "default"}
        self.commands[scope.get("type", "default")] = commands
        return self._ok(True)

    def _api_getMyCommands(self, params: dict[str, Any]) -> web.Response:
        scope = params.get("scope") or {"type": "default"}
        return self._ok(self.commands.get(scope.get("type", "default"), []))

    def _api_deleteMyCommands(self, params: dict[str, Any]) -> web.Response:
        scope = params.get("scope") or {"type": "default"}
        self.commands.pop(scope.get("type", "default"), None)
        return self._ok(True)

    def _api_sendMessage(self, params: dict[str, Any]) -> web.Response:
        resolved = self._resolve_chat(params.get("chat_id", ""))
        if isinstance(resolved, web.Response):
            return resolved
        chat = resolved
        text = str(params.get("text", ""))
        if not text.strip():
            return self._error(400, "Bad Request: message text is empty")
        if params.get("parse_mode") == "HTML":
            try:
                check_telegram_html(text)
            except TelegramHtmlError as exc:
                return self._error(400, f"Bad Request: can't parse entities: {exc}")
        elif utf16_length(text) > 4096:
            return self._error(400, "Bad Request: message is too long")
        thread = params.get("message_thread_id")
        thread_id = int(thread) if thread not in (None, "") else None
        if thread_id is not None and not chat.is_forum:
            return self._error(400, "Bad Request: message thread not found")
        markup = params.get("reply_markup")
        if isinstance(markup, dict):
            for row in markup.get("inline_keyboard", []):
                for button in row:
                    data = button.get("callback_data")
                    if data is not None and not (1 <= len(str(data).encode()) <= 64):
                        return self._error(400, "Bad Request: BUTTON_DATA_INVALID")
        message_id = self._next_message_id(chat.id)
        self.sent.append(Sent(chat.id, message_id, text, params, thread_id))
        message: dict[str, Any] = {
            "message_id": message_id,
            "date": 1_767_000_000,
            "chat": chat.payload(),
            "from": user_payload(BOT_ID, "counterparty", bot=True),
            "text": text,
        }
        if thread_id is not None:
            message["message_thread_id"] = thread_id
        return self._ok(message)

    def _api_editMessageText(self, params: dict[str, Any]) -> web.Response:
        resolved = self._resolve_chat(params.get("chat_id", ""))
        if isinstance(resolved, web.Response):
            return resolved
        text = str(params.get("text", ""))
        if params.get("parse_mode") == "HTML":
            try:
                check_telegram_html(text)
            except TelegramHtmlError as exc:
                return self._error(400, f"Bad Request: can't parse entities: {exc}")
        return self._ok(
            {
                "message_id": int(params.get("message_id", 0)),
                "date": 1_767_000_000,
                "chat": resolved.payload(),
                "text": text,
            }
        )

    async def _api_getUpdates(self, params: dict[str, Any]) -> web.Response:
        offset = int(params.get("offset") or 0)
        # Confirming updates (offset) drops them, as Telegram does.
        self._state.updates = [u for u in self._state.updates if u["update_id"] >= offset]
        wait = min(float(params.get("timeout") or 0), self.long_poll_cap)
        if not self._state.updates and wait > 0:
            self._new_update.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new_update.wait(), wait)
        limit = int(params.get("limit") or 100)
        return self._ok(self._state.updates[:limit])

    def _api_getChatMember(self, params: dict[str, Any]) -> web.Response:
        resolved = self._resolve_chat(params.get("chat_id", ""))
        if isinstance(resolved, web.Response):
            return resolved
        user_id = int(params.get("user_id", 0))
        status = self.members.get((resolved.id, user_id), "member")
        member: dict[str, Any] = {"status": status, "user": user_payload(user_id)}
        if status == "administrator":
            member.update(
                {
                    "can_be_edited": False,
                    "is_anonymous": False,
                    "can_manage_chat": True,
                    "can_delete_messages": True,
                    "can_manage_video_chats": True,
                    "can_restrict_members": True,
                    "can_promote_members": False,
                    "can_change_info": True,
                    "can_invite_users": True,
                    "can_post_stories": False,
                    "can_edit_stories": False,
                    "can_delete_stories": False,
                }
            )
        elif status == "creator":
            member["is_anonymous"] = False
        elif status == "restricted":
            member.update({"is_member": True, "until_date": 0})
        elif status == "kicked":
            member["until_date"] = 0
        return self._ok(member)

    def _api_getChat(self, params: dict[str, Any]) -> web.Response:
        resolved = self._resolve_chat(params.get("chat_id", ""))
        if isinstance(resolved, web.Response):
            return resolved
        return self._ok({**resolved.payload(), "accent_color_id": 0, "max_reaction_count": 11})

    def _api_answerCallbackQuery(self, params: dict[str, Any]) -> web.Response:
        return self._ok(True)

    def _api_deleteWebhook(self, params: dict[str, Any]) -> web.Response:
        self._state.webhook_url = ""
        return self._ok(True)

    def _api_setWebhook(self, params: dict[str, Any]) -> web.Response:
        self._state.webhook_url = str(params.get("url", ""))
        return self._ok(True)

    def _api_getWebhookInfo(self, params: dict[str, Any]) -> web.Response:
        return self._ok(
            {
                "url": self._state.webhook_url,
                "has_custom_certificate": False,
                "pending_update_count": len(self._state.updates),
            }
        )

    @property
    def webhook_url(self) -> str:
        return self._state.webhook_url
