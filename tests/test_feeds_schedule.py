"""Table tests for the pure scheduling decider, with an injected clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.feeds.schedule import (
    Limits,
    backoff_delay,
    effective_interval,
    is_due,
    next_poll_after_failure,
    next_poll_after_success,
    next_slot,
    parse_max_age,
    parse_retry_after,
    slot_offset,
)

NOW = datetime(2026, 3, 6, 12, 0, 0, tzinfo=UTC)
M = timedelta(minutes=1)
LIMITS = Limits(
    min_interval=2 * M, max_interval=timedelta(days=1), max_backoff=timedelta(days=1), jitter=0 * M
)
URL = "https://example.org/feed.xml"


@pytest.mark.parametrize(
    ("next_poll_at", "due"),
    [
        (None, True),  # never fetched: due at once
        (NOW - M, True),
        (NOW, True),
        (NOW + timedelta(seconds=1), False),
    ],
)
def test_is_due(next_poll_at: datetime | None, due: bool) -> None:
    assert is_due(next_poll_at, NOW) is due


def test_slot_offset_is_deterministic_and_inside_the_interval() -> None:
    offsets = {slot_offset(f"https://example.org/{i}", 15 * M) for i in range(200)}
    assert all(timedelta(0) <= o < 15 * M for o in offsets)
    assert len(offsets) > 100, "feeds should spread over the interval"
    assert slot_offset(URL, 15 * M) == slot_offset(URL, 15 * M)


@pytest.mark.parametrize("minutes_later", [0, 1, 7, 14, 15, 16, 29, 31, 600])
def test_next_slot_is_the_first_slot_after_now(minutes_later: int) -> None:
    now = NOW + minutes_later * M
    slot = next_slot(URL, 15 * M, now)
    assert now < slot <= now + 15 * M
    # All slots of a feed share one phase: restarts resume the same rhythm, no burst.
    phase = (slot - datetime(1970, 1, 1, tzinfo=UTC)) % (15 * M)
    assert phase == slot_offset(URL, 15 * M)


@pytest.mark.parametrize(
    ("configured", "hint", "expected"),
    [
        (15 * M, None, 15 * M),
        (15 * M, 60 * M, 60 * M),  # a longer cache hint lengthens the interval
        (15 * M, 5 * M, 15 * M),  # a shorter one never makes us poll more often
        (1 * M, None, 2 * M),  # clamped up to min_interval
        (15 * M, timedelta(days=30), timedelta(days=1)),  # clamped down to max_interval
    ],
)
def test_effective_interval(
    configured: timedelta, hint: timedelta | None, expected: timedelta
) -> None:
    assert effective_interval(configured, hint=hint, limits=LIMITS) == expected


@pytest.mark.parametrize(
    ("max_age", "ttl", "at_least", "at_most"),
    [
        (None, None, timedelta(seconds=1), 15 * M),
        (60 * M, None, 60 * M - timedelta(seconds=1), 75 * M),
        (None, 120 * M, 120 * M - timedelta(seconds=1), 135 * M),
        (60 * M, 120 * M, 120 * M - timedelta(seconds=1), 135 * M),  # the longest hint wins
        (
            timedelta(days=9),
            None,
            timedelta(days=1) - timedelta(seconds=1),
            timedelta(days=1) + 15 * M,
        ),
        (5 * M, None, timedelta(seconds=1), 15 * M),  # shorter than the interval: ignored
    ],
)
def test_next_poll_after_success_honours_cache_hints_within_bounds(
    max_age: timedelta | None, ttl: timedelta | None, at_least: timedelta, at_most: timedelta
) -> None:
    when = next_poll_after_success(
        url=URL, now=NOW, interval=15 * M, limits=LIMITS, max_age=max_age, ttl=ttl
    )
    assert NOW + at_least <= when <= NOW + at_most


def test_jitter_is_added_within_its_bound() -> None:
    limits = Limits(2 * M, timedelta(days=1), timedelta(days=1), jitter=timedelta(seconds=30))
    plain = next_poll_after_success(url=URL, now=NOW, interval=15 * M, limits=limits)
    late = next_poll_after_success(
        url=URL, now=NOW, interval=15 * M, limits=limits, jitter_fraction=0.5
    )
    full = next_poll_after_success(
        url=URL, now=NOW, interval=15 * M, limits=limits, jitter_fraction=5.0
    )
    assert late - plain == timedelta(seconds=15)
    assert full - plain == timedelta(seconds=30)


@pytest.mark.parametrize(
    ("failures", "retry_after", "expected"),
    [
        (1, None, 15 * M),
        (2, None, 30 * M),
        (3, None, 60 * M),
        (7, None, 960 * M),
        (8, None, timedelta(days=1)),  # capped by max_backoff
        (500, None, timedelta(days=1)),  # huge counts do not overflow
        (1, timedelta(hours=2), timedelta(hours=2)),  # Retry-After wins when longer
        (3, timedelta(minutes=5), 60 * M),  # ...and never shortens the backoff
        (1, timedelta(days=10), timedelta(days=1)),  # ...and is capped too
    ],
)
def test_backoff_delay(failures: int, retry_after: timedelta | None, expected: timedelta) -> None:
    assert (
        backoff_delay(failures, interval=15 * M, limits=LIMITS, retry_after=retry_after) == expected
    )


def test_next_poll_after_failure_is_now_plus_backoff() -> None:
    when = next_poll_after_failure(now=NOW, failures=2, interval=15 * M, limits=LIMITS)
    assert when == NOW + 30 * M


@pytest.mark.parametrize(
    ("cache_control", "expires", "expected"),
    [
        ("max-age=600", None, timedelta(seconds=600)),
        ("public, s-maxage=900, max-age=60", None, timedelta(seconds=900)),
        ('max-age="120"', None, timedelta(seconds=120)),
        ("no-cache, max-age=600", None, None),
        ("no-store", "Fri, 06 Mar 2026 13:00:00 GMT", None),
        ("max-age=0", None, None),
        ("max-age=soon", "Fri, 06 Mar 2026 13:00:00 GMT", timedelta(hours=1)),
        (None, "Fri, 06 Mar 2026 13:00:00 GMT", timedelta(hours=1)),
        (None, "Fri, 06 Mar 2026 11:00:00 GMT", None),  # already expired
        (None, "0", None),  # the classic "already expired" value
        (None, None, None),
    ],
)
def test_parse_max_age(
    cache_control: str | None, expires: str | None, expected: timedelta | None
) -> None:
    assert parse_max_age(cache_control, expires, NOW) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", timedelta(seconds=120)),
        (" 5 ", timedelta(seconds=5)),
        ("Fri, 06 Mar 2026 12:30:00 GMT", timedelta(minutes=30)),
        ("Fri, 06 Mar 2026 11:30:00 GMT", None),
        ("0", None),
        ("-5", None),
        ("tomorrow", None),
        (None, None),
    ],
)
def test_parse_retry_after(value: str | None, expected: timedelta | None) -> None:
    assert parse_retry_after(value, NOW) == expected
