"""The digest job: for every subscription that is due, gather, compose, render and enqueue.

One subscription at a time, each in its own transaction: the pending matches are read, the
digest is composed (:mod:`bot.digest.compose`) and rendered by the subscription's platform
renderer, and the messages plus ``digest_items`` are written by
:func:`bot.delivery.outbox.enqueue_digest`. Re-running the job is harmless: delivered entries
are in ``digest_items``; if two processes compose the same subscription at once, one commit
fails on ``digest_items``'s key and is rolled back.

Cadence: ``instant`` subscriptions are always due (leftovers beyond ``max_items`` go out in the
next run); periodic ones are due at ``next_digest_at`` and send the top ``max_items`` stories of
their window (the rest are recorded as skipped, so the next window starts fresh). An empty
window sends nothing; a daily one then waits for its next slot.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, update
from sqlalchemy.exc import IntegrityError

from bot.delivery.outbox import enqueue_digest
from bot.delivery.platform import Renderer
from bot.digest.cadence import CadenceError, Daily, Instant, next_due, parse_cadence
from bot.digest.compose import CatalogInfo, compose
from bot.ops import metrics
from bot.storage import subscriptions as subs_repo
from bot.storage.schema import subscriptions

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DigestRunSummary:
    """What one run of the digest job did."""

    digests: int = 0
    messages: int = 0
    entries: int = 0


def run_due_digests(
    engine: Engine,
    *,
    catalog: CatalogInfo,
    renderers: Mapping[str, Renderer],
    now: datetime,
) -> DigestRunSummary:
    """Compose and enqueue a digest for every unpaused, due subscription whose platform has a
    renderer here. Returns counts. One subscription's failure (a conflict with another process,
    a renderer bug) is logged and rolls back only that subscription's digest."""
    with engine.connect() as conn:
        candidates = [
            s
            for s in subs_repo.list_subscriptions(conn)
            if not s.paused
            and s.platform in renderers
            and (s.next_digest_at is None or s.next_digest_at <= now)
        ]
    digests = messages = entries = 0
    for sub in candidates:
        try:
            cadence = parse_cadence(sub.cadence)
        except CadenceError as exc:
            log.error("subscription %s has an unusable cadence: %s", sub.id, exc)
            continue
        try:
            with engine.begin() as conn:
                pending = subs_repo.pending_matches(conn, sub)
                result = compose(
                    pending,
                    catalog=catalog,
                    now=now,
                    max_items=sub.max_items,
                    window_start=sub.last_digest_at or sub.since,
                    subscription_id=sub.id,
                )
                if result.digest is None:
                    if isinstance(cadence, Daily):
                        conn.execute(
                            update(subscriptions)
                            .where(subscriptions.c.id == sub.id)
                            .values(next_digest_at=next_due(cadence, last=now, now=now))
                        )
                    continue
                payloads = renderers[sub.platform].render(result.digest)
                skipped = () if isinstance(cadence, Instant) else tuple(result.left_entry_ids)
                ids = enqueue_digest(
                    conn,
                    subscription_id=sub.id,
                    platform=sub.platform,
                    target=sub.target,
                    payloads=payloads,
                    entry_ids=sorted(result.covered_entry_ids),
                    skipped_entry_ids=skipped,
                    now=now,
                )
                conn.execute(
                    update(subscriptions)
                    .where(subscriptions.c.id == sub.id)
                    .values(
                        last_digest_at=now,
                        next_digest_at=None
                        if isinstance(cadence, Instant)
                        else next_due(cadence, last=now, now=now),
                    )
                )
        except IntegrityError:
            log.info("subscription %s: another process composed this digest first", sub.id)
            continue
        except Exception:
            # A bug in one platform's renderer (or bad stored data) must not stop every other
            # subscription's digests: log it with the traceback and go on; nothing was written.
            log.exception("subscription %s: composing its digest failed", sub.id)
            continue
        metrics.digest_sent(sub.platform)  # after the commit: only digests really queued
        digests += 1
        messages += len(ids)
        entries += result.digest.entry_count
    return DigestRunSummary(digests, messages, entries)
