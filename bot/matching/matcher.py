"""The lexical matcher: the themes and claims a news item is *about*, with score, evidence, excerpt.

How it decides (the catalog in ``themes.toml`` holds the words; this module holds the method):

1. The item is split into units: the **lead** (the title plus the first summary sentences, up to
   ``LEAD_CHARS``; the first body sentences stand in for a missing summary) and the **body**
   (the rest of the summary and the full content, sentence by sentence). Wire datelines are
   dropped first: "TEHRAN, Aug. 13 (MNA) -" is not a mention of Tehran.
2. Every term of the catalog (actor aliases, cue phrases, negative cues) is looked up once per
   token position, giving for each unit the set of term groups present in it.
3. A theme rule (e.g. ``russia_leadership + talks + ukraine``) fires when all its groups occur in
   the lead, or inside one body sentence. A lead hit counts its full weight; body hits count
   ``BODY_SHARE`` per sentence up to the full weight, and the body adds at most
   ``BODY_SENTENCE_CAP`` per distinct sentence, so one passing mention deep in an article is not
   enough. An item with nothing but a title counts its substantive title rules (weight at
   least ``TITLE_BOOST_MIN_WEIGHT``) ``TITLE_ONLY_FACTOR`` times: the headline is all the
   evidence it has. Distinct rules add up to at most ``MAX_EVIDENCE``; a negative cue in the
   lead (a side story: markets, reactions, sport) halves the total and takes
   ``NEGATIVE_WEIGHT`` more, which keeps the theme below the default threshold: a veto. An
   off-topic cue (talks on Gaza for the Ukraine theme) does the same unless one of the theme's
   anchor groups is in the lead as well.
4. The evidence total becomes a score in [0, 1] by ``1 / (1 + exp(-4 * (evidence - 1)))``; a
   theme matches at its threshold (0.5 by default, i.e. evidence 1).
5. Claims are checked only for themes that matched, by the claim's own rules, and score at
   most their best theme's score.

``Matcher.match`` is pure and thread-safe: the compiled tables are built once and only read.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from bot.matching.catalog import Catalog, Claim, Rule, Theme
from bot.matching.excerpt import Candidate, choose_excerpt
from bot.matching.records import ClaimMatch, Item, MatchResult, ThemeMatch
from bot.matching.text import fold, plain_text, split_sentences

# Body sentences are weighed at this share of a rule's weight each (capped at the full weight).
BODY_SHARE = 0.4
# The body adds at most this much evidence per distinct sentence that carries the theme.
BODY_SENTENCE_CAP = 0.35
# Evidence is capped here before negative cues apply (calibrated score ~0.98).
MAX_EVIDENCE = 2.0
# A negative cue in the lead (a side story: markets, reactions, sport) multiplies the capped
# evidence by NEGATIVE_FACTOR and then takes NEGATIVE_WEIGHT away: with the cap at 2.0 the
# result is at most 0.7, below the default threshold, so a negative cue is in effect a veto.
NEGATIVE_FACTOR = 0.5
NEGATIVE_WEIGHT = 0.3
# A title-only item (no summary, no content: many explainer feeds) has nothing beyond its
# headline to add evidence, so a rule that fires in such a title counts this much more.
TITLE_ONLY_FACTOR = 1.25
# ... but only rules at least this heavy.
TITLE_BOOST_MIN_WEIGHT = 0.5
# The lead is the title plus summary sentences up to this many characters (at least one).
LEAD_CHARS = 320
# Longer content is matched on its first part only: the lead paragraphs carry the story.
MAX_CONTENT_CHARS = 10_000

_WORD = re.compile(r"\w+")
# Distinct words remembered by the term index (a news vocabulary fits well within this).
_CACHE_LIMIT = 200_000
# A wire-style dateline ("TEHRAN, Aug. 13 (MNA) -") names where the story was filed, not what
# it is about, so it must not count as a mention of that place.
_DATELINE = re.compile(
    r"^(?:By\s.{0,150}?\s)?"  # an optional byline before it
    r"[A-Z][A-Z .'/-]{2,60},\s+"  # WASHINGTON/GENEVA,
    r"[A-Z][a-z]{2,8}\.?\s+\d{1,2}(?:,\s+\d{4})?\s+"  # Feb 17 / Aug. 13, 2025
    r"\([^)]{1,40}\)\s*[-–—]+\s*"  # (Reuters) -
)


# "Iran-backed Houthis", "Russian-funded media": a label on another actor, not a mention of
# the backer; the matcher reads it as "backed Houthis".
_BACKER_LABEL = re.compile(
    r"\b(?:Iran|Iranian|Tehran|Russia|Russian|Moscow|Kremlin)-"
    r"(?=(?:backed|aligned|allied|funded|supported|linked|sponsored)\b)"
)


def drop_backer_labels(text: str) -> str:
    """``text`` with "Iran-backed"-style labels reduced to "backed" (for term lookup only)."""
    return _BACKER_LABEL.sub("", text) if "-" in text else text


def strip_dateline(text: str) -> str:
    """``text`` without a leading wire dateline such as ``WASHINGTON, Feb 17 (Reuters) -``."""
    return _DATELINE.sub("", text, count=1)


def calibrated(evidence: float) -> float:
    """Evidence total to a score in [0, 1]; 1.0 of evidence gives 0.5."""
    return 1.0 / (1.0 + math.exp(-4.0 * (evidence - 1.0)))


def _tokens(term: str) -> tuple[str, ...]:
    return tuple(_WORD.findall(fold(term)))


def _case_sensitive(term: str) -> bool:
    """Short all-capital terms (US, UN, IAEA, OPEC+) are acronyms: "us" must not match "US"."""
    letters = [c for c in term if c.isalpha()]
    return bool(letters) and len(letters) <= 5 and term == term.upper()


@dataclass(frozen=True, slots=True)
class _Unit:
    """One place where a rule can fire: the lead, or one body sentence."""

    groups: frozenset[str]
    terms: dict[str, str]  # group key -> first term seen for it (for the evidence)


class _TermIndex:
    """Every catalog term, looked up by the token sequence it starts with."""

    def __init__(self) -> None:
        # lower-case token tuple -> group keys (case-insensitive terms)
        self.exact: dict[tuple[str, ...], set[str]] = defaultdict(set)
        # lower-case token tuple -> {original-case tuple -> group keys} (acronyms)
        self.acronyms: dict[tuple[str, ...], dict[tuple[str, ...], set[str]]] = defaultdict(dict)
        # wildcard terms: (fixed lower tokens, last-token prefix) -> group keys
        self.prefixes: dict[tuple[tuple[str, ...], str], set[str]] = defaultdict(set)
        self.max_len = 1
        self.prefix_lengths: set[int] = set()
        self.multi_starts: set[str] = set()
        self.acronym_starts: set[str] = set()
        # every proper leading part of a multi-word term, and those of wildcard terms
        self.stems: set[tuple[str, ...]] = set()
        self.wild_stems: set[tuple[str, ...]] = set()
        self.single_prefix_lengths: set[int] = set()
        self._cache: dict[str, frozenset[str]] = {}

    def add(self, term: str, key: str) -> None:
        wildcard = term.endswith("*")
        tokens = _tokens(term.rstrip("*"))
        if not tokens:
            return
        lower = tuple(t.lower() for t in tokens)
        if len(lower) > 1:
            self.multi_starts.add(lower[0])
            self.stems.update(lower[:n] for n in range(1, len(lower)))
            if wildcard:
                self.wild_stems.add(lower[:-1])
        if wildcard:
            self.prefixes[(lower[:-1], lower[-1])].add(key)
            self.prefix_lengths.add(len(lower[-1]))
            if len(lower) == 1:
                self.single_prefix_lengths.add(len(lower[0]))
            self.max_len = max(self.max_len, len(lower))
        elif _case_sensitive(term):
            self.acronyms[lower].setdefault(tokens, set()).add(key)
            self.acronym_starts.add(lower[0])
            self.max_len = max(self.max_len, len(lower))
        else:
            self.exact[lower].add(key)
            self.max_len = max(self.max_len, len(lower))

    def _unigram(self, token: str) -> frozenset[str]:
        """Keys of the one-word terms (exact or wildcard) matching lower-case ``token``, cached.

        The cache only ever maps a token to the same value, so threads sharing it see the same
        results whether or not another thread filled it first.
        """
        cached = self._cache.get(token)
        if cached is not None:
            return cached
        keys: set[str] = set(self.exact.get((token,), ()))
        for length in self.single_prefix_lengths:
            if len(token) >= length:
                keys.update(self.prefixes.get(((), token[:length]), ()))
        result = frozenset(keys)
        if len(self._cache) < _CACHE_LIMIT:
            self._cache[token] = result
        return result

    def scan(self, text: str) -> dict[str, str]:
        """Group key -> the first term (as written in ``text``) found for it. Backer labels
        ("Iran-backed") are read without their backer."""
        original = _WORD.findall(fold(drop_backer_labels(text)))
        lower = [t.lower() for t in original]
        found: dict[str, str] = {}
        exact, acronyms, prefixes = self.exact, self.acronyms, self.prefixes
        multi_starts, acronym_starts = self.multi_starts, self.acronym_starts
        lengths = self.prefix_lengths
        count = len(lower)
        cache = self._cache
        for i, token in enumerate(lower):
            unigram = cache.get(token)
            if unigram is None:
                unigram = self._unigram(token)
            for k in unigram:
                if k not in found:
                    found[k] = original[i]
            if token in acronym_starts:
                forms = acronyms.get((token,))
                keys = forms.get((original[i],)) if forms else None
                for k in keys or ():
                    found.setdefault(k, original[i])
            if token not in multi_starts:
                continue
            stems, wild_stems = self.stems, self.wild_stems
            for n in range(2, min(self.max_len, count - i) + 1):
                fixed = tuple(lower[i : i + n - 1])
                if fixed not in stems:
                    break  # no multi-word term starts with these words: longer ones cannot
                key = (*fixed, lower[i + n - 1])
                hits: set[str] = set(exact.get(key, ()))
                forms = acronyms.get(key)
                if forms:
                    hits.update(forms.get(tuple(original[i : i + n]), ()))
                if fixed in wild_stems:
                    last = key[-1]
                    for length in lengths:
                        if len(last) >= length:
                            hits.update(prefixes.get((fixed, last[:length]), ()))
                for k in hits:
                    found.setdefault(k, " ".join(original[i : i + n]))
        return found


@dataclass(frozen=True, slots=True)
class _Compiled:
    """A theme's or claim's rules with group names resolved to index keys."""

    id: str
    # each rule with its group keys in catalog order, and the same keys as a set (subset tests)
    rules: tuple[tuple[Rule, tuple[str, ...], frozenset[str]], ...]
    negative_key: str | None
    off_topic_key: str | None
    anchor_keys: frozenset[str]
    threshold: float
    relevant_keys: frozenset[str]


def _relevance(compiled: _Compiled, groups: frozenset[str]) -> float:
    """How much of a theme one sentence carries: its term groups, plus 2 for a whole rule."""
    present = len(compiled.relevant_keys & groups)
    if not present:
        return 0.0
    whole = any(keyset <= groups for _, _, keyset in compiled.rules)
    return present + (2.0 if whole else 0.0)


class Matcher:
    """Matches items against a :class:`Catalog`. Build once; ``match`` is pure and thread-safe."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._index = _TermIndex()
        for name, terms in catalog.aliases.items():
            for term in terms:
                self._index.add(term, f"@{name}")
        self._themes = tuple(
            self._compile(theme, f"{theme.id}:") for theme in catalog.themes.values()
        )
        self._claims = tuple(
            (claim, self._compile(claim, f"claim/{claim.id}:")) for claim in catalog.claims.values()
        )

    def _compile(self, entry: Theme | Claim, prefix: str) -> _Compiled:
        cues = entry.cues or {}
        for name, terms in cues.items():
            for term in terms:
                self._index.add(term, prefix + name)
        negative_key = None
        if isinstance(entry, Theme) and entry.negatives:
            negative_key = prefix + "!negative"
            for term in entry.negatives:
                self._index.add(term, negative_key)
        off_topic_key = None
        anchor_keys: frozenset[str] = frozenset()
        if isinstance(entry, Theme) and entry.off_topic:
            off_topic_key = prefix + "!off_topic"
            for term in entry.off_topic:
                self._index.add(term, off_topic_key)
            anchor_keys = frozenset(prefix + g if g in cues else f"@{g}" for g in entry.anchors)
        keyed = [
            (rule, tuple(prefix + g if g in cues else f"@{g}" for g in rule.groups))
            for rule in entry.rules
        ]
        rules = tuple((rule, keys, frozenset(keys)) for rule, keys in keyed)
        relevant = frozenset(k for _, keys, _ in rules for k in keys)
        return _Compiled(
            entry.id, rules, negative_key, off_topic_key, anchor_keys, entry.threshold, relevant
        )

    # -- per item ---------------------------------------------------------------------------

    def _units(self, item: Item) -> tuple[_Unit, _Unit, list[_Unit], list[str], int]:
        """The title and lead units, sentence units, all sentences (lead then body), lead count.

        The lead is the title plus the first summary sentences up to ``LEAD_CHARS`` (at least
        one); the rest of a long summary counts as body, like the full content.
        """
        title = plain_text(item.title or "")
        summary = split_sentences(strip_dateline(plain_text(item.summary or "")))
        body: list[str] = []
        if item.content:
            seen = set(summary)
            content = strip_dateline(plain_text(item.content[:MAX_CONTENT_CHARS]))
            body = [s for s in split_sentences(content) if s not in seen]
        sentences = [*summary, *body]
        lead_count = 0
        used = 0
        for sentence in sentences[: len(summary) or 2]:
            if lead_count and used + len(sentence) > LEAD_CHARS:
                break
            lead_count += 1
            used += len(sentence)
        scan = self._index.scan
        title_terms = scan(title)
        lead_terms: dict[str, str] = dict(title_terms)
        sentence_terms = [scan(s) for s in sentences]
        for terms in sentence_terms[:lead_count]:
            for key, term in terms.items():
                lead_terms.setdefault(key, term)
        lead = _Unit(frozenset(lead_terms), lead_terms)
        units = [_Unit(frozenset(t), t) for t in sentence_terms]
        return _Unit(frozenset(title_terms), title_terms), lead, units, sentences, lead_count

    @staticmethod
    def _evidence(
        compiled: _Compiled,
        lead: _Unit,
        body: list[_Unit],
        where: dict[str, list[int]],
        title: _Unit | None = None,
        title_factor: float = 1.0,
    ) -> tuple[float, list[str]]:
        """Evidence total and its description; ``where`` maps a group key to its body sentences."""
        total = 0.0
        body_total = 0.0
        body_sentences: set[int] = set()
        evidence: list[str] = []
        for rule, keys, keyset in compiled.rules:
            if keyset <= lead.groups:
                in_title = title is not None and keyset <= title.groups
                # Only substantive rules are boosted: the light ones exist to add up with
                # other evidence, and boosting them would let a pile of weak hints pass.
                boost = title_factor if in_title and rule.weight >= TITLE_BOOST_MIN_WEIGHT else 1.0
                total += rule.weight * boost
                where_ = "title" if in_title else "lead"
                evidence.append(f"{where_}: " + " + ".join(lead.terms[k] for k in keys))
                continue
            first = where.get(keys[0])
            if not first:
                continue
            hits = [n for n in first if all(k in body[n].groups for k in keys[1:])]
            if hits:
                body_sentences.update(hits)
                body_total += rule.weight * min(1.0, BODY_SHARE * len(hits))
                terms = " + ".join(body[hits[0]].terms[k] for k in keys)
                evidence.append(f"body x{len(hits)}: {terms}")
        # Overlapping rules firing on the same sentence are one piece of evidence, not several:
        # the body can only add as much as the number of distinct sentences carrying the theme.
        total += min(body_total, BODY_SENTENCE_CAP * len(body_sentences))
        # Beyond this, more overlapping rules say nothing new (and would drown negative cues).
        total = min(total, MAX_EVIDENCE)
        if compiled.negative_key and compiled.negative_key in lead.groups:
            total = total * NEGATIVE_FACTOR - NEGATIVE_WEIGHT
            evidence.append("negative: " + lead.terms[compiled.negative_key])
        elif (
            compiled.off_topic_key
            and compiled.off_topic_key in lead.groups
            and not compiled.anchor_keys & lead.groups
        ):
            # Another subject (Gaza, Iran for a Ukraine theme) and no anchor of this one.
            total = total * NEGATIVE_FACTOR - NEGATIVE_WEIGHT
            evidence.append("off topic: " + lead.terms[compiled.off_topic_key])
        return total, evidence

    def match(self, item: Item) -> MatchResult:
        """The themes (score, excerpt, evidence) and claims ``item`` is about; empty when none."""
        title, lead, units, sentences, lead_count = self._units(item)
        body_units = units[lead_count:]
        title_only = not sentences
        title_factor = TITLE_ONLY_FACTOR if title_only else 1.0
        where: dict[str, list[int]] = defaultdict(list)
        for n, unit in enumerate(body_units):
            for key in unit.groups:
                where[key].append(n)
        themes: list[ThemeMatch] = []
        for compiled in self._themes:
            evidence_total, evidence = self._evidence(
                compiled, lead, body_units, where, title, title_factor
            )
            score = calibrated(evidence_total)
            if score < compiled.threshold:
                continue
            candidates = [
                Candidate(text, _relevance(compiled, unit.groups), n)
                for n, (text, unit) in enumerate(zip(sentences, units, strict=True))
            ]
            excerpt = choose_excerpt(
                candidates,
                title=plain_text(item.title or ""),
                title_relevance=_relevance(compiled, title.groups),
            )
            themes.append(ThemeMatch(compiled.id, round(score, 4), excerpt, tuple(evidence)))
        themes.sort(key=lambda m: -m.score)
        claims = self._claims_for(themes, lead, body_units, where)
        return MatchResult(item.id, tuple(themes), tuple(claims))

    def shows_theme(self, theme_id: str, text: str) -> bool:
        """True when ``text`` alone carries the theme: one of its rules whole, or two of a
        rule's term groups (the check the evaluation applies to excerpts)."""
        compiled = next(c for c in self._themes if c.id == theme_id)
        groups = self._index.scan(text).keys()
        return any(
            sum(k in groups for k in keys) >= min(2, len(keys)) for _, keys, _ in compiled.rules
        )

    def _claims_for(
        self,
        themes: Iterable[ThemeMatch],
        lead: _Unit,
        body: list[_Unit],
        where: dict[str, list[int]],
    ) -> list[ClaimMatch]:
        theme_scores = {m.theme_id: m.score for m in themes}
        if not theme_scores:
            return []
        found: list[ClaimMatch] = []
        for claim, compiled in self._claims:
            parent = max((theme_scores.get(t, 0.0) for t in claim.themes), default=0.0)
            if parent <= 0.0:
                continue
            total, evidence = self._evidence(compiled, lead, body, where)
            score = min(parent, calibrated(total))
            if score >= compiled.threshold:
                found.append(ClaimMatch(claim.id, round(score, 4), tuple(evidence)))
        found.sort(key=lambda m: -m.score)
        return found
