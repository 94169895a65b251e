"""Feeds and entries in the database: the storage side of ingestion (SQLAlchemy Core, sync).

Every function takes an ``Engine`` and does one short transaction; the poll pipeline calls them
from a worker thread. Write transactions start with a write, so on SQLite the busy timeout applies
(a transaction that read first could fail at once when another process wrote in between).

Contracts:

* :func:`sync_config_feeds` upserts the configured feeds (matched by ``config_url``); configured
  feeds that left the file are disabled, never deleted (their entries and matches stay).
* :func:`claim_feeds` hands out feeds with a lease, so two pollers never fetch the same feed at
  once; every ``record_*`` call releases the lease.
* :func:`store_entries` stores each entry once per ``(feed_id, entry_key)``; a changed entry
  (different content hash) is updated at most ``max_updates`` times and gets ``matched_at``
  reset to NULL so the matcher sees it again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Text, and_, bindparam, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from bot.feeds.records import ParsedEntry, ParsedFeed
from bot.ops.leader import exclusive_section
from bot.storage.schema import UtcDateTime, entries, feeds

_IN_CHUNK = 500


@dataclass(frozen=True, slots=True)
class ConfiguredFeed:
    """A ``[[feeds]]`` table as storage needs it."""

    url: str
    name: str | None
    interval: timedelta | None


@dataclass(frozen=True, slots=True)
class FeedState:
    """What the poller needs to know about a feed to fetch it."""

    id: int
    url: str
    config_url: str | None
    name: str | None
    interval: timedelta | None
    etag: str | None
    last_modified: str | None
    body_hash: str | None
    consecutive_failures: int
    baseline_done: bool
    next_poll_at: datetime | None
    origin: str = "config"
    """'config' (feeds.toml) or 'command' (added by a chat command: fetched public-only)."""


@dataclass(frozen=True, slots=True)
class FeedHealth:
    """One feed's health, for ``counterparty feeds`` and status commands."""

    id: int
    url: str
    name: str | None
    title: str | None
    enabled: bool
    origin: str
    entry_count: int
    last_success_at: datetime | None
    last_fetched_at: datetime | None
    next_poll_at: datetime | None
    consecutive_failures: int
    last_status: int | None
    last_error_kind: str | None
    last_error: str | None


@dataclass(frozen=True, slots=True)
class SyncResult:
    added: int
    updated: int
    disabled: int


@dataclass(frozen=True, slots=True)
class StoreResult:
    new: int
    updated: int


def sync_config_feeds(
    engine: Engine, configured: Sequence[ConfiguredFeed], now: datetime
) -> SyncResult:
    """Upsert configured feeds; disable ``origin='config'`` feeds no longer configured."""
    added = changed = 0
    with engine.begin() as conn:
        # Start with a write (see the module docstring), touching nothing; on PostgreSQL also
        # wait for any other replica syncing the same config (it would insert the same URLs).
        conn.execute(update(feeds).where(feeds.c.id == -1).values(enabled=True))
        exclusive_section(conn, "config-sync:feeds")
        rows = conn.execute(select(feeds.c.id, feeds.c.url, feeds.c.config_url)).all()
        by_url: dict[str, int] = {}
        for row in rows:
            by_url.setdefault(row.config_url or row.url, row.id)
            by_url.setdefault(row.url, row.id)
        wanted_ids: set[int] = set()
        for feed in configured:
            interval = int(feed.interval.total_seconds()) if feed.interval else None
            feed_id = by_url.get(feed.url)
            if feed_id is None:
                result = conn.execute(
                    feeds.insert().values(
                        url=feed.url,
                        config_url=feed.url,
                        name=feed.name,
                        origin="config",
                        enabled=True,
                        interval_seconds=interval,
                        created_at=now,
                    )
                )
                assert result.inserted_primary_key is not None
                wanted_ids.add(int(result.inserted_primary_key[0]))
                added += 1
            else:
                wanted_ids.add(feed_id)
                result = conn.execute(
                    update(feeds)
                    .where(feeds.c.id == feed_id)
                    .where(
                        or_(
                            feeds.c.name.is_distinct_from(feed.name),
                            feeds.c.interval_seconds.is_distinct_from(interval),
                            feeds.c.enabled.is_(False),
                            feeds.c.origin != "config",
                        )
                    )
                    .values(
                        name=feed.name, interval_seconds=interval, enabled=True, origin="config"
                    )
                )
                changed += result.rowcount
        stale = conn.execute(
            update(feeds)
            .where(feeds.c.origin == "config", feeds.c.enabled.is_(True))
            .where(feeds.c.id.not_in(wanted_ids) if wanted_ids else feeds.c.id.is_not(None))
            .values(enabled=False)
        )
    return SyncResult(added=added, updated=changed, disabled=stale.rowcount)


def _state(row: Any) -> FeedState:
    return FeedState(
        id=row.id,
        url=row.url,
        config_url=row.config_url,
        name=row.name,
        interval=timedelta(seconds=row.interval_seconds) if row.interval_seconds else None,
        etag=row.etag,
        last_modified=row.last_modified,
        body_hash=row.body_hash,
        consecutive_failures=row.consecutive_failures,
        baseline_done=bool(row.baseline_done),
        next_poll_at=row.next_poll_at,
        origin=row.origin,
    )


def claim_feeds(
    engine: Engine,
    *,
    now: datetime,
    owner: str,
    lease: timedelta,
    due_only: bool,
    limit: int | None = None,
) -> list[FeedState]:
    """Lease enabled feeds (due ones, or all with ``due_only=False``) whose lease is free.

    On PostgreSQL the candidates are locked with ``FOR UPDATE SKIP LOCKED`` and leased in the
    same transaction, so replicas claiming at once split the feeds between them without
    waiting. Elsewhere the claim is a compare-and-set on the lease columns, one statement per
    chunk of candidates (and, for due feeds, on still being due: a feed another poller fetched
    meanwhile is not fetched again); the rows leased to ``owner`` are what was claimed."""
    free = or_(
        feeds.c.lease_until.is_(None), feeds.c.lease_until <= now, feeds.c.lease_owner == owner
    )
    due = or_(feeds.c.next_poll_at.is_(None), feeds.c.next_poll_at <= now)
    query = (
        select(feeds)
        .where(feeds.c.enabled.is_(True), free)
        .order_by(feeds.c.next_poll_at.is_not(None), feeds.c.next_poll_at, feeds.c.id)
    )
    if due_only:
        query = query.where(due)
    if limit is not None:
        query = query.limit(limit)
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            rows = conn.execute(query.with_for_update(skip_locked=True)).all()
            for start in range(0, len(rows), _IN_CHUNK):
                ids = [row.id for row in rows[start : start + _IN_CHUNK]]
                conn.execute(
                    update(feeds)
                    .where(feeds.c.id.in_(ids))
                    .values(lease_owner=owner, lease_until=now + lease)
                )
        return [_state(row) for row in rows]
    with engine.connect() as conn:
        candidates = [row.id for row in conn.execute(query.with_only_columns(feeds.c.id)).all()]
    if not candidates:
        return []
    claimed: list[FeedState] = []
    with engine.begin() as conn:
        for start in range(0, len(candidates), _IN_CHUNK):
            chunk = candidates[start : start + _IN_CHUNK]
            still = and_(free, due) if due_only else free
            conn.execute(
                update(feeds)
                .where(feeds.c.id.in_(chunk), still)
                .values(lease_owner=owner, lease_until=now + lease)
            )
            rows = conn.execute(
                select(feeds).where(feeds.c.id.in_(chunk), feeds.c.lease_owner == owner)
            ).all()
            claimed.extend(_state(row) for row in rows)
    return claimed


def release_feeds(engine: Engine, feed_ids: Iterable[int], owner: str) -> None:
    """Drop leases this owner still holds (after a cancelled poll)."""
    ids = list(feed_ids)
    if not ids:
        return
    with engine.begin() as conn:
        conn.execute(
            update(feeds)
            .where(feeds.c.id.in_(ids), feeds.c.lease_owner == owner)
            .values(lease_owner=None, lease_until=None)
        )


def _move_url(conn: Connection, feed_id: int, new_url: str | None) -> None:
    """Store a permanent redirect's target, unless another feed already has that URL."""
    if not new_url:
        return
    taken = conn.execute(
        select(feeds.c.id).where(feeds.c.url == new_url, feeds.c.id != feed_id)
    ).first()
    if taken is None:
        conn.execute(update(feeds).where(feeds.c.id == feed_id).values(url=new_url))


@dataclass(frozen=True, slots=True)
class NotModifiedRecord:
    """A healthy poll with nothing to store: a 304, or a 200 whose body hash was unchanged."""

    feed_id: int
    now: datetime
    status: int
    next_poll_at: datetime
    permanent_url: str | None
    etag: str | None
    last_modified: str | None


_NOT_MODIFIED_UPDATE = (
    update(feeds)
    .where(feeds.c.id == bindparam("b_id"))
    .values(
        last_fetched_at=bindparam("b_now", type_=UtcDateTime()),
        last_success_at=bindparam("b_now", type_=UtcDateTime()),
        last_status=bindparam("b_status"),
        consecutive_failures=0,
        last_error_kind=None,
        last_error=None,
        next_poll_at=bindparam("b_next", type_=UtcDateTime()),
        lease_owner=None,
        lease_until=None,
        # A 304 may omit the validators: keep the stored ones then.
        etag=func.coalesce(bindparam("b_etag", type_=Text()), feeds.c.etag),
        last_modified=func.coalesce(bindparam("b_modified", type_=Text()), feeds.c.last_modified),
    )
)


def record_not_modified_many(engine: Engine, records: Sequence[NotModifiedRecord]) -> None:
    """Mark many feeds healthy in one transaction (a warm pass is mostly 304s)."""
    if not records:
        return
    params = [
        {
            "b_id": r.feed_id,
            "b_now": r.now,
            "b_status": r.status,
            "b_next": r.next_poll_at,
            "b_etag": r.etag or None,
            "b_modified": r.last_modified or None,
        }
        for r in records
    ]
    with engine.begin() as conn:
        conn.execute(_NOT_MODIFIED_UPDATE, params)
        for record in records:
            _move_url(conn, record.feed_id, record.permanent_url)


def record_not_modified(
    engine: Engine,
    feed_id: int,
    *,
    now: datetime,
    status: int,
    next_poll_at: datetime,
    permanent_url: str | None,
    etag: str | None,
    last_modified: str | None,
) -> None:
    """One feed's :func:`record_not_modified_many`."""
    record_not_modified_many(
        engine,
        [NotModifiedRecord(feed_id, now, status, next_poll_at, permanent_url, etag, last_modified)],
    )


def record_failure(
    engine: Engine,
    feed_id: int,
    *,
    now: datetime,
    kind: str,
    message: str,
    status: int | None,
    next_poll_at: datetime,
) -> None:
    """One more consecutive failure, with its kind and message; the feed stays enabled."""
    with engine.begin() as conn:
        conn.execute(
            update(feeds)
            .where(feeds.c.id == feed_id)
            .values(
                last_fetched_at=now,
                last_status=status,
                consecutive_failures=feeds.c.consecutive_failures + 1,
                last_error_kind=kind,
                last_error=message[:2000],
                next_poll_at=next_poll_at,
                lease_owner=None,
                lease_until=None,
            )
        )


def _existing(conn: Connection, feed_id: int, keys: Sequence[str]) -> dict[str, tuple[str, int]]:
    found: dict[str, tuple[str, int]] = {}
    for start in range(0, len(keys), _IN_CHUNK):
        chunk = keys[start : start + _IN_CHUNK]
        rows = conn.execute(
            select(entries.c.entry_key, entries.c.content_hash, entries.c.update_count).where(
                entries.c.feed_id == feed_id, entries.c.entry_key.in_(chunk)
            )
        )
        for key, content_hash, count in rows:
            found[key] = (content_hash, count)
    return found


def _entry_values(entry: ParsedEntry) -> dict[str, Any]:
    return {
        "link": entry.link,
        "title": entry.title,
        "summary": entry.summary,
        "content": entry.content,
        "authors": list(entry.authors) or None,
        "published_at": entry.published_at,
        "content_hash": entry.content_hash,
        "story_key": entry.story_key,
    }


_KEY = [entries.c.feed_id, entries.c.entry_key]
_INSERT_POSTGRESQL = (
    postgresql.insert(entries).on_conflict_do_nothing(index_elements=_KEY).returning(entries.c.id)
)
_INSERT_SQLITE = sqlite.insert(entries).on_conflict_do_nothing(index_elements=_KEY)


def _insert_ignoring_duplicates(conn: Connection, rows: list[dict[str, Any]]) -> int:
    """Insert, skipping rows another poller stored meanwhile; returns how many were new.

    On SQLite a plain executemany, whose rowcount is the sum of the rows each insert changed (a
    skipped conflict changes none): a third cheaper than RETURNING, which SQLAlchemy runs as
    batched multi-row statements. PostgreSQL counts the RETURNING rows."""
    if conn.dialect.name != "postgresql":
        return int(conn.execute(_INSERT_SQLITE, rows).rowcount)
    inserted = 0
    for start in range(0, len(rows), _IN_CHUNK):
        inserted += len(conn.execute(_INSERT_POSTGRESQL, rows[start : start + _IN_CHUNK]).all())
    return inserted


def store_entries(
    engine: Engine,
    feed_id: int,
    parsed: ParsedFeed,
    *,
    now: datetime,
    status: int,
    next_poll_at: datetime,
    body_hash: str,
    etag: str | None,
    last_modified: str | None,
    permanent_url: str | None,
    baseline: bool,
    baseline_window: timedelta,
    max_updates: int,
) -> StoreResult:
    """Store a successfully parsed document and mark the feed healthy.

    With ``baseline`` (the feed's first successful poll) entries published before
    ``now - baseline_window``, or without a date, are stored with ``announce = false``."""
    keys = [entry.entry_key for entry in parsed.entries]
    with engine.begin() as conn:
        # The feed row first: the transaction starts with a write (see the module docstring),
        # and the keys read next cannot change under it.
        conn.execute(
            update(feeds)
            .where(feeds.c.id == feed_id)
            .values(
                title=parsed.title,
                last_fetched_at=now,
                last_success_at=now,
                last_status=status,
                consecutive_failures=0,
                last_error_kind=None,
                last_error=None,
                next_poll_at=next_poll_at,
                body_hash=body_hash,
                etag=etag,
                last_modified=last_modified,
                baseline_done=True,
                lease_owner=None,
                lease_until=None,
            )
        )
        known = _existing(conn, feed_id, keys)
        cutoff = now - baseline_window
        fresh: list[dict[str, Any]] = []
        updated = 0
        for entry in parsed.entries:
            previous = known.get(entry.entry_key)
            if previous is None:
                announce = not baseline or (
                    entry.published_at is not None and entry.published_at >= cutoff
                )
                fresh.append(
                    {
                        "feed_id": feed_id,
                        "entry_key": entry.entry_key,
                        **_entry_values(entry),
                        "update_count": 0,
                        "announce": announce,
                        "first_seen_at": now,
                        "updated_at": now,
                        "matched_at": None,
                    }
                )
            elif previous[0] != entry.content_hash and previous[1] < max_updates:
                result = conn.execute(
                    update(entries)
                    .where(
                        and_(
                            entries.c.feed_id == feed_id,
                            entries.c.entry_key == entry.entry_key,
                            entries.c.content_hash != entry.content_hash,
                            entries.c.update_count < max_updates,
                        )
                    )
                    .values(
                        **_entry_values(entry),
                        update_count=entries.c.update_count + 1,
                        updated_at=now,
                        matched_at=None,
                    )
                )
                updated += result.rowcount
        new = _insert_ignoring_duplicates(conn, fresh) if fresh else 0
        if new:
            conn.execute(
                update(feeds)
                .where(feeds.c.id == feed_id)
                .values(entry_count=feeds.c.entry_count + new)
            )
        _move_url(conn, feed_id, permanent_url)
    return StoreResult(new=new, updated=updated)


def list_feed_health(engine: Engine) -> list[FeedHealth]:
    """Every feed (enabled first), with its health."""
    with engine.connect() as conn:
        rows = conn.execute(select(feeds).order_by(feeds.c.enabled.desc(), feeds.c.id)).all()
    return [
        FeedHealth(
            id=row.id,
            url=row.url,
            name=row.name,
            title=row.title,
            enabled=bool(row.enabled),
            origin=row.origin,
            entry_count=row.entry_count,
            last_success_at=row.last_success_at,
            last_fetched_at=row.last_fetched_at,
            next_poll_at=row.next_poll_at,
            consecutive_failures=row.consecutive_failures,
            last_status=row.last_status,
            last_error_kind=row.last_error_kind,
            last_error=row.last_error,
        )
        for row in rows
    ]
