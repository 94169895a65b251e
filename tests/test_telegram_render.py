"""Telegram rendering: golden digests, escaping of hostile feed text, splitting at 4,096.

Every rendered message is checked the way Telegram checks it (``check_telegram_html``: only its
tags, balanced and nested, known entities, at most 4,096 UTF-16 units).

Set ``COUNTERPARTY_UPDATE_GOLDEN=1`` to rewrite the golden files after an intended change, then
review the diff like any other code change."""

from __future__ import annotations

import html
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.delivery.telegram.render import (
    TEXT_LIMIT,
    Block,
    TelegramMessage,
    TelegramRenderer,
    escape_text,
    pack_blocks,
    render_digest,
    safe_href,
    telegram_length,
    truncate_html,
)
from bot.digest.compose import compose
from bot.digest.records import AlsoReported, Digest, DigestEntry, DigestSection
from tests.digest_fixtures import CATALOG, NOW, match
from tests.support.fake_telegram import TelegramHtmlError, check_telegram_html

GOLDEN = Path(__file__).parent / "golden"
BREAK = "\n<!-- ===== next message ===== -->\n"


def check_golden(name: str, messages: list[TelegramMessage]) -> None:
    text = BREAK.join(m.text for m in messages) + "\n"
    path = GOLDEN / name
    if os.environ.get("COUNTERPARTY_UPDATE_GOLDEN") == "1":
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8")


def assert_valid(messages: list[TelegramMessage]) -> list[str]:
    """Every message fits and parses as Telegram HTML; returns the visible texts."""
    visible = []
    for message in messages:
        assert telegram_length(message.text) <= TEXT_LIMIT
        assert len(message.text.encode("utf-16-le")) // 2 <= TEXT_LIMIT
        visible.append(check_telegram_html(message.text))
    return visible


def entry(entry_id: int, **changes: object) -> DigestEntry:
    base: dict[str, object] = {
        "entry_id": entry_id,
        "title": f"Invented headline number {entry_id}",
        "outlet": "Outlet A",
        "link": f"https://example.org/{entry_id}",
        "published": NOW - timedelta(hours=1),
        "excerpt": "An invented excerpt that a reader would want to see.",
        "score": 0.8,
        "theme_ids": ("putin-deal",),
    }
    base.update(changes)
    return DigestEntry(**base)  # type: ignore[arg-type]


def digest_of(*entries: DigestEntry, framing: str = "Talks and envoys.") -> Digest:
    section = DigestSection("theme", "putin-deal", "Is Putin ready to deal?", framing, entries)
    return Digest(
        generated_at=NOW,
        window_start=NOW - timedelta(hours=6),
        window_end=NOW,
        sections=(section,),
    )


# -- golden files ---------------------------------------------------------------------------


def test_mixed_digest_matches_golden() -> None:
    rows = [
        match(1, "putin-deal", score=0.92, outlet="Outlet A", story_key="talks",
              title="Envoys meet again on an invented ceasefire draft"),
        match(2, "putin-deal", score=0.81, outlet="Outlet B", story_key="talks"),
        match(3, "putin-deal", score=0.7, outlet="Outlet C", story_key="talks"),
        match(4, "russia-overstretched", score=0.77, outlet="Outlet B", hours_ago=5,
              title="Invented report: recruitment bonuses raised again"),
        match(4, "words-not-deeds", score=0.55, outlet="Outlet B", hours_ago=5),
        match(5, "words-not-deeds", score=0.6, outlet="Outlet D", hours_ago=2,
              title="Invented statement condemns a strike on a partner"),
        match(5, "not-our-war", kind="claim", score=0.66, outlet="Outlet D", hours_ago=2),
    ]  # fmt: skip
    result = compose(rows, catalog=CATALOG, now=NOW, max_items=10)
    assert result.digest is not None
    messages = render_digest(result.digest)
    visible = assert_valid(messages)
    assert len(messages) == 1
    # Entry 4 matches two themes: shown once, tagged with the other one.
    assert visible[0].count("recruitment bonuses") == 1
    assert "Also under: words-not-deeds" in visible[0]
    assert "Also reported by Outlet B, Outlet C" in visible[0]
    check_golden("telegram_mixed.html", messages)


HOSTILE_TITLE = 'Breaking: <script>alert("x")</script> & "unbalanced \' quotes </b><i>'


def test_hostile_feed_text_is_escaped_and_matches_golden() -> None:
    hostile = digest_of(
        entry(1, title=HOSTILE_TITLE, outlet="<b>Outlet</b> & Co", link='javascript:alert("x")'),
        entry(
            2,
            title="Fish &amp; chips &lt;not a tag&gt; &#65; &bogus;",
            excerpt="He said <<quote>> and left; 3 < 4 > 2 && true\x00\x07",
            link='https://example.org/a?b=1&c="><b>x</b>',
            also_reported=(AlsoReported("Outlet <i>B", "data:text/html,hi"),),
        ),
        entry(3, title="T" * 10_000, excerpt="E" * 10_000),
    )
    messages = render_digest(hostile)
    visible = assert_valid(messages)
    text = "\n".join(visible)
    # Feed text comes out as the reader's characters, never as markup.
    assert HOSTILE_TITLE.replace("  ", " ") in text
    assert "<b>Outlet</b> & Co" in text
    assert "Fish &amp; chips &lt;not a tag&gt; &#65; &bogus;" in text
    assert "He said <<quote>> and left; 3 < 4 > 2 && true" in text
    assert "\x00" not in text
    assert "\x07" not in text
    # No javascript: or data: link survives; the https link keeps its query, quotes escaped.
    joined = "".join(m.text for m in messages)
    assert 'href="javascript' not in joined
    assert 'href="data:' not in joined
    assert 'href="https://example.org/a?b=1&amp;c=&quot;&gt;&lt;b&gt;x&lt;/b&gt;"' in joined
    # The 10 KB title is cut with an ellipsis, not dropped.
    assert "T" * 300 in text
    assert "T" * 1000 not in text
    assert "T…" in text
    check_golden("telegram_hostile.html", messages)


def test_a_long_digest_splits_between_entries_and_matches_golden() -> None:
    excerpt = (
        "An invented excerpt, long enough that a dozen of them need two messages: the envoy "
        "said talks would resume, the spokesman said nothing had been agreed, and analysts "
        "disagreed about what either side could give up. "
    ) * 2
    entries = [
        entry(i, title=f"Invented headline {i:02d}: talks & terms", excerpt=excerpt)
        for i in range(12)
    ]
    messages = render_digest(digest_of(*entries))
    assert len(messages) == 2
    visible = assert_valid(messages)
    assert visible[0].endswith("(1/2)")
    assert visible[1].startswith("🧭 Is Putin ready to deal? (continued)")
    check_golden("telegram_split.html", messages)


# -- splitting ------------------------------------------------------------------------------


def test_two_hundred_entries_split_on_entry_boundaries() -> None:
    entries = [entry(i, title=f"Story {i:03d} & <more>", excerpt="Words " * 60) for i in range(200)]
    messages = render_digest(digest_of(*entries))
    visible = assert_valid(messages)
    assert len(messages) > 5
    for i, text in enumerate(visible, 1):
        assert text.rstrip().endswith(f"({i}/{len(messages)})")
    # Every entry exactly once, whole (title and its excerpt in the same message), in order.
    seen = []
    for text in visible:
        for i in range(200):
            label = f"Story {i:03d} & <more>"
            if label in text:
                seen.append(i)
                block = text[text.index(label) :]
                assert "Words Words" in block
    assert seen == list(range(200))
    # A continuation message starts with its section heading.
    assert all(text.startswith("🧭 Is Putin ready to deal? (continued)") for text in visible[1:])


def test_an_entry_too_long_alone_is_truncated_not_split() -> None:
    big = entry(
        1,
        title="&" * 5000,
        excerpt="<" * 5000,
        outlet="O" * 5000,
        link="https://example.org/" + "p" * 5000,
        also_reported=tuple(
            AlsoReported("&" * 500, "https://x.org/" + "q" * 600) for _ in range(20)
        ),
        theme_ids=("putin-deal", *(f"t{i}" for i in range(30))),
    )
    messages = render_digest(digest_of(big, framing="F" * 5000))
    visible = assert_valid(messages)
    assert len(messages) == 1
    assert "&&&" in visible[0]
    assert "<<<" in visible[0]


@given(
    title=st.text(max_size=300),
    excerpt=st.text(max_size=2000),
    outlet=st.text(max_size=80),
    link=st.one_of(st.none(), st.text(max_size=60), st.just('https://e.org/<&">')),
    count=st.integers(min_value=1, max_value=40),
)
@settings(max_examples=60, deadline=None)
def test_any_feed_text_renders_to_valid_messages(
    title: str, excerpt: str, outlet: str, link: str | None, count: int
) -> None:
    entries = [
        entry(i, title=title + str(i), excerpt=excerpt, outlet=outlet, link=link)
        for i in range(count)
    ]
    messages = render_digest(digest_of(*entries))
    visible = assert_valid(messages)
    joined = "\n".join(visible)
    # The title reaches the reader as text (whitespace folded, control characters dropped).
    shown = escape_text(title + str(count - 1))
    assert html.unescape(shown) in joined


# -- the pieces -----------------------------------------------------------------------------


def test_empty_digest_gives_no_message() -> None:
    assert render_digest(digest_of()) == []


@pytest.mark.parametrize("budget", [1, 5, 10, 37, 100])
def test_truncate_html_stays_valid_and_within_budget(budget: int) -> None:
    fragment = '<b><a href="https://e.org/?a=1&amp;b=2">Fish &amp; chips</a></b> <i>x&lt;y</i>'
    cut = truncate_html(fragment, budget)
    assert telegram_length(cut) <= max(budget, 1) or cut == "…"
    if cut != "…":
        check_telegram_html(cut)
    assert "&am…" not in cut
    assert "&a…" not in cut


def test_truncate_html_keeps_a_fragment_that_fits() -> None:
    fragment = "<b>short</b>"
    assert truncate_html(fragment, 100) == fragment


def test_escape_text_never_cuts_inside_an_entity() -> None:
    for budget in range(2, 30):
        out = escape_text("&" * 50, budget=budget)
        assert telegram_length(out) <= budget
        assert out.endswith("…")
        assert out[:-1].replace("&amp;", "") == ""


def test_astral_characters_count_twice() -> None:
    assert telegram_length("📰") == 2
    out = escape_text("📰" * 100, budget=11)
    assert telegram_length(out) <= 11


@pytest.mark.parametrize(
    ("link", "expected"),
    [
        ("https://example.org/a?b=1&c=2", "https://example.org/a?b=1&amp;c=2"),
        ("http://example.org/\"'", "http://example.org/&quot;&#x27;"),
        ("javascript:alert(1)", None),
        ("data:text/html,x", None),
        ("https://", None),
        ("https://exa mple.org/", None),
        ("ftp://example.org/", None),
        ("https://example.org/" + "x" * 3000, None),
        (None, None),
    ],
)
def test_safe_href(link: str | None, expected: str | None) -> None:
    assert safe_href(link) == expected


def test_pack_blocks_keeps_headers_with_their_first_block() -> None:
    header = Block(html="<b>Header</b>", keep_with_next=True)
    body = Block(html="x" * 3000, heading="<b>Header</b>")
    texts = pack_blocks([Block(html="y" * 3000), header, body], limit=TEXT_LIMIT)
    assert len(texts) == 2
    assert texts[1].startswith("<b>Header</b>\n\n" + "x" * 10)


def test_renderer_payloads_round_trip_with_previews_off() -> None:
    payloads = TelegramRenderer().render(digest_of(entry(1)))
    assert len(payloads) == 1
    assert payloads[0]["parse_mode"] == "HTML"
    assert payloads[0]["link_preview"] is False
    assert TelegramMessage.from_payload(payloads[0]).text == payloads[0]["text"]


@pytest.mark.parametrize(
    "payload",
    [{}, {"text": ""}, {"text": 3}, {"text": "x" * 5000}, {"text": "x", "parse_mode": "Markdown"}],
)
def test_a_bad_payload_is_refused_with_a_reason(payload: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"text|characters|parse_mode"):
        TelegramMessage.from_payload(payload)


def test_the_html_checker_itself_catches_bad_markup() -> None:
    for bad in ["<b>x", "x</b>", "<script>x</script>", "a & b", "<b><i>x</b></i>", "&nbsp;"]:
        with pytest.raises(TelegramHtmlError):
            check_telegram_html(bad)


def test_times_are_shown_in_utc_whatever_the_input_zone() -> None:
    kyiv = datetime(2026, 3, 6, 14, 5, tzinfo=UTC).astimezone(ZoneInfo("Europe/Kyiv"))
    (message,) = render_digest(digest_of(entry(1, published=kyiv)))
    assert "6 Mar 14:05 UTC" in message.text
