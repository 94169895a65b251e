"""Typed records that flow through feed ingestion: what a parse yields and what a fetch returns.

All datetimes are timezone-aware UTC. Records are frozen and picklable, because parsing runs in a
worker process and hands its result back to the event loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True)
class ParsedEntry:
    """One feed item, normalised: plain text, canonical link, stable key, UTC time."""

    entry_key: str
    """Stable within the feed: the guid, else the canonical link, else a hash of title and date."""
    link: str | None
    """Canonical link: absolute, tracking parameters and fragment removed."""
    title: str
    summary: str
    content: str | None
    authors: tuple[str, ...]
    published_at: datetime | None
    content_hash: str
    """sha256 of what a reader sees (title, link, summary, content); a change means "updated"."""
    story_key: str
    """Links the same story across feeds: a hash of the canonical link, else of the title."""


@dataclass(frozen=True, slots=True)
class ParsedFeed:
    """A parsed document: feed-level facts plus its entries, in document order."""

    title: str | None
    ttl: timedelta | None
    """RSS ``<ttl>``: how long the publisher asks clients to wait between polls."""
    entries: tuple[ParsedEntry, ...]
    warning: str | None = None
    """feedparser's bozo message for a feed that was still usable (e.g. a bad encoding label)."""
    duplicates: int = 0
    """Entries dropped because an earlier entry in the same document had the same key."""


@dataclass(frozen=True, slots=True)
class CacheHints:
    """What the server said about freshness, as durations from the response time (unclamped)."""

    max_age: timedelta | None = None
    retry_after: timedelta | None = None


@dataclass(frozen=True, slots=True)
class Fetched:
    """A 200 response whose body was read within the caps."""

    body: bytes
    final_url: str
    permanent_url: str | None
    """Where every redirect on the way was permanent (301/308): the URL to store from now on."""
    content_type: str | None
    etag: str | None
    last_modified: str | None
    status: int
    hints: CacheHints = field(default_factory=CacheHints)


@dataclass(frozen=True, slots=True)
class NotModified:
    """A 304 answer to a conditional request."""

    permanent_url: str | None
    etag: str | None
    last_modified: str | None
    status: int = 304
    hints: CacheHints = field(default_factory=CacheHints)


@dataclass(frozen=True, slots=True)
class FetchFailed:
    """A fetch that produced no usable body. ``kind`` is one of ``ERROR_KINDS``."""

    kind: str
    message: str
    status: int | None = None
    hints: CacheHints = field(default_factory=CacheHints)


FetchResult = Fetched | NotModified | FetchFailed

# The values of feeds.last_error_kind (see bot/storage/schema.py).
ERROR_KINDS = frozenset(
    {
        "gone",
        "parse",
        "http",
        "server",
        "timeout",
        "network",
        "too_large",
        "rate_limited",
        "redirect",
        "blocked",  # a command-added feed reached a private address (bot/feeds/guard.py)
    }
)
