"""Digests and command answers as Discord message payloads, within every Discord limit.

A payload is the JSON-ready dict the outbox stores and the sender posts:
``{"content": str | None, "embeds": [embed dict, ...]}``. Every function here is pure.

Limits enforced (Discord's "Embed Limits"): title 256, description 4096, at most 25 fields,
field name 256 and value 1024, footer 2048, author 256, 6000 characters across all embeds of
one message, 10 embeds per message, content 2000. Long answers are split across messages, never
cut mid-escape. :func:`payload_problems` checks a payload against all of them.

Feed text is untrusted: :func:`escape` makes it inert (no markdown, no mention that could ping
or even render as one, no masked ``[text](url)`` link). Links are shown only as our own
``[link](url)`` with an http(s) URL whose brackets and spaces are percent-encoded.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlsplit

from bot.commands.answers import (
    Answer,
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
    ThemesAnswer,
)
from bot.digest.records import Digest, DigestEntry, DigestSection

Payload = dict[str, Any]
Embed = dict[str, Any]

CONTENT_MAX = 2000
TITLE_MAX = 256
DESCRIPTION_MAX = 4096
FIELDS_MAX = 25
FIELD_NAME_MAX = 256
FIELD_VALUE_MAX = 1024
FOOTER_MAX = 2048
AUTHOR_MAX = 256
MESSAGE_EMBED_CHARS_MAX = 6000
EMBEDS_MAX = 10

# Colours: a theme section, a claim section, a plain answer, a refusal.
THEME_COLOUR = 0x3B6EA5
CLAIM_COLOUR = 0xB5651D
INFO_COLOUR = 0x5F6B73
ERROR_COLOUR = 0xC0392B
OK_COLOUR = 0x2E8B57

ELLIPSIS = "…"
# Each embed is filled to at most 6000 minus this, so a footer always fits on the last one.
_FOOTER_ROOM = 500
_ZWSP = "\u200b"
_INLINE_MARKDOWN = re.compile(r"([\\*_~|`\[\]])")
_LINE_START_MARKDOWN = re.compile(r"^(\s*)(#|>|-|\+|\d+\.)")
_MENTION_WORD = re.compile(r"@(everyone|here)", re.IGNORECASE)
_SPACE = re.compile(r"\s+")


def escape_lines(text: str, *, max_length: int | None = None) -> str:
    """:func:`escape` for plain text whose line breaks should stay (our own sentences with
    user input in them); each line is made inert on its own."""
    lines = [escape(line) for line in text.splitlines()]
    joined = "\n".join(lines)
    return clip(joined, max_length) if max_length is not None else joined


def escape(text: str, *, max_length: int | None = None) -> str:
    """Make untrusted text inert in Discord markdown, on one line, optionally clipped.

    * whitespace (newlines included) collapses to single spaces, so no line can start a
      heading, quote or list;
    * ``\\ * _ ~ | ` [ ]`` are backslash-escaped (no bold, spoiler, code or masked link);
    * a leading ``# > - + 1.`` is escaped;
    * ``<`` gets a zero-width space after it, so ``<@id>``, ``<@&id>``, ``<#id>``, ``<t:..>``,
      ``</cmd:id>`` and custom emoji never render; ``@everyone``/``@here`` get one after ``@``.

    Clipping (with ``…``) happens after escaping and never leaves a dangling backslash.
    """
    text = _SPACE.sub(" ", text).strip()
    text = _INLINE_MARKDOWN.sub(r"\\\1", text)
    text = _LINE_START_MARKDOWN.sub(lambda m: m.group(1) + "\\" + m.group(2), text)
    text = text.replace("<", "<" + _ZWSP)
    text = _MENTION_WORD.sub(lambda m: "@" + _ZWSP + m.group(1), text)
    if max_length is not None:
        text = clip(text, max_length)
    return text


def clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, ending in ``…`` when cut; never ends in a
    lone escaping backslash (which would escape the ellipsis or the next piece of markup)."""
    if len(text) <= limit:
        return text
    cut = text[: max(limit - 1, 0)]
    trailing = len(cut) - len(cut.rstrip("\\"))
    if trailing % 2:
        cut = cut[:-1]
    return cut + ELLIPSIS


def safe_url(url: str | None) -> str | None:
    """An http(s) URL safe to put in ``[link](url)`` (brackets, spaces, ``<>`` encoded), or
    None for anything else (javascript:, relative, absurdly long)."""
    if not url:
        return None
    url = url.strip()
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    encoded = quote(url, safe=":/?#@!$&'*+,;=%~.-_")
    return encoded if len(encoded) <= 1024 else None


def timestamp(moment: datetime | None, style: str = "f") -> str:
    """A Discord timestamp (each reader sees it in their own time zone)."""
    return "" if moment is None else f"<t:{int(moment.timestamp())}:{style}>"


# --- assembling embeds within the limits ---------------------------------------------------


@dataclass(slots=True)
class _Block:
    """One logical embed before splitting: title, description, fields, colour, footer."""

    title: str
    description: str = ""
    fields: list[tuple[str, str]] = field(default_factory=list)
    colour: int = INFO_COLOUR
    url: str | None = None
    footer: str | None = None


def embed_chars(embed: Embed) -> int:
    """Characters Discord counts towards the 6000 limit (title, description, field names and
    values, footer, author). discord.py's ``len(Embed)`` leaves out footer and author."""
    total = len(embed.get("title") or "") + len(embed.get("description") or "")
    for item in embed.get("fields") or []:
        total += len(item.get("name") or "") + len(item.get("value") or "")
    total += len((embed.get("footer") or {}).get("text") or "")
    total += len((embed.get("author") or {}).get("name") or "")
    return total


def _make_embed(
    block: _Block, title: str, description: str, fields: list[tuple[str, str]]
) -> Embed:
    embed: Embed = {"type": "rich", "title": clip(title, TITLE_MAX), "color": block.colour}
    if description:
        embed["description"] = clip(description, DESCRIPTION_MAX)
    if block.url:
        embed["url"] = block.url
    if fields:
        embed["fields"] = [
            {"name": clip(n, FIELD_NAME_MAX), "value": clip(v, FIELD_VALUE_MAX), "inline": False}
            for n, v in fields
        ]
    return embed


def _split_block(block: _Block) -> list[Embed]:
    """One block as one or more embeds: ≤25 fields each and room left under the 6000 budget."""
    budget = MESSAGE_EMBED_CHARS_MAX - _FOOTER_ROOM
    embeds: list[Embed] = []
    title = block.title
    description = block.description
    current: list[tuple[str, str]] = []
    used = len(clip(title, TITLE_MAX)) + len(clip(description, DESCRIPTION_MAX))
    for name, value in block.fields:
        name, value = (
            clip(name or "\u200b", FIELD_NAME_MAX),
            clip(value or "\u200b", FIELD_VALUE_MAX),
        )
        if len(current) == FIELDS_MAX or used + len(name) + len(value) > budget:
            embeds.append(_make_embed(block, title, description, current))
            title = clip(block.title, TITLE_MAX - 12) + " (continued)"
            description, current = "", []
            used = len(title)
        current.append((name, value))
        used += len(name) + len(value)
    embeds.append(_make_embed(block, title, description, current))
    return embeds


def _pack(embeds: Sequence[Embed], *, footer: str | None = None) -> list[Payload]:
    """Embeds grouped into messages: ≤10 per message, ≤6000 characters per message."""
    if footer:
        last = dict(embeds[-1])
        last["footer"] = {"text": clip(footer, _FOOTER_ROOM)}
        embeds = [*embeds[:-1], last]
    messages: list[Payload] = []
    current: list[Embed] = []
    used = 0
    for embed in embeds:
        size = embed_chars(embed)
        if current and (len(current) == EMBEDS_MAX or used + size > MESSAGE_EMBED_CHARS_MAX):
            messages.append({"content": None, "embeds": current})
            current, used = [], 0
        current.append(embed)
        used += size
    if current:
        messages.append({"content": None, "embeds": current})
    return messages


def _render_blocks(blocks: Iterable[_Block], *, footer: str | None = None) -> list[Payload]:
    embeds = [embed for block in blocks for embed in _split_block(block)]
    return _pack(embeds, footer=footer) if embeds else []


# --- digests -------------------------------------------------------------------------------


def _entry_field(entry: DigestEntry, section: DigestSection) -> tuple[str, str]:
    name = escape(entry.title or "(untitled)", max_length=FIELD_NAME_MAX)
    meta = [escape(entry.outlet, max_length=120)]
    if entry.published is not None:
        meta.append(timestamp(entry.published))
    link = safe_url(entry.link)
    if link:
        meta.append(f"[link]({link})")
    lines = [" · ".join(part for part in meta if part)]
    others = [ref for ref in (*entry.theme_ids, *entry.claim_ids) if ref != section.ref_id]
    if others:
        lines.append("Also under: " + ", ".join(f"`{escape_code(ref)}`" for ref in others))
    if entry.also_reported:
        outlets = [escape(a.outlet, max_length=80) for a in entry.also_reported[:8]]
        more = len(entry.also_reported) - len(outlets)
        lines.append(
            "Also reported by " + ", ".join(outlets) + (f" and {more} more" if more else "")
        )
    head = "\n".join(lines)
    room = FIELD_VALUE_MAX - len(head) - 3
    if entry.excerpt and room > 40:
        head = f"> {escape(entry.excerpt, max_length=min(room, 600))}\n" + head
    return name, head


def escape_code(text: str) -> str:
    """Text for inside our own inline code span (an id): backticks removed."""
    return text.replace("`", "'")


def _section_block(section: DigestSection) -> _Block:
    is_claim = section.kind == "claim"
    title = ("Claim: " if is_claim else "") + section.title
    framing = escape(section.framing, max_length=700) if section.framing else ""
    description = f"> {framing}" if framing else ""
    fields = [_entry_field(entry, section) for entry in section.entries]
    return _Block(
        title=escape(title, max_length=TITLE_MAX),
        description=description,
        fields=fields,
        colour=CLAIM_COLOUR if is_claim else THEME_COLOUR,
    )


def render_digest(digest: Digest) -> list[Payload]:
    """A digest as Discord messages (one embed per section, split as needed); ``[]`` if empty."""
    if digest.empty:
        return []
    blocks = [_section_block(s) for s in digest.sections if s.entries]
    count = digest.entry_count
    footer = f"counterparty · {count} item{'s' if count != 1 else ''}"
    if digest.window_start is not None:
        footer += (
            f" · {digest.window_start:%Y-%m-%d %H:%M} to {digest.window_end:%Y-%m-%d %H:%M} UTC"
        )
    return _render_blocks(blocks, footer=footer)


# --- command answers -----------------------------------------------------------------------


def _item_field(item: MatchedItem) -> tuple[str, str]:
    meta = [escape(item.outlet, max_length=120)]
    if item.published is not None:
        meta.append(timestamp(item.published))
    link = safe_url(item.link)
    if link:
        meta.append(f"[link]({link})")
    meta.append(f"score {item.score:.2f}")
    if item.ref_ids:
        meta.append(", ".join(f"`{escape_code(ref)}`" for ref in item.ref_ids[:6]))
    value = " · ".join(meta)
    if item.excerpt:
        room = FIELD_VALUE_MAX - len(value) - 3
        value = f"> {escape(item.excerpt, max_length=min(room, 500))}\n" + value
    return escape(item.title or "(untitled)", max_length=FIELD_NAME_MAX), value


def _claim_text(claim: ClaimInfo) -> str:
    lines = [
        f"> {escape(claim.quote, max_length=1500)}",
        f"— {escape(claim.claimant)}, {escape(claim.source)}"
        + (f" ({escape(claim.date)})" if claim.date else ""),
    ]
    if claim.comment:
        lines.append("")
        lines.append(f"**The essay:** {escape(claim.comment, max_length=1500)}")
    if claim.themes:
        lines.append("Themes: " + ", ".join(f"`{escape_code(t)}`" for t in claim.themes))
    return "\n".join(lines)


def _subscription_line(sub: SubscriptionInfo) -> tuple[str, str]:
    themes = "all themes" if sub.themes is None else ", ".join(f"`{t}`" for t in sub.themes)
    parts = [
        f"Themes: {themes}",
        f"Cadence: {escape(sub.cadence)} · min score {sub.min_score:.2f} · max {sub.max_items}",
    ]
    if sub.claims:
        parts.append("Claims: " + ", ".join(f"`{escape_code(c)}`" for c in sub.claims))
    if sub.paused:
        parts.append(f"**Paused**: {escape(sub.pause_reason or 'no reason recorded')}")
    name = f"#{sub.id} · {escape(sub.target_label, max_length=200)} ({sub.platform})"
    return name, "\n".join(parts)


def _feed_field(feed: FeedInfo) -> tuple[str, str]:
    name = f"{feed.health.upper()} · {escape(feed.name or feed.url, max_length=200)}"
    lines = [escape(feed.url, max_length=400)]
    detail = f"{feed.entry_count} entries · added by {feed.origin}"
    if feed.last_success_at:
        detail += f" · last success {timestamp(feed.last_success_at, 'R')}"
    lines.append(detail)
    if feed.last_error and feed.health == "failing":
        error = escape(feed.last_error, max_length=300)
        lines.append(f"{feed.consecutive_failures} failures in a row: {error}")
    return name, "\n".join(lines)


def _notice(answer: Notice) -> list[_Block]:
    colour = OK_COLOUR if answer.ok else ERROR_COLOUR
    title = answer.title or ("Done" if answer.ok else "Cannot do that")
    description = escape_lines(answer.text, max_length=DESCRIPTION_MAX)
    return [
        _Block(title=escape(title, max_length=TITLE_MAX), description=description, colour=colour)
    ]


def _blocks_for(answer: Answer) -> tuple[list[_Block], str | None]:
    """The blocks for an answer plus an optional footer."""
    match answer:
        case Notice():
            return _notice(answer), None
        case ThemesAnswer(themes=themes):
            fields = [
                (f"{escape(t.title)} · {t.id}", escape(t.description, max_length=FIELD_VALUE_MAX))
                for t in themes
            ]
            return [_Block("Themes", "Use `/theme ID` for one theme.", fields)], None
        case ThemeAnswer(theme=theme, claims=claims, recent=recent):
            description = f"{escape(theme.description)}\n\n> {escape(theme.essay_quote)}"
            fields = [(f"Claim · {c.id}", escape(c.quote, max_length=300)) for c in claims]
            fields += [_item_field(item) for item in recent]
            block = _Block(escape(theme.title), description, fields, THEME_COLOUR)
            return [block], f"theme {theme.id}"
        case ClaimsAnswer(claims=claims):
            fields = [
                (f"{c.id} · {escape(c.claimant, max_length=200)}", escape(c.quote, max_length=400))
                for c in claims
            ]
            return [_Block("Claims", "Use `/claim ID` for one claim.", fields, CLAIM_COLOUR)], None
        case ClaimAnswer(claim=claim, recent=recent):
            fields = [_item_field(item) for item in recent]
            if not fields:
                fields = [("Latest evidence", "No matching news items yet.")]
            block = _Block(f"Claim: {claim.id}", _claim_text(claim), fields, CLAIM_COLOUR)
            return [block], f"claim {claim.id}"
        case SubscriptionsAnswer(subscriptions=subs):
            if not subs:
                return _notice(
                    Notice("This channel has no subscriptions. Use /subscribe to add one.")
                ), None
            return [_Block("Subscriptions", "", [_subscription_line(s) for s in subs])], None
        case DigestPreviewAnswer(digest=digest, subscribed=subscribed):
            if digest is None or digest.empty:
                text = "Nothing new would be posted right now."
                if not subscribed:
                    text = "This channel has no subscription; the preview uses every theme. " + text
                return _notice(Notice(text, title="Digest preview")), None
            return [_section_block(s) for s in digest.sections if s.entries], "preview: not posted"
        case SearchAnswer(query=query, items=items):
            title = f"Search: {escape(query, max_length=200)}"
            if not items:
                return [_Block(title, "No matched items contain those words.")], None
            return [_Block(title, "", [_item_field(i) for i in items])], None
        case FeedsAnswer(feeds=feeds):
            if not feeds:
                return _notice(Notice("No feeds are configured.", title="Feeds")), None
            fields = [_feed_field(f) for f in feeds]
            return [_Block("Feeds", "", fields)], f"{len(feeds)} feeds"
        case StatusAnswer():
            lines = [
                f"Subscriptions: {answer.subscriptions} ({len(answer.paused)} paused)",
                f"Outbox: {answer.outbox_pending} waiting, {answer.outbox_failed} failed",
                f"Feeds: {answer.feeds_total} ({answer.feeds_failing} failing, "
                f"{answer.feeds_never_fetched} never fetched)",
                "Last poll: "
                + (timestamp(answer.last_poll_at, "R") if answer.last_poll_at else "never"),
            ]
            fields = [_subscription_line(s) for s in answer.paused]
            return [_Block("Status", "\n".join(lines), fields)], None
    raise TypeError(f"no Discord rendering for {type(answer).__name__}")


def render_answer(answer: Answer) -> list[Payload]:
    """A command answer as one or more Discord messages (always at least one)."""
    blocks, footer = _blocks_for(answer)
    return _render_blocks(blocks, footer=footer)


class DiscordRenderer:
    """The :class:`bot.delivery.platform.Renderer` for Discord channels and webhooks."""

    def __init__(self, platforms: tuple[str, ...] = ("discord", "discord-webhook")) -> None:
        self.platforms = platforms

    def render(self, digest: Digest) -> list[Payload]:
        return render_digest(digest)


def render_error(text: str) -> Payload:
    """A refusal as one message."""
    return render_answer(Notice(text, ok=False))[0]


# --- checking ------------------------------------------------------------------------------


def payload_problems(payload: Payload) -> list[str]:
    """Every Discord limit ``payload`` breaks, as readable lines; ``[]`` when it is postable."""
    problems: list[str] = []
    content = payload.get("content") or ""
    embeds = payload.get("embeds") or []
    if len(content) > CONTENT_MAX:
        problems.append(f"content has {len(content)} characters (max {CONTENT_MAX})")
    if not content and not embeds:
        problems.append("message has neither content nor embeds")
    if len(embeds) > EMBEDS_MAX:
        problems.append(f"{len(embeds)} embeds (max {EMBEDS_MAX})")
    total = 0
    for i, embed in enumerate(embeds):
        total += embed_chars(embed)
        checks = [
            ("title", len(embed.get("title") or ""), TITLE_MAX),
            ("description", len(embed.get("description") or ""), DESCRIPTION_MAX),
            ("fields", len(embed.get("fields") or []), FIELDS_MAX),
            ("footer", len((embed.get("footer") or {}).get("text") or ""), FOOTER_MAX),
            ("author", len((embed.get("author") or {}).get("name") or ""), AUTHOR_MAX),
        ]
        for j, item in enumerate(embed.get("fields") or []):
            checks.append((f"fields[{j}].name", len(item.get("name") or ""), FIELD_NAME_MAX))
            checks.append((f"fields[{j}].value", len(item.get("value") or ""), FIELD_VALUE_MAX))
            if not item.get("name") or not item.get("value"):
                problems.append(f"embeds[{i}].fields[{j}] has an empty name or value")
        problems += [
            f"embeds[{i}].{what} is {size} (max {limit})"
            for what, size, limit in checks
            if size > limit
        ]
    if total > MESSAGE_EMBED_CHARS_MAX:
        problems.append(f"embeds total {total} characters (max {MESSAGE_EMBED_CHARS_MAX})")
    return problems
