"""A local fake of the Discord API for tests: REST plus a minimal gateway, on 127.0.0.1 only.

discord.py's real HTTP code talks to it once ``discord.http.Route.BASE`` points at
:attr:`FakeDiscord.api_base` (and, for the gateway, ``DiscordWebSocket.DEFAULT_GATEWAY`` at
:attr:`FakeDiscord.gateway_url`). Every request is recorded as a :class:`Recorded`, so a test
asserts on exactly what the library sent.

It honours the traps listed in ``shared/notes/platforms.md`` §1: JSON answers carry a bare
``Content-Type: application/json`` (discord.py decodes nothing else), and a 429 carries a ``Via``
header and a JSON body, or discord.py takes it for a Cloudflare ban.

What it serves:

* ``GET /users/@me``, ``GET /oauth2/applications/@me`` (``Client.login``), ``GET /gateway/bot``;
* ``POST /channels/{id}/messages`` with nonce dedupe (a repeated nonce with ``enforce_nonce``
  returns the first message, as Discord does);
* ``POST /webhooks/{id}/{token}`` (``?wait=1`` returns the message; also interaction follow-ups),
  ``PATCH``/``GET``/``DELETE /webhooks/{app}/{token}/messages/@original``;
* ``POST /interactions/{id}/{token}/callback``;
* ``PUT``/``GET /applications/{id}/commands`` and the guild variant (command sync);
* ``GET /gateway`` as a websocket: HELLO, IDENTIFY -> READY, heartbeat ACK, and
  :meth:`FakeDiscord.dispatch` to push events such as ``INTERACTION_CREATE``.

Failures are switched on with :meth:`FakeDiscord.fail` (status, optional ``retry_after``, how many
times, and a path fragment to limit it to). Nothing here sleeps; waiting is done on conditions.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType, web

from tests.support.loopback import LoopbackFake

APP_ID = 900000000000000001
BOT_USER_ID = 900000000000000002
WEBHOOK_ID = 900000000000000003
WEBHOOK_TOKEN = "w" * 68
# A discord.com-shaped URL: discord.py keeps only the id and token and sends to Route.BASE.
WEBHOOK_URL = f"https://discord.com/api/webhooks/{WEBHOOK_ID}/{WEBHOOK_TOKEN}"

_ERROR_BODIES = {
    400: {"message": "Invalid Form Body", "code": 50035},
    401: {"message": "401: Unauthorized", "code": 0},
    403: {"message": "Missing Access", "code": 50001},
    404: {"message": "Unknown Channel", "code": 10003},
    500: {"message": "500: Internal Server Error", "code": 0},
    502: {"message": "502: Bad Gateway", "code": 0},
    503: {"message": "503: Service Unavailable", "code": 0},
}


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """JSON with the bare content type discord.py insists on (not ``; charset=utf-8``)."""
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    return web.Response(status=status, body=json.dumps(data).encode(), headers=all_headers)


@dataclass(frozen=True, slots=True)
class Recorded:
    """One request the fake server received."""

    method: str
    path: str  # without the /api/v10 prefix
    query: dict[str, str]
    headers: dict[str, str]
    body: Any  # decoded JSON, form fields as a dict, or None


@dataclass(slots=True)
class Failure:
    """Answer the next ``times`` matching requests with ``status`` instead of the real thing."""

    status: int
    times: int = 1
    path_contains: str = ""
    retry_after: float = 1.0
    is_global: bool = False
    via: bool = True


@dataclass(slots=True)
class _GatewayState:
    sockets: list[web.WebSocketResponse] = field(default_factory=list)
    identified: asyncio.Event = field(default_factory=asyncio.Event)
    sequence: int = 0


def user_payload(user_id: int, name: str, *, bot: bool = False) -> dict[str, Any]:
    return {
        "id": str(user_id),
        "username": name,
        "global_name": name,
        "discriminator": "0",
        "avatar": None,
        "bot": bot,
        "public_flags": 0,
    }


class FakeDiscord(LoopbackFake):
    """The fake server. ``async with FakeDiscord() as fake:`` starts it on a free loopback port."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[Recorded] = []
        self.messages: dict[str, list[dict[str, Any]]] = {}  # channel id (or webhook id) -> posts
        self.commands: dict[str, list[dict[str, Any]]] = {}  # "global" or guild id -> synced
        self.failures: list[Failure] = []
        self._nonces: dict[tuple[str, str], dict[str, Any]] = {}
        self._ids = itertools.count(1_100_000_000_000_000_000)
        self._gateway = _GatewayState()
        self._released = asyncio.Event()
        self._released.set()

    # -- lifecycle -------------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/gateway", self._gateway_socket)
        app.router.add_route("*", "/api/v10/{tail:.*}", self._rest)

    async def stop(self) -> None:
        self.release()
        for socket in list(self._gateway.sockets):
            await socket.close()
        await super().stop()

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    def bot_env(self, token: str = "fake-token-for-tests") -> dict[str, str]:
        """The environment that points a ``counterparty run`` at this server, with ``token``."""
        return {
            "DISCORD_TOKEN": token,
            "COUNTERPARTY_DISCORD_API_BASE": self.api_base,
            "COUNTERPARTY_DISCORD_GATEWAY": self.gateway_url,
        }

    # -- test controls ---------------------------------------------------------------------

    def fail(
        self,
        status: int,
        *,
        times: int = 1,
        path_contains: str = "",
        retry_after: float = 1.0,
        is_global: bool = False,
        via: bool = True,
    ) -> None:
        """Answer the next ``times`` requests with ``path_contains`` in the path with ``status``."""
        self.failures.append(Failure(status, times, path_contains, retry_after, is_global, via))

    def hold(self) -> None:
        """Channel posts are still created and recorded, but their answers wait for
        :meth:`release`: the window in which a crashing bot has posted but not yet heard so."""
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    def requests_to(self, method: str, path_fragment: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and path_fragment in r.path]

    async def wait_for_request(
        self, method: str, path_fragment: str, *, count: int = 1, within: float = 10.0
    ) -> list[Recorded]:
        await self.wait_for(
            lambda f: len(f.requests_to(method, path_fragment)) >= count, within=within
        )
        return self.requests_to(method, path_fragment)

    async def wait_identified(self, *, within: float = 10.0) -> None:
        await asyncio.wait_for(self._gateway.identified.wait(), within)

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Push a DISPATCH event (e.g. ``INTERACTION_CREATE``) to every connected gateway client."""
        if not self._gateway.sockets:
            raise RuntimeError("no gateway client is connected")
        for socket in list(self._gateway.sockets):
            await self._send_dispatch(socket, event, data)

    # -- REST ------------------------------------------------------------------------------

    def _next_id(self) -> str:
        return str(next(self._ids))

    def message_payload(
        self, channel_id: str, body: dict[str, Any], *, webhook_id: str | None = None
    ) -> dict[str, Any]:
        author = user_payload(BOT_USER_ID, "counterparty", bot=True)
        message: dict[str, Any] = {
            "id": self._next_id(),
            "channel_id": channel_id,
            "author": author,
            "content": body.get("content") or "",
            "timestamp": datetime.now(UTC).isoformat(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [],
            "embeds": body.get("embeds") or [],
            "pinned": False,
            "type": 0,
            "flags": body.get("flags", 0),
        }
        if webhook_id is not None:
            message["webhook_id"] = webhook_id
        if "nonce" in body:
            message["nonce"] = body["nonce"]
        return message

    def _take_failure(self, path: str) -> Failure | None:
        for failure in self.failures:
            if failure.path_contains in path and failure.times > 0:
                failure.times -= 1
                if failure.times == 0:
                    self.failures.remove(failure)
                return failure
        return None

    @staticmethod
    def _failure_response(failure: Failure) -> web.Response:
        if failure.status == 429:
            body = {
                "message": "You are being rate limited.",
                "retry_after": failure.retry_after,
                "global": failure.is_global,
            }
            headers = {"Retry-After": str(failure.retry_after)}
            if failure.via:
                headers["Via"] = "1.1 google"
            return json_response(body, 429, headers)
        body = _ERROR_BODIES.get(failure.status, {"message": "error", "code": 0})
        return json_response(body, failure.status)

    async def _decode(self, request: web.Request) -> Any:
        if not request.can_read_body:
            return None
        ctype = request.content_type
        if ctype == "application/json":
            return await request.json()
        if ctype.startswith("multipart/"):
            fields: dict[str, Any] = {}
            reader = await request.multipart()
            async for part in reader:
                name = getattr(part, "name", None)
                text = await part.text()  # type: ignore[union-attr]
                fields[str(name)] = json.loads(text) if name == "payload_json" else text
            return fields.get("payload_json", fields)
        raw = await request.read()
        return raw.decode("utf-8", "replace") or None

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["tail"]
        body = await self._decode(request)
        recorded = Recorded(request.method, path, dict(request.query), dict(request.headers), body)
        try:
            failure = self._take_failure(path)
            if failure is not None:
                return self._failure_response(failure)
            response = self._route(request.method, path, request.query, body)
        finally:
            async with self._changed:
                self.requests.append(recorded)
                self._changed.notify_all()
        if path.startswith("/channels/") and request.method == "POST":
            await self._released.wait()
        return response

    def _route(self, method: str, path: str, query: Any, body: Any) -> web.Response:
        parts = [p for p in path.split("/") if p]
        if path == "/users/@me":
            return json_response(user_payload(BOT_USER_ID, "counterparty", bot=True))
        if path == "/oauth2/applications/@me":
            return json_response(self._application())
        if path == "/gateway/bot":
            return json_response(
                {
                    "url": f"ws://127.0.0.1:{self.port}/gateway",
                    "shards": 1,
                    "session_start_limit": {
                        "total": 1000,
                        "remaining": 999,
                        "reset_after": 0,
                        "max_concurrency": 1,
                    },
                }
            )
        if parts[:1] == ["channels"] and parts[2:] == ["messages"] and method == "POST":
            return self._channel_message(parts[1], body or {})
        if parts[:1] == ["interactions"] and parts[3:4] == ["callback"]:
            return json_response(
                {
                    "interaction": {
                        "id": parts[1],
                        "type": 2,
                        "response_message_id": self._next_id(),
                        "response_message_loading": (body or {}).get("type") == 5,
                        "response_message_ephemeral": bool(
                            ((body or {}).get("data") or {}).get("flags", 0) & 64
                        ),
                    },
                    "resource": {"type": (body or {}).get("type", 4)},
                }
            )
        if parts[:1] == ["webhooks"] and len(parts) >= 3:
            return self._webhook(method, parts, query, body or {})
        if parts[:1] == ["applications"] and parts[-1] == "commands":
            scope = parts[3] if len(parts) == 5 and parts[2] == "guilds" else "global"
            if method == "PUT":
                synced = [
                    {
                        **command,
                        "id": self._next_id(),
                        "application_id": str(APP_ID),
                        "version": "1",
                        "default_member_permissions": command.get("default_member_permissions"),
                    }
                    for command in (body or [])
                ]
                self.commands[scope] = synced
                return json_response(synced)
            return json_response(self.commands.get(scope, []))
        return json_response({"message": f"404: Not Found ({method} {path})", "code": 0}, 404)

    def _channel_message(self, channel_id: str, body: dict[str, Any]) -> web.Response:
        nonce = body.get("nonce")
        if nonce is not None and body.get("enforce_nonce"):
            first = self._nonces.get((channel_id, str(nonce)))
            if first is not None:
                return json_response(first)
        message = self.message_payload(channel_id, body)
        self.messages.setdefault(channel_id, []).append(message)
        if nonce is not None:
            self._nonces[(channel_id, str(nonce))] = message
        return json_response(message)

    def _webhook(
        self, method: str, parts: list[str], query: Any, body: dict[str, Any]
    ) -> web.Response:
        webhook_id = parts[1]
        if len(parts) == 3 and method == "POST":
            message = self.message_payload(webhook_id, body, webhook_id=webhook_id)
            self.messages.setdefault(webhook_id, []).append(message)
            if query.get("wait") in ("1", "true", "True"):
                return json_response(message)
            return web.Response(status=204)
        if len(parts) == 5 and parts[3] == "messages":
            key = f"{webhook_id}/{parts[2]}/original"
            if method == "DELETE":
                return web.Response(status=204)
            message = self.message_payload(key, body, webhook_id=webhook_id)
            if method == "PATCH":
                self.messages.setdefault(key, []).append(message)
            return json_response(message)
        return json_response({"message": "404: Not Found", "code": 0}, 404)

    @staticmethod
    def _application() -> dict[str, Any]:
        return {
            "id": str(APP_ID),
            "name": "counterparty",
            "description": "",
            "icon": None,
            "bot_public": False,
            "bot_require_code_grant": False,
            "owner": user_payload(900000000000000009, "owner"),
            "team": None,
            "verify_key": "0" * 64,
            "flags": 0,
        }

    # -- gateway ---------------------------------------------------------------------------

    async def _send_dispatch(self, socket: web.WebSocketResponse, event: str, data: Any) -> None:
        self._gateway.sequence += 1
        await socket.send_str(
            json.dumps({"op": 0, "t": event, "s": self._gateway.sequence, "d": data})
        )

    async def _gateway_socket(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        self._gateway.sockets.append(socket)
        try:
            await socket.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 45000}}))
            async for frame in socket:
                if frame.type != WSMsgType.TEXT:
                    continue
                message = json.loads(frame.data)
                op = message.get("op")
                if op == 1:
                    await socket.send_str(json.dumps({"op": 11}))
                elif op in (2, 6):  # IDENTIFY or RESUME: start a fresh session either way
                    await self._send_dispatch(socket, "READY", self._ready())
                    self._gateway.identified.set()
                async with self._changed:
                    self.requests.append(Recorded("WS", "/gateway", {}, {}, message))
                    self._changed.notify_all()
        finally:
            self._gateway.sockets.remove(socket)
        return socket

    def _ready(self) -> dict[str, Any]:
        return {
            "v": 10,
            "user": user_payload(BOT_USER_ID, "counterparty", bot=True),
            "guilds": [],
            "session_id": "fake-session",
            "resume_gateway_url": self.gateway_url,
            "application": {"id": str(APP_ID), "flags": 0},
            "private_channels": [],
            "relationships": [],
        }
