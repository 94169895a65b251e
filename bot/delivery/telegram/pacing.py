"""Telegram flood limits as decisions, not sleeps.

Telegram allows about one message per second to one chat and twenty per minute to one group or
channel (Bot FAQ; PTB's ``FloodLimit``), and answers 429 with ``retry_after`` beyond that. The
:class:`Pacer` remembers, for this process, when each chat was last sent to and for how long
Telegram asked to hold off; :meth:`Pacer.wait_before` says how long the next message to a chat
must wait. The sender turns a positive wait into ``RetryLater(after=wait)`` and the outbox
reschedules the row, so no task ever sleeps holding a lease.

The clock is passed in (``now``), so the arithmetic is table-tested.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta

ZERO = timedelta(0)


@dataclass(frozen=True, slots=True)
class PacingRules:
    """The limits the pacer enforces (defaults: Telegram's documented ones)."""

    chat_gap: timedelta = timedelta(seconds=1)
    group_window: timedelta = timedelta(minutes=1)
    group_max: int = 20


def is_group_chat(chat_id: int | str) -> bool:
    """Groups, supergroups and channels have negative ids or an ``@username``; private chats
    (one person) have positive ids."""
    return isinstance(chat_id, str) or chat_id < 0


class Pacer:
    """Per-chat send history and holds, for one process."""

    def __init__(self, rules: PacingRules | None = None) -> None:
        self.rules = rules or PacingRules()
        self._sent: dict[str, deque[datetime]] = {}
        self._held_until: dict[str, datetime] = {}

    def wait_before(self, chat: str, *, group: bool, now: datetime) -> timedelta:
        """How long the next message to ``chat`` must wait from ``now`` (zero: send now)."""
        waits = [ZERO]
        held = self._held_until.get(chat)
        if held is not None:
            waits.append(held - now)
        history = self._sent.get(chat)
        if history:
            waits.append(history[-1] + self.rules.chat_gap - now)
            if group:
                recent = [t for t in history if t > now - self.rules.group_window]
                if len(recent) >= self.rules.group_max:
                    # The oldest of the last group_max sends must leave the window first.
                    waits.append(recent[-self.rules.group_max] + self.rules.group_window - now)
        return max(waits)

    def note_sent(self, chat: str, *, now: datetime) -> None:
        """Record a send attempt to ``chat`` at ``now`` (attempts count against the limit)."""
        history = self._sent.setdefault(chat, deque())
        history.append(now)
        horizon = now - max(self.rules.group_window, self.rules.chat_gap)
        while history and history[0] <= horizon:
            history.popleft()

    def hold(self, chat: str, *, until: datetime) -> None:
        """Telegram said ``retry_after``: send nothing to ``chat`` before ``until``."""
        current = self._held_until.get(chat)
        if current is None or until > current:
            self._held_until[chat] = until
