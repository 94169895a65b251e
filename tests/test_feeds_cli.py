"""`counterparty poll --once --json` and `counterparty feeds`, run as real subprocesses against
the local server with the 46 corpus feeds."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bot.storage.db import open_database
from bot.storage.schema import entries
from tests.conftest import REPO, shared_path
from tests.support.feedserver import FeedServer, error

# See tests/test_feeds_pipeline.py: two corpus feeds repeat guids within the document.
DUPLICATE_GUIDS = 10


@pytest.fixture
def corpus_server() -> Iterator[FeedServer]:
    with FeedServer(shared_path("corpus")) as server:
        yield server


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        check=False,
    )


def write_config(path: Path, urls: list[str]) -> Path:
    lines = ['[fetch]\njitter = "1s"\n']
    for i, url in enumerate(urls):
        lines.append(f'[[feeds]]\nurl = "{url}"\nname = "feed {i}"\ninterval = "10m"\n')
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def test_poll_once_json_stores_every_entry_once_and_then_sees_304s(
    corpus_server: FeedServer, database_url: str, tmp_path: Path
) -> None:
    manifest = json.loads(shared_path("corpus", "manifest.json").read_text(encoding="utf-8"))
    urls = [corpus_server.url(item["file"].removeprefix("corpus/")) for item in manifest]
    config = write_config(tmp_path / "feeds.toml", urls)
    expected = sum(item["entries"] for item in manifest) - DUPLICATE_GUIDS

    first = run("--config", str(config), "--db", database_url, "poll", "--once", "--json")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout.strip().splitlines()[-1]) == {
        "feeds": 46,
        "fetched": 46,
        "not_modified": 0,
        "failed": 0,
        "new_entries": expected,
        "updated_entries": 0,
    }
    second = run("--config", str(config), "--db", database_url, "poll", "--once", "--json")
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout.strip().splitlines()[-1]) == {
        "feeds": 46,
        "fetched": 0,
        "not_modified": 46,
        "failed": 0,
        "new_entries": 0,
        "updated_entries": 0,
    }
    engine = open_database(database_url)
    try:
        with engine.connect() as conn:
            stored = conn.execute(select(func.count()).select_from(entries)).scalar_one()
    finally:
        engine.dispose()
    assert stored == expected
    agents = {seen.headers["User-Agent"] for seen in corpus_server.requests}
    assert agents == {"counterparty/0.1.0 (+https://github.com/counterparty-bot/counterparty)"}


def test_feeds_lists_health(corpus_server: FeedServer, database_url: str, tmp_path: Path) -> None:
    corpus_server.behave("feeds/missing.xml", error(404))
    good = corpus_server.url("feeds/bbc-world-2026-02-18.xml")
    bad = corpus_server.url("feeds/missing.xml")
    config = write_config(tmp_path / "feeds.toml", [good, bad])
    assert run("--config", str(config), "--db", database_url, "poll", "--once").returncode == 0
    listing = run("--config", str(config), "--db", database_url, "feeds")
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("[ok] feed 0 ")
    assert "entries=" in lines[0]
    assert "entries=0" not in lines[0]
    assert lines[1].startswith("[FAILING x1] feed 1 ")
    assert "error=gone: HTTP 404" in lines[1]


def test_bad_config_is_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "feeds.toml"
    config.write_text('[[feeds]]\nurl = "ftp://example.org/x"\ninteval = "5m"\n', encoding="utf-8")
    result = run("--config", str(config), "poll", "--once")
    assert result.returncode == 2
    assert "feeds[0].url" in result.stderr
    assert "feeds[0].inteval: unknown key" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_default_watch_list_is_valid() -> None:
    from bot.settings import load_settings

    settings = load_settings(REPO / "feeds.toml", environ={})
    assert 15 <= len(settings.feeds) <= 25
    assert all(feed.url.startswith("https://") for feed in settings.feeds)
    assert all(feed.name for feed in settings.feeds)


def test_a_bad_database_url_is_a_clear_error(tmp_path: Path) -> None:
    config = write_config(tmp_path / "feeds.toml", [])
    result = run("--config", str(config), "--db", "mysql://nobody@example.org/x", "feeds")
    assert result.returncode == 2
    assert "unsupported database" in result.stderr
    assert "Traceback" not in result.stderr


def test_poll_without_once_keeps_ticking_until_interrupted(
    corpus_server: FeedServer, database_url: str, tmp_path: Path
) -> None:
    import select
    import signal

    urls = [corpus_server.url("feeds/bbc-world-2026-02-18.xml")]
    config = tmp_path / "feeds.toml"
    config.write_text(f'[fetch]\ntick = "1s"\n[[feeds]]\nurl = "{urls[0]}"\n', encoding="utf-8")
    process = subprocess.Popen(
        [sys.executable, "-m", "bot", "--config", str(config), "--db", database_url, "poll"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert process.stdout is not None
        # The first tick polls the never-fetched feed and prints its summary line.
        ready, _, _ = select.select([process.stdout], [], [], 120)
        assert ready, "no poll summary within 120 s"
        line = process.stdout.readline()
        assert line.startswith("1 feeds: 1 fetched"), line
        assert "new and 0 updated" in line
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert len(corpus_server.requests) == 1, "later ticks found nothing due"
