"""Liveness: the scheduler writes a heartbeat row every tick; ``counterparty health`` reads it.

``beat`` is called by the running bot (``bot.app``) on every scheduler tick. ``check_health`` is
what the Docker ``HEALTHCHECK`` runs through ``counterparty health``: healthy means the database
answers *and* the heartbeat is younger than ``[bot].health_max_age``. Neither function sleeps or
reads the clock; ``now`` is always passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, delete, inspect, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError

from bot.storage.schema import heartbeats

HOST_ROWS_KEPT = timedelta(days=1)


def host_row(name: str, host: str) -> str:
    """The per-host heartbeat row of ``name``: ``scheduler@<host>``."""
    return f"{name}@{host}"


def _upsert(dialect: str, values: dict[str, Any]) -> Any:
    update = {key: value for key, value in values.items() if key != "name"}
    if dialect == "postgresql":
        return (
            pg_insert(heartbeats)
            .values(values)
            .on_conflict_do_update(index_elements=[heartbeats.c.name], set_=update)
        )
    if dialect == "sqlite":
        return (
            sqlite_insert(heartbeats)
            .values(values)
            .on_conflict_do_update(index_elements=[heartbeats.c.name], set_=update)
        )
    raise ValueError(f"heartbeats are not supported on {dialect!r}")  # pragma: no cover


def beat(
    engine: Engine,
    *,
    name: str = "scheduler",
    owner: str,
    now: datetime,
    info: dict[str, Any] | None = None,
) -> None:
    """Record that ``owner`` (``host:pid``) is alive at ``now``.

    Upserts two ``heartbeats`` rows in one transaction: ``name`` (the newest beat of any
    process on this database) and ``name@host`` (this host's, where ``host`` is ``owner`` up to
    the first ``:``), so that with several replicas each container's health check can look at
    its own process. Per-host rows not renewed for :data:`HOST_ROWS_KEPT` (containers that are
    gone) are deleted. Upserts never collide when two processes beat at once. Raises SQLAlchemy
    errors as they come: a failed beat must be visible.
    """
    host = owner.split(":", 1)[0]
    dialect = engine.dialect.name
    row = {"owner": owner, "beat_at": now, "info": info}
    with engine.begin() as connection:
        connection.execute(_upsert(dialect, {"name": name, **row}))
        if host:
            connection.execute(_upsert(dialect, {"name": host_row(name, host), **row}))
        connection.execute(
            delete(heartbeats).where(
                heartbeats.c.name.like(f"{name}@%"), heartbeats.c.beat_at < now - HOST_ROWS_KEPT
            )
        )


@dataclass(frozen=True, slots=True)
class HealthReport:
    """The outcome of a health check: ``healthy`` and one sentence saying why."""

    healthy: bool
    reason: str
    beat_at: datetime | None = None
    owner: str | None = None
    age: timedelta | None = None


def _format_age(age: timedelta) -> str:
    seconds = int(age.total_seconds())
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


def check_health(
    engine: Engine,
    now: datetime,
    max_age: timedelta,
    *,
    name: str = "scheduler",
    host: str | None = None,
) -> HealthReport:
    """Healthy when the database answers and heartbeat ``name`` is at most ``max_age`` old.

    With ``host`` (the health check's own host name), the heartbeat of a process on that host
    (row ``name@host``) is checked when there is one, so a stuck replica is not covered by a
    live one; when this host never beat (the check runs elsewhere), the newest beat of any
    process counts. Never raises for database trouble: an unreachable or unmigrated database is
    an unhealthy report whose reason says what to do. A heartbeat from the future (clock skew
    between containers) counts as fresh.
    """
    try:
        with engine.connect() as connection:
            if not inspect(connection).has_table(heartbeats.name):
                return HealthReport(
                    False,
                    "the database has no heartbeats table: it was never migrated "
                    "(start the bot, or run 'counterparty migrate')",
                )
            row = None
            if host:
                row = connection.execute(
                    select(heartbeats.c.owner, heartbeats.c.beat_at).where(
                        heartbeats.c.name == host_row(name, host)
                    )
                ).first()
            if row is None:
                row = connection.execute(
                    select(heartbeats.c.owner, heartbeats.c.beat_at).where(
                        heartbeats.c.name == name
                    )
                ).first()
    except SQLAlchemyError as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return HealthReport(False, f"the database does not answer: {first_line}")
    if row is None:
        return HealthReport(
            False,
            f"no '{name}' heartbeat recorded yet: the bot's scheduler has not run "
            "(is 'counterparty run' running against this database?)",
        )
    owner, beat_at = row
    age = now - beat_at
    if age > max_age:
        return HealthReport(
            False,
            f"the last '{name}' heartbeat (from {owner}) is {_format_age(age)} old, "
            f"more than the allowed {_format_age(max_age)}: the scheduler is stuck or stopped",
            beat_at,
            owner,
            age,
        )
    return HealthReport(
        True,
        f"healthy: '{name}' heartbeat from {owner} {_format_age(max(age, timedelta(0)))} ago",
        beat_at,
        owner,
        age,
    )
