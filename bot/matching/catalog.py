"""The theme/claim catalog: load ``themes.toml`` and check it, naming entry and field per problem.

The packaged file (``bot/matching/themes.toml``) holds the essay's 8 themes and 10 claims; a
deployment may replace it with ``[bot].themes_file`` in ``feeds.toml``. :func:`load_catalog`
either returns a fully checked :class:`Catalog` or raises :class:`CatalogError` listing every
problem it found (not just the first), so one edit can fix them all.

This module only reads and validates; how the terms and rules are used is ``matcher.py``'s job.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bot.settings import Settings

PACKAGED_THEMES = Path(__file__).with_name("themes.toml")

_ID = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_GROUP = re.compile(r"^[a-z][a-z0-9_]*$")


class CatalogError(ValueError):
    """The theme file is unusable; ``problems`` lists every reason, each naming entry and field."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__(f"{path}: " + "; ".join(problems))


@dataclass(frozen=True, slots=True)
class Rule:
    """Evidence of ``weight`` when every named term group occurs in the same lead or sentence."""

    groups: tuple[str, ...]
    weight: float


@dataclass(frozen=True, slots=True)
class Theme:
    id: str
    title: str
    description: str
    essay_quote: str
    rules: tuple[Rule, ...]
    cues: dict[str, tuple[str, ...]]
    negatives: tuple[str, ...] = ()
    # Terms that mark another subject (Gaza, Iran for a Ukraine theme): a veto like
    # ``negatives``, except when one of the ``anchors`` groups is in the lead too.
    off_topic: tuple[str, ...] = ()
    anchors: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()
    threshold: float = 0.5
    positive_examples: tuple[str, ...] = ()
    negative_examples: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Claim:
    id: str
    claimant: str
    quote: str
    source: str
    date: str
    comment: str
    themes: tuple[str, ...]
    rules: tuple[Rule, ...] = ()
    cues: dict[str, tuple[str, ...]] | None = None
    threshold: float = 0.5


@dataclass(frozen=True, slots=True)
class Catalog:
    """The checked catalog: themes and claims in file order, and the shared alias groups."""

    themes: dict[str, Theme]
    claims: dict[str, Claim]
    aliases: dict[str, tuple[str, ...]]
    path: Path

    def groups_for(self, entry: Theme | Claim) -> dict[str, tuple[str, ...]]:
        """The term groups a theme's or claim's rules can name: shared aliases plus its own cues."""
        return {**self.aliases, **(entry.cues or {})}


class _Checker:
    """Collects problems while reading raw TOML tables into records."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def ident(
        self, table: dict[str, Any], where: str, *, seen: Mapping[str, object], kind: str
    ) -> str:
        """The entry's ``id``: present, lower-case-with-hyphens, not one already in ``seen``."""
        ident = self.text(table, "id", where)
        if ident and not _ID.match(ident):
            self.problems.append(f"{where}: field 'id' must be lower-case-with-hyphens")
        if ident in seen:
            self.problems.append(f"{where}: field 'id' repeats an earlier {kind}")
        return ident

    def text(self, table: dict[str, Any], field: str, where: str, *, required: bool = True) -> str:
        value = table.get(field)
        if value is None:
            if required:
                self.problems.append(f"{where}: field {field!r} is missing")
            return ""
        if not isinstance(value, str) or not value.strip():
            self.problems.append(f"{where}: field {field!r} must be a non-empty string")
            return ""
        return value.strip()

    def strings(self, table: dict[str, Any], field: str, where: str) -> tuple[str, ...]:
        value = table.get(field, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            self.problems.append(f"{where}: field {field!r} must be a list of non-empty strings")
            return ()
        return tuple(v.strip() for v in value)

    def number(self, table: dict[str, Any], field: str, where: str, default: float) -> float:
        value = table.get(field, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 5:
            self.problems.append(f"{where}: field {field!r} must be a number in (0, 5]")
            return default
        return float(value)

    def groups(self, table: dict[str, Any], field: str, where: str) -> dict[str, tuple[str, ...]]:
        value = table.get(field, {})
        if not isinstance(value, dict):
            self.problems.append(f"{where}: field {field!r} must be a table of term lists")
            return {}
        out: dict[str, tuple[str, ...]] = {}
        for name in value:
            if not _GROUP.match(name):
                self.problems.append(
                    f"{where}: field {field}.{name}: group names are lower_case_with_underscores"
                )
            out[name] = self.strings(value, name, f"{where}: field {field}.{name}")
            if not out[name]:
                self.problems.append(f"{where}: field {field}.{name} has no terms")
        return out

    def rules(
        self, table: dict[str, Any], where: str, known: set[str], *, required: bool
    ) -> tuple[Rule, ...]:
        raw = table.get("rule", [])
        if not isinstance(raw, list) or not all(isinstance(r, dict) for r in raw):
            self.problems.append(f"{where}: field 'rule' must be an array of tables ([[...rule]])")
            return ()
        if required and not raw:
            self.problems.append(f"{where}: field 'rule' is missing (at least one rule is needed)")
        rules = []
        for n, rule in enumerate(raw, 1):
            rwhere = f"{where}: rule {n}"
            names = self.strings(rule, "all", rwhere)
            if not names:
                self.problems.append(f"{rwhere}: field 'all' must name at least one term group")
            for name in names:
                if name not in known:
                    self.problems.append(f"{rwhere}: field 'all' names unknown group {name!r}")
            rules.append(Rule(names, self.number(rule, "weight", rwhere, 1.0)))
        return tuple(rules)


def _entries(data: dict[str, Any], key: str, checker: _Checker) -> list[dict[str, Any]]:
    raw = data.get(key, [])
    if not isinstance(raw, list) or not all(isinstance(e, dict) for e in raw):
        checker.problems.append(f"top level: {key!r} must be an array of tables ([[{key}]])")
        return []
    return raw


def _where(kind: str, n: int, entry: dict[str, Any]) -> str:
    ident = entry.get("id")
    return f"{kind} {ident!r}" if isinstance(ident, str) and ident else f"{kind} #{n}"


def parse_catalog(data: dict[str, Any], path: Path) -> Catalog:
    """Check already-parsed TOML data; raise :class:`CatalogError` listing every problem."""
    checker = _Checker()
    aliases = checker.groups(data, "aliases", "top level")
    themes: dict[str, Theme] = {}
    for n, entry in enumerate(_entries(data, "theme", checker), 1):
        where = _where("theme", n, entry)
        ident = checker.ident(entry, where, seen=themes, kind="theme")
        cues = checker.groups(entry, "cues", where)
        known = set(aliases) | set(cues)
        theme = Theme(
            id=ident,
            title=checker.text(entry, "title", where),
            description=checker.text(entry, "description", where),
            essay_quote=checker.text(entry, "essay_quote", where),
            rules=checker.rules(entry, where, known, required=True),
            cues=cues,
            negatives=checker.strings(entry, "negatives", where),
            off_topic=checker.strings(entry, "off_topic", where),
            anchors=checker.strings(entry, "anchors", where),
            keywords=checker.strings(entry, "keywords", where),
            threshold=checker.number(entry, "threshold", where, 0.5),
            positive_examples=checker.strings(entry, "positive_examples", where),
            negative_examples=checker.strings(entry, "negative_examples", where),
        )
        for name in theme.anchors:
            if name not in known:
                checker.problems.append(f"{where}: field 'anchors' names unknown group {name!r}")
        if theme.threshold >= 1:
            checker.problems.append(f"{where}: field 'threshold' must be below 1")
        if not theme.keywords:
            checker.problems.append(f"{where}: field 'keywords' is missing or empty")
        if ident:
            themes[ident] = theme
    if not themes:
        checker.problems.append("top level: no [[theme]] entries")

    claims: dict[str, Claim] = {}
    for n, entry in enumerate(_entries(data, "claim", checker), 1):
        where = _where("claim", n, entry)
        ident = checker.ident(entry, where, seen=claims, kind="claim")
        claim_themes = checker.strings(entry, "themes", where)
        if not claim_themes:
            checker.problems.append(f"{where}: field 'themes' must name at least one theme")
        for theme_id in claim_themes:
            if theme_id not in themes:
                checker.problems.append(f"{where}: field 'themes' names unknown theme {theme_id!r}")
        cues = checker.groups(entry, "cues", where)
        known = set(aliases) | set(cues)
        claim = Claim(
            id=ident,
            claimant=checker.text(entry, "claimant", where),
            quote=checker.text(entry, "quote", where),
            source=checker.text(entry, "source", where),
            date=checker.text(entry, "date", where),
            comment=checker.text(entry, "comment", where),
            themes=claim_themes,
            rules=checker.rules(entry, where, known, required=False),
            cues=cues,
            threshold=checker.number(entry, "threshold", where, 0.5),
        )
        if ident:
            claims[ident] = claim

    if checker.problems:
        raise CatalogError(path, checker.problems)
    return Catalog(themes=themes, claims=claims, aliases=aliases, path=path)


def load_catalog(path: Path | None = None) -> Catalog:
    """Read and check the theme file (``None``: the packaged ``themes.toml``).

    Raises :class:`CatalogError` when the file is missing, is not TOML, or fails the schema
    check; every problem names the entry (``theme 'putin-deal'``, ``claim #3``) and the field.
    """
    path = path or PACKAGED_THEMES
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise CatalogError(path, ["file not found"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(path, [f"not valid TOML: {exc}"]) from None
    return parse_catalog(data, path)


def themes_path_from_settings(settings: Settings) -> Path | None:
    """The theme file named by ``[bot].themes_file`` (relative to the config file), else None."""
    configured = settings.file.bot.themes_file
    return settings.resolve(configured) if configured is not None else None
