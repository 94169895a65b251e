"""The one command set behind Discord's slash commands and Telegram's commands.

:class:`CommandCore` takes already-parsed arguments plus a :class:`Caller` (where the command was
issued and whether the user may manage the server) and returns a neutral answer record from
:mod:`bot.commands.answers`; a platform renders it. Bad arguments raise
:class:`~bot.commands.answers.CommandError` with a sentence to show the user. Messages are plain
text (no markup): renderers escape them, since they may quote what the user typed.

The methods are synchronous (SQLAlchemy Core, blocking DNS for ``add_feed``): platform adapters
call them with ``asyncio.to_thread``. The clock is injected so tests fix ``now``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, exists, func, insert, or_, select, update

from bot.commands.answers import (
    ClaimAnswer,
    ClaimInfo,
    ClaimsAnswer,
    CommandError,
    DigestPreviewAnswer,
    FeedInfo,
    FeedsAnswer,
    MatchedItem,
    Notice,
    SearchAnswer,
    StatusAnswer,
    SubscriptionInfo,
    SubscriptionsAnswer,
    ThemeAnswer,
    ThemeInfo,
    ThemesAnswer,
)
from bot.commands.ssrf import Resolver, check_feed_url, resolve_host
from bot.digest.compose import compose
from bot.matching.catalog import Catalog
from bot.settings import check_cadence
from bot.storage import subscriptions as subs_repo
from bot.storage.schema import entries, feeds, matches, outbox

RECENT_ITEMS = 5
SEARCH_RESULTS = 10
SEARCH_WINDOW = timedelta(days=30)
PREVIEW_WINDOW = timedelta(hours=24)
AUTOCOMPLETE_MAX = 25
MAX_SEARCH_TERMS = 8


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who issued a command, and where.

    ``target`` is what a subscription made here would post to (a Discord channel or thread
    id, a Telegram ``CHAT_ID[:TOPIC_ID]``); ``target_label`` is how to show it. ``can_manage``
    is the platform's "may change server-wide settings" (Discord: Manage Server).
    """

    platform: str
    target: str
    target_label: str
    user_id: str
    guild_id: str | None = None
    can_manage: bool = False


def _split_ids(text: str) -> list[str]:
    return [part for part in re.split(r"[\s,;]+", text.strip().lower()) if part]


def _unknown(kind: str, value: str, known: Iterable[str]) -> CommandError:
    known = list(known)
    close = difflib.get_close_matches(value, known, n=1)
    hint = f" Did you mean {close[0]}?" if close else f" Known {kind}s: {', '.join(known)}."
    return CommandError(f"There is no {kind} called {value!r}.{hint}")


def _like_pattern(term: str) -> str:
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _health(row: Any) -> str:
    if not row.enabled:
        return "disabled"
    if row.last_fetched_at is None:
        return "new"
    return "failing" if row.consecutive_failures > 0 else "ok"


class CommandCore:
    """The command set. ``catalog`` has ``themes`` and ``claims`` dicts keyed by id."""

    def __init__(
        self,
        engine: Engine,
        catalog: Catalog,
        *,
        allow_private_feeds: bool = False,
        resolve: Resolver = resolve_host,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._engine = engine
        self._catalog = catalog
        self._allow_private = allow_private_feeds
        self._resolve = resolve
        self._clock = clock

    # --- argument parsing ------------------------------------------------------------------

    def parse_themes(self, text: str | None) -> tuple[str, ...] | None:
        """``None``, empty or ``all`` mean every theme; otherwise known theme ids, in order."""
        if text is None or not text.strip() or text.strip().lower() == "all":
            return None
        ids = _split_ids(text)
        for theme_id in ids:
            if theme_id not in self._catalog.themes:
                raise _unknown("theme", theme_id, self._catalog.themes)
        return tuple(dict.fromkeys(ids))

    def parse_claims(self, text: str | None) -> tuple[str, ...]:
        if text is None or not text.strip() or text.strip().lower() == "none":
            return ()
        ids = _split_ids(text)
        for claim_id in ids:
            if claim_id not in self._catalog.claims:
                raise _unknown("claim", claim_id, self._catalog.claims)
        return tuple(dict.fromkeys(ids))

    # --- subscriptions ---------------------------------------------------------------------

    def subscribe(
        self,
        caller: Caller,
        *,
        themes: str | None = None,
        claims: str | None = None,
        cadence: str | None = None,
        min_score: float | None = None,
        max_items: int | None = None,
    ) -> Notice:
        """Subscribe the caller's channel (or change its subscription's filters)."""
        theme_ids = self.parse_themes(themes)
        claim_ids = self.parse_claims(claims)
        try:
            cadence_text = check_cadence(cadence or "instant")
        except ValueError as exc:
            message = str(exc)
            raise CommandError(message[:1].upper() + message[1:] + ".") from None
        score = 0.5 if min_score is None else min_score
        if not 0.0 <= score <= 1.0:
            raise CommandError("The minimum score must be between 0 and 1.")
        items = 10 if max_items is None else max_items
        if not 1 <= items <= 100:
            raise CommandError("The maximum number of items must be between 1 and 100.")
        now = self._clock()
        with self._engine.begin() as conn:
            existing = subs_repo.find(conn, caller.platform, caller.target)
            sub = subs_repo.upsert(
                conn,
                platform=caller.platform,
                target=caller.target,
                now=now,
                themes=theme_ids,
                claims=claim_ids,
                cadence=cadence_text,
                min_score=score,
                max_items=items,
                label=caller.target_label,
                guild_id=caller.guild_id,
                created_by=caller.user_id,
            )
            # Subscribing again is how a user says "access is fixed": resume a paused one.
            resumed = sub.paused
            if resumed:
                subs_repo.resume(conn, sub.id, now=now)
        what = "every theme" if theme_ids is None else "themes " + ", ".join(theme_ids)
        if claim_ids:
            what += " and claims " + ", ".join(claim_ids)
        verb = "Updated the subscription" if existing is not None else "Subscribed"
        text = (
            f"{verb}: {caller.target_label} gets {what}, cadence {cadence_text}, "
            f"minimum score {score:.2f}, at most {items} items per digest."
        )
        if resumed:
            text += f" Delivery resumed (it was paused: {sub.pause_reason or 'no reason given'})."
        return Notice(text)

    def unsubscribe(self, caller: Caller) -> Notice:
        with self._engine.begin() as conn:
            existing = subs_repo.find(conn, caller.platform, caller.target)
            if existing is None:
                raise CommandError(f"{caller.target_label} has no subscription.")
            if existing.origin == "config":
                raise CommandError(
                    "This subscription is declared in feeds.toml; remove it there, or it comes "
                    "back at the next start."
                )
            subs_repo.remove(conn, caller.platform, caller.target)
        return Notice(f"Unsubscribed {caller.target_label}. Nothing more will be posted here.")

    def _subscriptions_for(self, conn: Connection, caller: Caller) -> list[subs_repo.Subscription]:
        """The caller's server's subscriptions on its platform (just this chat without one)."""
        if caller.guild_id is not None:
            found = subs_repo.list_subscriptions(
                conn, platform=caller.platform, guild_id=caller.guild_id
            )
            here = subs_repo.find(conn, caller.platform, caller.target)
            if here is not None and here.id not in {s.id for s in found}:
                found.append(here)
            return found
        here = subs_repo.find(conn, caller.platform, caller.target)
        return [] if here is None else [here]

    @staticmethod
    def _info(sub: subs_repo.Subscription) -> SubscriptionInfo:
        return SubscriptionInfo(
            id=sub.id,
            platform=sub.platform,
            target_label=sub.display_target,
            themes=sub.themes,
            claims=sub.claims,
            cadence=sub.cadence,
            min_score=sub.min_score,
            max_items=sub.max_items,
            paused=sub.paused,
            pause_reason=sub.pause_reason,
            last_digest_at=sub.last_digest_at,
        )

    def subscriptions(self, caller: Caller) -> SubscriptionsAnswer:
        with self._engine.connect() as conn:
            found = self._subscriptions_for(conn, caller)
        return SubscriptionsAnswer(tuple(self._info(s) for s in found))

    # --- themes and claims -----------------------------------------------------------------

    def _theme_info(self, theme_id: str) -> ThemeInfo:
        theme = self._catalog.themes[theme_id]
        return ThemeInfo(theme.id, theme.title, theme.description, theme.essay_quote)

    def _claim_info(self, claim_id: str) -> ClaimInfo:
        claim = self._catalog.claims[claim_id]
        return ClaimInfo(
            claim.id,
            claim.claimant,
            claim.quote,
            claim.source,
            claim.date,
            claim.comment,
            tuple(claim.themes),
        )

    def themes(self) -> ThemesAnswer:
        return ThemesAnswer(tuple(self._theme_info(t) for t in self._catalog.themes))

    def theme(self, theme_id: str) -> ThemeAnswer:
        key = theme_id.strip().lower()
        if key not in self._catalog.themes:
            raise _unknown("theme", key, self._catalog.themes)
        claims = tuple(
            self._claim_info(c.id) for c in self._catalog.claims.values() if key in c.themes
        )
        return ThemeAnswer(self._theme_info(key), claims, self._recent("theme", key))

    def claims(self) -> ClaimsAnswer:
        return ClaimsAnswer(tuple(self._claim_info(c) for c in self._catalog.claims))

    def claim(self, claim_id: str) -> ClaimAnswer:
        key = claim_id.strip().lower()
        if key not in self._catalog.claims:
            raise _unknown("claim", key, self._catalog.claims)
        return ClaimAnswer(self._claim_info(key), self._recent("claim", key))

    def claim_choices(self, typed: str) -> list[tuple[str, str]]:
        """Autocomplete: ``(label, claim id)`` pairs whose id, claimant or quote contain what was
        typed (ids that start with it first), at most 25, labels within 100 characters."""
        needle = typed.strip().lower()
        scored: list[tuple[int, str, str]] = []
        for claim in self._catalog.claims.values():
            haystack = f"{claim.id} {claim.claimant} {claim.quote}".lower()
            if needle and needle not in haystack:
                continue
            rank = 0 if claim.id.startswith(needle) else 1
            label = f"{claim.id} · {claim.claimant}: {claim.quote}"
            scored.append((rank, claim.id, label[:97] + "…" if len(label) > 100 else label))
        scored.sort(key=lambda item: item[0])
        return [(label, claim_id) for _, claim_id, label in scored[:AUTOCOMPLETE_MAX]]

    def theme_choices(self, typed: str) -> list[tuple[str, str]]:
        """Autocomplete for theme ids, like :meth:`claim_choices`."""
        needle = typed.strip().lower()
        found = [
            (f"{t.id} · {t.title}"[:100], t.id)
            for t in self._catalog.themes.values()
            if not needle or needle in f"{t.id} {t.title}".lower()
        ]
        return found[:AUTOCOMPLETE_MAX]

    # --- matched items ---------------------------------------------------------------------

    def _items(self, conn: Connection, entry_ids: Sequence[int]) -> tuple[MatchedItem, ...]:
        """Matched items for ``entry_ids`` (in that order), each with its best excerpt."""
        if not entry_ids:
            return ()
        rows = conn.execute(
            select(
                matches.c.entry_id,
                matches.c.ref_id,
                matches.c.score,
                matches.c.excerpt,
                entries.c.title,
                entries.c.link,
                entries.c.published_at,
                feeds.c.name,
                feeds.c.title.label("feed_title"),
                feeds.c.url,
            )
            .select_from(matches.join(entries, entries.c.id == matches.c.entry_id).join(feeds))
            .where(matches.c.entry_id.in_(list(entry_ids)))
            .order_by(matches.c.score.desc(), matches.c.id)
        ).mappings()
        best: dict[int, Any] = {}
        refs: dict[int, list[str]] = {}
        for row in rows:
            best.setdefault(row["entry_id"], row)
            refs.setdefault(row["entry_id"], []).append(row["ref_id"])
        items = []
        for entry_id in entry_ids:
            if entry_id not in best:
                continue
            row = best[entry_id]
            items.append(
                MatchedItem(
                    entry_id=entry_id,
                    title=row["title"] or "(untitled)",
                    outlet=row["name"] or row["feed_title"] or row["url"],
                    link=row["link"],
                    published=row["published_at"],
                    excerpt=row["excerpt"] or "",
                    score=float(row["score"]),
                    ref_ids=tuple(dict.fromkeys(refs[entry_id])),
                )
            )
        return tuple(items)

    def _recent(self, kind: str, ref_id: str) -> tuple[MatchedItem, ...]:
        with self._engine.connect() as conn:
            ids = conn.execute(
                select(entries.c.id)
                .select_from(entries.join(matches, matches.c.entry_id == entries.c.id))
                .where(matches.c.kind == kind, matches.c.ref_id == ref_id, entries.c.announce)
                .order_by(entries.c.first_seen_at.desc(), entries.c.id.desc())
                .limit(RECENT_ITEMS)
            ).scalars()
            return self._items(conn, list(ids))

    def search(self, words: str) -> SearchAnswer:
        """Matched items of the last 30 days whose title, summary or excerpt has every word."""
        terms = [t for t in re.split(r"\s+", words.strip().lower()) if len(t) >= 2]
        if not terms:
            raise CommandError("Give at least one word of two letters or more to search for.")
        if len(terms) > MAX_SEARCH_TERMS:
            raise CommandError(f"Search for at most {MAX_SEARCH_TERMS} words at a time.")
        matched = exists().where(matches.c.entry_id == entries.c.id)
        conditions = [
            or_(
                func.lower(entries.c.title).like(_like_pattern(term), escape="\\"),
                func.lower(entries.c.summary).like(_like_pattern(term), escape="\\"),
                exists().where(
                    matches.c.entry_id == entries.c.id,
                    func.lower(matches.c.excerpt).like(_like_pattern(term), escape="\\"),
                ),
            )
            for term in terms
        ]
        since = self._clock() - SEARCH_WINDOW
        with self._engine.connect() as conn:
            ids = conn.execute(
                select(entries.c.id)
                .where(matched, entries.c.announce, entries.c.first_seen_at >= since, *conditions)
                .order_by(entries.c.first_seen_at.desc(), entries.c.id.desc())
                .limit(SEARCH_RESULTS)
            ).scalars()
            items = self._items(conn, list(ids))
        return SearchAnswer(" ".join(terms), items)

    # --- digest preview --------------------------------------------------------------------

    def digest_preview(self, caller: Caller) -> DigestPreviewAnswer:
        """What this channel's subscription would get now (nothing is enqueued or marked);
        without a subscription, the last 24 hours over every theme."""
        now = self._clock()
        with self._engine.connect() as conn:
            sub = subs_repo.find(conn, caller.platform, caller.target)
            if sub is None:
                pending = subs_repo.recent_matches(conn, since=now - PREVIEW_WINDOW)
                max_items, window_start = 10, now - PREVIEW_WINDOW
            else:
                pending = subs_repo.pending_matches(conn, sub)
                max_items, window_start = sub.max_items, sub.last_digest_at or sub.since
        composition = compose(
            pending,
            catalog=self._catalog,
            now=now,
            max_items=max_items,
            window_start=window_start,
            subscription_id=None if sub is None else sub.id,
        )
        return DigestPreviewAnswer(composition.digest, subscribed=sub is not None)

    # --- feeds -----------------------------------------------------------------------------

    def feeds(self) -> FeedsAnswer:
        with self._engine.connect() as conn:
            rows = conn.execute(select(feeds).order_by(feeds.c.enabled.desc(), feeds.c.id)).all()
        return FeedsAnswer(
            tuple(
                FeedInfo(
                    id=row.id,
                    url=row.url,
                    name=row.name or row.title,
                    origin=row.origin,
                    enabled=bool(row.enabled),
                    health=_health(row),
                    last_success_at=row.last_success_at,
                    last_error=row.last_error,
                    consecutive_failures=row.consecutive_failures,
                    entry_count=row.entry_count,
                )
                for row in rows
            )
        )

    @staticmethod
    def _require_manage(caller: Caller) -> None:
        if not caller.can_manage:
            raise CommandError("Only members with the Manage Server permission can change feeds.")

    def add_feed(self, caller: Caller, url: str) -> Notice:
        """Follow a new feed (Manage Server only; the URL passes the SSRF check)."""
        self._require_manage(caller)
        clean = check_feed_url(url, resolve=self._resolve, allow_private=self._allow_private)
        now = self._clock()
        with self._engine.begin() as conn:
            row = conn.execute(
                select(feeds.c.id, feeds.c.enabled).where(
                    or_(feeds.c.url == clean, feeds.c.config_url == clean)
                )
            ).first()
            if row is not None and row.enabled:
                raise CommandError(f"The bot already follows {clean}.")
            if row is not None:
                conn.execute(
                    update(feeds)
                    .where(feeds.c.id == row.id)
                    .values(enabled=True, next_poll_at=now, added_by=caller.user_id)
                )
            else:
                conn.execute(
                    insert(feeds).values(
                        url=clean,
                        config_url=clean,
                        origin="command",
                        added_by=caller.user_id,
                        enabled=True,
                        next_poll_at=now,
                        created_at=now,
                    )
                )
        return Notice(f"Added {clean}. It will be fetched at the next poll.")

    def remove_feed(self, caller: Caller, url: str) -> Notice:
        """Stop following a feed added by command (its stored items stay)."""
        self._require_manage(caller)
        clean = url.strip()
        with self._engine.begin() as conn:
            row = conn.execute(
                select(feeds.c.id, feeds.c.origin, feeds.c.enabled).where(
                    or_(feeds.c.url == clean, feeds.c.config_url == clean)
                )
            ).first()
            if row is None or not row.enabled:
                raise CommandError(f"The bot does not follow {clean}. /feeds lists the feeds.")
            if row.origin == "config":
                raise CommandError("That feed is declared in feeds.toml; remove it there instead.")
            conn.execute(
                update(feeds)
                .where(feeds.c.id == row.id)
                .values(enabled=False, lease_owner=None, lease_until=None)
            )
        return Notice(f"Removed {clean}. Items already stored stay searchable.")

    # --- status ----------------------------------------------------------------------------

    def status(self, caller: Caller) -> StatusAnswer:
        with self._engine.connect() as conn:
            found = self._subscriptions_for(conn, caller)
            ids = [s.id for s in found]
            pending = failed = 0
            if ids:
                counts = conn.execute(
                    select(outbox.c.status, func.count())
                    .where(outbox.c.subscription_id.in_(ids))
                    .group_by(outbox.c.status)
                ).all()
                by_status = {status: int(count) for status, count in counts}
                pending = by_status.get("pending", 0) + by_status.get("held", 0)
                failed = by_status.get("failed", 0)
            enabled = feeds.c.enabled.is_(True)
            feed_row = conn.execute(
                select(
                    func.count(),
                    func.count().filter(and_(feeds.c.consecutive_failures > 0)),
                    func.count().filter(feeds.c.last_fetched_at.is_(None)),
                    func.max(feeds.c.last_fetched_at),
                ).where(enabled)
            ).one()
        paused = tuple(self._info(s) for s in found if s.paused)
        last_poll = feed_row[3]
        if last_poll is not None and last_poll.tzinfo is None:
            last_poll = last_poll.replace(tzinfo=UTC)  # SQLite's max() skips the column type
        return StatusAnswer(
            subscriptions=len(found),
            paused=paused,
            outbox_pending=pending,
            outbox_failed=failed,
            feeds_total=int(feed_row[0]),
            feeds_failing=int(feed_row[1]),
            feeds_never_fetched=int(feed_row[2]),
            last_poll_at=last_poll,
        )
