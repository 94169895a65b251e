"""Shared fixtures: where ../shared is, and a fresh database per test on SQLite or PostgreSQL.

The storage backend is chosen by ``COUNTERPARTY_TEST_DB``: ``sqlite`` (default) or ``postgres``.
With ``postgres``, each test gets its own freshly created database on the server at
``COUNTERPARTY_TEST_PG_URL`` (default: postgres@127.0.0.1:5432/test), dropped afterwards.
Tests needing PostgreSQL itself use ``postgres_url``, which skips loudly when no server answers;
``engine`` is ``database_url`` opened.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from bot.storage.db import open_database

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("COUNTERPARTY_SHARED", REPO.parent / "shared"))
PG_URL = os.environ.get(
    "COUNTERPARTY_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
TEST_DB = os.environ.get("COUNTERPARTY_TEST_DB", "sqlite")


def shared_path(*parts: str) -> Path:
    """A path inside ../shared, skipping the calling test with a clear reason where it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(
            f"{path} is absent: this test reads the shared corpus in place "
            "(it ships beside the repo in CI, not in a fresh clone)"
        )
    return path


@pytest.fixture
def shared() -> Path:
    return shared_path()


def _pg_reachable() -> str | None:
    try:
        engine = create_engine(PG_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}".splitlines()[0]
    return None


_PG_PROBLEM: list[str | None] = []


def pg_problem() -> str | None:
    if not _PG_PROBLEM:
        _PG_PROBLEM.append(_pg_reachable())
    return _PG_PROBLEM[0]


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """URL of a fresh, empty PostgreSQL database, dropped after the test."""
    problem = pg_problem()
    if problem:
        pytest.skip(f"PostgreSQL NOT REACHABLE at {PG_URL}: {problem}")
    name = f"cp_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'counterparty.db'}"


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database on the backend chosen by COUNTERPARTY_TEST_DB (sqlite or postgres)."""
    if TEST_DB == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return f"sqlite:///{tmp_path / 'counterparty.db'}"


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """The test database opened by ``bot.storage.db.open_database``, disposed after the test."""
    engine = open_database(database_url)
    yield engine
    engine.dispose()


@pytest.fixture(autouse=True)
def _dispose_engines(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Close every engine that bot.storage.db opened during the test.

    Tests (and the code under test) open engines freely; closing their pools at teardown keeps
    PostgreSQL databases droppable and turns no unclosed connection into a ResourceWarning."""
    import bot.storage.db as db

    created: list[Any] = []
    real_create_engine = db.create_engine

    def recording_create_engine(*args: Any, **kwargs: Any) -> Any:
        engine = real_create_engine(*args, **kwargs)
        created.append(engine)
        return engine

    monkeypatch.setattr(db, "create_engine", recording_create_engine)
    yield
    for engine in created:
        engine.dispose()
