"""Cadence parsing and next-due maths, including DST changes and time zones."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from bot.digest.cadence import CadenceError, Daily, Every, Instant, next_due, parse_cadence

KYIV = ZoneInfo("Europe/Kyiv")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("instant", Instant()),
        ("6h", Every(timedelta(hours=6))),
        ("30m", Every(timedelta(minutes=30))),
        ("daily 08:00 Europe/Kyiv", Daily(time(8, 0), KYIV)),
        ("daily   21:15", Daily(time(21, 15), UTC)),
    ],
)
def test_parse_accepts_the_documented_forms(text: str, expected: object) -> None:
    assert parse_cadence(text) == expected


@pytest.mark.parametrize("text", ["hourly", "daily 25:00", "daily 08:00 Mars/Olympus", "0h", ""])
def test_parse_rejects_with_a_sentence(text: str) -> None:
    with pytest.raises(CadenceError, match=r"cadence|zone|at least"):
        parse_cadence(text)


def test_instant_is_always_due_now() -> None:
    now = datetime(2026, 3, 6, 12, 0, tzinfo=UTC)
    assert next_due(Instant(), last=now - timedelta(seconds=1), now=now) == now


def test_every_counts_from_the_last_digest_and_starts_at_once() -> None:
    now = datetime(2026, 3, 6, 12, 0, tzinfo=UTC)
    every = Every(timedelta(hours=6))
    assert next_due(every, last=None, now=now) == now
    assert next_due(every, last=now - timedelta(hours=1), now=now) == now + timedelta(hours=5)


@pytest.mark.parametrize(
    ("last", "now", "expected_utc"),
    [
        # Winter (UTC+2): 08:00 Kyiv is 06:00 UTC.
        (None, datetime(2026, 1, 10, 5, 0, tzinfo=UTC), datetime(2026, 1, 10, 6, 0, tzinfo=UTC)),
        (None, datetime(2026, 1, 10, 6, 0, tzinfo=UTC), datetime(2026, 1, 10, 6, 0, tzinfo=UTC)),
        (None, datetime(2026, 1, 10, 7, 0, tzinfo=UTC), datetime(2026, 1, 11, 6, 0, tzinfo=UTC)),
        # Summer (UTC+3): 08:00 Kyiv is 05:00 UTC.
        (None, datetime(2026, 7, 1, 4, 0, tzinfo=UTC), datetime(2026, 7, 1, 5, 0, tzinfo=UTC)),
        # Across the spring change (29 March 2026, 03:00 -> 04:00 local): the slot moves an hour.
        (
            datetime(2026, 3, 28, 6, 0, tzinfo=UTC),
            datetime(2026, 3, 28, 6, 0, tzinfo=UTC),
            datetime(2026, 3, 29, 5, 0, tzinfo=UTC),
        ),
        # Across the autumn change (25 October 2026, 04:00 -> 03:00 local).
        (
            datetime(2026, 10, 24, 5, 0, tzinfo=UTC),
            datetime(2026, 10, 24, 5, 0, tzinfo=UTC),
            datetime(2026, 10, 25, 6, 0, tzinfo=UTC),
        ),
    ],
)
def test_daily_follows_local_wall_clock(
    last: datetime | None, now: datetime, expected_utc: datetime
) -> None:
    due = next_due(parse_cadence("daily 08:00 Europe/Kyiv"), last=last, now=now)
    assert due == expected_utc
    assert due.astimezone(KYIV).hour == 8


def test_daily_in_a_spring_gap_lands_just_after_the_gap_once() -> None:
    # 03:30 does not exist in Kyiv on 29 March 2026 (clocks jump 03:00 -> 04:00).
    cadence = parse_cadence("daily 03:30 Europe/Kyiv")
    last = datetime(2026, 3, 28, 1, 30, tzinfo=UTC)  # 03:30 local the day before
    due = next_due(cadence, last=last, now=last)
    assert due.astimezone(KYIV).strftime("%H:%M") == "04:30"
    after = next_due(cadence, last=due, now=due)
    assert after.astimezone(KYIV).strftime("%d %H:%M") == "30 03:30"


def test_daily_in_an_autumn_repeat_is_sent_once() -> None:
    # 03:30 happens twice in Kyiv on 25 October 2026.
    cadence = parse_cadence("daily 03:30 Europe/Kyiv")
    last = datetime(2026, 10, 24, 0, 30, tzinfo=UTC)
    first = next_due(cadence, last=last, now=last)
    second = next_due(cadence, last=first, now=first)
    assert first.date() == datetime(2026, 10, 25).date()
    assert second.astimezone(KYIV).day == 26


def test_daily_other_zone_and_naive_now_rejected() -> None:
    now = datetime(2026, 6, 1, 0, 0, tzinfo=UTC)
    due = next_due(parse_cadence("daily 08:00 America/New_York"), last=None, now=now)
    assert due == datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    with pytest.raises(ValueError, match="timezone-aware"):
        next_due(Instant(), last=None, now=datetime(2026, 6, 1))
