"""Post outbox messages to Discord through discord.py's own HTTP code.

Two platforms share this adapter:

* ``"discord"``: the target is a channel or thread id; the bot posts with
  ``client.get_partial_messageable(id).send(..., nonce=...)``. discord.py adds
  ``enforce_nonce``, so a resend of the same outbox row (after a crash between posting and
  recording) gets Discord's first message back instead of a second post.
* ``"discord-webhook"``: the target is a webhook URL; ``Webhook.from_url(...).send(wait=True)``.
  Webhooks have no nonce, so a crash in that window can repeat one post (at-least-once).

Outcomes (``bot.delivery.records``): 2xx -> :class:`Sent` with the message id; 429 ->
:class:`RetryLater` with the platform's ``retry_after``; 5xx, timeouts and connection errors ->
:class:`RetryLater`; 403/404 -> :class:`TargetUnavailable`; any other 4xx or a payload that
breaks a Discord limit -> :class:`Rejected`.

The adapter must not sleep on the platform's behalf (the outbox owns retry timing), but discord.py
sleeps on a 429 and retries 5xx answers with growing pauses. :func:`make_trace_config` installs
an aiohttp hook that, only while :meth:`DiscordSender.send` runs, cuts those short: a 5xx or a
429 asking for more than ``max_wait`` seconds ends the send at once with the numbers the platform
gave. Short 429 waits are left to discord.py, which keeps its buckets right.
"""

from __future__ import annotations

import asyncio
import json
import logging
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import aiohttp
import discord

from bot.delivery.discord.render import payload_problems
from bot.delivery.records import (
    OutboxMessage,
    Rejected,
    RetryLater,
    SendOutcome,
    Sent,
    TargetUnavailable,
)

log = logging.getLogger(__name__)

PLATFORMS = ("discord", "discord-webhook")
NONCE_MAX = 25


@dataclass(frozen=True, slots=True)
class _SendPolicy:
    max_wait: float


# Set only inside DiscordSender.send, so the bot's interaction replies keep discord.py's own
# retry behaviour.
_policy: ContextVar[_SendPolicy | None] = ContextVar(
    "counterparty_discord_send_policy", default=None
)


class _StopRetrying(Exception):  # noqa: N818 - a control-flow signal, not an error type
    """Raised from the aiohttp hook to end a send that discord.py would otherwise sleep on."""

    def __init__(self, status: int, message: str, retry_after: float | None) -> None:
        super().__init__(f"{status} {message}")
        self.status = status
        self.message = message
        self.retry_after = retry_after


async def _retry_after(response: aiohttp.ClientResponse) -> float | None:
    """Seconds to wait from a 429: the JSON body's ``retry_after``, else the header."""
    try:
        body = json.loads(await response.read())
    except (ValueError, aiohttp.ClientError):
        body = None
    if isinstance(body, dict) and isinstance(body.get("retry_after"), int | float):
        return float(body["retry_after"])
    header = response.headers.get("Retry-After") or response.headers.get("X-RateLimit-Reset-After")
    try:
        return float(header) if header else None
    except ValueError:
        return None


async def _on_request_end(
    _session: aiohttp.ClientSession, _ctx: SimpleNamespace, params: aiohttp.TraceRequestEndParams
) -> None:
    policy = _policy.get()
    if policy is None:
        return
    response = params.response
    if response.status == 429:
        wait = await _retry_after(response)
        if wait is None or wait > policy.max_wait:
            response.release()
            raise _StopRetrying(429, "rate limited", wait)
    elif response.status >= 500:
        response.release()
        raise _StopRetrying(response.status, response.reason or "server error", None)


def make_trace_config() -> aiohttp.TraceConfig:
    """The aiohttp hook for the bot client (``discord.Client(http_trace=...)``) and the webhook
    session; inert outside :meth:`DiscordSender.send`."""
    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(_on_request_end)
    return trace


def _embeds(payload: dict[str, Any]) -> list[discord.Embed]:
    return [discord.Embed.from_dict(raw) for raw in payload.get("embeds") or []]


class DiscordSender:
    """A :class:`bot.delivery.records.Sender` for ``discord`` and ``discord-webhook``.

    ``client`` must be logged in (``await client.login(token)``; no gateway needed) and built
    with ``http_trace=make_trace_config()``. ``session`` (for webhooks) should have
    ``trace_configs=[make_trace_config()]``; without one the sender opens its own on first use
    and closes it in :meth:`aclose`. The sender never owns the client. With ``client=None``
    (no token) it serves ``discord-webhook`` only.
    """

    platforms: tuple[str, ...]

    def __init__(
        self,
        client: discord.Client | None,
        session: aiohttp.ClientSession | None = None,
        *,
        timeout: float = 30.0,
        max_wait: float = 2.0,
    ) -> None:
        self._client = client
        # Without a logged-in bot (no DISCORD_TOKEN) only webhooks can be posted to.
        self.platforms = PLATFORMS if client is not None else ("discord-webhook",)
        self._session = session
        self._owns_session = False
        self._timeout = timeout
        self._policy = _SendPolicy(max_wait=max_wait)

    async def send(self, message: OutboxMessage) -> SendOutcome:
        """Post one outbox message and say what happened; never raises for platform errors."""
        problems = payload_problems(message.payload)
        if problems:
            return Rejected("payload breaks Discord limits: " + "; ".join(problems))
        if len(message.nonce) > NONCE_MAX:
            return Rejected(f"nonce longer than {NONCE_MAX} characters")
        token = _policy.set(self._policy)
        try:
            async with asyncio.timeout(self._timeout):
                if message.platform == "discord":
                    return await self._send_to_channel(message)
                if message.platform == "discord-webhook":
                    return await self._send_to_webhook(message)
                return Rejected(f"platform {message.platform!r} is not Discord")
        except _StopRetrying as exc:
            after = timedelta(seconds=exc.retry_after) if exc.retry_after is not None else None
            return RetryLater(f"Discord answered {exc}", after=after)
        except discord.RateLimited as exc:
            return RetryLater("rate limited", after=timedelta(seconds=exc.retry_after))
        except (discord.Forbidden, discord.NotFound) as exc:
            return TargetUnavailable(_describe(exc))
        except discord.DiscordServerError as exc:
            return RetryLater(_describe(exc))
        except discord.HTTPException as exc:
            if exc.status == 429:  # a 429 without Via: Cloudflare, not Discord's limiter
                return RetryLater(_describe(exc), after=timedelta(minutes=1))
            return Rejected(_describe(exc))
        except TimeoutError:
            return RetryLater(f"no answer from Discord within {self._timeout:g} s")
        except (aiohttp.ClientError, OSError) as exc:
            log.warning("Discord send for outbox %s failed: %s", message.id, exc, exc_info=True)
            return RetryLater(f"network error: {type(exc).__name__}: {exc}")
        finally:
            _policy.reset(token)

    async def _send_to_channel(self, message: OutboxMessage) -> SendOutcome:
        try:
            channel_id = int(message.target)
        except ValueError:
            return Rejected(f"{message.target!r} is not a Discord channel id")
        if self._client is None:
            return RetryLater("channel posts need the bot: DISCORD_TOKEN is not set")
        channel = self._client.get_partial_messageable(channel_id)
        posted = await channel.send(
            content=message.payload.get("content"),
            embeds=_embeds(message.payload),
            nonce=message.nonce,
            allowed_mentions=discord.AllowedMentions.none(),
        )
        return Sent(str(posted.id))

    async def aclose(self) -> None:
        """Close the webhook session if the sender opened it."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _webhook_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(trace_configs=[make_trace_config()])
            self._owns_session = True
        return self._session

    async def _send_to_webhook(self, message: OutboxMessage) -> SendOutcome:
        try:
            webhook = discord.Webhook.from_url(message.target, session=self._webhook_session())
        except ValueError:
            return Rejected("the target is not a Discord webhook URL")
        content = message.payload.get("content")
        posted = await webhook.send(
            content=content if content else discord.utils.MISSING,
            embeds=_embeds(message.payload),
            allowed_mentions=discord.AllowedMentions.none(),
            wait=True,
        )
        return Sent(str(posted.id))


def _describe(exc: discord.HTTPException) -> str:
    text = exc.text or (exc.response.reason if exc.response is not None else "") or ""
    return f"{exc.status} {text}".strip()
