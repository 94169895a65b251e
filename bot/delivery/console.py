"""The console platform: digests printed as plain text to stdout.

It is the default when no platform token is set: ``counterparty run`` then keeps one built-in
subscription (platform ``console``, target ``stdout``) and prints each digest it would post.
``counterparty digest --print`` and ``counterparty demo`` use the same renderer.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Sequence
from datetime import UTC
from typing import TextIO

from bot.commands.answers import ClaimInfo, MatchedItem
from bot.delivery.platform import Payload
from bot.delivery.records import OutboxMessage, Rejected, SendOutcome, Sent
from bot.digest.records import Digest, DigestEntry, DigestSection
from bot.storage.subscriptions import CONSOLE_PLATFORM, CONSOLE_TARGET

__all__ = [
    "CONSOLE_PLATFORM",
    "CONSOLE_TARGET",
    "ConsoleRenderer",
    "ConsoleSender",
    "render_claim",
    "render_claims",
    "render_text",
]
WIDTH = 100
RULE = "=" * 72


def _when(entry: DigestEntry) -> str:
    if entry.published is None:
        return "time unknown"
    return entry.published.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _wrap(text: str, indent: str) -> list[str]:
    return textwrap.wrap(
        " ".join(text.split()), width=WIDTH, initial_indent=indent, subsequent_indent=indent
    )


def render_entry(entry: DigestEntry) -> list[str]:
    """Lines for one story: title, outlet and time, link, excerpt, tags, other outlets."""
    lines = _wrap(f"- {entry.title}", "  ")
    lines.append(f"    {entry.outlet} · {_when(entry)}")
    if entry.link:
        lines.append(f"    {entry.link}")
    if entry.excerpt:
        lines.extend(_wrap(entry.excerpt, "    > "))
    tags = [*entry.theme_ids, *(f"claim:{c}" for c in entry.claim_ids)]
    lines.append(f"    [{', '.join(tags)}]  score {entry.score:.2f}")
    if entry.also_reported:
        names = ", ".join(a.outlet for a in entry.also_reported)
        lines.extend(_wrap(f"also reported by: {names}", "    "))
    return lines


def render_section(section: DigestSection) -> list[str]:
    """A section header (theme title and essay framing, or claimant and quote), then entries."""
    label = "Theme" if section.kind == "theme" else "Claim"
    lines = [f"## {label}: {section.title} ({section.ref_id})"]
    if section.framing:
        lines.extend(_wrap(section.framing, "   "))
    lines.append("")
    for entry in section.entries:
        lines.extend(render_entry(entry))
        lines.append("")
    return lines


def render_text(digest: Digest) -> str:
    """The whole digest as plain text (deterministic: a function of the digest only)."""
    stamp = digest.generated_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    count = digest.entry_count
    lines = [RULE, f"counterparty digest · {stamp} · {count} {'item' if count == 1 else 'items'}"]
    lines.append(RULE)
    for section in digest.sections:
        lines.extend(render_section(section))
    return "\n".join(lines).rstrip() + "\n"


class ConsoleRenderer:
    """Renderer for the console platform: one payload ``{"text": ...}`` per digest."""

    platforms: tuple[str, ...] = (CONSOLE_PLATFORM,)

    def render(self, digest: Digest) -> list[Payload]:
        return [{"text": render_text(digest)}]


class ConsoleSender:
    """Sender that writes each payload's text to a stream (stdout by default) and flushes."""

    platforms: tuple[str, ...] = (CONSOLE_PLATFORM,)

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    async def send(self, message: OutboxMessage) -> SendOutcome:
        text = message.payload.get("text")
        if not isinstance(text, str):
            return Rejected("console payload has no 'text' string")
        stream = self._stream or sys.stdout
        stream.write(text if text.endswith("\n") else text + "\n")
        stream.flush()
        return Sent(message_id=f"console-{message.nonce}")


def render_claims(claims: Sequence[ClaimInfo]) -> str:
    """``counterparty claims``: every tracked claim, as ``/claims`` lists them."""
    lines = [f"{len(claims)} tracked claims (details: counterparty claim ID)", ""]
    for claim in claims:
        lines.append(f"{claim.id}  [{', '.join(claim.themes)}]")
        lines.extend(_wrap(f"{claim.claimant}: {claim.quote}", "    "))
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def render_claim(claim: ClaimInfo, recent: Sequence[MatchedItem]) -> str:
    """``counterparty claim ID``: the claim, who said it, where and when, the essay's comment,
    and the latest matched items with their best excerpt (what ``/claim`` shows)."""
    lines = [f"Claim {claim.id}", ""]
    lines.extend(_wrap(claim.quote, "  "))
    lines.append(f"  - {claim.claimant}")
    where = ", ".join(part for part in (claim.source, claim.date) if part)
    if where:
        lines.extend(_wrap(f"Source: {where}", "  "))
    if claim.comment:
        lines.extend(_wrap(f"The essay: {claim.comment}", "  "))
    lines.append(f"  Themes: {', '.join(claim.themes)}")
    lines.append("")
    if not recent:
        lines.append("No matched news items yet.")
    else:
        lines.append("Latest evidence:")
        for item in recent:
            stamp = (
                item.published.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
                if item.published
                else "time unknown"
            )
            lines.extend(_wrap(f"- {item.title}", "  "))
            lines.append(f"    {item.outlet} · {stamp}")
            if item.link:
                lines.append(f"    {item.link}")
            if item.excerpt:
                lines.extend(_wrap(item.excerpt, "    > "))
    return "\n".join(lines).rstrip() + "\n"
