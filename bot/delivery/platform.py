"""The plug-in points for chat platforms: renderers, senders and background services.

Each platform (console, Discord, Telegram) contributes up to three things to ``counterparty run``:

* a :class:`Renderer` - turns a neutral :class:`~bot.digest.records.Digest` into the list of
  platform payloads (JSON-able dicts, one per message, already split to the platform's limits).
  The outbox stores each payload as one ``outbox`` row when the digest is enqueued, and later
  hands it back unchanged to the platform's sender as ``OutboxMessage.payload``;
* a :class:`~bot.delivery.records.Sender` - posts one stored payload and reports the outcome;
* a :class:`PlatformService` - anything long-running (the Discord gateway client with its slash
  commands, the Telegram poller) with async ``start``/``stop``.

A platform module exposes ``build(settings, engine, catalog) -> PlatformService | None``
(e.g. ``bot.delivery.discord.service.build``); :mod:`bot.app` calls it when the platform's token
is set and collects the service's ``renderers`` and ``senders``. ``build`` returns ``None`` when
the platform is not configured. ``start`` must return once the service is running (it may
start background tasks); ``stop`` must close every connection it opened.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from bot.delivery.records import Sender
from bot.digest.records import Digest

Payload = dict[str, Any]


class Renderer(Protocol):
    """Renders digests for the platforms it names (``subscriptions.platform`` values)."""

    platforms: tuple[str, ...]

    def render(self, digest: Digest) -> list[Payload]:
        """One JSON-serialisable payload per message, in posting order; never empty for a
        non-empty digest."""
        ...


class PlatformService(Protocol):
    """A platform's long-running part plus the renderers and senders it contributes."""

    name: str

    @property
    def renderers(self) -> Sequence[Renderer]: ...

    @property
    def senders(self) -> Sequence[Sender]: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class NoRendererError(LookupError):
    """No renderer is registered for a subscription's platform."""


def by_platform(items: Sequence[Renderer] | Sequence[Sender]) -> Mapping[str, Any]:
    """Index renderers or senders by each platform they name (later ones win)."""
    table: dict[str, Any] = {}
    for item in items:
        for platform in item.platforms:
            table[platform] = item
    return table


async def first_of(*events: asyncio.Event) -> None:
    """Return once any of ``events`` is set (e.g. "stop requested" or "leader lock lost")."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
