"""The matching step's database adapter: run the matcher over entries not yet matched.

:func:`match_pending` is the whole job (the scheduler calls it in a worker thread): it reads
entries with ``matched_at`` NULL, matches them (pure), and for each one replaces its rows in
``matches`` and stamps ``matched_at``, one transaction per batch. Re-running it does no harm:
matched entries are not selected again, and an entry's rows are replaced, never added to.

An entry changed by the poller after it was read (its ``updated_at`` moved on) is left alone
for the next run, so a match never describes content it did not see.

Order: entries to announce come first, newest first (by publication time, or first sight when
the feed gives none). A first start can store thousands of baseline entries (``announce``
false) beside a few new ones; the new ones are what subscribers wait for, so they must not
queue behind the backlog.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from sqlalchemy import Engine, and_, delete, func, insert, select, update

from bot.matching.matcher import Matcher
from bot.matching.records import Item, MatchResult
from bot.ops import metrics
from bot.storage.schema import entries, feeds, matches


def match_rows(entry_id: int, result: MatchResult, now: datetime) -> list[dict[str, object]]:
    """The ``matches`` rows for one entry's result: one per theme and one per claim."""
    rows: list[dict[str, object]] = [
        {
            "entry_id": entry_id,
            "kind": "theme",
            "ref_id": m.theme_id,
            "score": m.score,
            "excerpt": m.excerpt,
            "evidence": list(m.evidence),
            "created_at": now,
        }
        for m in result.themes
    ]
    rows.extend(
        {
            "entry_id": entry_id,
            "kind": "claim",
            "ref_id": c.claim_id,
            "score": c.score,
            "excerpt": None,
            "evidence": list(c.evidence),
            "created_at": now,
        }
        for c in result.claims
    )
    return rows


def match_pending(engine: Engine, matcher: Matcher, *, now: datetime, limit: int = 500) -> int:
    """Match up to ``limit`` unmatched entries (announced first, newest first); return how many
    were matched."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")
    query = (
        select(
            entries.c.id,
            entries.c.title,
            entries.c.summary,
            entries.c.content,
            entries.c.link,
            entries.c.published_at,
            entries.c.updated_at,
            feeds.c.url,
        )
        .join(feeds, feeds.c.id == entries.c.feed_id)
        .where(entries.c.matched_at.is_(None))
        .order_by(
            entries.c.announce.desc(),
            func.coalesce(entries.c.published_at, entries.c.first_seen_at).desc(),
            entries.c.id.desc(),
        )
        .limit(limit)
    )
    with engine.connect() as conn:
        pending = conn.execute(query).all()
    if not pending:
        return 0
    results = [
        (
            row,
            matcher.match(
                Item(
                    id=str(row.id),
                    title=row.title or "",
                    summary=row.summary or "",
                    content=row.content,
                    published=row.published_at,
                    source=row.url,
                    link=row.link,
                )
            ),
        )
        for row in pending
    ]
    matched = 0
    themes: Counter[str] = Counter()
    with engine.begin() as conn:
        for row, result in results:
            stamped = conn.execute(
                update(entries)
                .where(
                    and_(
                        entries.c.id == row.id,
                        entries.c.matched_at.is_(None),
                        entries.c.updated_at == row.updated_at,
                    )
                )
                .values(matched_at=now)
            )
            if stamped.rowcount != 1:
                continue  # changed or matched meanwhile: the next run sees the new content
            conn.execute(delete(matches).where(matches.c.entry_id == row.id))
            rows = match_rows(row.id, result, now)
            if rows:
                conn.execute(insert(matches), rows)
            matched += 1
            themes.update(m.theme_id for m in result.themes)
    for theme_id, count in themes.items():  # after the commit: only what was stored
        metrics.item_matched(theme_id, count)
    return matched
