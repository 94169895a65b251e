"""Discord rendering: golden files, hostile feed text, and every limit on every payload.

The digests here are small fixtures written for these tests (sample text, not news). Regenerate
the golden files after an intended change with ``COUNTERPARTY_UPDATE_GOLDEN=1``.
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import discord
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.commands.answers import (
    ClaimAnswer,
    ClaimInfo,
    ClaimsAnswer,
    DigestPreviewAnswer,
    FeedInfo,
    FeedsAnswer,
    MatchedItem,
    Notice,
    SearchAnswer,
    StatusAnswer,
    SubscriptionInfo,
    SubscriptionsAnswer,
    ThemeAnswer,
    ThemeInfo,
    ThemesAnswer,
)
from bot.delivery.discord.render import (
    EMBEDS_MAX,
    MESSAGE_EMBED_CHARS_MAX,
    clip,
    embed_chars,
    escape,
    payload_problems,
    render_answer,
    render_digest,
    safe_url,
)
from bot.digest.records import AlsoReported, Digest, DigestEntry, DigestSection

GOLDEN = Path(__file__).parent / "golden"
NOW = datetime(2026, 3, 7, 8, 0, tzinfo=UTC)

HOSTILE = (
    "@everyone @here <@123456789012345678> <@!123456789012345678> <@&223456789012345678> "
    "<#323456789012345678> [click me](https://evil.example/phish) **bold** __under__ ~~gone~~ "
    "||spoiler|| `code` ```block``` </ping:1> <:emo:423456789012345678> <t:0:R>"
)


def entry(
    n: int, *, title: str | None = None, excerpt: str | None = None, **kw: object
) -> DigestEntry:
    values: dict[str, object] = {
        "entry_id": n,
        "title": title if title is not None else f"Sample headline number {n}",
        "outlet": f"Sample Outlet {n % 3}",
        "link": f"https://news.example/{n}",
        "published": NOW - timedelta(hours=n),
        "excerpt": excerpt if excerpt is not None else f"A sample quote excerpt for item {n}.",
        "score": 0.9 - n / 1000,
        "theme_ids": ("putin-deal",),
    }
    values.update(kw)
    return DigestEntry(**values)  # type: ignore[arg-type]


def digest(*sections: DigestSection) -> Digest:
    return Digest(
        generated_at=NOW,
        window_start=NOW - timedelta(hours=6),
        window_end=NOW,
        sections=sections,
        subscription_id=1,
    )


def section(ref: str, entries: tuple[DigestEntry, ...], kind: str = "theme") -> DigestSection:
    return DigestSection(
        kind=kind,
        ref_id=ref,
        title=f"Sample title for {ref}",
        framing=f"Sample framing sentence for {ref}.",
        entries=entries,
    )


def sample_digest() -> Digest:
    shared = entry(1, theme_ids=("putin-deal", "pressure-on-kyiv"))
    return digest(
        section(
            "putin-deal",
            (
                shared,
                entry(
                    2,
                    also_reported=(
                        AlsoReported("Other Sample Wire", "https://wire.example/2"),
                        AlsoReported("Third Sample Paper", None),
                    ),
                ),
            ),
        ),
        section("pressure-on-kyiv", (entry(3, theme_ids=("pressure-on-kyiv",)),)),
        section(
            "putin-ready-to-deal",
            (entry(4, claim_ids=("putin-ready-to-deal",), theme_ids=("putin-deal",)),),
            kind="claim",
        ),
    )


def all_text(payloads: list[dict[str, object]]) -> str:
    return json.dumps(payloads, ensure_ascii=False)


def check_golden(name: str, payloads: list[dict[str, object]]) -> None:
    path = GOLDEN / f"discord_{name}.json"
    text = json.dumps(payloads, indent=2, ensure_ascii=False) + "\n"
    if os.environ.get("COUNTERPARTY_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"{path} missing: run with COUNTERPARTY_UPDATE_GOLDEN=1 once"
    assert text == path.read_text(encoding="utf-8")


def assert_postable(payloads: list[dict[str, object]]) -> None:
    assert payloads
    for payload in payloads:
        assert payload_problems(payload) == []
        # discord.py itself accepts each embed
        for raw in payload["embeds"]:  # type: ignore[attr-defined]
            discord.Embed.from_dict(raw)


def assert_inert(text: str) -> None:
    """No ping, no mention, no formatting, no masked link other than our own ``[link](...)``."""
    assert not re.search(r"@(everyone|here)", text, re.IGNORECASE), text
    assert not re.search(r"<[@#:/]|<a:|<t:0", text), text
    masked = re.findall(r"(?<!\\)\[([^\]]*)(?<!\\)\]\(", text)
    assert set(masked) <= {"link"}, masked
    for marker in ("**", "__", "~~", "||"):
        assert not re.search(rf"(?<!\\){re.escape(marker[0])}(?<!\\){re.escape(marker[1])}", text)


# --- golden files ---------------------------------------------------------------------------


def test_digest_golden() -> None:
    payloads = render_digest(sample_digest())
    assert_postable(payloads)
    check_golden("digest", payloads)


def test_answers_golden() -> None:
    theme = ThemeInfo("putin-deal", "Sample theme", "Sample description.", "Sample essay quote.")
    claim = ClaimInfo(
        "putin-ready-to-deal",
        "Sample Claimant",
        "A sample claim quote.",
        "Sample source",
        "March 2026",
        "Sample comment.",
        ("putin-deal",),
    )
    item = MatchedItem(
        7,
        "Sample item",
        "Sample Outlet",
        "https://news.example/7",
        NOW,
        "Ex.",
        0.8,
        ("putin-deal",),
    )
    sub = SubscriptionInfo(
        3,
        "discord",
        "<#123456789012345678>",
        None,
        (),
        "6h",
        0.5,
        10,
        True,
        "Missing Access (403)",
        None,
    )
    feed = FeedInfo(
        1,
        "https://feeds.example/rss",
        "Sample feed",
        "config",
        True,
        "failing",
        NOW,
        "timed out",
        3,
        12,
    )
    answers = [
        Notice("Subscribed."),
        Notice("Unknown theme 'x'.", ok=False),
        ThemesAnswer((theme,)),
        ThemeAnswer(theme, (claim,), (item,)),
        ClaimsAnswer((claim,)),
        ClaimAnswer(claim, (item,)),
        SubscriptionsAnswer((sub,)),
        DigestPreviewAnswer(None, subscribed=False),
        DigestPreviewAnswer(sample_digest(), subscribed=True),
        SearchAnswer("ceasefire", (item,)),
        FeedsAnswer((feed,)),
        StatusAnswer(4, (sub,), 2, 1, 10, 1, 3, NOW),
    ]
    rendered = [render_answer(a) for a in answers]
    for payloads in rendered:
        assert_postable(payloads)
    check_golden("answers", [p for payloads in rendered for p in payloads])


# --- hostile feed text -----------------------------------------------------------------------


def test_hostile_feed_text_is_inert_and_visible() -> None:
    hostile = entry(1, title=HOSTILE, excerpt=HOSTILE, outlet=HOSTILE, link="javascript:alert(1)")
    payloads = render_digest(digest(section("putin-deal", (hostile,))))
    assert_postable(payloads)
    field = payloads[0]["embeds"][0]["fields"][0]
    assert_inert(field["name"])
    assert_inert(field["value"])
    assert "javascript" not in field["value"]
    # the words are still there for a reader
    assert "everyone" in field["name"]
    assert "click me" in field["name"]


def test_masked_link_in_feed_link_cannot_break_out() -> None:
    tricky = entry(1, link="https://news.example/a)[evil](https://evil.example")
    value = render_digest(digest(section("putin-deal", (tricky,))))[0]["embeds"][0]["fields"][0][
        "value"
    ]
    links = re.findall(r"\[link\]\(([^)]*)\)", value)
    assert len(links) == 1
    assert " " not in links[0]
    assert "(" not in links[0]
    assert re.findall(r"(?<!\\)\[([^\]]*)(?<!\\)\]\(", value) == ["link"]


def test_newlines_cannot_start_headings_or_quotes() -> None:
    text = escape("# Heading\n> quote\n- list\n1. numbered")
    assert "\n" not in text
    assert text.startswith("\\#")


@given(st.text(alphabet=st.sampled_from(list("@<>#&!:[]()*_~|`\\ ehvryonad1234")), max_size=80))
def test_escape_never_yields_a_mention_or_masked_link(text: str) -> None:
    out = escape(text, max_length=40)
    assert len(out) <= 40
    assert_inert(out)
    assert not re.search(r"(?<!\\)(\\\\)*\\$", out[:-1]) or not out.endswith("…")


def test_clip_never_leaves_a_dangling_backslash() -> None:
    assert clip("ab\\*cd", 4) == "ab…"
    assert clip("short", 10) == "short"
    assert len(clip("x" * 300, 256)) == 256


def test_safe_url() -> None:
    assert safe_url("https://a.example/x y(1)") == "https://a.example/x%20y%281%29"
    assert safe_url("ftp://a.example/") is None
    assert safe_url("/relative") is None
    assert safe_url(None) is None


# --- limits ----------------------------------------------------------------------------------


def test_ten_kilobyte_titles_and_excerpts_are_clipped() -> None:
    big = entry(1, title="T" * 10_000, excerpt="E" * 10_000, outlet="O" * 10_000)
    payloads = render_digest(digest(section("putin-deal", (big,))))
    assert_postable(payloads)
    field = payloads[0]["embeds"][0]["fields"][0]
    assert field["name"].endswith("…")
    assert len(field["name"]) == 256


def test_many_entries_split_across_embeds_and_messages_without_losing_any() -> None:
    sections = tuple(
        section(
            f"theme-{s}",
            tuple(
                entry(s * 100 + n, title=f"Item {s}-{n} " + "w" * 200, excerpt="q " * 300)
                for n in range(40)
            ),
        )
        for s in range(4)
    )
    payloads = render_digest(digest(*sections))
    assert len(payloads) > 1
    assert_postable(payloads)
    names = [f["name"] for p in payloads for e in p["embeds"] for f in e.get("fields", [])]
    assert len(names) == 160
    for s in range(4):
        for n in range(40):
            assert any(name.startswith(f"Item {s}-{n} ") for name in names)
    for payload in payloads:
        assert len(payload["embeds"]) <= EMBEDS_MAX
        assert sum(embed_chars(e) for e in payload["embeds"]) <= MESSAGE_EMBED_CHARS_MAX
    # the footer is on the very last embed only
    footers = [e for p in payloads for e in p["embeds"] if "footer" in e]
    assert footers == [payloads[-1]["embeds"][-1]]


def test_huge_framing_and_many_small_sections() -> None:
    sections = tuple(
        DigestSection("theme", f"t{i}", "T" * 400, "F" * 5000, (entry(i),)) for i in range(30)
    )
    payloads = render_digest(digest(*sections))
    assert_postable(payloads)
    assert sum(len(p["embeds"]) for p in payloads) == 30


def test_empty_digest_renders_nothing() -> None:
    assert render_digest(digest(section("putin-deal", ()))) == []


def test_payload_problems_reports_each_broken_limit() -> None:
    bad = {
        "content": "c" * 2001,
        "embeds": [{"title": "t" * 257, "fields": [{"name": "", "value": "v" * 1025}] * 26}] * 11,
    }
    problems = "\n".join(payload_problems(bad))
    for fragment in (
        "content",
        "11 embeds",
        "title",
        "fields is 26",
        "value",
        "empty name",
        "total",
    ):
        assert fragment in problems


@pytest.mark.parametrize("answer", [SearchAnswer("x" * 5000, ()), Notice("n" * 9000, ok=False)])
def test_answers_with_huge_user_input_stay_postable(answer: SearchAnswer | Notice) -> None:
    assert_postable(render_answer(answer))
