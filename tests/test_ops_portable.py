"""``counterparty export`` / ``import``: TOML, JSON and OPML round trips, and refusing bad files."""

from __future__ import annotations

import json
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.cli import main
from bot.ops.portable import (
    Bundle,
    ImportProblemsError,
    apply_bundle,
    bundle_from_db,
    read_bundle,
    write_bundle,
)
from bot.settings import FeedConfig, SubscriptionConfig, parse_config_text
from bot.storage.db import make_engine, migrate
from bot.storage.schema import feeds, subscriptions

NOW = datetime(2026, 3, 6, 12, 0, tzinfo=UTC)

BUNDLE = Bundle(
    feeds=(
        FeedConfig(
            url="https://one.example/rss", name="One «новости»", interval=timedelta(minutes=15)
        ),
        FeedConfig(url="https://two.example/atom.xml?lang=en&x=1"),
        FeedConfig(
            url="https://three.example/feed",
            name='Quote "and" <angle>',
            interval=timedelta(seconds=90),
        ),
    ),
    subscriptions=(
        SubscriptionConfig(
            platform="telegram", target="-1001234567890:7", cadence="daily 08:00 Europe/Kyiv"
        ),
        SubscriptionConfig(
            platform="discord",
            target="123456789012345678",
            themes=["putin-deal", "russia-iran-axis"],
            claims=["claim-3"],
            min_score=0.25,
            max_items=5,
            cadence="6h",
        ),
        SubscriptionConfig(
            platform="discord-webhook",
            target="https://discord.com/api/webhooks/123456789012345678/abcDEF-token",
        ),
    ),
)


@pytest.fixture
def engine(database_url: str):  # type: ignore[no-untyped-def]
    engine = make_engine(database_url)
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.mark.parametrize("fmt", ["toml", "json"])
def test_toml_and_json_round_trip(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"export.{fmt}"
    path.write_text(write_bundle(BUNDLE, fmt, now=NOW), encoding="utf-8")  # type: ignore[arg-type]
    assert read_bundle(path, fmt) == BUNDLE  # type: ignore[arg-type]


def test_toml_export_is_a_valid_config_file() -> None:
    text = write_bundle(BUNDLE, "toml", now=NOW)
    data = tomllib.loads(text)
    assert data["feeds"][0] == {
        "url": "https://one.example/rss",
        "name": "One «новости»",
        "interval": "15m",
    }
    assert data["feeds"][2]["interval"] == "90s"
    config = parse_config_text(text)
    assert tuple(config.feeds) == BUNDLE.feeds
    assert tuple(config.subscriptions) == BUNDLE.subscriptions


def test_opml_round_trip_keeps_feeds(tmp_path: Path) -> None:
    path = tmp_path / "feeds.opml"
    path.write_text(write_bundle(BUNDLE, "opml", now=NOW), encoding="utf-8")
    back = read_bundle(path, "opml")
    assert [(f.url, f.name) for f in back.feeds] == [
        ("https://one.example/rss", "One «новости»"),
        ("https://two.example/atom.xml?lang=en&x=1", "https://two.example/atom.xml?lang=en&x=1"),
        ("https://three.example/feed", 'Quote "and" <angle>'),
    ]
    assert back.subscriptions == ()


def test_database_round_trip(engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    summary = apply_bundle(engine, BUNDLE, now=NOW)
    assert (summary.feeds_added, summary.subscriptions_added) == (3, 3)
    assert bundle_from_db(engine) == BUNDLE
    again = apply_bundle(engine, BUNDLE, now=NOW)
    assert (again.feeds_added, again.feeds_present, again.subscriptions_unchanged) == (0, 3, 3)
    with engine.connect() as c:
        origins = set(c.execute(select(feeds.c.origin)).scalars()) | set(
            c.execute(select(subscriptions.c.origin)).scalars()
        )
        since = c.execute(select(subscriptions.c.since)).scalars().all()
    assert origins == {"command"}
    assert since == [NOW, NOW, NOW]


def test_import_updates_subscription_settings_and_dry_run_writes_nothing(engine) -> None:  # type: ignore[no-untyped-def]
    apply_bundle(engine, BUNDLE, now=NOW)
    changed = Bundle(
        feeds=(FeedConfig(url="https://four.example/rss"),),
        subscriptions=(
            SubscriptionConfig(platform="telegram", target="-1001234567890:7", cadence="instant"),
        ),
    )
    dry = apply_bundle(engine, changed, now=NOW, dry_run=True)
    assert (dry.feeds_added, dry.subscriptions_updated) == (1, 1)
    assert bundle_from_db(engine) == BUNDLE
    real = apply_bundle(engine, changed, now=NOW)
    assert (real.feeds_added, real.subscriptions_updated) == (1, 1)
    stored = bundle_from_db(engine)
    assert len(stored.feeds) == 4
    assert stored.subscriptions[0].cadence == "instant"


def test_cli_export_import_between_databases(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = f"sqlite:///{tmp_path / 'first.db'}"
    second = f"sqlite:///{tmp_path / 'second.db'}"
    engine = make_engine(first)
    migrate(engine)
    apply_bundle(engine, BUNDLE, now=NOW)
    engine.dispose()
    for fmt in ("toml", "json", "opml"):
        out = tmp_path / f"export.{fmt}"
        assert main(["--db", first, "export", "-o", str(out)]) == 0
        assert out.exists()
    capsys.readouterr()
    assert main(["--db", second, "import", str(tmp_path / "export.opml")]) == 0
    assert "feeds 3 new, 0 already present" in capsys.readouterr().out
    assert main(["--db", second, "import", str(tmp_path / "export.json")]) == 0
    assert "feeds 0 new, 3 already present; subscriptions 3 new" in capsys.readouterr().out
    engine = make_engine(second)
    stored = bundle_from_db(engine)
    engine.dispose()
    assert stored.subscriptions == BUNDLE.subscriptions
    assert {f.url for f in stored.feeds} == {f.url for f in BUNDLE.feeds}
    assert main(["--db", second, "export"]) == 0
    assert tomllib.loads(capsys.readouterr().out)["subscriptions"][1]["claims"] == ["claim-3"]


OPML = """\
<?xml version="1.0" encoding="UTF-8"?>
<opml version="1.0">
  <head><title>My reading list</title></head>
  <body>
    <outline text="Ukraine">
      <outline text="Kyiv Independent" type="rss" xmlUrl="https://kyiv.example/feed/" htmlUrl="https://kyiv.example/"/>
      <outline title="Meduza" text="meduza" type="rss" xmlurl="https://meduza.example/rss/all"/>
    </outline>
    <outline text="Iran">
      <outline text="Iran desk" type="rss" xmlUrl="https://iran.example/rss.xml"/>
      <outline text="Kyiv again, in a second folder" type="rss" xmlUrl="https://kyiv.example/feed/"/>
    </outline>
    <outline text="A folder with no feeds"/>
  </body>
</opml>
"""


def test_import_an_opml_file_written_by_hand(tmp_path: Path) -> None:
    path = tmp_path / "list.opml"
    path.write_text(OPML, encoding="utf-8")
    bundle = read_bundle(path, "opml")
    assert [(f.url, f.name) for f in bundle.feeds] == [
        ("https://kyiv.example/feed/", "Kyiv Independent"),
        ("https://meduza.example/rss/all", "Meduza"),
        ("https://iran.example/rss.xml", "Iran desk"),
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            '<?xml version="1.0"?>\n<!DOCTYPE opml [<!ENTITY a "aaaaaaaaaa">]>\n'
            '<opml><body><outline xmlUrl="https://x.example/&a;"/></body></opml>',
            ":2: the file declares a DTD or entities",
            id="internal-entity",
        ),
        pytest.param(
            '<?xml version="1.0"?>\n<!DOCTYPE opml SYSTEM "file:///etc/passwd">\n'
            "<opml><body/></opml>",
            ":2: the file declares a DTD or entities",
            id="external-dtd",
        ),
        pytest.param(
            '<opml><body><outline xmlUrl="https://x.example/"></body></opml>',
            ":1: not well-formed XML: mismatched tag",
            id="malformed",
        ),
        pytest.param("<rss><channel/></rss>", "not an OPML file", id="not-opml"),
        pytest.param(
            '<opml><body>\n<outline xmlUrl="https://ok.example/"/>\n<outline xmlUrl="file:///etc/passwd"/>\n'
            "</body></opml>",
            ":3: outline xmlUrl: 'file:///etc/passwd' is not an http(s) URL",
            id="bad-url",
        ),
    ],
)
def test_bad_opml_is_refused_with_a_line(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad.opml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ImportProblemsError) as caught:
        read_bundle(path, "opml")
    [problem] = caught.value.problems
    assert problem.startswith(str(path))
    assert expected in problem


def test_bad_json_and_toml_list_every_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad_json = tmp_path / "bad.json"
    bad_json.write_text(
        json.dumps(
            {
                "feeds": [
                    {"url": "https://a.example/"},
                    {"url": "ftp://b"},
                    {"url": "https://a.example/"},
                ],
                "subscriptions": [{"platform": "slack", "target": "x"}],
                "extra": 1,
            }
        ),
        encoding="utf-8",
    )
    with pytest.raises(ImportProblemsError) as caught:
        read_bundle(bad_json, "json")
    text = "\n".join(caught.value.problems)
    assert "extra: unknown key" in text
    assert "feeds[1].url: 'ftp://b' is not an http(s) URL" in text
    assert "feeds[2].url: 'https://a.example/' is already listed as feeds[0]" in text
    assert "subscriptions[0].platform" in text

    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text(
        '[[feeds]]\nurl = "https://a.example/"\ninterval = "never"\n', encoding="utf-8"
    )
    database = f"sqlite:///{tmp_path / 'db.sqlite'}"
    assert main(["--db", database, "import", str(bad_toml)]) == 2
    err = capsys.readouterr().err
    assert "nothing imported" in err
    assert f"{bad_toml}:3: feeds[0].interval" in err
    engine = make_engine(database)
    assert not (tmp_path / "db.sqlite").exists() or bundle_from_db(engine).feeds == ()
    engine.dispose()


def test_unknown_suffix_needs_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "feeds.txt"
    path.write_text("https://a.example/\n", encoding="utf-8")
    assert main(["--db", f"sqlite:///{tmp_path / 'db.sqlite'}", "import", str(path)]) == 2
    assert "use --format toml, json or opml" in capsys.readouterr().err


def test_export_from_a_missing_database_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--db", f"sqlite:///{tmp_path / 'none.db'}", "export"]) == 2
    assert "does not exist; nothing to export" in capsys.readouterr().err
    assert not (tmp_path / "none.db").exists()
