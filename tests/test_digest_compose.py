"""Composer rules: grouping, one appearance, ranking, sections, empty windows."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.digest.compose import compose, rank_value
from tests.digest_fixtures import CATALOG, NOW, match


def test_empty_window_sends_nothing() -> None:
    result = compose([], catalog=CATALOG, now=NOW, max_items=10)
    assert result.digest is None
    assert result.covered_entry_ids == frozenset()


def test_same_story_from_several_outlets_is_one_entry_with_also_reported() -> None:
    rows = [
        match(1, outlet="Outlet A", story_key="s", score=0.7),
        match(2, outlet="Outlet B", story_key="s", score=0.9),
        match(3, outlet="Outlet C", story_key="s", score=0.6),
        match(4, outlet="Outlet B", story_key="s", score=0.6),  # same outlet twice: listed once
    ]
    result = compose(rows, catalog=CATALOG, now=NOW, max_items=10)
    assert result.digest is not None
    (section,) = result.digest.sections
    (entry,) = section.entries
    assert entry.entry_id == 2  # best-scoring report leads
    assert [a.outlet for a in entry.also_reported] == ["Outlet A", "Outlet C"]
    assert result.covered_entry_ids == {1, 2, 3, 4}


def test_item_matching_several_themes_appears_once_tagged_with_each() -> None:
    rows = [
        match(1, "putin-deal", score=0.6),
        match(1, "words-not-deeds", score=0.9),
        match(1, "russia-overstretched", score=0.55),
    ]
    result = compose(rows, catalog=CATALOG, now=NOW, max_items=10)
    assert result.digest is not None
    appearances = [e for s in result.digest.sections for e in s.entries]
    assert len(appearances) == 1
    assert [s.ref_id for s in result.digest.sections] == ["words-not-deeds"]  # strongest theme
    assert appearances[0].theme_ids == ("russia-overstretched", "words-not-deeds", "putin-deal")


def test_claim_evidence_gets_a_claim_section_with_the_quote() -> None:
    rows = [
        match(1, "words-not-deeds", score=0.7),
        match(1, "not-our-war", kind="claim", score=0.8),
        match(2, "putin-deal", score=0.9),
    ]
    result = compose(rows, catalog=CATALOG, now=NOW, max_items=10)
    assert result.digest is not None
    kinds = [(s.kind, s.ref_id) for s in result.digest.sections]
    assert kinds == [("theme", "putin-deal"), ("claim", "not-our-war")]
    claim = result.digest.sections[1]
    assert claim.title == "A spokesman"
    assert "Not our war" in claim.framing
    assert claim.entries[0].claim_ids == ("not-our-war",)
    assert claim.entries[0].theme_ids == ("words-not-deeds",)


def test_theme_sections_follow_catalog_order_with_the_essay_framing() -> None:
    rows = [match(1, "putin-deal", score=0.95), match(2, "russia-overstretched", score=0.6)]
    result = compose(rows, catalog=CATALOG, now=NOW, max_items=10)
    assert result.digest is not None
    assert [s.ref_id for s in result.digest.sections] == ["russia-overstretched", "putin-deal"]
    assert result.digest.sections[0].framing == "Tied down in Ukraine."
    assert result.digest.sections[0].title == "Russia overstretched"


def test_ranking_prefers_score_then_recency() -> None:
    rows = [
        match(1, score=0.6, hours_ago=1),
        match(2, score=0.9, hours_ago=30),
        match(3, score=0.9, hours_ago=1, outlet="Outlet B"),
    ]
    result = compose(rows, catalog=CATALOG, now=NOW, max_items=10)
    assert result.digest is not None
    assert [e.entry_id for e in result.digest.sections[0].entries] == [3, 2, 1]


def test_max_items_keeps_the_best_and_reports_the_rest_as_left() -> None:
    rows = [match(i, score=0.5 + i / 100, outlet=f"Outlet {i}") for i in range(1, 8)]
    result = compose(rows, catalog=CATALOG, now=NOW, max_items=3)
    assert result.digest is not None
    assert result.digest.entry_count == 3
    assert result.covered_entry_ids == {7, 6, 5}
    assert result.left_entry_ids == {1, 2, 3, 4}


def test_source_diversity_lets_a_second_outlet_in() -> None:
    rows = [
        match(1, score=0.90, outlet="Prolific"),
        match(2, score=0.89, outlet="Prolific"),
        match(3, score=0.85, outlet="Other"),
    ]
    result = compose(rows, catalog=CATALOG, now=NOW, max_items=2)
    assert result.covered_entry_ids == {1, 3}


def test_rank_value_orders_its_inputs() -> None:
    hour = timedelta(hours=1)
    assert rank_value(0.9, hour, 1) > rank_value(0.8, hour, 1)
    assert rank_value(0.8, hour, 1) > rank_value(0.8, 24 * hour, 1)
    assert rank_value(0.8, hour, 4) > rank_value(0.8, hour, 1)


def test_max_items_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        compose([match(1)], catalog=CATALOG, now=NOW, max_items=0)
