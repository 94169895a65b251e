"""Neutral digest structures: what the composer builds and every platform renderer reads.

Nothing here knows about Discord embeds, Telegram HTML or terminal width; platform limits live
in the platform adapters.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class AlsoReported:
    """Another outlet that carried the same story."""

    outlet: str
    link: str | None


@dataclass(frozen=True, slots=True)
class DigestEntry:
    """One story in a digest, shown once even when it matches several themes."""

    entry_id: int
    title: str
    outlet: str
    link: str | None
    published: datetime | None
    excerpt: str
    score: float
    theme_ids: tuple[str, ...]
    claim_ids: tuple[str, ...] = ()
    also_reported: tuple[AlsoReported, ...] = ()


@dataclass(frozen=True, slots=True)
class DigestSection:
    """A theme (header with the essay's framing) or a claim (its quote) and its entries."""

    kind: str  # 'theme' or 'claim'
    ref_id: str
    title: str
    framing: str
    entries: tuple[DigestEntry, ...]


@dataclass(frozen=True, slots=True)
class Digest:
    """What one subscription gets for one window. Empty digests are never sent."""

    generated_at: datetime
    window_start: datetime | None
    window_end: datetime
    sections: tuple[DigestSection, ...]
    subscription_id: int | None = None

    @property
    def entry_count(self) -> int:
        return len({e.entry_id for s in self.sections for e in s.entries})

    @property
    def empty(self) -> bool:
        return not any(s.entries for s in self.sections)
