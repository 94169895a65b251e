"""The ``match`` and ``eval`` commands, run through the real ``counterparty`` entry point."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from bot.cli import main

ITEMS = [
    {"id": "1", "title": "Kremlin rejects the US ceasefire plan for Ukraine", "summary": ""},
    {"id": "2", "title": "Local bakery wins national bread prize", "summary": "Crusty."},
    {
        "id": "3",
        "title": "US warplanes strike nuclear sites in Iran",
        "summary": "Fordow was hit, the Pentagon said.",
        "published": "2025-06-22T01:00:00+00:00",
    },
]


def write_lines(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_match_writes_one_line_per_item(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_lines(tmp_path / "items.jsonl", ITEMS)
    assert main(["match", "--jsonl", str(path)]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [o["id"] for o in out] == ["1", "2", "3"]
    assert [t["id"] for t in out[0]["themes"]] == ["putin-deal"]
    assert out[1] == {"id": "2", "themes": [], "claims": []}
    theme = out[2]["themes"][0]
    assert theme["id"] == "iran-war-diplomacy"
    assert 0.5 <= theme["score"] <= 1
    assert theme["excerpt"]


def test_match_reads_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(ITEMS[0]) + "\n"))
    assert main(["match", "--jsonl", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["themes"][0]["id"] == "putin-deal"


def test_match_rejects_a_bad_line_naming_it_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "items.jsonl"
    path.write_text(json.dumps(ITEMS[0]) + "\n{not json\n", encoding="utf-8")
    assert main(["match", "--jsonl", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"{path}:2: not valid JSON" in captured.err


def test_match_with_a_broken_theme_file_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    themes = tmp_path / "themes.toml"
    themes.write_text('[[theme]]\nid = "x"\n', encoding="utf-8")
    path = write_lines(tmp_path / "items.jsonl", ITEMS)
    assert main(["match", "--jsonl", str(path), "--themes", str(themes)]) == 2
    assert "theme 'x': field 'title' is missing" in capsys.readouterr().err


def test_eval_joins_labels_with_items_and_prints_both_systems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    items = write_lines(tmp_path / "items.jsonl", ITEMS)
    labels = write_lines(
        tmp_path / "labels.jsonl",
        [
            {
                "id": "1",
                "labels": ["putin-deal"],
                "split": "test",
                "claims": ["putin-ready-to-deal"],
            },
            {"id": "2", "labels": [], "split": "test"},
            {"id": "3", "labels": ["iran-war-diplomacy"], "split": "tune"},
        ],
    )
    assert main(["eval", str(labels), "--items", str(items), "--split", "test"]) == 0
    out = capsys.readouterr().out
    assert "matcher (2 items)" in out
    assert "keyword baseline (2 items)" in out
    row = next(line for line in out.splitlines() if line.strip().startswith("putin-deal"))
    assert row.split()[1:4] == ["1.000", "1.000", "1.000"]
    assert "macro-F1 gain over the keyword baseline" in out
    claim_row = next(line for line in out.splitlines() if "putin-ready-to-deal" in line)
    assert claim_row.split()[1:] == ["1", "1", "1"]


def test_eval_accepts_labels_with_inline_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    labelled = write_lines(tmp_path / "l.jsonl", [{**ITEMS[2], "labels": ["iran-war-diplomacy"]}])
    assert main(["eval", str(labelled)]) == 0
    assert "iran-war-diplomacy" in capsys.readouterr().out


def test_eval_rejects_unknown_theme_ids_and_missing_items(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    items = write_lines(tmp_path / "items.jsonl", ITEMS)
    labels = write_lines(tmp_path / "labels.jsonl", [{"id": "1", "labels": ["no-such-theme"]}])
    assert main(["eval", str(labels), "--items", str(items)]) == 2
    assert "unknown theme id(s) no-such-theme" in capsys.readouterr().err
    labels = write_lines(tmp_path / "labels.jsonl", [{"id": "99", "labels": []}])
    assert main(["eval", str(labels), "--items", str(items)]) == 2
    assert "item '99' is not in" in capsys.readouterr().err


def test_match_uses_the_theme_file_named_by_the_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "my-themes.toml").write_text(
        """
[aliases]
bakery = ["bakery", "bakeries"]

[[theme]]
id = "bread"
title = "Bread"
description = "Prize-winning bread."
essay_quote = "None."
keywords = ["bread"]
[theme.cues]
prize = ["prize", "award"]
[[theme.rule]]
all = ["bakery", "prize"]
weight = 1.0
""",
        encoding="utf-8",
    )
    config = tmp_path / "feeds.toml"
    config.write_text('[bot]\nthemes_file = "my-themes.toml"\n', encoding="utf-8")
    path = write_lines(tmp_path / "items.jsonl", ITEMS[:2])
    assert main(["--config", str(config), "match", "--jsonl", str(path)]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert out[0]["themes"] == []  # the packaged themes are replaced, not added to
    assert [t["id"] for t in out[1]["themes"]] == ["bread"]


def test_eval_takes_any_split_name_and_lists_the_splits_when_one_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    items = write_lines(tmp_path / "items.jsonl", ITEMS)
    labels = write_lines(
        tmp_path / "labels.jsonl",
        [
            {"id": "1", "labels": ["putin-deal"], "split": "fresh-1"},
            {"id": "3", "labels": ["iran-war-diplomacy"], "split": "tune"},
        ],
    )
    assert main(["eval", str(labels), "--items", str(items), "--split", "fresh-1"]) == 0
    assert "matcher (1 items)" in capsys.readouterr().out
    assert main(["eval", str(labels), "--items", str(items), "--split", "fresh-9"]) == 2
    err = capsys.readouterr().err
    assert "no labelled items in split 'fresh-9'" in err
    assert "fresh-1, tune" in err
