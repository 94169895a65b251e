"""Picking and trimming the excerpt that shows why an item matched a theme.

Pure functions. The matcher hands over the item's sentences with how much theme evidence each
carries; :func:`choose_excerpt` prefers a direct quotation with its speaker ("The war that's
going on isn't our war," Peskov said), then the most relevant sentence, and :func:`clip` cuts it
to at most ``limit`` characters at a sentence or word boundary, never inside a quotation when a
cut before it is possible.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from bot.matching.text import quote_spans, sentence_spans

EXCERPT_LIMIT = 300
# A sentence carrying less theme evidence than this (one term group) loses to a richer title.
WEAK_SENTENCE = 2.0
ELLIPSIS = "…"

# A quotation is attributed when a speech verb stands next to it.
_SPEECH = re.compile(
    r"\b(?:said|says|say|told|tells|added|adds|according to|warned|warns|insisted|insists|"
    r"declared|stated|wrote|writes|posted|asked|argued|argues|noted|stressed|claimed|claims|"
    r"replied|quipped|remarked)\b",
    re.IGNORECASE,
)
# Scare quotes of one to three words are not quotations worth preferring.
_MIN_QUOTE_WORDS = 4


@dataclass(frozen=True, slots=True)
class Candidate:
    """One sentence the excerpt may come from, with the theme evidence found in it."""

    text: str
    relevance: float
    position: int


def quote_kind(sentence: str) -> int:
    """2 for an attributed direct quotation, 1 for an unattributed one, 0 for none."""
    quotes = [
        (a, b) for a, b in quote_spans(sentence) if len(sentence[a:b].split()) >= _MIN_QUOTE_WORDS
    ]
    if not quotes:
        return 0
    outside = sentence
    for a, b in reversed(quotes):
        outside = outside[:a] + " " + outside[b:]
    return 2 if _SPEECH.search(outside) else 1


def candidate_score(candidate: Candidate) -> float:
    """Relevance first; a quotation with its speaker is worth about one more matched term."""
    bonus = (0.0, 0.4, 1.0)[quote_kind(candidate.text)]
    length = len(candidate.text)
    short_penalty = 0.5 if length < 40 else 0.0
    return candidate.relevance + bonus - short_penalty - 0.02 * candidate.position


def choose_excerpt(
    candidates: Sequence[Candidate],
    *,
    title: str,
    title_relevance: float = 0.0,
    limit: int = EXCERPT_LIMIT,
) -> str:
    """The best excerpt: a relevant sentence (two if both fit), else the title.

    Only sentences with some theme evidence (``relevance > 0``) qualify, so the excerpt read
    alone shows why the item matched. The title is the excerpt when no sentence of the summary
    or body carries any evidence, or when the best sentence carries less than the title and
    less than ``WEAK_SENTENCE`` (a single term cannot show a theme on its own).
    """
    relevant = [c for c in candidates if c.relevance > 0]
    if not relevant:
        return clip(title.strip(), limit)
    best = max(relevant, key=candidate_score)
    if best.relevance < WEAK_SENTENCE and title_relevance > best.relevance:
        return clip(title.strip(), limit)
    text = best.text.strip()
    following = [c for c in candidates if c.position == best.position + 1]
    if following and len(text) < limit // 2:
        joined = f"{text} {following[0].text.strip()}"
        if len(joined) <= limit:
            text = joined
    return clip(text, limit)


def _word_cut(text: str, limit: int, quotes: list[tuple[int, int]]) -> int:
    """The last word boundary at or before ``limit`` that is not inside a quotation (0 if none)."""
    for pos in range(min(limit, len(text) - 1), 0, -1):
        if text[pos].isspace() and not any(a < pos < b for a, b in quotes):
            return pos
    return 0


def clip(text: str, limit: int = EXCERPT_LIMIT) -> str:
    """``text`` cut to at most ``limit`` characters at a sentence end, else a word boundary.

    Whole sentences are kept when at least one fits; otherwise the cut falls between words,
    outside any quotation when a cut before it leaves a useful excerpt, and ends with "…".
    """
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    ends = [b for _, b in sentence_spans(text) if b <= limit]
    if ends and ends[-1] >= limit // 3:
        return text[: ends[-1]].rstrip()
    room = limit - len(ELLIPSIS)
    quotes = quote_spans(text)
    cut = _word_cut(text, room, quotes)
    if cut < limit // 3:
        # The quotation is longer than the room left: cut inside it, between words.
        cut = _word_cut(text, room, [])
    if cut == 0:
        cut = room
    return text[:cut].rstrip(" ,;:-–—") + ELLIPSIS
