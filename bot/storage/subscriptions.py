"""The ``subscriptions`` repository: config sync, command CRUD, pause/resume, pending matches.

Every function takes an open :class:`~sqlalchemy.engine.Connection` and runs inside the caller's
transaction (``with engine.begin() as conn: ...``), so a caller can combine several steps
atomically (the digest job gathers matches and writes the outbox in one transaction). All SQL is
SQLAlchemy Core, parameterised, and runs on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Connection, RowMapping, and_, delete, exists, insert, or_, select, update

from bot.digest.compose import PendingMatch
from bot.settings import SubscriptionConfig
from bot.storage.schema import digest_items, entries, feeds, matches, outbox, subscriptions

CONSOLE_PLATFORM = "console"
CONSOLE_TARGET = "stdout"


@dataclass(frozen=True, slots=True)
class Subscription:
    """One row of ``subscriptions``. ``themes`` is ``None`` for "every theme"."""

    id: int
    platform: str
    target: str
    label: str | None
    guild_id: str | None
    themes: tuple[str, ...] | None
    claims: tuple[str, ...]
    cadence: str
    min_score: float
    max_items: int
    origin: str
    created_by: str | None
    paused: bool
    pause_reason: str | None
    last_digest_at: datetime | None
    next_digest_at: datetime | None
    since: datetime
    created_at: datetime

    @property
    def display_target(self) -> str:
        """The target as it may be shown to users: a webhook URL is reduced to its host."""
        if self.platform == "discord-webhook":
            return self.label or f"webhook on {urlsplit(self.target).hostname}"
        return self.label or self.target


def _from_row(row: RowMapping) -> Subscription:
    themes = row["themes"]
    return Subscription(
        id=int(row["id"]),
        platform=row["platform"],
        target=row["target"],
        label=row["label"],
        guild_id=row["guild_id"],
        themes=None if themes is None else tuple(themes),
        claims=tuple(row["claims"] or ()),
        cadence=row["cadence"],
        min_score=float(row["min_score"]),
        max_items=int(row["max_items"]),
        origin=row["origin"],
        created_by=row["created_by"],
        paused=bool(row["paused"]),
        pause_reason=row["pause_reason"],
        last_digest_at=row["last_digest_at"],
        next_digest_at=row["next_digest_at"],
        since=row["since"],
        created_at=row["created_at"],
    )


def get(conn: Connection, subscription_id: int) -> Subscription | None:
    row = (
        conn.execute(select(subscriptions).where(subscriptions.c.id == subscription_id))
        .mappings()
        .first()
    )
    return None if row is None else _from_row(row)


def find(conn: Connection, platform: str, target: str) -> Subscription | None:
    row = (
        conn.execute(
            select(subscriptions).where(
                subscriptions.c.platform == platform, subscriptions.c.target == target
            )
        )
        .mappings()
        .first()
    )
    return None if row is None else _from_row(row)


def list_subscriptions(
    conn: Connection, *, platform: str | None = None, guild_id: str | None = None
) -> list[Subscription]:
    """Subscriptions in id order, optionally only one platform's or one guild's."""
    query = select(subscriptions).order_by(subscriptions.c.id)
    if platform is not None:
        query = query.where(subscriptions.c.platform == platform)
    if guild_id is not None:
        query = query.where(subscriptions.c.guild_id == guild_id)
    return [_from_row(row) for row in conn.execute(query).mappings()]


def upsert(
    conn: Connection,
    *,
    platform: str,
    target: str,
    now: datetime,
    themes: Sequence[str] | None = None,
    claims: Sequence[str] = (),
    cadence: str = "instant",
    min_score: float = 0.5,
    max_items: int = 10,
    origin: str = "command",
    label: str | None = None,
    guild_id: str | None = None,
    created_by: str | None = None,
) -> Subscription:
    """Create the subscription for ``(platform, target)`` or update its filters.

    A new subscription starts fresh (``since = now``: nothing stored earlier is delivered to
    it); an update keeps ``since`` and the delivery history, and a changed cadence is
    rescheduled from scratch. Pause state is left as it is."""
    values: dict[str, Any] = {
        "themes": None if themes is None else list(themes),
        "claims": list(claims),
        "cadence": cadence,
        "min_score": min_score,
        "max_items": max_items,
    }
    if label is not None:
        values["label"] = label
    if guild_id is not None:
        values["guild_id"] = guild_id
    existing = find(conn, platform, target)
    if existing is None:
        conn.execute(
            insert(subscriptions).values(
                platform=platform,
                target=target,
                origin=origin,
                created_by=created_by,
                since=now,
                created_at=now,
                paused=False,
                **values,
            )
        )
    else:
        if existing.cadence != cadence:
            values["next_digest_at"] = None
        conn.execute(
            update(subscriptions).where(subscriptions.c.id == existing.id).values(**values)
        )
    found = find(conn, platform, target)
    assert found is not None
    return found


def sync_from_config(
    conn: Connection, configs: Sequence[SubscriptionConfig], *, now: datetime
) -> list[Subscription]:
    """Make the ``origin='config'`` subscriptions match ``feeds.toml``.

    Listed ones are created or updated (a subscription first made by a command and then added
    to the file becomes a config one); config subscriptions no longer in the file are deleted.
    Command-made subscriptions are left alone."""
    kept: list[Subscription] = []
    for config in configs:
        sub = upsert(
            conn,
            platform=config.platform,
            target=config.target,
            now=now,
            themes=config.themes,
            claims=config.claims,
            cadence=config.cadence,
            min_score=config.min_score,
            max_items=config.max_items,
            origin="config",
        )
        if sub.origin != "config":
            conn.execute(
                update(subscriptions).where(subscriptions.c.id == sub.id).values(origin="config")
            )
        kept.append(sub)
    keep_ids = [s.id for s in kept]
    conn.execute(
        delete(subscriptions).where(
            subscriptions.c.origin == "config", subscriptions.c.id.not_in(keep_ids)
        )
    )
    return kept


def remove(conn: Connection, platform: str, target: str) -> bool:
    """Delete a subscription (its undelivered outbox rows go with it). True if one existed."""
    result = conn.execute(
        delete(subscriptions).where(
            subscriptions.c.platform == platform, subscriptions.c.target == target
        )
    )
    return bool(result.rowcount)


def record_chat_migration(
    conn: Connection, platform: str, old_target: str, new_target: str
) -> None:
    """A chat changed its id (a Telegram group became a supergroup): move its subscription and
    its undelivered (pending or held) outbox rows to ``new_target``."""
    conn.execute(
        update(subscriptions)
        .where(subscriptions.c.platform == platform, subscriptions.c.target == old_target)
        .values(target=new_target)
    )
    conn.execute(
        update(outbox)
        .where(
            outbox.c.platform == platform,
            outbox.c.target == old_target,
            outbox.c.status.in_(["pending", "held"]),
        )
        .values(target=new_target)
    )


def pause(conn: Connection, subscription_id: int, reason: str) -> None:
    """Pause delivery with a reason users see in ``/status``; pending posts are held, not lost."""
    conn.execute(
        update(subscriptions)
        .where(subscriptions.c.id == subscription_id)
        .values(paused=True, pause_reason=reason)
    )
    conn.execute(
        update(outbox)
        .where(outbox.c.subscription_id == subscription_id, outbox.c.status == "pending")
        .values(status="held", lease_owner=None, lease_until=None)
    )


def resume(conn: Connection, subscription_id: int, *, now: datetime) -> None:
    """Resume delivery; held posts become due at once, in their original order."""
    conn.execute(
        update(subscriptions)
        .where(subscriptions.c.id == subscription_id)
        .values(paused=False, pause_reason=None)
    )
    conn.execute(
        update(outbox)
        .where(outbox.c.subscription_id == subscription_id, outbox.c.status == "held")
        .values(status="pending", next_attempt_at=now)
    )


def ensure_console(
    conn: Connection, *, active: bool, now: datetime, since: datetime | None = None
) -> Subscription | None:
    """The built-in console subscription (every theme, instant), used when no token is set.

    ``since`` (default ``now``) is where a new console subscription starts: ``counterparty run``
    passes a day back, so matches a ``counterparty poll --once`` stored just before the first
    run are shown too. ``active=False`` pauses it (a platform token is configured); it is
    created only when needed."""
    existing = find(conn, CONSOLE_PLATFORM, CONSOLE_TARGET)
    if not active:
        if existing is not None and not existing.paused:
            pause(conn, existing.id, "a chat platform token is set; console output is off")
        return existing
    if existing is None:
        created = upsert(
            conn,
            platform=CONSOLE_PLATFORM,
            target=CONSOLE_TARGET,
            now=now,
            origin="console",
            label="console",
        )
        if since is not None:
            conn.execute(
                update(subscriptions).where(subscriptions.c.id == created.id).values(since=since)
            )
        return get(conn, created.id)
    if existing.paused:
        resume(conn, existing.id, now=now)
    return get(conn, existing.id)


def _outlet(name: str | None, title: str | None, url: str) -> str:
    return name or title or urlsplit(url).hostname or url


def _pending_match(row: RowMapping) -> PendingMatch:
    return PendingMatch(
        entry_id=int(row["entry_id"]),
        kind=row["kind"],
        ref_id=row["ref_id"],
        score=float(row["score"]),
        excerpt=row["excerpt"] or "",
        title=row["title"] or "(untitled)",
        link=row["link"],
        outlet=_outlet(row["feed_name"], row["feed_title"], row["feed_url"]),
        published=row["published_at"],
        first_seen=row["first_seen_at"],
        story_key=row["story_key"],
    )


_MATCH_COLUMNS = (
    matches.c.entry_id,
    matches.c.kind,
    matches.c.ref_id,
    matches.c.score,
    matches.c.excerpt,
    entries.c.title,
    entries.c.link,
    entries.c.published_at,
    entries.c.first_seen_at,
    entries.c.story_key,
    feeds.c.name.label("feed_name"),
    feeds.c.title.label("feed_title"),
    feeds.c.url.label("feed_url"),
)


def pending_matches(
    conn: Connection, sub: Subscription, *, limit: int = 2000
) -> list[PendingMatch]:
    """Matches this subscription has not received yet, oldest first.

    That is: matches of announced entries, with ``score >= min_score``, of the subscription's
    themes (all when ``themes`` is ``None``) or claims, stored at or after its ``since``, whose
    entry is not in ``digest_items`` for it. Stored by any process, so a ``counterparty poll
    --once`` beside a running bot is picked up."""
    theme_filter = (
        matches.c.kind == "theme"
        if sub.themes is None
        else and_(matches.c.kind == "theme", matches.c.ref_id.in_(sub.themes))
    )
    claim_filter = and_(matches.c.kind == "claim", matches.c.ref_id.in_(sub.claims))
    delivered = exists().where(
        digest_items.c.subscription_id == sub.id, digest_items.c.entry_id == matches.c.entry_id
    )
    query = (
        select(*_MATCH_COLUMNS)
        .select_from(matches.join(entries, entries.c.id == matches.c.entry_id).join(feeds))
        .where(
            entries.c.announce.is_(True),
            matches.c.score >= sub.min_score,
            matches.c.created_at >= sub.since,
            or_(theme_filter, claim_filter),
            ~delivered,
        )
        .order_by(matches.c.created_at, matches.c.id)
        .limit(limit)
    )
    return [_pending_match(row) for row in conn.execute(query).mappings()]


def recent_matches(
    conn: Connection,
    *,
    since: datetime,
    min_score: float = 0.5,
    themes: Sequence[str] | None = None,
    claims: Sequence[str] = (),
    limit: int = 2000,
) -> list[PendingMatch]:
    """Matches of announced entries first seen at or after ``since`` (for previews such as
    ``counterparty digest --print``): every theme unless ``themes`` names some; claims only
    when named."""
    theme_filter = (
        matches.c.kind == "theme"
        if themes is None
        else and_(matches.c.kind == "theme", matches.c.ref_id.in_(list(themes)))
    )
    claim_filter = and_(matches.c.kind == "claim", matches.c.ref_id.in_(list(claims)))
    query = (
        select(*_MATCH_COLUMNS)
        .select_from(matches.join(entries, entries.c.id == matches.c.entry_id).join(feeds))
        .where(
            entries.c.announce.is_(True),
            entries.c.first_seen_at >= since,
            matches.c.score >= min_score,
            or_(theme_filter, claim_filter),
        )
        .order_by(entries.c.first_seen_at.desc(), matches.c.id)
        .limit(limit)
    )
    return [_pending_match(row) for row in conn.execute(query).mappings()]
