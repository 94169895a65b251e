"""Evaluation arithmetic, and regression floors for the matcher on the labelled sets."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass

import pytest

from bot.matching.catalog import load_catalog
from bot.matching.eval import KeywordBaseline, Labelled, Report, evaluate, read_labelled
from bot.matching.matcher import Matcher
from bot.matching.records import Item
from tests.conftest import REPO, SHARED, shared_path


def test_evaluate_counts_per_theme_and_averages() -> None:
    labelled = [
        Labelled(Item("1", "a"), frozenset({"x"})),
        Labelled(Item("2", "b"), frozenset({"x", "y"})),
        Labelled(Item("3", "c"), frozenset()),
    ]
    predictions = {"1": ["x"], "2": ["y"], "3": ["x"]}
    report = evaluate("t", lambda item: predictions[item.id], labelled, ["x", "y", "z"])
    x, y, z = report.themes
    assert (x.tp, x.fp, x.fn) == (1, 1, 1)
    assert (y.tp, y.fp, y.fn) == (1, 0, 0)
    assert (z.tp, z.fp, z.fn) == (0, 0, 0)
    assert report.micro.precision == pytest.approx(2 / 3)
    assert report.micro.recall == pytest.approx(2 / 3)
    assert [t.theme_id for t in report.scored] == ["x", "y"]  # z has no positives
    assert report.macro_f1 == pytest.approx((0.5 + 1.0) / 2)


def test_keyword_baseline_matches_any_keyword_as_a_whole_word() -> None:
    baseline = KeywordBaseline(load_catalog())
    assert "putin-deal" in baseline(Item("1", "Putin visits a school"))
    assert "putin-deal" not in baseline(Item("2", "Putinesque architecture"))


@dataclass(frozen=True)
class DevRun:
    matcher: Matcher
    items: list[Labelled]
    report: Report
    baseline: Report


@pytest.fixture(scope="module")
def dev_set(tmp_path_factory: pytest.TempPathFactory) -> DevRun:
    """The matcher and the keyword baseline on the whole dev set (both splits: all were tuned on).

    The held-out measurements are the fresh days (eval/fresh-labels.jsonl), whose texts are not
    in ../shared: eval/report.md gives them. This is a regression guard.
    """
    shared_path("corpus", "dev-items.jsonl")
    labels = REPO / "eval" / "dev-labels.jsonl"
    if not labels.exists():
        pytest.skip("eval/dev-labels.jsonl is absent")
    path = tmp_path_factory.mktemp("eval") / "items.jsonl"
    subprocess.run(
        [sys.executable, str(REPO / "eval" / "make_items.py"), str(path), "--shared", str(SHARED)],
        check=True,
        capture_output=True,
    )
    catalog = load_catalog()
    items = read_labelled(labels, path, catalog.themes)
    matcher = Matcher(catalog)
    theme_ids = list(catalog.themes)
    report = evaluate(
        "matcher", lambda i: [m.theme_id for m in matcher.match(i).themes], items, theme_ids
    )
    baseline = evaluate("keyword", KeywordBaseline(catalog), items, theme_ids)
    return DevRun(matcher, items, report, baseline)


@pytest.mark.shared
@pytest.mark.slow
def test_dev_set_floor(dev_set: DevRun) -> None:
    """What the matcher reaches on the dev set today, with a small margin."""
    report, baseline = dev_set.report, dev_set.baseline
    assert len(dev_set.items) >= 1800
    assert report.micro.precision >= 0.88, report.micro
    assert report.micro.recall >= 0.84, report.micro
    assert report.macro_f1 >= 0.83, report.macro_f1
    assert report.macro_f1 - baseline.macro_f1 >= 0.15
    assert report.micro.precision - baseline.micro.precision >= 0.5


@pytest.mark.shared
@pytest.mark.slow
def test_excerpts_show_their_theme_on_the_dev_set(dev_set: DevRun) -> None:
    matcher = dev_set.matcher
    matches = [(m.theme_id, m.excerpt) for x in dev_set.items for m in matcher.match(x.item).themes]
    assert matches
    assert all(len(excerpt) <= 300 for _, excerpt in matches)
    shown = sum(matcher.shows_theme(theme_id, excerpt) for theme_id, excerpt in matches)
    assert shown / len(matches) >= 0.90


@pytest.fixture(scope="module")
def challenge() -> Report:
    """The matcher on eval/challenge.jsonl (headlines written for this repo, no ../shared)."""
    catalog = load_catalog()
    labelled = read_labelled(REPO / "eval" / "challenge.jsonl", None, catalog.themes)
    matcher = Matcher(catalog)
    return evaluate(
        "matcher",
        lambda i: [m.theme_id for m in matcher.match(i).themes],
        labelled,
        list(catalog.themes),
    )


def test_challenge_set_covers_every_theme(challenge: Report) -> None:
    assert challenge.items >= 240
    assert all(t.support >= 25 for t in challenge.themes), challenge.themes


def test_challenge_set_floor(challenge: Report) -> None:
    """What the matcher reaches on the challenge set, with a margin: a regression guard.

    The set was written blind to the matcher and scored once before any rule was changed for it
    (micro P 0.80 / R 0.74, macro-F1 0.76); it has been tuned on since (see eval/report.md).
    """
    assert challenge.micro.precision >= 0.80, challenge.micro
    assert challenge.micro.recall >= 0.87, challenge.micro
    assert challenge.macro_f1 >= 0.84, challenge.macro_f1
    weak = [t for t in challenge.themes if t.f1 < 0.70]
    assert not weak, weak
