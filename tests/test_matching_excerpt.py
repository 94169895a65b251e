"""Excerpts: sentence splitting, cutting at sentence/word boundaries, quotations kept whole."""

from __future__ import annotations

from bot.matching.excerpt import ELLIPSIS, Candidate, choose_excerpt, clip, quote_kind
from bot.matching.text import fold, plain_text, split_sentences


def test_split_keeps_abbreviations_and_quotations_inside_sentences() -> None:
    text = (
        'Mr. Lavrov met the U.S. envoy in Riyadh. "We are ready. We are waiting," he said. '
        "Talks resume on Monday."
    )
    assert split_sentences(text) == [
        "Mr. Lavrov met the U.S. envoy in Riyadh.",
        '"We are ready. We are waiting," he said.',
        "Talks resume on Monday.",
    ]


def test_split_on_curly_quotes_and_initials() -> None:
    text = "Dmitri S. Peskov spoke. “It is not. Our war,” he said. Then he left."
    assert split_sentences(text) == [
        "Dmitri S. Peskov spoke.",
        "“It is not. Our war,” he said.",
        "Then he left.",
    ]


def test_fold_keeps_length_and_plain_text_strips_markup() -> None:
    original = "Díaz-Canel’s “blockade” — Zelenskyy"
    assert len(fold(original)) == len(original)
    assert fold(original) == 'Diaz-Canel\'s "blockade" - Zelenskyy'
    assert plain_text("<p>One &amp; two</p><p>Three</p>") == "One & two\nThree"


def test_clip_returns_short_text_unchanged_and_cuts_long_text_at_sentence_end() -> None:
    assert clip("Short sentence.", 300) == "Short sentence."
    first = "The Kremlin said talks would resume next week in Istanbul. " * 3
    text = first + "x" * 400
    out = clip(text, 300)
    assert len(out) <= 300
    assert out.endswith("Istanbul.")


def test_clip_cuts_between_words_with_an_ellipsis() -> None:
    text = " ".join(["word"] * 200)
    out = clip(text, 100)
    assert len(out) <= 100
    assert out.endswith(ELLIPSIS)
    assert out[: -len(ELLIPSIS)].split() == ["word"] * len(out[: -len(ELLIPSIS)].split())


def test_clip_does_not_cut_inside_a_quotation_when_it_can_cut_before_it() -> None:
    lead = "Officials in Moscow gave a long briefing on the state of the negotiations with Kyiv "
    quote = '"we will never give up the territories that belong to us by right and by history"'
    text = lead + "and the spokesman added " + quote + " before leaving the podium again"
    out = clip(text, 150)
    assert len(out) <= 150
    assert '"' not in out  # the quotation did not fit, so the cut falls before it
    assert out.endswith(ELLIPSIS)


def test_quote_kind_tells_attributed_quotes_from_scare_quotes() -> None:
    assert quote_kind('"The war that is going on is not our war," Peskov said.') == 2
    assert quote_kind('The talks were "unacceptable" to Kyiv.') == 0
    assert quote_kind('"This is the end of an era for the whole region"') == 1


def test_choose_excerpt_prefers_an_attributed_quotation() -> None:
    candidates = [
        Candidate("Russia offered Iran its sympathy after the strikes.", 2.0, 0),
        Candidate('"The war that is going on is not our war," Peskov said of Iran.', 2.0, 1),
        Candidate("Weather was fine.", 0.0, 2),
    ]
    assert choose_excerpt(candidates, title="T").startswith('"The war')


def test_choose_excerpt_falls_back_to_the_title_when_no_sentence_is_relevant() -> None:
    candidates = [Candidate("Nothing to see here at all today.", 0.0, 0)]
    assert choose_excerpt(candidates, title="Kremlin rejects plan") == "Kremlin rejects plan"


def test_choose_excerpt_adds_the_next_sentence_when_both_fit() -> None:
    candidates = [
        Candidate("Kremlin rejects the plan.", 2.0, 0),
        Candidate("Peskov said more talks were needed.", 1.0, 1),
    ]
    out = choose_excerpt(candidates, title="T", limit=300)
    assert out == "Kremlin rejects the plan. Peskov said more talks were needed."


def test_a_richer_title_beats_a_weak_sentence() -> None:
    candidates = [Candidate("The talks lasted only two hours.", 1.0, 0)]
    out = choose_excerpt(
        candidates, title="US-Iran nuclear talks begin in Oman", title_relevance=3.0
    )
    assert out == "US-Iran nuclear talks begin in Oman"
    strong = [Candidate("Iran and the US began nuclear talks in Muscat.", 3.0, 0)]
    out = choose_excerpt(strong, title="Talks begin", title_relevance=3.0)
    assert out == "Iran and the US began nuclear talks in Muscat."
