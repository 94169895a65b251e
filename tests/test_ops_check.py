"""``counterparty check``: every problem reported at once, each naming the file, line and key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bot.cli import main

GOOD = """\
[bot]
log_level = "info"

[[feeds]]
url = "https://example.org/rss"
name = "Example"
interval = "30m"

[[subscriptions]]
platform = "telegram"
target = "-1001234567890:42"
cadence = "daily 08:00 Europe/Kyiv"
"""


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "DISCORD_TOKEN",
        "TELEGRAM_TOKEN",
        "COUNTERPARTY_CONFIG",
        "COUNTERPARTY_DATABASE_URL",
        "COUNTERPARTY_LOG_LEVEL",
    ):
        monkeypatch.delenv(name, raising=False)


def run_check(
    tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, str, str]:
    config = tmp_path / "feeds.toml"
    config.write_text(text, encoding="utf-8")
    code = main(
        ["--config", str(config), "--db", f"sqlite:///{tmp_path / 'db.sqlite'}", *extra, "check"]
    )
    out, err = capsys.readouterr()
    return code, out, err


def problems(err: str) -> list[str]:
    return [
        line.removeprefix("problem: ") for line in err.splitlines() if line.startswith("problem: ")
    ]


def test_a_good_configuration_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TELEGRAM_TOKEN", "123456:SECRET-telegram-value")
    code, out, err = run_check(tmp_path, GOOD, capsys)
    assert code == 0, err
    assert "1 feeds, 1 subscriptions" in out
    assert "telegram: token set (TELEGRAM_TOKEN)" in out
    assert "SECRET-telegram-value" not in out + err
    assert "everything checks out" in out


def test_bad_toml_names_file_line_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = '[bot]\nlog_level = "INFO"\n\n[[feeds]]\nurl = "https://example.org/rss\nname = "x"\n'
    code, _, err = run_check(tmp_path, text, capsys)
    assert code == 2
    [problem] = problems(err)
    assert problem.startswith(f"{tmp_path / 'feeds.toml'}:5: feeds.url: not valid TOML")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param('[bot]\ncolour = "red"\n', ":2: bot.colour: unknown key", id="unknown-key"),
        pytest.param(
            '[[feeds]]\nurl = "https://a.example/rss"\n\n[[feeds]]\nurl = "https://b.example/rss"\n'
            'interval = "soon"\n',
            ":6: feeds[1].interval: 'soon' is not a duration",
            id="bad-interval",
        ),
        pytest.param(
            '[fetch]\nmin_interval = "-5m"\n',
            ":2: fetch.min_interval: '-5m' is not a duration",
            id="negative-interval",
        ),
        pytest.param(
            '[[subscriptions]]\nplatform = "telegram"\ntarget = "-100123"\ncadence = "weekly"\n',
            ":4: subscriptions[0].cadence: 'weekly' is not a cadence",
            id="bad-cadence",
        ),
        pytest.param(
            '[[subscriptions]]\nplatform = "telegram"\ntarget = "-100123"\n'
            'cadence = "daily 08:00 Mars/Olympus"\n',
            ":4: subscriptions[0].cadence: unknown time zone 'Mars/Olympus'",
            id="bad-time-zone",
        ),
        pytest.param(
            '[[feeds]]\nurl = "ftp://example.org/feed"\n',
            ":2: feeds[0].url: 'ftp://example.org/feed' is not an http(s) URL",
            id="bad-url",
        ),
        pytest.param(
            '[[feeds]]\nurl = "https://a.example/rss"\n\n[[feeds]]\nurl = "https://a.example/rss"\n',
            ":5: feeds[1].url: 'https://a.example/rss' is already listed as feeds[0]",
            id="duplicate-feed",
        ),
        pytest.param(
            '[bot]\nlog_level = "INFO"\ntoken = "abc123456"\n',
            ":3: bot.token: secrets are read from the environment only",
            id="token-in-bot",
        ),
        pytest.param(
            '[discord]\ndiscord_token = "abc123456"\n',
            ":2: discord.discord_token: secrets are read from the environment only",
            id="token-in-discord",
        ),
        pytest.param(
            '[[subscriptions]]\nplatform = "telegram"\ntarget = "-100123"\n\n[[subscriptions]]\n'
            'platform = "telegram"\ntarget = "-100456"\ntoken = "abc123456"\n',
            ":8: subscriptions[1].token: secrets are read from the environment only",
            id="token-in-subscription",
        ),
        pytest.param(
            '[[subscriptions]]\nplatform = "discord"\ntarget = "general"\n',
            ":1: subscriptions[0]: a discord target is a channel or thread id",
            id="bad-discord-target",
        ),
        pytest.param(
            '[telegram]\nmode = "webhook"\n',
            ":1: telegram: mode = 'webhook' needs webhook_url",
            id="webhook-without-url",
        ),
        pytest.param(
            '[fetch]\nmin_interval = "2h"\nmax_interval = "1h"\n',
            ":1: fetch: min_interval must not be greater than max_interval",
            id="interval-bounds",
        ),
    ],
)
def test_each_error_names_file_line_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    code, _, err = run_check(tmp_path, text, capsys)
    assert code == 2, err
    found = problems(err)
    assert len(found) == 1, found
    assert found[0].startswith(str(tmp_path / "feeds.toml") + ":"), found[0]
    assert expected in found[0], found[0]


def test_every_problem_is_reported_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (
        "[bot]\n"  # 1
        'log_level = "LOUD"\n'  # 2
        'token = "abc123456"\n'  # 3
        "\n"
        "[[feeds]]\n"  # 5
        'url = "ftp://x"\n'  # 6
        'interval = "soon"\n'  # 7
        "\n"
        "[[feeds]]\n"  # 9
        'url = "https://a.example/rss"\n'  # 10
        "\n"
        "[[feeds]]\n"  # 12
        'url = "https://a.example/rss"\n'  # 13
        "\n"
        "[[subscriptions]]\n"  # 15
        'platform = "telegram"\n'
        'target = "-100123"\n'
        'cadence = "weekly"\n'  # 18
        'colour = "red"\n'  # 19
    )
    code, _, err = run_check(tmp_path, text, capsys)
    assert code == 2
    found = {
        re.sub(r"^.*?feeds\.toml:", "", p).split(":")[0] + " " + p.split(": ")[1]
        for p in problems(err)
    }
    assert found == {
        "2 bot.log_level",
        "3 bot.token",
        "6 feeds[0].url",
        "7 feeds[0].interval",
        "13 feeds[2].url",
        "18 subscriptions[0].cadence",
        "19 subscriptions[0].colour",
    }
    assert "7 problem(s) found" in err


def test_missing_theme_file_is_a_configuration_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_check(tmp_path, '[bot]\nthemes_file = "my-themes.toml"\n', capsys)
    assert code == 2
    [problem] = problems(err)
    assert problem.startswith(f"{tmp_path / 'feeds.toml'}:2: bot.themes_file: ")
    assert str(tmp_path / "my-themes.toml") in problem


def test_broken_theme_file_reports_its_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "my-themes.toml").write_text("[[themes]]\nid = \n", encoding="utf-8")
    code, _, err = run_check(tmp_path, '[bot]\nthemes_file = "my-themes.toml"\n', capsys)
    assert code == 2
    [problem] = problems(err)
    assert problem.startswith(str(tmp_path / "my-themes.toml"))
    assert "TOML" in problem


def test_bad_database_url_is_reported_with_the_config_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "feeds.toml"
    config.write_text('[bot]\ncolour = "red"\n', encoding="utf-8")
    code = main(["--config", str(config), "--db", "mysql://u@h/db", "check"])
    _, err = capsys.readouterr()
    assert code == 2
    found = problems(err)
    assert any("bot.colour: unknown key" in p for p in found)
    assert any(p.startswith("--db: unsupported database 'mysql'") for p in found)


def test_database_that_does_not_answer_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "feeds.toml"
    config.write_text(
        GOOD.replace('platform = "telegram"', 'platform = "telegram"'), encoding="utf-8"
    )
    code = main(["--config", str(config), "--db", "postgresql://nobody@127.0.0.1:1/none", "check"])
    _, err = capsys.readouterr()
    assert code == 1
    assert any("does not answer" in p for p in problems(err))


def test_subscriptions_without_their_token_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_check(tmp_path, GOOD, capsys)
    assert code == 1
    [problem] = problems(err)
    assert "telegram subscriptions but TELEGRAM_TOKEN is not set" in problem


def test_bad_log_level_in_the_environment_is_reported_with_the_file_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COUNTERPARTY_LOG_LEVEL", "verbose")
    code, _, err = run_check(tmp_path, '[bot]\ncolour = "red"\n', capsys)
    assert code == 2
    found = problems(err)
    assert len(found) == 2
    assert found[0].endswith(":2: bot.colour: unknown key")
    assert found[1].startswith("COUNTERPARTY_LOG_LEVEL: 'verbose' is not a log level")


def test_unknown_theme_and_claim_ids_in_subscriptions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TELEGRAM_TOKEN", "123456:SECRET-telegram-value")
    text = (
        "[[subscriptions]]\n"  # 1
        'platform = "telegram"\n'
        'target = "-100123"\n'
        'themes = ["putin-deal", "no-such-theme"]\n'  # 4
        'claims = ["not-our-war", "no-such-claim"]\n'  # 5
    )
    code, _, err = run_check(tmp_path, text, capsys)
    assert code == 2
    found = problems(err)
    assert len(found) == 2
    assert found[0].startswith(f"{tmp_path / 'feeds.toml'}:4: subscriptions[0].themes: ")
    assert "unknown theme id 'no-such-theme'; known: " in found[0]
    assert "putin-deal" in found[0]
    assert found[1].startswith(f"{tmp_path / 'feeds.toml'}:5: subscriptions[0].claims: ")
    assert "unknown claim id 'no-such-claim'" in found[1]


def test_bad_database_url_in_the_file_names_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "feeds.toml"
    config.write_text(
        '[bot]\nlog_level = "INFO"\ndatabase_url = "mongodb://x/y"\n', encoding="utf-8"
    )
    assert main(["--config", str(config), "check"]) == 2
    [problem] = problems(capsys.readouterr().err)
    assert problem.startswith(f"{config}:3: bot.database_url: unsupported database 'mongodb'")


def test_unwritable_folder_for_a_new_sqlite_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import os

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        code = main(["--db", f"sqlite:///{locked / 'db.sqlite'}", "check"])
    finally:
        locked.chmod(0o700)
    assert code == 1
    assert "is not writable" in capsys.readouterr().err
