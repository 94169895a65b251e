"""eval/make_fresh_items.py: fetch pinned day files over HTTP, flatten them like the dev items."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import REPO
from tests.support.feedserver import FeedServer


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "make_fresh_items", REPO / "eval" / "make_fresh_items.py"
    )
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FRESH = _module()

# Entries written for this test, in the repository's layout (a JSON array per feed and day).
DAY_FILE = [
    {
        "title": "Kremlin &#039;studies&#039; the <b>plan</b>",
        "description": "<p>Peskov said   the text had arrived.</p>",
        "date_published": "2025-05-12T08:00:00+00:00",
        "link": "https://news.example/a",
        "source_url": "https://news.example/rss.xml",
    },
    {  # the same link again: kept once
        "title": "Kremlin studies the plan (updated)",
        "description": "",
        "date_published": "2025-05-12T09:00:00+00:00",
        "link": "https://news.example/a",
        "source_url": "https://news.example/rss.xml",
    },
    {  # no link: not an item
        "title": "Untitled",
        "description": "x",
        "date_published": None,
        "link": "",
        "source_url": "https://news.example/rss.xml",
    },
    {
        "title": "Bakery wins prize",
        "description": None,
        "date_published": "2025-05-12T10:00:00+00:00",
        "link": "https://news.example/b",
        "source_url": "https://news.example/rss.xml",
    },
]


def remote_day(tmp_path: Path, name: str, body: str) -> tuple[Path, Path]:
    """A sources table naming one day file, and a folder laid out like raw.githubusercontent.com
    (``<commit>/<year>/<month>/<day>/<file>``) that serves it."""
    commit = "0" * 40
    sources = tmp_path / "sources.tsv"
    sources.write_text(f"day\tcommit\tfile\n2025-05-12\t{commit}\t{name}\n", encoding="utf-8")
    root = tmp_path / "remote"
    remote = root / commit / "2025" / "05" / "2025-05-12"
    remote.mkdir(parents=True)
    (remote / name).write_text(body, encoding="utf-8")
    return sources, root


def test_download_then_build_gives_dev_style_items(tmp_path: Path) -> None:
    sources, root = remote_day(
        tmp_path, "https...news.example.rss.xml_entries.json", json.dumps(DAY_FILE)
    )
    days = tmp_path / "days"
    with FeedServer(root) as server:
        base = server.base_url
        assert FRESH.download(days, base, sources) == 1
        assert FRESH.download(days, base, sources) == 0  # already there: not fetched again
    items = FRESH.build(days)
    assert [i["title"] for i in items] == ["Kremlin 'studies' the plan", "Bakery wins prize"]
    first = items[0]
    assert first["summary"] == "Peskov said the text had arrived."
    assert first["id"] == hashlib.sha1(b"https://news.example/a").hexdigest()[:12]
    assert items[1]["summary"] == ""


def test_a_broken_download_writes_nothing(tmp_path: Path) -> None:
    name = "https...broken_entries.json"
    sources, root = remote_day(tmp_path, name, "<html>rate limited</html>")
    days = tmp_path / "days"
    with FeedServer(root) as server, pytest.raises(json.JSONDecodeError):
        FRESH.download(days, server.base_url, sources)
    assert not (days / "2025-05-12" / name).exists()


def test_the_pinned_sources_cover_every_fresh_label_day() -> None:
    rows = FRESH.read_sources()
    labels = [
        json.loads(line)
        for line in (REPO / "eval" / "fresh-labels.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    assert {day for day, _, _ in rows} == {label["day"] for label in labels}
    assert all(len(commit) == 40 for _, commit, _ in rows)


def test_it_refuses_to_write_items_into_the_repo(tmp_path: Path) -> None:
    assert FRESH.main([str(tmp_path), str(REPO / "items.jsonl")]) == 2
    assert not (REPO / "items.jsonl").exists()
