"""Fuzz the path from feed bytes to rendered messages: parse -> match -> compose -> render for
Discord and Telegram. Whatever the bytes, no exception escapes (a document that is not a feed
is a :class:`FeedParseError`, the one expected outcome), and every message is within the
platform's limits and inert: no ping, no formatting or masked link from feed text on Discord,
well-formed HTML with only Telegram's tags and safe links on Telegram.

Every entry is sent through compose and the renderers even when the matcher finds nothing in
it (it is then given a synthetic theme match carrying its own text as the excerpt), so hostile
text always reaches the renderers.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import ClassVar
from xml.sax.saxutils import escape as xml_escape

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from bot.delivery.discord.render import DiscordRenderer, payload_problems
from bot.delivery.telegram.render import TEXT_LIMIT, TelegramRenderer, telegram_length
from bot.digest.compose import PendingMatch, compose
from bot.feeds.parse import FeedParseError, parse_feed
from bot.matching.catalog import load_catalog
from bot.matching.matcher import Matcher
from bot.matching.records import Item

NOW = datetime(2026, 3, 6, 12, tzinfo=UTC)
CATALOG = load_catalog(None)
MATCHER = Matcher(CATALOG)
FIRST_THEME = next(iter(CATALOG.themes))

# Text that is hostile somewhere: Discord markdown and mentions, Telegram HTML, entities,
# masked links, bidi controls, zero-width characters, astral characters.
HOSTILE = [
    "@everyone", "@here", "<@123456789012345678>", "<@&123456789012345678>", "<#1234>",
    "**bold**", "__u__", "~~s~~", "||spoiler||", "`code`", "```block```", "# Heading",
    "> quote", "[click](https://evil.example)", "[link](javascript:alert(1))", "<b>", "</a>",
    '<a href="https://evil.example">x</a>', "&amp;", "&lt;", "&#x40;everyone", "\u202e",
    "\u200b", "\\", "\n", "\r\n", "\t", "😀", "𝕏", "Київ", "تهران", "<script>alert(1)</script>",
    "<![CDATA[x]]>", "]]>", "&nbsp;", "https://t.me/x?start=@here", "<t:0:R>", ":smile:",
]  # fmt: skip

text_part = st.one_of(st.sampled_from(HOSTILE), st.text(max_size=40), st.just("x" * 3000))
feed_text = st.lists(text_part, max_size=6).map("".join)
links = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "https://news.example/a)[evil](https://evil.example",
            "javascript:alert(1)",
            "https://news.example/@everyone",
            "/relative/path",
            "https://news.example/" + "p" * 3000,
            'https://news.example/"><b>x</b>',
        ]
    ),
    st.text(max_size=60).map(lambda s: "https://news.example/" + s),
)
dates = st.one_of(
    st.none(),
    st.datetimes(
        min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
    ).map(lambda d: d.strftime("%a, %d %b %Y %H:%M:%S +0000")),
    st.sampled_from(["not a date", "", "Thu, 31 Feb 2026 25:61:61 +9999"]),
)


@st.composite
def rss_documents(draw: st.DrawFn) -> bytes:
    items = []
    for _ in range(draw(st.integers(0, 5))):
        parts = [f"<title>{xml_escape(draw(feed_text))}</title>"]
        link = draw(links)
        if link is not None:
            parts.append(f"<link>{xml_escape(link)}</link>")
        if draw(st.booleans()):
            parts.append(f"<guid>{xml_escape(draw(st.text(max_size=20)))}</guid>")
        when = draw(dates)
        if when is not None:
            parts.append(f"<pubDate>{xml_escape(when)}</pubDate>")
        description = draw(feed_text)
        if draw(st.booleans()):
            parts.append(f"<description><![CDATA[{description.replace(']]>', '')}]]></description>")
        else:
            parts.append(f"<description>{xml_escape(description)}</description>")
        items.append("<item>" + "".join(parts) + "</item>")
    title = xml_escape(draw(feed_text))
    document = (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
        f"<title>{title}</title><link>https://news.example/</link>"
        f"<description>d</description>{''.join(items)}</channel></rss>"
    )
    encoded = document.encode("utf-8", "surrogatepass")
    # Sometimes damage it: truncate, or splice in random bytes.
    damage = draw(st.sampled_from(["none", "truncate", "splice"]))
    if damage == "truncate" and encoded:
        encoded = encoded[: draw(st.integers(0, len(encoded)))]
    elif damage == "splice":
        at = draw(st.integers(0, len(encoded)))
        encoded = encoded[:at] + draw(st.binary(max_size=30)) + encoded[at:]
    return encoded


feed_bytes = st.one_of(rss_documents(), st.binary(max_size=500))


class _TelegramHtmlChecker(HTMLParser):
    ALLOWED: ClassVar[frozenset[str]] = frozenset(
        {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "a", "code", "pre"}
        | {"blockquote", "tg-spoiler", "span"}
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.stack: list[str] = []
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in self.ALLOWED:
            self.problems.append(f"tag <{tag}>")
        if tag == "a":
            href = dict(attrs).get("href") or ""
            if not re.match(r"https?://", href):
                self.problems.append(f"link to {href!r}")
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack.pop() != tag:
            self.problems.append(f"unbalanced </{tag}>")

    def handle_entityref(self, name: str) -> None:
        if name not in ("lt", "gt", "amp", "quot"):
            self.problems.append(f"entity &{name};")


def telegram_problems(text: str) -> list[str]:
    checker = _TelegramHtmlChecker()
    checker.feed(text)
    checker.close()
    problems = list(checker.problems)
    if checker.stack:
        problems.append(f"unclosed {checker.stack}")
    if telegram_length(text) > TEXT_LIMIT:
        problems.append(f"{telegram_length(text)} UTF-16 units")
    return problems


_OUR_LINK = re.compile(r"\[link\]\(<?[^)\s]*>?\)")
_OUR_TIME = re.compile(r" · <t:-?\d+:f>")


def discord_text_problems(text: str) -> list[str]:
    """Feed text must be inert: our own ``[link](url)`` aside, nothing pings or formats."""
    text = _OUR_TIME.sub("", _OUR_LINK.sub("", text))
    problems = []
    if re.search(r"@(everyone|here)", text, re.IGNORECASE):
        problems.append("a mass mention")
    if re.search(r"<[@#]|<a:|<t:", text):
        problems.append("a user/role/channel mention or timestamp")
    if re.findall(r"(?<!\\)\[[^\]]*(?<!\\)\]\(", text):
        problems.append("a masked link")
    for marker in ("**", "__", "~~", "||"):
        if re.search(rf"(?<!\\){re.escape(marker[0])}(?<!\\){re.escape(marker[1])}", text):
            problems.append(f"formatting {marker}")
    return problems


def pending_for(body: bytes) -> list[PendingMatch]:
    try:
        parsed = parse_feed(body, url="https://news.example/feed.xml", content_type=None)
    except FeedParseError:
        return []
    pending = []
    for n, entry in enumerate(parsed.entries):
        result = MATCHER.match(
            Item(
                id=str(n),
                title=entry.title,
                summary=entry.summary,
                content=entry.content,
                published=entry.published_at,
                source="https://news.example/feed.xml",
                link=entry.link,
            )
        )
        matches = [(t.theme_id, t.score, t.excerpt) for t in result.themes] or [
            (FIRST_THEME, 0.9, (entry.summary or entry.title)[:600])
        ]
        for ref, score, excerpt in matches:
            pending.append(
                PendingMatch(
                    entry_id=n + 1,
                    kind="theme",
                    ref_id=ref,
                    score=score,
                    excerpt=excerpt,
                    title=entry.title or "(untitled)",
                    link=entry.link,
                    outlet=parsed.title or "news.example",
                    published=entry.published_at,
                    first_seen=NOW - timedelta(minutes=n),
                    story_key=entry.story_key,
                )
            )
    return pending


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(feed_bytes)
def test_feed_bytes_to_rendered_messages(body: bytes) -> None:
    pending = pending_for(body)
    event("rendered" if pending else "no entries")
    composition = compose(pending, catalog=CATALOG, now=NOW, max_items=10)
    if composition.digest is None:
        assert not pending
        return
    for payload in DiscordRenderer().render(composition.digest):
        assert payload_problems(payload) == []
        json.dumps(payload)
        for embed in payload.get("embeds") or []:
            texts = [embed.get("title") or "", embed.get("description") or ""]
            texts += [f"{f.get('name')}\n{f.get('value')}" for f in embed.get("fields") or []]
            for text in texts:
                assert discord_text_problems(text) == [], text
    for payload in TelegramRenderer().render(composition.digest):
        assert payload["parse_mode"] == "HTML"
        assert telegram_problems(payload["text"]) == [], payload["text"]
