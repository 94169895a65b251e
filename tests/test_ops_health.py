"""Heartbeats and `counterparty health`: healthy only with a fresh beat and a live database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bot.cli import main
from bot.ops.health import beat, check_health
from bot.storage.db import make_engine, migrate
from bot.storage.schema import heartbeats

NOW = datetime(2026, 3, 6, 12, 0, tzinfo=UTC)
MAX_AGE = timedelta(minutes=3)


def test_beat_upserts_one_row_per_name_and_host(database_url: str) -> None:
    engine = make_engine(database_url)
    migrate(engine)
    beat(engine, owner="host:1", now=NOW)
    beat(engine, owner="host:2", now=NOW + timedelta(seconds=15), info={"tick": 2})
    beat(engine, name="other", owner="box:3", now=NOW)
    with engine.connect() as connection:
        rows = connection.execute(select(heartbeats).order_by(heartbeats.c.name)).all()
        assert connection.execute(select(func.count()).select_from(heartbeats)).scalar() == 4
    engine.dispose()
    assert [(r.name, r.owner) for r in rows] == [
        ("other", "box:3"),
        ("other@box", "box:3"),
        ("scheduler", "host:2"),
        ("scheduler@host", "host:2"),
    ]
    assert rows[2].beat_at == NOW + timedelta(seconds=15)
    assert rows[2].info == {"tick": 2}


def test_each_host_is_judged_by_its_own_beat(database_url: str) -> None:
    """With replicas, a stuck container is not covered by a live one."""
    engine = make_engine(database_url)
    migrate(engine)
    beat(engine, owner="stuck:1", now=NOW)
    beat(engine, owner="alive:1", now=NOW + timedelta(minutes=5))
    later = NOW + timedelta(minutes=5, seconds=10)
    stuck = check_health(engine, later, MAX_AGE, host="stuck")
    assert not stuck.healthy
    assert "from stuck:1" in stuck.reason
    assert check_health(engine, later, MAX_AGE, host="alive").healthy
    # A host that never ran the bot (e.g. a monitor elsewhere) sees the newest beat of any.
    elsewhere = check_health(engine, later, MAX_AGE, host="monitor")
    assert elsewhere.healthy
    assert elsewhere.owner == "alive:1"
    # Per-host rows of hosts gone for a day are pruned by the next beat.
    beat(engine, owner="alive:1", now=NOW + timedelta(days=1, minutes=1))
    with engine.connect() as connection:
        names = set(connection.execute(select(heartbeats.c.name)).scalars())
    engine.dispose()
    assert names == {"scheduler", "scheduler@alive"}


def test_check_health_states(database_url: str) -> None:
    engine = make_engine(database_url)
    unmigrated = check_health(engine, NOW, MAX_AGE)
    assert not unmigrated.healthy
    assert "never migrated" in unmigrated.reason
    migrate(engine)
    empty = check_health(engine, NOW, MAX_AGE)
    assert not empty.healthy
    assert "no 'scheduler' heartbeat" in empty.reason
    beat(engine, owner="host:1", now=NOW)
    fresh = check_health(engine, NOW + MAX_AGE, MAX_AGE)
    assert fresh.healthy
    assert fresh.age == MAX_AGE
    assert "host:1" in fresh.reason
    stale = check_health(engine, NOW + MAX_AGE + timedelta(seconds=1), MAX_AGE)
    assert not stale.healthy
    assert "3m01s old, more than the allowed 3m00s" in stale.reason
    skewed = check_health(engine, NOW - timedelta(seconds=30), MAX_AGE)
    assert skewed.healthy
    engine.dispose()


def test_unreachable_database_is_unhealthy_not_an_exception() -> None:
    engine = make_engine("postgresql://nobody@127.0.0.1:1/none")
    report = check_health(engine, NOW, MAX_AGE)
    engine.dispose()
    assert not report.healthy
    assert report.reason.startswith("the database does not answer")


def test_health_command_exit_codes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COUNTERPARTY_DATABASE_URL", raising=False)
    config = tmp_path / "feeds.toml"
    config.write_text('[bot]\nhealth_max_age = "2m"\n', encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'data' / 'bot.db'}"
    args = ["--config", str(config), "--db", url, "health"]

    assert main(args) == 1
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "data" / "bot.db").exists(), "health must not create the database"

    engine = make_engine(url)
    migrate(engine)
    assert main(args) == 1
    assert "no 'scheduler' heartbeat" in capsys.readouterr().err

    beat(engine, owner="host:9", now=datetime.now(UTC) - timedelta(minutes=5))
    assert main(args) == 1
    assert "more than the allowed 2m00s" in capsys.readouterr().err

    beat(engine, owner="host:9", now=datetime.now(UTC))
    engine.dispose()
    assert main(args) == 0
    assert "healthy" in capsys.readouterr().out


def test_health_with_a_broken_config_exits_1_not_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Docker reserves exit code 2, so health reports configuration trouble as unhealthy."""
    config = tmp_path / "feeds.toml"
    config.write_text('[bot]\nhealth_max_age = "later"\n', encoding="utf-8")
    assert main(["--config", str(config), "health"]) == 1
    err = capsys.readouterr().err
    assert "bot.health_max_age" in err
    assert f"{config}:2" in err
