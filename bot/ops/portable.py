"""``counterparty export`` / ``import``: feeds and subscriptions as TOML, JSON or OPML.

The TOML and JSON shapes are the configuration file's own ``[[feeds]]`` and ``[[subscriptions]]``
tables, so an export can be pasted into ``feeds.toml`` and an import is validated by the same
rules (and reports problems with the same ``FILE:LINE: KEY: message`` lines). OPML carries feeds
only (``<outline xmlUrl=... title=...>``, nested folders allowed).

OPML is parsed with expat directly and any document type declaration is refused: no DTD means no
internal entity expansion ("billion laughs") and no external entities, which is what defusedxml
would enforce. Files bigger than :data:`MAX_IMPORT_BYTES` are refused before parsing.

Reading and writing files, formats and the database are separate functions: ``bundle_from_db``
and ``apply_bundle`` touch the database, everything else is a function of text and data.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any, Literal
from xml.parsers import expat

import tomli_w
from pydantic import ValidationError
from sqlalchemy import Engine, or_, select

from bot.settings import ConfigError, FeedConfig, SubscriptionConfig, parse_config_text
from bot.storage.schema import feeds, subscriptions

Format = Literal["toml", "json", "opml"]
FORMATS: tuple[Format, ...] = ("toml", "json", "opml")
MAX_IMPORT_BYTES = 5_000_000


class ImportProblemsError(Exception):
    """The file cannot be imported; ``problems`` has one line per problem. Nothing was written."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True, slots=True)
class Bundle:
    """Feeds and subscriptions, validated, ready to write out or to store."""

    feeds: tuple[FeedConfig, ...] = ()
    subscriptions: tuple[SubscriptionConfig, ...] = ()


def format_for(path: Path, given: str | None) -> Format:
    """The format named by ``--format``, else guessed from the file suffix."""
    name = given or {".toml": "toml", ".json": "json", ".opml": "opml", ".xml": "opml"}.get(
        path.suffix.lower(), ""
    )
    if name not in FORMATS:
        raise ImportProblemsError(
            [f"{path}: cannot tell the format from the name; use --format toml, json or opml"]
        )
    return name


# --- writing ---------------------------------------------------------------------------------


def format_duration(value: timedelta) -> str:
    """The shortest exact ``N<unit>`` spelling of a duration (``900s`` -> ``15m``)."""
    seconds = int(value.total_seconds())
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def bundle_to_data(bundle: Bundle) -> dict[str, Any]:
    """Plain data in the configuration file's shape; unset optional keys are left out."""
    feed_list = []
    for feed in bundle.feeds:
        item: dict[str, Any] = {"url": feed.url}
        if feed.name:
            item["name"] = feed.name
        if feed.interval is not None:
            item["interval"] = format_duration(feed.interval)
        feed_list.append(item)
    sub_list = []
    for sub in bundle.subscriptions:
        entry: dict[str, Any] = {"platform": sub.platform, "target": sub.target}
        if sub.themes is not None:
            entry["themes"] = list(sub.themes)
        if sub.claims:
            entry["claims"] = list(sub.claims)
        entry.update(cadence=sub.cadence, min_score=sub.min_score, max_items=sub.max_items)
        sub_list.append(entry)
    return {"feeds": feed_list, "subscriptions": sub_list}


def write_toml(bundle: Bundle) -> str:
    header = (
        "# counterparty export: [[feeds]] and [[subscriptions]] in feeds.toml's own format.\n"
        "# Discord webhook targets contain their token: keep this file private.\n\n"
    )
    return header + tomli_w.dumps(bundle_to_data(bundle))


def write_json(bundle: Bundle) -> str:
    return json.dumps(bundle_to_data(bundle), indent=2, ensure_ascii=False) + "\n"


def write_opml(bundle: Bundle, *, now: datetime) -> str:
    """OPML 2.0 with one ``<outline type="rss">`` per feed (subscriptions are not included)."""
    root = ET.Element("opml", version="2.0")
    head = ET.SubElement(root, "head")
    ET.SubElement(head, "title").text = "counterparty feeds"
    ET.SubElement(head, "dateCreated").text = format_datetime(now, usegmt=True)
    body = ET.SubElement(root, "body")
    for feed in bundle.feeds:
        label = feed.name or feed.url
        ET.SubElement(body, "outline", type="rss", text=label, title=label, xmlUrl=feed.url)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_bundle(bundle: Bundle, fmt: Format, *, now: datetime) -> str:
    if fmt == "toml":
        return write_toml(bundle)
    if fmt == "json":
        return write_json(bundle)
    return write_opml(bundle, now=now)


# --- reading ---------------------------------------------------------------------------------


def _key(loc: tuple[int | str, ...]) -> str:
    key = ""
    for part in loc:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    return key


def read_toml(text: str, *, path: Path) -> Bundle:
    try:
        config = parse_config_text(text, path=path)
    except ConfigError as exc:
        raise ImportProblemsError(exc.problems) from None
    return Bundle(tuple(config.feeds), tuple(config.subscriptions))


def read_json(text: str, *, path: Path) -> Bundle:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ImportProblemsError([f"{path}:{exc.lineno}: not valid JSON: {exc.msg}"]) from None
    if not isinstance(data, dict):
        raise ImportProblemsError([f"{path}: expected an object with 'feeds' and 'subscriptions'"])
    problems = [
        f"{path}: {key}: unknown key (only 'feeds' and 'subscriptions' are imported)"
        for key in data
        if key not in ("feeds", "subscriptions")
    ]
    found: dict[str, list[Any]] = {"feeds": [], "subscriptions": []}
    for section, model in (("feeds", FeedConfig), ("subscriptions", SubscriptionConfig)):
        items = data.get(section, [])
        if not isinstance(items, list):
            problems.append(f"{path}: {section}: expected a list")
            continue
        for index, item in enumerate(items):
            try:
                found[section].append(model.model_validate(item))
            except ValidationError as exc:
                problems.extend(
                    f"{path}: {_key((section, index, *err['loc']))}: "
                    + (
                        "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
                    ).removeprefix("Value error, ")
                    for err in exc.errors()
                )
    problems.extend(_duplicates(data.get("feeds"), path))
    if problems:
        raise ImportProblemsError(problems)
    return Bundle(tuple(found["feeds"]), tuple(found["subscriptions"]))


def _duplicates(items: object, path: Path) -> list[str]:
    """Feeds whose URL an earlier entry of the raw ``feeds`` list already has."""
    if not isinstance(items, list):
        return []
    first: dict[str, int] = {}
    problems = []
    for index, item in enumerate(items):
        url = item.get("url") if isinstance(item, dict) else None
        if not isinstance(url, str):
            continue
        if url in first:
            problems.append(
                f"{path}: feeds[{index}].url: {url!r} is already listed as feeds[{first[url]}]"
            )
        else:
            first[url] = index
    return problems


class _OpmlRefusedError(Exception):
    pass


def read_opml(data: bytes, *, path: Path) -> Bundle:
    """Feeds from the ``xmlUrl`` outlines of an OPML file; a DOCTYPE is refused outright."""
    parser = expat.ParserCreate()
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    outlines: list[tuple[int, dict[str, str]]] = []
    seen_opml: list[bool] = []

    def refuse(*_: object) -> None:
        raise _OpmlRefusedError(
            f"{path}:{parser.CurrentLineNumber}: the file declares a DTD or entities; "
            "OPML needs neither, and they are refused for safety"
        )

    def start(name: str, attributes: dict[str, str]) -> None:
        if name.lower() == "opml":
            seen_opml.append(True)
        if name.lower() == "outline":
            lowered = {key.lower(): value for key, value in attributes.items()}
            if "xmlurl" in lowered:
                outlines.append((parser.CurrentLineNumber, lowered))

    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.ExternalEntityRefHandler = refuse  # type: ignore[assignment]
    parser.StartElementHandler = start
    try:
        parser.Parse(data, True)
    except _OpmlRefusedError as exc:
        raise ImportProblemsError([str(exc)]) from None
    except expat.ExpatError as exc:
        raise ImportProblemsError(
            [f"{path}:{exc.lineno}: not well-formed XML: {expat.ErrorString(exc.code)}"]
        ) from None
    if not seen_opml:
        raise ImportProblemsError([f"{path}: not an OPML file (no <opml> element)"])
    problems: list[str] = []
    found: list[FeedConfig] = []
    for line, attributes in outlines:
        name = (attributes.get("title") or attributes.get("text") or "").strip() or None
        try:
            found.append(FeedConfig(url=attributes["xmlurl"].strip(), name=name))
        except ValidationError as exc:
            problems.extend(
                f"{path}:{line}: outline xmlUrl: {err['msg'].removeprefix('Value error, ')}"
                for err in exc.errors()
            )
    unique: dict[str, FeedConfig] = {}
    for feed in found:
        unique.setdefault(feed.url, feed)  # the same feed in two folders is one feed
    if problems:
        raise ImportProblemsError(problems)
    return Bundle(tuple(unique.values()), ())


def read_bundle(path: Path, fmt: Format) -> Bundle:
    """Read and validate ``path``; raise :class:`ImportProblemsError` listing every problem."""
    try:
        size = path.stat().st_size
        if size > MAX_IMPORT_BYTES:
            raise ImportProblemsError([f"{path}: {size} bytes is too big to import"])
        data = path.read_bytes()
    except OSError as exc:
        raise ImportProblemsError(
            [f"{path}: cannot read the file: {exc.strerror or exc}"]
        ) from None
    if fmt == "opml":
        return read_opml(data, path=path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ImportProblemsError([f"{path}: not UTF-8 text ({exc.reason})"]) from None
    return read_toml(text, path=path) if fmt == "toml" else read_json(text, path=path)


# --- the database ----------------------------------------------------------------------------


def bundle_from_db(engine: Engine) -> Bundle:
    """Every feed and subscription stored, feeds by id, subscriptions by id."""
    with engine.connect() as connection:
        feed_rows = connection.execute(
            select(feeds.c.url, feeds.c.name, feeds.c.interval_seconds).order_by(feeds.c.id)
        ).all()
        sub_rows = connection.execute(select(subscriptions).order_by(subscriptions.c.id)).all()
    feed_list = tuple(
        FeedConfig(
            url=row.url,
            name=row.name,
            interval=timedelta(seconds=row.interval_seconds) if row.interval_seconds else None,
        )
        for row in feed_rows
    )
    sub_list = tuple(
        SubscriptionConfig(
            platform=row.platform,
            target=row.target,
            themes=row.themes,
            claims=row.claims or [],
            cadence=row.cadence,
            min_score=row.min_score,
            max_items=row.max_items,
        )
        for row in sub_rows
    )
    return Bundle(feed_list, sub_list)


@dataclass(frozen=True, slots=True)
class ImportSummary:
    feeds_added: int = 0
    feeds_present: int = 0
    subscriptions_added: int = 0
    subscriptions_updated: int = 0
    subscriptions_unchanged: int = 0


def apply_bundle(
    engine: Engine, bundle: Bundle, *, now: datetime, dry_run: bool = False
) -> ImportSummary:
    """Store the bundle in one transaction (rolled back when ``dry_run``).

    Feeds already present (by URL or configured URL) are left as they are; new ones are added
    with origin ``command`` so a later start-up does not drop them for missing from feeds.toml.
    Subscriptions are matched on (platform, target): new ones start delivering from ``now``,
    existing ones get the imported themes, claims, cadence and limits.
    """
    counts = dict.fromkeys(ImportSummary.__slots__, 0)
    with engine.connect() as connection, connection.begin() as transaction:
        for feed in bundle.feeds:
            present = connection.execute(
                select(feeds.c.id).where(
                    or_(feeds.c.url == feed.url, feeds.c.config_url == feed.url)
                )
            ).first()
            if present is not None:
                counts["feeds_present"] += 1
                continue
            connection.execute(
                feeds.insert().values(
                    url=feed.url,
                    config_url=feed.url,
                    name=feed.name,
                    origin="command",
                    added_by="import",
                    interval_seconds=int(feed.interval.total_seconds()) if feed.interval else None,
                    created_at=now,
                )
            )
            counts["feeds_added"] += 1
        for sub in bundle.subscriptions:
            wanted = {
                "themes": list(sub.themes) if sub.themes is not None else None,
                "claims": list(sub.claims),
                "cadence": sub.cadence,
                "min_score": sub.min_score,
                "max_items": sub.max_items,
            }
            row = connection.execute(
                select(subscriptions).where(
                    subscriptions.c.platform == sub.platform, subscriptions.c.target == sub.target
                )
            ).first()
            if row is None:
                connection.execute(
                    subscriptions.insert().values(
                        platform=sub.platform,
                        target=sub.target,
                        origin="command",
                        created_by="import",
                        since=now,
                        created_at=now,
                        **wanted,
                    )
                )
                counts["subscriptions_added"] += 1
                continue
            current = {key: getattr(row, key) for key in wanted}
            current["claims"] = current["claims"] or []
            if current == wanted:
                counts["subscriptions_unchanged"] += 1
            else:
                connection.execute(
                    subscriptions.update().where(subscriptions.c.id == row.id).values(**wanted)
                )
                counts["subscriptions_updated"] += 1
        if dry_run:
            transaction.rollback()
    return ImportSummary(**counts)
