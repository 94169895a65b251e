"""The matcher on sentences written for these tests (and the catalog's own example sentences)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from bot.matching.catalog import load_catalog
from bot.matching.matcher import Matcher, calibrated
from bot.matching.records import Item

CATALOG = load_catalog()
MATCHER = Matcher(CATALOG)


def themes_of(title: str, summary: str = "", content: str | None = None) -> list[str]:
    result = MATCHER.match(Item(id="t", title=title, summary=summary, content=content))
    return [m.theme_id for m in result.themes]


@pytest.mark.parametrize(
    ("theme_id", "sentence"),
    [(t.id, s) for t in CATALOG.themes.values() for s in t.positive_examples],
)
def test_every_positive_example_of_the_catalog_matches_its_theme(
    theme_id: str, sentence: str
) -> None:
    assert theme_id in themes_of(sentence)


@pytest.mark.parametrize(
    ("theme_id", "sentence"),
    [(t.id, s) for t in CATALOG.themes.values() for s in t.negative_examples],
)
def test_no_negative_example_of_the_catalog_matches_its_theme(theme_id: str, sentence: str) -> None:
    assert theme_id not in themes_of(sentence)


def test_the_labelling_rule_examples_from_the_spec() -> None:
    assert "putin-deal" in themes_of("Kremlin rejects the US ceasefire plan for Ukraine")
    assert themes_of("Russia and Ukraine trade drone strikes") == []


def test_naming_a_country_is_not_enough() -> None:
    assert themes_of("Russian pianist wins the Chopin competition in Warsaw") == []
    assert themes_of("Iranian chess champion defends her title") == []
    assert themes_of("Venezuela beat Cuba in the Caribbean baseball final") == []


def test_transliterations_are_the_same_person() -> None:
    for spelling in ("Zelensky", "Zelenskyy", "Zelenskiy"):
        title = f"Trump blames {spelling} for the war and says Ukraine has no cards"
        assert "pressure-on-kyiv" in themes_of(title), spelling


def test_the_pronoun_us_is_not_the_united_states() -> None:
    # Only the capitalised acronym counts as the United States.
    assert "pressure-on-kyiv" in themes_of("US blames Kyiv for stalled talks and halts aid")
    assert "pressure-on-kyiv" not in themes_of("Let us blame nobody, says Kyiv teacher")


def test_a_backers_label_is_not_a_mention_of_the_backer() -> None:
    title = "Iran-backed Houthis fire missiles at a cargo ship in the Red Sea"
    assert "iran-war-diplomacy" not in themes_of(title)
    # the same words with Iran as the actor are the war
    assert "iran-war-diplomacy" in themes_of("Iran fires missiles at Israel after US strikes")


def test_the_excerpt_keeps_a_backers_label_as_written() -> None:
    sentence = (
        "Iran-backed militias in Iraq vowed to attack US bases after US strikes on Iran's"
        " nuclear sites."
    )
    result = MATCHER.match(Item(id="t", title="Pentagon weighs its options", summary=sentence))
    assert [(m.theme_id, m.excerpt) for m in result.themes] == [("iran-war-diplomacy", sentence)]


def test_result_carries_score_evidence_and_an_excerpt_that_shows_why() -> None:
    result = MATCHER.match(
        Item(
            id="a",
            title="Kremlin rejects the US ceasefire plan",
            summary=(
                "The weather in Moscow was cold. “We will not accept a ceasefire that lets "
                "Ukraine rearm,” Peskov told reporters."
            ),
        )
    )
    match = next(m for m in result.themes if m.theme_id == "putin-deal")
    assert 0.5 <= match.score <= 1.0
    assert any("Kremlin" in e for e in match.evidence)
    assert match.excerpt.startswith("“We will not accept a ceasefire")
    assert "Peskov" in match.excerpt


def test_claims_attach_when_the_item_bears_on_their_subject() -> None:
    result = MATCHER.match(
        Item(id="c", title="Putin says Russia is ready for talks to end the war in Ukraine")
    )
    assert "putin-ready-to-deal" in [c.claim_id for c in result.claims]
    unrelated = MATCHER.match(Item(id="d", title="Iran fires missiles at Israel after US strikes"))
    assert "putin-ready-to-deal" not in [c.claim_id for c in unrelated.claims]


def test_a_passing_mention_deep_in_a_long_article_is_not_enough() -> None:
    body = " ".join(f"Paragraph {n} is about the local election in Ohio." for n in range(30))
    passing = body + " Separately, the Kremlin said talks on Ukraine would continue."
    assert "putin-deal" not in themes_of("Ohio votes", "Voters went to the polls.", passing)
    carried = (
        "The Kremlin said talks on Ukraine would continue next week. "
        + body
        + " Putin insisted the peace plan must recognise Russia's gains in Ukraine. "
        + "Peskov said negotiations with the US envoy Witkoff on the Ukraine war were useful."
    )
    assert "putin-deal" in themes_of("Ohio votes", "Voters went to the polls.", carried)


def test_content_stands_in_for_a_missing_summary() -> None:
    content = "<p>The Kremlin rejected the US ceasefire proposal for Ukraine on Monday.</p>"
    assert "putin-deal" in themes_of("Monday briefing", "", content)


def test_scores_are_calibrated_around_one_unit_of_evidence() -> None:
    assert calibrated(1.0) == pytest.approx(0.5)
    assert calibrated(0.0) < 0.05 < 0.95 < calibrated(2.0)


def test_match_is_thread_safe_and_deterministic() -> None:
    items = [
        Item(id=str(n), title=t)
        for n, t in enumerate(
            [
                "Kremlin rejects the US ceasefire plan for Ukraine",
                "US warplanes strike nuclear sites in Iran",
                "Russia condemns US strikes on Iran but offers no military help",
                "Cuba blackout after grid failure",
            ]
            * 25
        )
    ]
    expected = [MATCHER.match(i) for i in items]
    with ThreadPoolExecutor(max_workers=4) as pool:
        assert list(pool.map(MATCHER.match, items)) == expected
