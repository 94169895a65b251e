"""``counterparty digest --print``, ``claims`` and ``claim ID`` (in-process, real database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.cli import main
from bot.storage.db import open_database
from tests.store_fixtures import add_entry, add_feed, add_match


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No stray feeds.toml or COUNTERPARTY_* variables from the developer's shell."""
    monkeypatch.chdir(tmp_path)
    for name in ("COUNTERPARTY_CONFIG", "COUNTERPARTY_DATABASE_URL", "COUNTERPARTY_THEMES"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def seeded(database_url: str) -> str:
    now = datetime.now(UTC)
    engine = open_database(database_url)
    try:
        feed = add_feed(engine, name="Outlet A", now=now)
        deal = add_entry(engine, feed_id=feed, key="deal", now=now, title="Invented talks item")
        add_match(engine, entry_id=deal, ref_id="putin-deal", now=now, score=0.9)
        add_match(engine, entry_id=deal, ref_id="putin-ready-to-deal", kind="claim", now=now)
        oil = add_entry(engine, feed_id=feed, key="oil", now=now, title="Invented oil item")
        add_match(engine, entry_id=oil, ref_id="energy-windfall", now=now, score=0.7)
        old_time = now - timedelta(days=3)
        old = add_entry(engine, feed_id=feed, key="old", now=old_time, title="Invented old item")
        add_match(engine, entry_id=old, ref_id="putin-deal", now=old_time)
    finally:
        engine.dispose()
    return database_url


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_digest_print_shows_recent_matches(seeded: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "--db", seeded, "digest", "--print")
    assert code == 0
    assert "Invented talks item" in out
    assert "Invented oil item" in out
    assert "Invented old item" not in out  # outside the default 24 h
    code, out, _ = run_cli(capsys, "--db", seeded, "digest", "--print", "--since", "4d")
    assert "Invented old item" in out


def test_digest_print_filters_by_theme(seeded: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(
        capsys, "--db", seeded, "digest", "--print", "--theme", "energy-windfall"
    )
    assert code == 0
    assert "Invented oil item" in out
    assert "Invented talks item" not in out


def test_digest_print_says_so_when_empty(seeded: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(
        capsys, "--db", seeded, "digest", "--print", "--theme", "russia-iran-axis"
    )
    assert code == 0
    assert out.startswith("Nothing matched in the last 24 hours")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--theme", "no-such-theme"], "unknown theme 'no-such-theme'"),
        (["--since", "soon"], "--since"),
    ],
)
def test_digest_print_rejects_bad_arguments(
    seeded: str, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, _, err = run_cli(capsys, "--db", seeded, "digest", "--print", *args)
    assert code == 2
    assert message in err


def test_claims_lists_every_claim(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "claims")
    assert code == 0
    assert out.startswith("10 tracked claims")
    for claim_id in ("putin-ready-to-deal", "not-our-war", "partners-abandoned"):
        assert f"\n{claim_id}  [" in out


def test_claim_shows_quote_and_latest_evidence(
    seeded: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(capsys, "--db", seeded, "claim", "putin-ready-to-deal")
    assert code == 0
    assert "Donald Trump" in out
    assert "Latest evidence:" in out
    assert "Invented talks item" in out


def test_unknown_claim_is_a_usage_error(seeded: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "--db", seeded, "claim", "not-a-claim")
    assert code == 2
    assert "There is no claim called 'not-a-claim'" in err
