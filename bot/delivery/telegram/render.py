"""Digests (and any block-structured answer) as Telegram HTML messages.

Pure functions of data. The contract:

* every piece of outside text (feed titles, outlets, excerpts, links) goes through
  :func:`escape_text` or :func:`safe_href`, so nothing a feed writes can open a tag, forge an
  entity or smuggle a ``javascript:`` link;
* every message is at most :data:`TEXT_LIMIT` UTF-16 code units (what Telegram counts), and
  messages are split between blocks (a digest's entries), never inside a tag or an entity;
* a block that is too long on its own is shortened with :func:`truncate_html`, which cuts only
  between characters of text and closes the tags it leaves open;
* digests go out with link previews off (a digest has many links; a preview of the first one
  would dwarf the rest on a phone).

The only tags produced are ``b``, ``i``, ``a`` and ``blockquote`` (see :data:`ALLOWED_TAGS`).
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit

from telegram.constants import MessageLimit

from bot.digest.records import AlsoReported, Digest, DigestEntry, DigestSection

TEXT_LIMIT: int = MessageLimit.MAX_TEXT_LENGTH  # 4096
"""Telegram's limit on ``sendMessage.text``."""

ALLOWED_TAGS = frozenset(
    {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "a", "code", "pre"}
    | {"blockquote", "tg-spoiler", "span", "tg-emoji"}
)
"""Tags Telegram's HTML parse mode accepts (Bot API, "HTML style")."""

ELLIPSIS = "…"
_PART_RESERVE = 24  # room for the "(2/3)" footer added after packing
_HREF_LIMIT = 2048
# C0/C1 control characters other than tab and newline: Telegram rejects or mangles them.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_SPACES = re.compile(r"\s+")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def telegram_length(text: str) -> int:
    """Length as Telegram counts it: UTF-16 code units (an emoji outside the BMP counts 2)."""
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def clean_text(text: str, *, single_line: bool = True) -> str:
    """Drop control characters; with ``single_line``, fold all whitespace runs to one space."""
    text = _CONTROL.sub("", text)
    if single_line:
        return _SPACES.sub(" ", text).strip()
    return "\n".join(_SPACES.sub(" ", line).strip() for line in text.splitlines()).strip()


def escape_text(text: str, *, budget: int | None = None, single_line: bool = True) -> str:
    """Clean and HTML-escape ``text``; if the escaped form would exceed ``budget`` UTF-16 units,
    cut it between characters (never inside ``&amp;``) and end it with an ellipsis."""
    cleaned = clean_text(text, single_line=single_line)
    escaped = html.escape(cleaned, quote=False)
    if budget is None or telegram_length(escaped) <= budget:
        return escaped
    room = budget - len(ELLIPSIS)
    out: list[str] = []
    used = 0
    for ch in cleaned:
        piece = html.escape(ch, quote=False)
        cost = telegram_length(piece)
        if used + cost > room:
            break
        out.append(piece)
        used += cost
    return "".join(out).rstrip() + ELLIPSIS


def safe_href(link: str | None, *, budget: int = _HREF_LIMIT) -> str | None:
    """An escaped ``href`` value for an http(s) link, or ``None`` when the link is unusable
    (another scheme, no host, whitespace inside, or longer than ``budget`` once escaped).

    A link is never truncated: a cut URL points somewhere else."""
    if not link:
        return None
    link = link.strip()
    if _CONTROL.search(link) or any(ch.isspace() for ch in link):
        return None
    try:
        parts = urlsplit(link)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    escaped = html.escape(link, quote=True)
    return escaped if telegram_length(escaped) <= budget else None


def link(text_html: str, href: str | None) -> str:
    """``text_html`` (already escaped) wrapped in a link when ``href`` (from :func:`safe_href`)
    is usable."""
    return f'<a href="{href}">{text_html}</a>' if href else text_html


def format_time(moment: datetime) -> str:
    """``24 Nov 14:05 UTC``: short, unambiguous and independent of the machine's locale."""
    utc = moment.astimezone(UTC)
    return f"{utc.day} {_MONTHS[utc.month - 1]} {utc:%H:%M} UTC"


# ---------------------------------------------------------------------------------------------
# Safe truncation of an HTML fragment


class _Tokenizer(HTMLParser):
    """Splits an HTML fragment into (kind, tag, raw) tokens; kind is start, end, text or entity."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.tokens: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tokens.append(("start", tag, self.get_starttag_text() or f"<{tag}>"))

    def handle_endtag(self, tag: str) -> None:
        self.tokens.append(("end", tag, f"</{tag}>"))

    def handle_data(self, data: str) -> None:
        self.tokens.append(("text", "", data))

    def handle_entityref(self, name: str) -> None:
        self.tokens.append(("entity", "", f"&{name};"))

    def handle_charref(self, name: str) -> None:
        self.tokens.append(("entity", "", f"&#{name};"))


def truncate_html(fragment: str, budget: int) -> str:
    """Shorten a well-formed HTML fragment to at most ``budget`` UTF-16 units.

    Cuts only between text characters or whole entities, drops tags it cannot fit, closes
    every tag left open and marks the cut with an ellipsis. A fragment that fits is returned
    unchanged."""
    if telegram_length(fragment) <= budget:
        return fragment
    parser = _Tokenizer()
    parser.feed(fragment)
    parser.close()
    out: list[str] = []
    open_tags: list[str] = []
    used = 0

    def closing_cost() -> int:
        return sum(len(tag) + 3 for tag in open_tags) + len(ELLIPSIS)

    for kind, tag, raw in parser.tokens:
        cost = telegram_length(raw)
        if kind == "start":
            # An opened tag must also be closed: count its end tag now.
            if used + cost + len(tag) + 3 + closing_cost() > budget:
                break
            out.append(raw)
            open_tags.append(tag)
            used += cost
        elif kind == "end":
            if tag in open_tags:
                out.append(raw)
                used += cost
                del open_tags[len(open_tags) - 1 - open_tags[::-1].index(tag)]
        elif used + cost + closing_cost() <= budget:
            out.append(raw)
            used += cost
        else:
            if kind == "text":
                for ch in raw:
                    ch_cost = telegram_length(ch)
                    if used + ch_cost + closing_cost() > budget:
                        break
                    out.append(ch)
                    used += ch_cost
            break
    out.append(ELLIPSIS)
    out.extend(f"</{tag}>" for tag in reversed(open_tags))
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# Packing blocks into messages


@dataclass(frozen=True, slots=True)
class Block:
    """A unit of a message that is never split across messages.

    ``heading`` is repeated (as "heading (continued)") when the block has to open a new
    message; ``keep_with_next`` keeps a section header on the same message as its first entry.
    """

    html: str
    heading: str | None = None
    keep_with_next: bool = False


@dataclass(frozen=True, slots=True)
class TelegramMessage:
    """One ``sendMessage`` worth of HTML, and whether Telegram may show a link preview."""

    text: str
    link_preview: bool = False
    parse_mode: str = field(default="HTML")

    def payload(self) -> dict[str, Any]:
        """The JSON-ready outbox payload the sender turns back into a ``sendMessage`` call."""
        return {
            "text": self.text,
            "parse_mode": self.parse_mode,
            "link_preview": self.link_preview,
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> TelegramMessage:
        """Read an outbox payload back; raises ``ValueError`` naming what is wrong with it."""
        text = payload.get("text")
        if not isinstance(text, str) or not text.strip():
            raise ValueError("a Telegram payload needs a non-empty 'text'")
        if telegram_length(text) > TEXT_LIMIT:
            raise ValueError(
                f"a Telegram message is at most {TEXT_LIMIT} characters, this one has "
                f"{telegram_length(text)}"
            )
        parse_mode = payload.get("parse_mode", "HTML")
        if parse_mode not in ("HTML", None):
            raise ValueError(f"unsupported parse_mode {parse_mode!r}")
        return cls(
            text=text,
            link_preview=bool(payload.get("link_preview", False)),
            parse_mode=parse_mode or "HTML",
        )


def _continued(heading: str) -> str:
    return f"{heading} <i>(continued)</i>"


def pack_blocks(blocks: Sequence[Block], *, limit: int = TEXT_LIMIT) -> list[str]:
    """Pack blocks, in order, into as few messages of at most ``limit`` units as possible.

    Blocks are joined by a blank line. A block that opens a new message is preceded by its
    continued heading; a block too long even alone is shortened with :func:`truncate_html`.
    When more than one message results, each ends with a ``(i/n)`` marker."""
    body_limit = limit - _PART_RESERVE
    messages: list[list[str]] = []
    current: list[str] = []
    used = 0
    sep = telegram_length("\n\n")
    pending: list[Block] = []  # headers waiting to go out with the next block

    def start_new() -> None:
        nonlocal current, used
        if current:
            messages.append(current)
        current, used = [], 0

    def fits(parts: Sequence[str]) -> bool:
        extra = sum(telegram_length(p) for p in parts) + sep * len(parts)
        return used + extra - (sep if not current else 0) <= body_limit

    for block in blocks:
        if block.keep_with_next:
            pending.append(block)
            continue
        group = [b.html for b in pending] + [block.html]
        if not fits(group):
            start_new()
            if not pending and block.heading:
                group = [_continued(block.heading), block.html]
            if not fits(group):
                # Alone on a fresh message and still too long: shorten the last block.
                head = group[:-1]
                head_cost = sum(telegram_length(p) + sep for p in head)
                group = [*head, truncate_html(group[-1], body_limit - head_cost)]
        for part in group:
            used += telegram_length(part) + (sep if current else 0)
            current.append(part)
        pending = []
    for block in pending:  # trailing headers with nothing after them
        if not fits([block.html]):
            start_new()
        used += telegram_length(block.html) + (sep if current else 0)
        current.append(block.html)
    start_new()
    texts = ["\n\n".join(parts) for parts in messages]
    if len(texts) > 1:
        texts = [f"{text}\n\n<i>({i}/{len(texts)})</i>" for i, text in enumerate(texts, 1)]
    return texts


# ---------------------------------------------------------------------------------------------
# Digests


@dataclass(frozen=True, slots=True)
class _Budgets:
    """How much of each field an entry may show (UTF-16 units after escaping)."""

    title: int
    excerpt: int
    outlet: int
    also: int
    also_name: int
    href: int


# A generous level for normal entries, a tight one for the rare monster; truncate_html is the
# final guarantee either way.
_ENTRY_LEVELS = (
    _Budgets(title=400, excerpt=1200, outlet=100, also=6, also_name=60, href=_HREF_LIMIT),
    _Budgets(title=200, excerpt=500, outlet=60, also=3, also_name=40, href=512),
)
_FRAMING_BUDGET = 600
_SECTION_TITLE_BUDGET = 200


def _also_reported(items: Sequence[AlsoReported], budgets: _Budgets) -> str:
    shown = [
        link(
            escape_text(a.outlet, budget=budgets.also_name), safe_href(a.link, budget=budgets.href)
        )
        for a in items[: budgets.also]
    ]
    more = len(items) - len(shown)
    text = ", ".join(shown) + (f" and {more} more" if more > 0 else "")
    return f"Also reported by {text}"


def _entry_html(entry: DigestEntry, section: DigestSection, budgets: _Budgets) -> str:
    title = escape_text(entry.title or "(untitled)", budget=budgets.title)
    lines = [f"▪️ <b>{link(title, safe_href(entry.link, budget=budgets.href))}</b>"]
    meta = f"<i>{escape_text(entry.outlet or 'unknown outlet', budget=budgets.outlet)}</i>"
    if entry.published is not None:
        meta += f" · {format_time(entry.published)}"
    lines.append(meta)
    if entry.excerpt.strip():
        excerpt = escape_text(entry.excerpt, budget=budgets.excerpt)
        lines.append(f"<blockquote>{excerpt}</blockquote>")
    if entry.also_reported and budgets.also:
        lines.append(_also_reported(entry.also_reported, budgets))
    others = [t for t in entry.theme_ids if not (section.kind == "theme" and t == section.ref_id)]
    if others:
        lines.append("Also under: " + ", ".join(escape_text(t, budget=64) for t in others[:8]))
    claims = [c for c in entry.claim_ids if not (section.kind == "claim" and c == section.ref_id)]
    if claims:
        lines.append("Bears on: " + ", ".join(escape_text(c, budget=64) for c in claims[:8]))
    return "\n".join(lines)


def entry_block(entry: DigestEntry, section: DigestSection, *, limit: int = TEXT_LIMIT) -> Block:
    """One digest entry as a block, at the most generous budget level that fits a message."""
    heading = section_heading(section)
    room = limit - _PART_RESERVE - telegram_length(_continued(heading)) - 2
    text = ""
    for budgets in _ENTRY_LEVELS:
        text = _entry_html(entry, section, budgets)
        if telegram_length(text) <= room:
            break
    return Block(html=truncate_html(text, room), heading=heading)


def section_heading(section: DigestSection) -> str:
    """The bold one-line heading of a section (repeated when it continues in a new message)."""
    title = escape_text(section.title or section.ref_id, budget=_SECTION_TITLE_BUDGET)
    prefix = "🧭" if section.kind == "theme" else "💬 Claim:"
    return f"<b>{prefix} {title}</b>"


def section_header_block(section: DigestSection) -> Block:
    """The section's heading and the essay's framing (a theme) or the claim's quote."""
    heading = section_heading(section)
    framing = section.framing.strip()
    if not framing:
        return Block(html=heading, keep_with_next=True)
    framed = escape_text(framing, budget=_FRAMING_BUDGET)
    body = f"<i>{framed}</i>" if section.kind == "theme" else f"<blockquote>{framed}</blockquote>"
    return Block(html=f"{heading}\n{body}", keep_with_next=True)


def digest_header(digest: Digest) -> str:
    """Title line, item count and window (``12 new items · 24 Nov 18:00 – 24 Nov 22:00 UTC``)."""
    count = digest.entry_count
    noun = "item" if count == 1 else "items"
    end = format_time(digest.window_end)
    window = (
        f"{format_time(digest.window_start).removesuffix(' UTC')} – {end}"
        if digest.window_start is not None
        else f"until {end}"
    )
    return f"<b>📰 Counterparty digest</b>\n{count} new {noun} · {window}"


def digest_blocks(digest: Digest, *, limit: int = TEXT_LIMIT) -> list[Block]:
    """The digest as blocks: its header, then per section a header and one block per entry."""
    blocks = [Block(html=digest_header(digest), keep_with_next=True)]
    for section in digest.sections:
        if not section.entries:
            continue
        blocks.append(section_header_block(section))
        blocks.extend(entry_block(entry, section, limit=limit) for entry in section.entries)
    return blocks


def render_digest(digest: Digest, *, limit: int = TEXT_LIMIT) -> list[TelegramMessage]:
    """A digest as Telegram messages, in posting order; an empty digest gives no message."""
    if digest.empty:
        return []
    return [
        TelegramMessage(text=t)
        for t in pack_blocks(digest_blocks(digest, limit=limit), limit=limit)
    ]


def digest_payloads(digest: Digest) -> list[dict[str, Any]]:
    """Outbox payloads for a digest (what the composer stores for platform ``telegram``)."""
    return [message.payload() for message in render_digest(digest)]


def render_lines(lines: Iterable[str], *, limit: int = TEXT_LIMIT) -> list[TelegramMessage]:
    """Already-escaped HTML lines (a command answer) packed into messages, previews off."""
    return [
        TelegramMessage(text=t)
        for t in pack_blocks([Block(html=line) for line in lines], limit=limit)
    ]


class TelegramRenderer:
    """The :class:`~bot.delivery.platform.Renderer` for platform ``telegram``."""

    platforms: tuple[str, ...] = ("telegram",)

    def render(self, digest: Digest) -> list[dict[str, Any]]:
        return digest_payloads(digest)
