"""The seam between the outbox and the platform adapters.

The outbox hands an adapter one :class:`OutboxMessage` (a payload the adapter itself rendered
when the digest was enqueued) and gets back exactly one :class:`SendOutcome`. Adapters never
sleep on rate limits and never touch the database: they report, the outbox decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """One message to post, as stored in the ``outbox`` table."""

    id: int
    platform: str
    target: str
    payload: dict[str, Any]
    nonce: str
    attempts: int
    subscription_id: int | None


@dataclass(frozen=True, slots=True)
class Sent:
    """The platform answered 2xx; ``message_id`` is the platform's id for the post."""

    message_id: str


@dataclass(frozen=True, slots=True)
class RetryLater:
    """Timeout, 5xx or 429: try again, after ``after`` when the platform said how long."""

    error: str
    after: timedelta | None = None


@dataclass(frozen=True, slots=True)
class TargetUnavailable:
    """403/404 (no access, channel gone, bot removed): pause the subscription, keep the message."""

    error: str


@dataclass(frozen=True, slots=True)
class Rejected:
    """The platform refused this message for good (e.g. 400): mark it failed, go on."""

    error: str


SendOutcome = Sent | RetryLater | TargetUnavailable | Rejected


class Sender(Protocol):
    """A platform adapter able to post outbox messages for the platforms it names."""

    platforms: tuple[str, ...]

    async def send(self, message: OutboxMessage) -> SendOutcome: ...
