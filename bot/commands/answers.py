"""Neutral answer records: what the command core returns and every platform renderer reads.

Nothing here knows about Discord embeds or Telegram HTML. Text that came from feeds (titles,
outlets, excerpts) is kept raw here; escaping it is the renderer's job, because only the renderer
knows its platform's markup.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from bot.digest.records import Digest


class CommandError(Exception):
    """A command cannot do what was asked; ``message`` is a sentence to show the user as is."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class ThemeInfo:
    id: str
    title: str
    description: str
    essay_quote: str


@dataclass(frozen=True, slots=True)
class ClaimInfo:
    id: str
    claimant: str
    quote: str
    source: str
    date: str
    comment: str
    themes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class MatchedItem:
    """A stored entry with its best match (for /search, /theme, /claim)."""

    entry_id: int
    title: str
    outlet: str
    link: str | None
    published: datetime | None
    excerpt: str
    score: float
    ref_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SubscriptionInfo:
    id: int
    platform: str
    target_label: str  # a channel mention or label; never a webhook URL
    themes: tuple[str, ...] | None  # None means every theme
    claims: tuple[str, ...]
    cadence: str
    min_score: float
    max_items: int
    paused: bool
    pause_reason: str | None
    last_digest_at: datetime | None


@dataclass(frozen=True, slots=True)
class FeedInfo:
    id: int
    url: str
    name: str | None
    origin: str
    enabled: bool
    health: str  # 'ok', 'failing', 'new' or 'disabled'
    last_success_at: datetime | None
    last_error: str | None
    consecutive_failures: int
    entry_count: int


@dataclass(frozen=True, slots=True)
class Notice:
    """A short confirmation (``ok``) or refusal in one sentence or two."""

    text: str
    ok: bool = True
    title: str | None = None


@dataclass(frozen=True, slots=True)
class ThemesAnswer:
    themes: tuple[ThemeInfo, ...]


@dataclass(frozen=True, slots=True)
class ThemeAnswer:
    theme: ThemeInfo
    claims: tuple[ClaimInfo, ...]
    recent: tuple[MatchedItem, ...]


@dataclass(frozen=True, slots=True)
class ClaimsAnswer:
    claims: tuple[ClaimInfo, ...]


@dataclass(frozen=True, slots=True)
class ClaimAnswer:
    claim: ClaimInfo
    recent: tuple[MatchedItem, ...]


@dataclass(frozen=True, slots=True)
class SubscriptionsAnswer:
    subscriptions: tuple[SubscriptionInfo, ...]


@dataclass(frozen=True, slots=True)
class DigestPreviewAnswer:
    """What would be posted now; ``digest`` is None or empty when nothing would be."""

    digest: Digest | None
    subscribed: bool


@dataclass(frozen=True, slots=True)
class SearchAnswer:
    query: str
    items: tuple[MatchedItem, ...]


@dataclass(frozen=True, slots=True)
class FeedsAnswer:
    feeds: tuple[FeedInfo, ...]


@dataclass(frozen=True, slots=True)
class StatusAnswer:
    subscriptions: int
    paused: tuple[SubscriptionInfo, ...]
    outbox_pending: int
    outbox_failed: int
    feeds_total: int
    feeds_failing: int
    feeds_never_fetched: int
    last_poll_at: datetime | None


Answer = (
    Notice
    | ThemesAnswer
    | ThemeAnswer
    | ClaimsAnswer
    | ClaimAnswer
    | SubscriptionsAnswer
    | DigestPreviewAnswer
    | SearchAnswer
    | FeedsAnswer
    | StatusAnswer
)
