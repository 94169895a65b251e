"""Parsing feed documents into :class:`ParsedFeed` records: pure, bytes in, records out.

feedparser always gets bytes (never a URL or a path: a string may make it open files or the
network) and the response headers it needs for encoding detection and relative links. This module
runs inside worker processes, so everything it returns is picklable and it keeps no state.

What it does not do: fetch, store, or decide what is new; that is the pipeline's job.
"""

from __future__ import annotations

import hashlib
import html
import io
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from time import struct_time
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import feedparser

from bot.feeds.records import ParsedEntry, ParsedFeed


class FeedParseError(ValueError):
    """The document is not a feed feedparser can make sense of (HTML page, empty body, garbage)."""


# Query parameters that only track who clicked where; removing them never changes the page.
_TRACKING_EXACT = frozenset(
    {
        "fbclid",
        "gclid",
        "dclid",
        "gbraid",
        "wbraid",
        "msclkid",
        "yclid",
        "igshid",
        "twclid",
        "mc_cid",
        "mc_eid",
        "_ga",
        "_gl",
        "_hsenc",
        "_hsmi",
        "mkt_tok",
        "oly_anon_id",
        "oly_enc_id",
        "vero_id",
        "ocid",
        "cmpid",
        "cmp",
        "at_medium",
        "at_campaign",
        "at_custom1",
        "at_custom2",
        "at_custom3",
        "at_custom4",
        "ref_src",
        "ref_url",
        "smid",
        "xtor",
        "rss",
        "ito",
        "taid",
        "partner",
        "sr_share",
    }
)
_TRACKING_PREFIXES = ("utm_", "at_", "pk_", "mtm_", "__twitter", "hsa_")


def _is_tracking(name: str) -> bool:
    lowered = name.lower()
    return lowered in _TRACKING_EXACT or lowered.startswith(_TRACKING_PREFIXES)


def canonical_link(link: str | None, base: str | None = None) -> str | None:
    """Absolute http(s) link with tracking parameters, the fragment and default ports removed,
    scheme and host lower-cased. Returns None for empty or non-web links (``mailto:``,
    ``javascript:``)."""
    if not link or not link.strip():
        return None
    absolute = urljoin(base or "", link.strip())
    try:
        parts = urlsplit(absolute)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname.lower()
    if port is not None and not (
        (scheme == "http" and port == 80) or (scheme == "https" and port == 443)
    ):
        host = f"{host}:{port}"
    if parts.username or parts.password:
        auth = parts.username or ""
        host = f"{auth}@{host}"
    query = ""
    if parts.query:
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        query = urlencode([(k, v) for k, v in pairs if not _is_tracking(k)], doseq=True)
    return urlunsplit((scheme, host, parts.path or "/", query, ""))


_BLOCK_TAGS = frozenset(
    {
        "p",
        "div",
        "br",
        "li",
        "ul",
        "ol",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "tr",
        "td",
        "th",
        "table",
        "blockquote",
        "section",
        "article",
        "figure",
        "figcaption",
        "hr",
        "pre",
    }
)
_SKIPPED_TAGS = frozenset({"script", "style", "noscript", "template", "iframe", "object"})


class _TextExtractor(HTMLParser):
    """Collects the visible text of an HTML fragment; block tags become line breaks."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED_TAGS:
            self._skip_depth += 1
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED_TAGS:
            self._skip_depth = max(0, self._skip_depth - 1)
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip_depth:
            self.parts.append(data)


def _tidy(text: str) -> str:
    """Runs of whitespace within a line (no-break spaces included) become one space; lines are
    trimmed and blank ones dropped. str.split() does in C what two regex passes did, without the
    regex engine's backtracking over long whitespace runs."""
    return "\n".join(line for line in (" ".join(row.split()) for row in text.split("\n")) if line)


def html_to_text(fragment: str | None) -> str:
    """Plain text of an HTML fragment: tags dropped, entities decoded, script/style removed,
    runs of spaces collapsed, paragraphs kept as single line breaks."""
    if not fragment:
        return ""
    if "<" not in fragment:
        # No tags: the HTML parser would only decode entities, which is all unescape does.
        return _tidy(html.unescape(fragment) if "&" in fragment else fragment)
    extractor = _TextExtractor()
    extractor.feed(fragment)
    extractor.close()
    return _tidy("".join(extractor.parts))


def _text_of(value: Any, detail: Any) -> str:
    """A feedparser text construct as plain text: HTML is stripped; text that feedparser says is
    plain (``type='text/plain'``) is kept, so a literal ``<`` in a headline survives."""
    if not isinstance(value, str):
        return ""
    if _kind(detail) == "text/plain":
        return _tidy(value)
    return html_to_text(value)


def _kind(detail: Any) -> Any:
    return detail.get("type") if isinstance(detail, Mapping) else None


def title_fingerprint(title: str) -> str:
    """Lower-case words of a title without accents or punctuation: equal for the same headline
    as written by two feeds that differ only in typography."""
    decomposed = unicodedata.normalize("NFKD", title)
    plain = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(re.findall(r"\w+", plain.casefold()))


def _sha256(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode("utf-8", "surrogatepass"))
        digest.update(b"\x1f")
    return digest.hexdigest()


def story_key(link: str | None, title: str, fallback: str = "") -> str:
    """Same story across feeds: the canonical link without scheme and ``www.``, else the title,
    else ``fallback`` (the entry key), so untitled link-less entries are not all one story."""
    if link:
        parts = urlsplit(link)
        host = (parts.hostname or "").removeprefix("www.")
        return _sha256("url", host, parts.path.rstrip("/"), parts.query)
    fingerprint = title_fingerprint(title)
    if fingerprint:
        return _sha256("title", fingerprint)
    return _sha256("entry", fallback)


def _utc(value: Any) -> datetime | None:
    """feedparser's ``*_parsed`` values are UTC ``struct_time``; absurd ones become None."""
    if not isinstance(value, struct_time | tuple) or len(value) < 6:
        return None
    try:
        year, month, day, hour, minute, second = (int(v) for v in value[:6])
        return datetime(year, month, day, hour, minute, min(second, 59), tzinfo=UTC)
    except (TypeError, ValueError, OverflowError):
        return None


def _authors(entry: Mapping[str, Any]) -> tuple[str, ...]:
    names: list[str] = []
    for author in entry.get("authors") or ():
        name = author.get("name") if isinstance(author, Mapping) else None
        if isinstance(name, str) and name.strip():
            names.append(html_to_text(name))
    if not names and isinstance(entry.get("author"), str) and entry["author"].strip():
        names.append(html_to_text(entry["author"]))
    return tuple(dict.fromkeys(n for n in names if n))


def _content(entry: Mapping[str, Any]) -> str | None:
    values: Iterable[Any] = entry.get("content") or ()
    texts = [html_to_text(item.get("value")) for item in values if isinstance(item, Mapping)]
    joined = "\n".join(t for t in texts if t)
    return joined or None


def _ttl(feed: Mapping[str, Any]) -> timedelta | None:
    raw = feed.get("ttl")
    try:
        minutes = int(str(raw).strip()) if raw is not None else 0
    except ValueError:
        return None
    return timedelta(minutes=minutes) if minutes > 0 else None


def build_entry(entry: Mapping[str, Any], url: str) -> ParsedEntry:
    """Normalise one feedparser entry; ``url`` is the document's address (the base for relative
    links: feedparser has already applied any ``xml:base`` on the way)."""
    title = _text_of(entry.get("title"), entry.get("title_detail"))
    content = _content(entry)
    raw_summary = entry.get("summary")
    contents: Sequence[Any] = entry.get("content") or ()
    if (
        content
        and len(contents) == 1
        and isinstance(contents[0], Mapping)
        and raw_summary == contents[0].get("value")
        and _kind(entry.get("summary_detail")) != "text/plain"
    ):
        # feedparser copies an Atom <content> without <summary> into the summary: the same
        # fragment, so the same text (this is a third of the entries in the corpus).
        summary = content
    else:
        summary = _text_of(raw_summary, entry.get("summary_detail"))
    link = canonical_link(entry.get("link"), url)
    published = _utc(entry.get("published_parsed")) or _utc(entry.get("updated_parsed"))
    guid = entry.get("id")
    if isinstance(guid, str) and guid.strip():
        # As written, even when relative: a key that does not depend on the address the feed
        # was fetched from survives a redirect or a moved feed without storing entries again.
        key = guid.strip()
    elif link:
        key = link
    else:
        key = "sha256:" + _sha256(title, published.isoformat() if published else "", summary)
    return ParsedEntry(
        entry_key=key,
        link=link,
        title=title,
        summary=summary,
        content=content,
        authors=_authors(entry),
        published_at=published,
        content_hash=_sha256(title, link or "", summary, content or ""),
        story_key=story_key(link, title, key),
    )


def parse_feed(body: bytes, *, url: str, content_type: str | None = None) -> ParsedFeed:
    """Parse a fetched document.

    ``url`` is where the body came from (after redirects): relative links resolve against it.
    Entries keep document order; a second entry with an already seen key is dropped (and counted
    in ``duplicates``) because the first one is what readers of the feed see first.

    Raises :class:`FeedParseError` when the body is not a usable feed.
    """
    # No Content-Location: with a base address feedparser joins it with every element's base on
    # every start tag (a quarter of its time), yet the only URLs kept are entry links and
    # permalink guids, which build_entry resolves against ``url`` itself.
    headers = {"content-type": content_type} if content_type else {}
    try:
        # No sanitising and no rewriting of links inside HTML: every text is reduced to plain
        # text below, so that work (a third of feedparser's time) would be thrown away.
        result = feedparser.parse(
            io.BytesIO(body),
            response_headers=headers,
            sanitize_html=False,
            resolve_relative_uris=False,
        )
    except Exception as exc:  # feedparser has no error hierarchy: any failure is "not a feed"
        raise FeedParseError(f"feedparser failed: {type(exc).__name__}: {exc}") from exc
    problem = result.get("bozo_exception") if result.get("bozo") else None
    entries_raw = result.get("entries") or []
    # No entries and no recognisable feed format: HTML, JSON, garbage. A recognised feed with
    # no entries is just quiet, even when feedparser complained about something on the way.
    if not entries_raw and not result.get("version"):
        reason = f"{type(problem).__name__}: {problem}" if problem is not None else "no feed found"
        raise FeedParseError(f"not a usable feed ({reason})")
    feed_meta = result.get("feed") or {}
    seen: set[str] = set()
    entries: list[ParsedEntry] = []
    duplicates = 0
    for raw in entries_raw:
        entry = build_entry(raw, url)
        if entry.entry_key in seen:
            duplicates += 1
            continue
        seen.add(entry.entry_key)
        entries.append(entry)
    title = _text_of(feed_meta.get("title"), feed_meta.get("title_detail")) or None
    warning = f"{type(problem).__name__}: {problem}" if problem is not None else None
    return ParsedFeed(
        title=title,
        ttl=_ttl(feed_meta),
        entries=tuple(entries),
        warning=warning,
        duplicates=duplicates,
    )
