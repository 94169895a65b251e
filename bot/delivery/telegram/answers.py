"""Command answers (:mod:`bot.commands.answers`) as Telegram HTML messages.

Pure functions. Like digests, every piece of outside text is escaped (:func:`escape_text`),
links go through :func:`safe_href`, and answers are split between blocks into messages of at
most 4,096 characters (:func:`pack_blocks`). IDs are shown in ``<code>`` so a tap copies them.

:func:`claim_keyboard` builds the inline keyboard ``/claim`` shows without an ID; each button's
``callback_data`` is ``claim:<id>``, within Telegram's 64 bytes (longer ids are left out).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from telegram import InlineKeyboardButton, InlineKeyboardMarkup
from telegram.constants import InlineKeyboardButtonLimit

from bot.commands.answers import (
    Answer,
    ClaimAnswer,
    ClaimInfo,
    ClaimsAnswer,
    DigestPreviewAnswer,
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
from bot.delivery.telegram.render import (
    Block,
    TelegramMessage,
    digest_blocks,
    escape_text,
    format_time,
    link,
    pack_blocks,
    safe_href,
)

CLAIM_CALLBACK_PREFIX = "claim:"
_ITEM_TITLE = 300
_ITEM_EXCERPT = 500
_QUOTE = 800
_TEXT = 1200
_HEALTH = {"ok": "✅", "failing": "⚠️", "new": "🆕", "disabled": "⏸"}

HELP_TEXT = (
    "<b>Counterparty</b> watches Russia/Iran/Ukraine news for evidence on the themes and "
    "claims of Drezner's essay and posts digests here.\n\n"
    "/themes – the themes tracked\n"
    "/theme <code>ID</code> – one theme, its claims and recent items\n"
    "/claims – the claims tracked\n"
    "/claim <code>ID</code> – one claim and the latest evidence (no ID: pick from a list)\n"
    "/digest – preview what would be posted here now\n"
    "/search <code>words</code> – recent matched items\n"
    "/feeds – the feeds and their health\n"
    "/status – delivery status of this chat\n"
    "/subscriptions – this chat's subscription\n"
    "/subscribe [<code>THEME …</code>] [<code>claims=ID,…</code>] "
    "[<code>cadence=instant|6h|daily 08:00 Europe/Kyiv</code>] [<code>min=0.5</code>] "
    "[<code>max=10</code>] – post digests here (group admins only)\n"
    "/unsubscribe – stop posting here (group admins only)"
)


def _code(text: str) -> str:
    return f"<code>{escape_text(text, budget=100)}</code>"


def _when(moment: datetime | None) -> str:
    return format_time(moment) if moment is not None else "never"


def _item_block(item: MatchedItem) -> Block:
    title = escape_text(item.title or "(untitled)", budget=_ITEM_TITLE)
    lines = [f"▪️ <b>{link(title, safe_href(item.link))}</b>"]
    meta = f"<i>{escape_text(item.outlet or 'unknown outlet', budget=100)}</i>"
    if item.published is not None:
        meta += f" · {format_time(item.published)}"
    if item.ref_ids:
        meta += " · " + ", ".join(escape_text(r, budget=64) for r in item.ref_ids[:6])
    lines.append(meta)
    if item.excerpt.strip():
        lines.append(f"<blockquote>{escape_text(item.excerpt, budget=_ITEM_EXCERPT)}</blockquote>")
    return Block(html="\n".join(lines))


def _items(heading: str, items: Sequence[MatchedItem], empty: str) -> list[Block]:
    if not items:
        return [Block(html=f"<b>{heading}</b>\n<i>{empty}</i>")]
    return [
        Block(html=f"<b>{heading}</b>", keep_with_next=True),
        *(Block(html=_item_block(i).html, heading=f"<b>{heading}</b>") for i in items),
    ]


def _theme_line(theme: ThemeInfo) -> Block:
    return Block(
        html=f"🧭 <b>{escape_text(theme.title, budget=200)}</b> {_code(theme.id)}\n"
        f"{escape_text(theme.description, budget=_TEXT)}"
    )


def _claim_line(claim: ClaimInfo) -> Block:
    return Block(
        html=f"💬 {_code(claim.id)} <b>{escape_text(claim.claimant, budget=200)}</b>\n"
        f"<i>{escape_text(claim.quote, budget=_QUOTE)}</i>"
    )


def _subscription_block(sub: SubscriptionInfo) -> Block:
    themes = "every theme" if sub.themes is None else ", ".join(sub.themes)
    lines = [
        f"🔔 <b>{escape_text(sub.target_label, budget=200)}</b>",
        f"Themes: {escape_text(themes, budget=_TEXT)}",
    ]
    if sub.claims:
        lines.append(f"Claims: {escape_text(', '.join(sub.claims), budget=_TEXT)}")
    lines.append(
        f"Cadence: {escape_text(sub.cadence, budget=100)} · minimum score {sub.min_score:.2f}"
        f" · at most {sub.max_items} items"
    )
    lines.append(f"Last digest: {_when(sub.last_digest_at)}")
    if sub.paused:
        reason = escape_text(sub.pause_reason or "no reason recorded", budget=400)
        lines.append(f"⏸ <b>Paused</b>: {reason}")
    return Block(html="\n".join(lines))


def answer_blocks(answer: Answer) -> list[Block]:
    """The answer as blocks, ready for :func:`pack_blocks` (digest previews excepted)."""
    match answer:
        case Notice(text=text, ok=ok, title=title):
            head = f"<b>{escape_text(title, budget=200)}</b>\n" if title else ""
            mark = "" if ok else "⚠️ "
            return [Block(html=f"{mark}{head}{escape_text(text, budget=3000, single_line=False)}")]
        case ThemesAnswer(themes=themes):
            return [
                Block(html="<b>Themes</b> (details: /theme <code>ID</code>)", keep_with_next=True),
                *(_theme_line(t) for t in themes),
            ]
        case ThemeAnswer(theme=theme, claims=claims, recent=recent):
            head = (
                f"🧭 <b>{escape_text(theme.title, budget=200)}</b> {_code(theme.id)}\n"
                f"{escape_text(theme.description, budget=_TEXT)}"
            )
            if theme.essay_quote.strip():
                quote = escape_text(theme.essay_quote, budget=_QUOTE)
                head += f"\n<blockquote>{quote}</blockquote>"
            blocks = [Block(html=head)]
            if claims:
                blocks.append(Block(html="<b>Claims under this theme</b>", keep_with_next=True))
                blocks.extend(_claim_line(c) for c in claims)
            return blocks + _items("Latest items", recent, "No matched items yet.")
        case ClaimsAnswer(claims=claims):
            return [
                Block(html="<b>Claims</b> (details: /claim <code>ID</code>)", keep_with_next=True),
                *(_claim_line(c) for c in claims),
            ]
        case ClaimAnswer(claim=claim, recent=recent):
            lines = [
                f"💬 <b>{escape_text(claim.claimant, budget=200)}</b> {_code(claim.id)}",
                f"<blockquote>{escape_text(claim.quote, budget=_QUOTE)}</blockquote>",
                f"Source: {escape_text(claim.source, budget=300)}"
                + (f" · {escape_text(claim.date, budget=60)}" if claim.date else ""),
            ]
            if claim.comment.strip():
                lines.append(f"<i>The essay: {escape_text(claim.comment, budget=_TEXT)}</i>")
            if claim.themes:
                lines.append(
                    "Themes: " + ", ".join(escape_text(t, budget=64) for t in claim.themes)
                )
            evidence = _items("Latest evidence", recent, "No matched items yet.")
            return [Block(html="\n".join(lines)), *evidence]
        case SubscriptionsAnswer(subscriptions=subs):
            if not subs:
                return [Block(html="This chat has no subscription. /subscribe starts one.")]
            return [
                Block(html="<b>Subscriptions</b>", keep_with_next=True),
                *(_subscription_block(s) for s in subs),
            ]
        case SearchAnswer(query=query, items=items):
            return _items(
                f"Search: {escape_text(query, budget=200)}",
                items,
                "Nothing matched in the last 30 days.",
            )
        case FeedsAnswer(feeds=feeds):
            if not feeds:
                return [Block(html="No feeds are configured.")]
            blocks = [Block(html=f"<b>Feeds</b> ({len(feeds)})", keep_with_next=True)]
            for feed in feeds:
                name = escape_text(feed.name or feed.url, budget=150)
                line = f"{_HEALTH.get(feed.health, '•')} {link(name, safe_href(feed.url))}"
                line += f" · {feed.entry_count} items · last success {_when(feed.last_success_at)}"
                if feed.health == "failing" and feed.last_error:
                    line += f"\n<i>{escape_text(feed.last_error, budget=300)}</i>"
                blocks.append(Block(html=line))
            return blocks
        case StatusAnswer():
            return _status_blocks(answer)
        case DigestPreviewAnswer():
            raise ValueError("render digest previews with render_answer")
    raise TypeError(f"no Telegram rendering for {type(answer).__name__}")


def _status_blocks(status: StatusAnswer) -> list[Block]:
    lines = [
        "<b>Status</b>",
        f"Subscriptions here: {status.subscriptions} ({len(status.paused)} paused)",
        f"Messages waiting: {status.outbox_pending} · failed: {status.outbox_failed}",
        f"Feeds: {status.feeds_total} · failing: {status.feeds_failing}"
        f" · never fetched: {status.feeds_never_fetched}",
        f"Last poll: {_when(status.last_poll_at)}",
    ]
    blocks = [Block(html="\n".join(lines))]
    for sub in status.paused:
        reason = escape_text(sub.pause_reason or "no reason recorded", budget=400)
        blocks.append(
            Block(html=f"⏸ <b>{escape_text(sub.target_label, budget=200)}</b> paused: {reason}")
        )
    return blocks


def render_answer(answer: Answer) -> list[TelegramMessage]:
    """An answer as messages (link previews off)."""
    if isinstance(answer, DigestPreviewAnswer):
        if answer.digest is None or answer.digest.empty:
            text = (
                "Nothing would be posted here now: no new matched items."
                if answer.subscribed
                else "No subscription here, and nothing matched in the last 24 hours."
            )
            return [TelegramMessage(text=text)]
        note = (
            "<i>Preview: what would be posted here now.</i>"
            if answer.subscribed
            else "<i>Preview: no subscription here, so the last 24 hours over every theme.</i>"
        )
        blocks = [Block(html=note, keep_with_next=True), *digest_blocks(answer.digest)]
        return [TelegramMessage(text=t) for t in pack_blocks(blocks)]
    return [TelegramMessage(text=t) for t in pack_blocks(answer_blocks(answer))]


def claim_keyboard(claims: Sequence[ClaimInfo]) -> InlineKeyboardMarkup:
    """One button per claim (``claim:<id>``); ids too long for 64 bytes are left out."""
    rows = []
    for claim in claims:
        data = f"{CLAIM_CALLBACK_PREFIX}{claim.id}"
        if len(data.encode()) > InlineKeyboardButtonLimit.MAX_CALLBACK_DATA:
            continue
        label = f"{claim.claimant}: {claim.id}"
        rows.append([InlineKeyboardButton(label[:60], callback_data=data)])
    return InlineKeyboardMarkup(rows)
