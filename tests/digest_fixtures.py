"""Small hand-written catalog and matches for digest tests (invented text, not news)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from bot.digest.compose import PendingMatch

NOW = datetime(2026, 3, 6, 12, 0, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class FakeTheme:
    title: str
    description: str
    essay_quote: str | None = None


@dataclass(frozen=True, slots=True)
class FakeClaim:
    claimant: str
    quote: str
    source: str


@dataclass(frozen=True, slots=True)
class FakeCatalog:
    themes: dict[str, FakeTheme] = field(default_factory=dict)
    claims: dict[str, FakeClaim] = field(default_factory=dict)


CATALOG = FakeCatalog(
    themes={
        "russia-overstretched": FakeTheme(
            "Russia overstretched", "The war drains Russia.", "Tied down in Ukraine."
        ),
        "words-not-deeds": FakeTheme("Words, not deeds", "Statements instead of help."),
        "putin-deal": FakeTheme("Is Putin ready to deal?", "Talks and envoys.", "A willing party?"),
    },
    claims={
        "not-our-war": FakeClaim("A spokesman", "“Not our war.”", "a newspaper"),
    },
)


def match(
    entry_id: int,
    ref_id: str = "putin-deal",
    *,
    kind: str = "theme",
    score: float = 0.8,
    outlet: str = "Outlet A",
    story_key: str | None = None,
    hours_ago: float = 1.0,
    title: str | None = None,
    excerpt: str = "An invented excerpt.",
) -> PendingMatch:
    when = NOW - timedelta(hours=hours_ago)
    return PendingMatch(
        entry_id=entry_id,
        kind=kind,
        ref_id=ref_id,
        score=score,
        excerpt=excerpt,
        title=title or f"Invented headline {entry_id}",
        link=f"https://example.org/{entry_id}",
        outlet=outlet,
        published=when,
        first_seen=when,
        story_key=story_key or f"story-{entry_id}",
    )
