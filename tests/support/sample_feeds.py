"""RSS 2.0 documents for tests, built from items the tests write themselves (every one says it
is test sample text); titles and summaries are XML-escaped."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime
from xml.sax.saxutils import escape


@dataclass(frozen=True, slots=True)
class SampleItem:
    title: str
    summary: str
    link: str
    guid: str


def rss_document(
    *, title: str, link: str, description: str, items: Iterable[SampleItem], published: datetime
) -> bytes:
    """One channel holding ``items``, each dated ``published``."""
    body = "".join(
        f"<item><title>{escape(item.title)}</title><link>{item.link}</link>"
        f"<guid>{item.guid}</guid><pubDate>{format_datetime(published)}</pubDate>"
        f"<description>{escape(item.summary)}</description></item>"
        for item in items
    )
    return (
        f'<?xml version="1.0"?><rss version="2.0"><channel><title>{escape(title)}</title>'
        f"<link>{link}</link><description>{escape(description)}</description>{body}"
        "</channel></rss>"
    ).encode()


def sample_wire(stories: Iterable[tuple[str, str]], published: datetime, *, key: str) -> bytes:
    """The channel "Test sample wire" holding ``(title, summary)`` stories; story ``n`` links
    to ``https://sample.example/{key}/{n}`` with the guid ``{key}-sample-{n}``."""
    items = [
        SampleItem(title, summary, f"https://sample.example/{key}/{n}", f"{key}-sample-{n}")
        for n, (title, summary) in enumerate(stories)
    ]
    return rss_document(
        title="Test sample wire",
        link="https://sample.example/",
        description="test",
        items=items,
        published=published,
    )
