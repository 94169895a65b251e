"""When a subscription's next digest is due (pure).

A cadence is one of:

* ``instant`` - every new match goes out on the next digest run;
* ``Nh`` / ``Nm`` - at most one digest every N hours (minutes), counted from the last one;
* ``daily HH:MM [Area/City]`` - once a day at that wall-clock time in that zone (UTC when no
  zone is given), DST-correct: 08:00 Europe/Kyiv is 05:00 UTC in summer and 06:00 UTC in winter.

``next_due`` is a function of the cadence, the last digest time and ``now`` only, so the
scheduling maths is table-tested without a clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.settings import check_cadence


class CadenceError(ValueError):
    """The text is not a cadence; the message says what would be accepted."""


@dataclass(frozen=True, slots=True)
class Instant:
    """Send as soon as there is something to send."""


@dataclass(frozen=True, slots=True)
class Every:
    """At most one digest per ``period``."""

    period: timedelta


@dataclass(frozen=True, slots=True)
class Daily:
    """Once a day at ``at`` local time in ``zone``."""

    at: time
    zone: tzinfo


Cadence = Instant | Every | Daily


def parse_cadence(text: str) -> Cadence:
    """Parse ``'instant'``, ``'6h'``, ``'30m'`` or ``'daily 08:00 Europe/Kyiv'``.

    Raises :class:`CadenceError` with a sentence a user can act on."""
    try:
        normal = check_cadence(text)
    except ValueError as exc:
        raise CadenceError(str(exc)) from None
    parts = normal.split()
    if parts[0] == "instant":
        return Instant()
    if parts[0] == "daily":
        hour, minute = (int(p) for p in parts[1].split(":"))
        zone: tzinfo = UTC
        if len(parts) == 3:
            try:
                zone = ZoneInfo(parts[2])
            except (ZoneInfoNotFoundError, ValueError):  # pragma: no cover - checked above
                raise CadenceError(f"unknown time zone {parts[2]!r}") from None
        return Daily(at=time(hour, minute), zone=zone)
    number, unit = normal[:-1].strip(), normal[-1]
    amount = int(number)
    if amount <= 0:
        raise CadenceError(f"{text!r}: the period must be at least one {unit}")
    return Every(timedelta(hours=amount) if unit == "h" else timedelta(minutes=amount))


def _aware(value: datetime, name: str) -> datetime:
    if value.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware")
    return value.astimezone(UTC)


def _local_to_utc(day: date, at: time, zone: tzinfo) -> datetime:
    """UTC instant of wall-clock ``at`` on ``day``'s date in ``zone``.

    In a spring-forward gap the wall-clock time does not exist; zoneinfo (fold=0) reads it with
    the offset from before the change, which lands just after the gap (02:30 -> 03:30 local).
    In a fall-back repeat, fold=0 picks the first of the two moments, so a digest is sent once."""
    local = datetime(day.year, day.month, day.day, at.hour, at.minute, tzinfo=zone)
    return local.astimezone(UTC)


def next_due(cadence: Cadence, *, last: datetime | None, now: datetime) -> datetime:
    """The UTC time at which the next digest may be sent.

    * ``Instant``: ``now`` (always due).
    * ``Every``: ``last + period``, or ``now`` when there was no digest yet.
    * ``Daily``: the first daily slot strictly after ``last`` (or at/after ``now`` when there
      was no digest yet), never earlier than a slot already passed before ``last``.
    """
    now = _aware(now, "now")
    if isinstance(cadence, Instant):
        return now
    if isinstance(cadence, Every):
        if last is None:
            return now
        return _aware(last, "last") + cadence.period
    reference = now if last is None else _aware(last, "last")
    local_day = reference.astimezone(cadence.zone).date()
    for offset in range(3):
        candidate = _local_to_utc(local_day + timedelta(days=offset), cadence.at, cadence.zone)
        passed = candidate > reference if last is not None else candidate >= reference
        if passed:
            return candidate
    raise AssertionError("a daily slot always exists within three days")  # pragma: no cover
