"""Turn one subscription's pending matches into a neutral :class:`Digest` (pure).

What goes in: the :class:`PendingMatch` rows the storage layer found for the subscription
(already filtered by score, themes/claims, ``since`` and "not yet delivered"), the catalog (for
section headers), the subscription's limit and ``now``. What comes out: a
:class:`Composition` - the digest plus which entries it covered and which it left for later.

Rules, in order:

1. **One story, one entry.** Entries sharing a ``story_key`` (the same story from several
   outlets) become one entry: the best-scoring report leads, the others are listed as "also
   reported by" (one line per outlet).
2. **One appearance per item.** A story that matches several themes appears once, tagged with
   every theme (and claim) it matched. It sits under the claim it bears on when there is one
   (claims are the more specific question), else under its strongest theme.
3. **Ranking** by :func:`rank_value`: the match score first, then recency (half-life
   ``RECENCY_HALF_LIFE``) and the number of outlets that carried the story; when picking the top
   ``max_items``, each further story from an outlet already picked is penalised
   (``SAME_OUTLET_PENALTY``), so one prolific outlet cannot fill the digest.
4. **Sections** follow the catalog's order: themes first (header: the theme's title and the
   essay's framing), then claims (header: who said it; framing: the quote and its source).
5. **Empty windows send nothing**: ``Composition.digest`` is ``None`` when nothing qualifies.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from bot.digest.records import AlsoReported, Digest, DigestEntry, DigestSection

RECENCY_HALF_LIFE = timedelta(hours=12)
SAME_OUTLET_PENALTY = 0.15
WEIGHT_SCORE = 0.7
WEIGHT_RECENCY = 0.2
WEIGHT_OUTLETS = 0.1


class ThemeInfo(Protocol):
    """What the composer reads from a catalog theme."""

    @property
    def title(self) -> str: ...
    @property
    def description(self) -> str: ...
    @property
    def essay_quote(self) -> str | None: ...


class ClaimInfo(Protocol):
    """What the composer reads from a catalog claim."""

    @property
    def claimant(self) -> str: ...
    @property
    def quote(self) -> str: ...
    @property
    def source(self) -> str: ...


class CatalogInfo(Protocol):
    """The catalog as the composer needs it: themes and claims by id, in display order."""

    @property
    def themes(self) -> Mapping[str, ThemeInfo]: ...
    @property
    def claims(self) -> Mapping[str, ClaimInfo]: ...


@dataclass(frozen=True, slots=True)
class PendingMatch:
    """One row of ``matches`` joined with its entry and feed, not yet delivered."""

    entry_id: int
    kind: str  # 'theme' or 'claim'
    ref_id: str
    score: float
    excerpt: str
    title: str
    link: str | None
    outlet: str
    published: datetime | None
    first_seen: datetime
    story_key: str


@dataclass(frozen=True, slots=True)
class Composition:
    """The digest (``None`` for an empty window) and the entries it accounts for.

    ``covered_entry_ids`` are every entry behind the digest's stories (the lead report and the
    "also reported" ones): they must be recorded as delivered with the digest.
    ``left_entry_ids`` are entries of stories that did not fit in ``max_items``."""

    digest: Digest | None
    covered_entry_ids: frozenset[int]
    left_entry_ids: frozenset[int]


@dataclass(frozen=True, slots=True)
class _Story:
    lead: PendingMatch
    entry_ids: frozenset[int]
    outlets: tuple[str, ...]
    also: tuple[AlsoReported, ...]
    theme_scores: Mapping[str, float]
    claim_scores: Mapping[str, float]
    excerpt: str

    @property
    def score(self) -> float:
        scores: list[float] = [*self.theme_scores.values(), *self.claim_scores.values()]
        return float(max(scores))

    @property
    def when(self) -> datetime:
        return self.lead.published or self.lead.first_seen


def rank_value(score: float, age: timedelta, outlet_count: int) -> float:
    """Ranking value in [0, 1]: mostly the match score, then recency, then how many outlets."""
    hours = max(age.total_seconds(), 0.0) / 3600
    recency = math.pow(0.5, hours / (RECENCY_HALF_LIFE.total_seconds() / 3600))
    outlets = min(math.log2(max(outlet_count, 1)) / 3, 1.0)
    return WEIGHT_SCORE * score + WEIGHT_RECENCY * recency + WEIGHT_OUTLETS * outlets


def _best_excerpt(rows: Sequence[PendingMatch]) -> str:
    with_text = [r for r in rows if r.excerpt.strip()]
    if not with_text:
        return ""
    return max(with_text, key=lambda r: (r.score, -r.entry_id)).excerpt.strip()


def _stories(matches: Iterable[PendingMatch]) -> list[_Story]:
    by_story: dict[str, list[PendingMatch]] = {}
    for match in matches:
        by_story.setdefault(match.story_key, []).append(match)
    stories = []
    for rows in by_story.values():
        best_per_entry: dict[int, float] = {}
        for row in rows:
            best_per_entry[row.entry_id] = max(best_per_entry.get(row.entry_id, 0.0), row.score)
        lead_id = min(
            best_per_entry,
            key=lambda e: (-best_per_entry[e], _first(rows, e).first_seen, e),
        )
        lead = _first(rows, lead_id)
        theme_scores: dict[str, float] = {}
        claim_scores: dict[str, float] = {}
        for row in rows:
            target = theme_scores if row.kind == "theme" else claim_scores
            target[row.ref_id] = max(target.get(row.ref_id, 0.0), row.score)
        outlets = [lead.outlet]
        also: list[AlsoReported] = []
        for entry_id in sorted(best_per_entry, key=lambda e: (_first(rows, e).first_seen, e)):
            row = _first(rows, entry_id)
            if row.outlet not in outlets:
                outlets.append(row.outlet)
                also.append(AlsoReported(outlet=row.outlet, link=row.link))
        lead_rows = [r for r in rows if r.entry_id == lead_id]
        stories.append(
            _Story(
                lead=lead,
                entry_ids=frozenset(best_per_entry),
                outlets=tuple(outlets),
                also=tuple(also),
                theme_scores=theme_scores,
                claim_scores=claim_scores,
                excerpt=_best_excerpt(lead_rows) or _best_excerpt(rows),
            )
        )
    return stories


def _first(rows: Sequence[PendingMatch], entry_id: int) -> PendingMatch:
    return next(r for r in rows if r.entry_id == entry_id)


def _pick(stories: list[_Story], now: datetime, max_items: int) -> list[_Story]:
    """Greedy top-``max_items`` by rank value, penalising repeats of an already-picked outlet."""
    base = {id(s): rank_value(s.score, now - s.when, len(s.outlets)) for s in stories}
    remaining = sorted(stories, key=lambda s: (-base[id(s)], s.lead.entry_id))
    picked: list[_Story] = []
    per_outlet: dict[str, int] = {}
    while remaining and len(picked) < max_items:
        best = min(
            remaining,
            key=lambda s: (
                -(base[id(s)] - SAME_OUTLET_PENALTY * per_outlet.get(s.lead.outlet, 0)),
                s.lead.entry_id,
            ),
        )
        remaining.remove(best)
        picked.append(best)
        per_outlet[best.lead.outlet] = per_outlet.get(best.lead.outlet, 0) + 1
    return picked


def _ordered(ids: Iterable[str], order: Sequence[str]) -> tuple[str, ...]:
    position = {ref: i for i, ref in enumerate(order)}
    return tuple(sorted(set(ids), key=lambda ref: (position.get(ref, len(position)), ref)))


def _home(story: _Story, theme_order: Sequence[str], claim_order: Sequence[str]) -> tuple[str, str]:
    """The one section a story appears in: its best claim if any, else its best theme."""

    def best(scores: Mapping[str, float], order: Sequence[str]) -> str:
        position = {ref: i for i, ref in enumerate(order)}
        return min(scores, key=lambda r: (-scores[r], position.get(r, len(position)), r))

    if story.claim_scores:
        return "claim", best(story.claim_scores, claim_order)
    return "theme", best(story.theme_scores, theme_order)


def _theme_section(
    ref: str, catalog: CatalogInfo, entries: tuple[DigestEntry, ...]
) -> DigestSection:
    theme = catalog.themes.get(ref)
    if theme is None:  # a theme dropped from the catalog after the match was stored
        return DigestSection("theme", ref, ref, "", entries)
    framing = (theme.essay_quote or "").strip() or theme.description.strip()
    return DigestSection("theme", ref, theme.title, framing, entries)


def _claim_section(
    ref: str, catalog: CatalogInfo, entries: tuple[DigestEntry, ...]
) -> DigestSection:
    claim = catalog.claims.get(ref)
    if claim is None:
        return DigestSection("claim", ref, ref, "", entries)
    framing = f"{claim.quote.strip()} ({claim.source.strip()})" if claim.source else claim.quote
    return DigestSection("claim", ref, claim.claimant, framing, entries)


def compose(
    matches: Sequence[PendingMatch],
    *,
    catalog: CatalogInfo,
    now: datetime,
    max_items: int,
    window_start: datetime | None = None,
    subscription_id: int | None = None,
) -> Composition:
    """Build the digest for ``matches`` (see the module docstring for the rules)."""
    if max_items < 1:
        raise ValueError("max_items must be at least 1")
    stories = _stories(matches)
    picked = _pick(stories, now, max_items)
    covered = frozenset(e for s in picked for e in s.entry_ids)
    left = frozenset(e for s in stories for e in s.entry_ids) - covered
    if not picked:
        return Composition(None, frozenset(), left)
    theme_order = list(catalog.themes)
    claim_order = list(catalog.claims)
    homes: dict[tuple[str, str], list[DigestEntry]] = {}
    for story in picked:
        entry = DigestEntry(
            entry_id=story.lead.entry_id,
            title=story.lead.title,
            outlet=story.lead.outlet,
            link=story.lead.link,
            published=story.lead.published,
            excerpt=story.excerpt,
            score=round(story.score, 4),
            theme_ids=_ordered(story.theme_scores, theme_order),
            claim_ids=_ordered(story.claim_scores, claim_order),
            also_reported=story.also,
        )
        homes.setdefault(_home(story, theme_order, claim_order), []).append(entry)
    sections = []
    for ref in _ordered((r for k, r in homes if k == "theme"), theme_order):
        sections.append(_theme_section(ref, catalog, tuple(homes["theme", ref])))
    for ref in _ordered((r for k, r in homes if k == "claim"), claim_order):
        sections.append(_claim_section(ref, catalog, tuple(homes["claim", ref])))
    digest = Digest(
        generated_at=now,
        window_start=window_start,
        window_end=now,
        sections=tuple(sections),
        subscription_id=subscription_id,
    )
    return Composition(digest, covered, left)
