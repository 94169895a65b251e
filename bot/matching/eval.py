"""Evaluating the matcher against labelled items: per-theme precision, recall, F1, micro and macro.

Pure functions over data, plus :func:`read_labelled` for the JSON-lines files the ``eval`` command
reads. The same numbers are computed for a **keyword-only baseline** (a theme "matches" when any
of its ``keywords`` occurs anywhere in the item), the floor a matcher must clear to be worth it.

Macro averages are over the themes that have at least one positive in the labelled set; a theme
with no positives is still reported (its false positives count in the micro figures).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from bot.matching.catalog import Catalog
from bot.matching.records import Item
from bot.matching.text import fold


class EvalInputError(ValueError):
    """A labelled or items file cannot be used; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class Labelled:
    """An item with the theme ids a person gave it, and the split it belongs to."""

    item: Item
    labels: frozenset[str]
    split: str | None = None
    # Claims the labeller saw the item bear on: a sparse annotation, so only recall is measured.
    claims: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class ThemeScore:
    theme_id: str
    tp: int
    fp: int
    fn: int

    @property
    def support(self) -> int:
        return self.tp + self.fn

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


@dataclass(frozen=True, slots=True)
class Report:
    """Scores of one system on one labelled set."""

    name: str
    items: int
    themes: tuple[ThemeScore, ...]

    @property
    def micro(self) -> ThemeScore:
        return ThemeScore(
            "micro",
            sum(t.tp for t in self.themes),
            sum(t.fp for t in self.themes),
            sum(t.fn for t in self.themes),
        )

    @property
    def scored(self) -> tuple[ThemeScore, ...]:
        """The themes macro averages are taken over: those with at least one positive."""
        return tuple(t for t in self.themes if t.support)

    @property
    def macro_precision(self) -> float:
        scored = self.scored
        return sum(t.precision for t in scored) / len(scored) if scored else 0.0

    @property
    def macro_recall(self) -> float:
        scored = self.scored
        return sum(t.recall for t in scored) / len(scored) if scored else 0.0

    @property
    def macro_f1(self) -> float:
        scored = self.scored
        return sum(t.f1 for t in scored) / len(scored) if scored else 0.0


Predictor = Callable[[Item], Iterable[str]]


def evaluate(
    name: str, predict: Predictor, labelled: Sequence[Labelled], theme_ids: Sequence[str]
) -> Report:
    """Run ``predict`` over ``labelled`` and count hits and misses per theme."""
    counts = {t: [0, 0, 0] for t in theme_ids}
    for example in labelled:
        predicted = set(predict(example.item)) & counts.keys()
        for theme_id in predicted | (example.labels & counts.keys()):
            gold = theme_id in example.labels
            hit = theme_id in predicted
            counts[theme_id][0 if gold and hit else 1 if hit else 2] += 1
    return Report(name, len(labelled), tuple(ThemeScore(t, *counts[t]) for t in theme_ids))


class KeywordBaseline:
    """A theme matches when any of its catalog ``keywords`` occurs (whole word, any case)."""

    def __init__(self, catalog: Catalog) -> None:
        self._patterns = {
            theme.id: re.compile(
                r"(?<!\w)(?:" + "|".join(re.escape(fold(k)) for k in theme.keywords) + r")(?!\w)",
                re.IGNORECASE,
            )
            for theme in catalog.themes.values()
        }

    def __call__(self, item: Item) -> list[str]:
        text = fold(" ".join((item.title, item.summary, item.content or "")))
        return [theme_id for theme_id, pattern in self._patterns.items() if pattern.search(text)]


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else None


def item_from_json(data: dict[str, Any], where: str) -> Item:
    """An :class:`Item` from one JSON line; raises :class:`EvalInputError` naming ``where``."""
    ident = data.get("id")
    if not isinstance(ident, str | int) or isinstance(ident, bool) or str(ident) == "":
        raise EvalInputError(f"{where}: 'id' is missing or not a string")
    for field in ("title", "summary", "content", "source", "link"):
        value = data.get(field)
        if value is not None and not isinstance(value, str):
            raise EvalInputError(f"{where}: {field!r} must be a string")
    if not data.get("title") and not data.get("summary") and not data.get("content"):
        raise EvalInputError(f"{where}: the item has no title, summary or content")
    return Item(
        id=str(ident),
        title=data.get("title") or "",
        summary=data.get("summary") or "",
        content=data.get("content"),
        published=_parse_time(data.get("published")),
        source=data.get("source"),
        link=data.get("link"),
    )


def read_json_lines(handle: TextIO, name: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(``name:line``, object) for every non-blank line; bad JSON raises :class:`EvalInputError`."""
    for number, line in enumerate(handle, 1):
        if not line.strip():
            continue
        where = f"{name}:{number}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EvalInputError(f"{where}: not valid JSON ({exc.msg})") from None
        if not isinstance(data, dict):
            raise EvalInputError(f"{where}: expected a JSON object")
        yield where, data


def read_labelled(
    labels_path: Path, items_path: Path | None, theme_ids: Iterable[str]
) -> list[Labelled]:
    """Labelled items from ``labels_path``, texts joined by id from ``items_path`` when given.

    Each label line holds ``"labels": [theme ids]`` (and optionally ``"split"``); without an
    items file it must also hold the item's text. Unknown theme ids and label lines whose item
    is missing from the items file are errors, not silently dropped.
    """
    known = set(theme_ids)
    texts: dict[str, dict[str, Any]] = {}
    if items_path is not None:
        with items_path.open(encoding="utf-8") as handle:
            for _where, data in read_json_lines(handle, str(items_path)):
                texts[str(data.get("id"))] = data
    out: list[Labelled] = []
    with labels_path.open(encoding="utf-8") as handle:
        for where, data in read_json_lines(handle, str(labels_path)):
            labels = data.get("labels")
            if not isinstance(labels, list) or not all(isinstance(t, str) for t in labels):
                raise EvalInputError(f"{where}: 'labels' must be a list of theme ids")
            unknown = sorted(set(labels) - known)
            if unknown:
                raise EvalInputError(f"{where}: unknown theme id(s) {', '.join(unknown)}")
            split = data.get("split")
            if split is not None and not isinstance(split, str):
                raise EvalInputError(f"{where}: 'split' must be a string")
            source = data
            if items_path is not None:
                joined = texts.get(str(data.get("id")))
                if joined is None:
                    raise EvalInputError(f"{where}: item {data.get('id')!r} is not in {items_path}")
                source = {**joined, **{k: v for k, v in data.items() if k == "id"}}
            claims = data.get("claims", [])
            if not isinstance(claims, list) or not all(isinstance(c, str) for c in claims):
                raise EvalInputError(f"{where}: 'claims' must be a list of claim ids")
            out.append(
                Labelled(item_from_json(source, where), frozenset(labels), split, frozenset(claims))
            )
    return out


def format_report(report: Report) -> str:
    """A fixed-width table: one row per theme, then micro and macro averages."""
    lines = [
        f"{report.name} ({report.items} items)",
        f"  {'theme':<24} {'P':>6} {'R':>6} {'F1':>6} {'tp':>5} {'fp':>5} {'fn':>5}",
    ]
    for t in report.themes:
        note = "" if t.support else "   (no positives: not in macro)"
        lines.append(
            f"  {t.theme_id:<24} {t.precision:>6.3f} {t.recall:>6.3f} {t.f1:>6.3f} "
            f"{t.tp:>5} {t.fp:>5} {t.fn:>5}{note}"
        )
    m = report.micro
    lines.append(
        f"  {'micro':<24} {m.precision:>6.3f} {m.recall:>6.3f} {m.f1:>6.3f} "
        f"{m.tp:>5} {m.fp:>5} {m.fn:>5}"
    )
    lines.append(
        f"  {'macro':<24} {report.macro_precision:>6.3f} {report.macro_recall:>6.3f} "
        f"{report.macro_f1:>6.3f}"
    )
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class ClaimRecall:
    """For one claim: labelled items the matcher attached it to, labelled items, all attached."""

    claim_id: str
    found: int
    labelled: int
    attached: int


def claim_recall(
    attach: Callable[[Item], Iterable[str]], labelled: Sequence[Labelled], claim_ids: Sequence[str]
) -> tuple[ClaimRecall, ...]:
    """Recall of the sparse claim labels, with how often each claim was attached overall.

    Claim labels mark items that clearly bear on a claim; an item without them is not a
    negative, so precision cannot be measured and ``attached`` is shown for judgement only.
    """
    found = dict.fromkeys(claim_ids, 0)
    total = dict.fromkeys(claim_ids, 0)
    attached = dict.fromkeys(claim_ids, 0)
    for example in labelled:
        got = set(attach(example.item))
        for claim_id in got & attached.keys():
            attached[claim_id] += 1
        for claim_id in example.claims & total.keys():
            total[claim_id] += 1
            found[claim_id] += claim_id in got
    return tuple(ClaimRecall(c, found[c], total[c], attached[c]) for c in claim_ids)


def format_claims(rows: Sequence[ClaimRecall]) -> str:
    lines = [
        "claims (recall on the sparse claim labels; precision is not measurable)",
        f"  {'claim':<28} {'found':>5} {'of':>4} {'attached':>9}",
    ]
    lines += [f"  {r.claim_id:<28} {r.found:>5} {r.labelled:>4} {r.attached:>9}" for r in rows]
    return "\n".join(lines)
