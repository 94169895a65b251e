"""Pure scheduling decisions: when is a feed due, when should it be polled next.

Nothing here reads a clock or a database: ``now`` and every feed fact come in as arguments, so the
maths is table-tested with an injected clock.

* **Slots.** Each feed gets a deterministic offset within its interval (a hash of its URL), so
  feeds spread out over the interval and a restart resumes the same rhythm instead of a burst.
* **Cache hints.** ``Cache-Control: max-age``, ``Expires`` and RSS ``<ttl>`` can only make a poll
  *later* (we never poll more often than configured), and are clamped to ``[min, max]`` interval.
* **Backoff.** Consecutive failures double the wait from the feed's interval up to ``max_backoff``;
  ``Retry-After`` is honoured within the same cap. A failing feed is never dropped.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Limits:
    """The bounds every decision is clamped to (from ``[fetch]``)."""

    min_interval: timedelta
    max_interval: timedelta
    max_backoff: timedelta
    jitter: timedelta


def clamp(value: timedelta, low: timedelta, high: timedelta) -> timedelta:
    return max(low, min(high, value))


def is_due(next_poll_at: datetime | None, now: datetime) -> bool:
    """A feed never polled (``None``) is due at once; otherwise when its time has come."""
    return next_poll_at is None or next_poll_at <= now


def slot_offset(url: str, interval: timedelta) -> timedelta:
    """The feed's fixed place within its interval, derived from its URL only."""
    seconds = max(1, int(interval.total_seconds()))
    digest = hashlib.sha256(url.encode("utf-8")).digest()
    return timedelta(seconds=int.from_bytes(digest[:8], "big") % seconds)


def next_slot(url: str, interval: timedelta, not_before: datetime) -> datetime:
    """The first of the feed's slots strictly after ``not_before``."""
    period = max(1, int(interval.total_seconds()))
    offset = int(slot_offset(url, interval).total_seconds())
    elapsed = int((not_before - _EPOCH).total_seconds()) - offset
    slots_done = elapsed // period + 1
    return _EPOCH + timedelta(seconds=offset + slots_done * period)


def effective_interval(
    configured: timedelta, *, hint: timedelta | None, limits: Limits
) -> timedelta:
    """The interval to use: the configured one, lengthened (never shortened) by a cache hint,
    then clamped to ``[min_interval, max_interval]``."""
    wanted = max(configured, hint) if hint is not None else configured
    return clamp(wanted, limits.min_interval, limits.max_interval)


def next_poll_after_success(
    *,
    url: str,
    now: datetime,
    interval: timedelta,
    limits: Limits,
    max_age: timedelta | None = None,
    ttl: timedelta | None = None,
    jitter_fraction: float = 0.0,
) -> datetime:
    """When to poll again after a good answer (200 or 304).

    The next slot of the feed's interval that is not earlier than the publisher's freshness hint
    (max-age / Expires / ttl, whichever is longest, clamped), plus up to ``limits.jitter``
    (``jitter_fraction`` in [0, 1), drawn by the caller).
    """
    hints = [h for h in (max_age, ttl) if h is not None]
    hint = clamp(max(hints), timedelta(0), limits.max_interval) if hints else None
    period = effective_interval(interval, hint=None, limits=limits)
    earliest = now + hint - timedelta(seconds=1) if hint is not None and hint > period else now
    return next_slot(url, period, earliest) + limits.jitter * _unit(jitter_fraction)


def backoff_delay(
    failures: int, *, interval: timedelta, limits: Limits, retry_after: timedelta | None = None
) -> timedelta:
    """Wait after the ``failures``-th failure in a row (1 = first): the interval doubled per extra
    failure, at least ``Retry-After`` if the server gave one, never more than ``max_backoff``."""
    base = clamp(interval, limits.min_interval, limits.max_interval)
    exponent = min(max(failures, 1) - 1, 32)  # 2**32 intervals is far beyond any cap
    delay = base * (1 << exponent)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return min(delay, limits.max_backoff)


def next_poll_after_failure(
    *,
    now: datetime,
    failures: int,
    interval: timedelta,
    limits: Limits,
    retry_after: timedelta | None = None,
    jitter_fraction: float = 0.0,
) -> datetime:
    """``now`` plus the backoff delay plus jitter."""
    delay = backoff_delay(failures, interval=interval, limits=limits, retry_after=retry_after)
    return now + delay + limits.jitter * _unit(jitter_fraction)


def _unit(fraction: float) -> float:
    return min(max(fraction, 0.0), 1.0)


# --- reading the server's hints (pure functions of header values) ---------------------------


def parse_max_age(
    cache_control: str | None, expires: str | None, now: datetime
) -> timedelta | None:
    """Freshness lifetime from ``Cache-Control`` (``max-age``/``s-maxage``; ``no-cache`` and
    ``no-store`` mean none) or else ``Expires``. Unparseable values are ignored."""
    if cache_control:
        directives = {}
        for part in cache_control.split(","):
            name, _, value = part.strip().partition("=")
            directives[name.strip().lower()] = value.strip().strip('"')
        if "no-store" in directives or "no-cache" in directives:
            return None
        for name in ("s-maxage", "max-age"):
            if name in directives:
                try:
                    seconds = int(directives[name])
                except ValueError:
                    continue
                return timedelta(seconds=seconds) if seconds > 0 else None
    if expires:
        when = _http_date(expires)
        if when is not None and when > now:
            return when - now
    return None


def parse_retry_after(value: str | None, now: datetime) -> timedelta | None:
    """``Retry-After`` as seconds or as an HTTP date; None when absent, past or unreadable."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        seconds = int(text)
        return timedelta(seconds=seconds) if seconds > 0 else None
    when = _http_date(text)
    if when is not None and when > now:
        return when - now
    return None


def _http_date(value: str) -> datetime | None:
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)
