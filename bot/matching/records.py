"""Typed records that go into and come out of the matcher."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Item:
    """One news item to match: what a feed entry (or a JSON line) carries."""

    id: str
    title: str
    summary: str = ""
    content: str | None = None
    published: datetime | None = None
    source: str | None = None
    link: str | None = None


@dataclass(frozen=True, slots=True)
class ThemeMatch:
    """An item is about a theme: score in [0, 1], what decided it, and the best excerpt."""

    theme_id: str
    score: float
    excerpt: str
    evidence: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ClaimMatch:
    """An item bears on a tracked claim's subject."""

    claim_id: str
    score: float
    evidence: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class MatchResult:
    """Everything the matcher found for one item (empty tuples when nothing matched)."""

    item_id: str
    themes: tuple[ThemeMatch, ...] = field(default_factory=tuple)
    claims: tuple[ClaimMatch, ...] = field(default_factory=tuple)

    @property
    def matched(self) -> bool:
        return bool(self.themes or self.claims)
