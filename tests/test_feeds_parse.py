"""The pure parser: small feeds written for these tests, plus the 46 real corpus feeds."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from bot.feeds.parse import (
    FeedParseError,
    canonical_link,
    html_to_text,
    parse_feed,
    story_key,
    title_fingerprint,
)
from tests.conftest import shared_path

RSS = b"""<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/"
     xmlns:content="http://purl.org/rss/1.0/modules/content/">
<channel>
  <title>Test &amp; Wire</title>
  <link>https://news.example.org/</link>
  <ttl>30</ttl>
  <item>
    <title>Talks resume in &lt;Geneva&gt; &amp; Oman</title>
    <guid isPermaLink="false">wire-0001</guid>
    <link>https://news.example.org/a/1?utm_source=rss&amp;utm_medium=feed&amp;id=7#top</link>
    <description>&lt;p&gt;Envoys met &lt;b&gt;again&lt;/b&gt;&amp;nbsp;on Tuesday.&lt;/p&gt;
      &lt;script&gt;track()&lt;/script&gt;</description>
    <content:encoded><![CDATA[<p>First paragraph.</p>
      <p>Second &eacute;l&eacute;ment.</p>]]></content:encoded>
    <dc:creator>A. Writer</dc:creator>
    <pubDate>Tue, 03 Mar 2026 14:30:00 +0300</pubDate>
  </item>
  <item>
    <title>No guid, relative link</title>
    <link>/a/2?fbclid=XYZ</link>
    <pubDate>Tue, 03 Mar 2026 12:00:00 GMT</pubDate>
  </item>
  <item>
    <title>Neither guid nor link</title>
    <description>Only words.</description>
  </item>
  <item>
    <title>Talks resume again, corrected</title>
    <guid isPermaLink="false">wire-0001</guid>
  </item>
</channel>
</rss>
"""

ATOM = b"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom">
  <title type="html">Atom &lt;i&gt;desk&lt;/i&gt;</title>
  <id>urn:example:desk</id>
  <updated>2026-03-03T10:00:00Z</updated>
  <entry>
    <id>urn:example:desk:1</id>
    <title>Kyiv update</title>
    <link href="https://desk.example.net/kyiv?gclid=1&amp;page=2"/>
    <updated>2026-03-03T09:15:00-05:00</updated>
    <author><name>B. Reporter</name></author>
    <author><name>C. Editor</name></author>
    <summary type="html">&lt;ul&gt;&lt;li&gt;one&lt;/li&gt;
      &lt;li&gt;two&lt;/li&gt;&lt;/ul&gt;</summary>
  </entry>
</feed>
"""


def test_rss_entries_are_normalised() -> None:
    feed = parse_feed(
        RSS, url="https://news.example.org/rss.xml", content_type="application/rss+xml"
    )
    assert feed.title == "Test & Wire"
    assert feed.ttl is not None
    assert feed.ttl.total_seconds() == 30 * 60
    first, second, third = feed.entries
    assert first.entry_key == "wire-0001"
    assert first.title == "Talks resume in <Geneva> & Oman"
    assert first.link == "https://news.example.org/a/1?id=7"
    assert first.summary == "Envoys met again on Tuesday."
    assert first.content == "First paragraph.\nSecond élément."
    assert first.authors == ("A. Writer",)
    assert first.published_at == datetime(2026, 3, 3, 11, 30, tzinfo=UTC)
    # No guid: the canonical link (made absolute, tracking removed) is the key.
    assert second.entry_key == "https://news.example.org/a/2"
    assert second.link == "https://news.example.org/a/2"
    # Neither: a hash of title and date, stable across parses.
    assert third.entry_key.startswith("sha256:")
    assert third.link is None
    again = parse_feed(RSS, url="https://news.example.org/rss.xml")
    assert [e.entry_key for e in again.entries] == [e.entry_key for e in feed.entries]
    assert [e.content_hash for e in again.entries] == [e.content_hash for e in feed.entries]


def test_a_repeated_guid_keeps_the_first_entry_and_is_counted() -> None:
    feed = parse_feed(RSS, url="https://news.example.org/rss.xml")
    assert feed.duplicates == 1
    assert [e.entry_key for e in feed.entries].count("wire-0001") == 1
    assert feed.entries[0].title.startswith("Talks resume in")


def test_atom_entry() -> None:
    feed = parse_feed(ATOM, url="https://desk.example.net/atom")
    assert feed.title == "Atom desk"
    (entry,) = feed.entries
    assert entry.entry_key == "urn:example:desk:1"
    assert entry.link == "https://desk.example.net/kyiv?page=2"
    assert entry.published_at == datetime(2026, 3, 3, 14, 15, tzinfo=UTC)
    assert entry.authors == ("B. Reporter", "C. Editor")
    assert entry.summary == "one\ntwo"


def test_content_change_changes_the_hash_but_not_the_key() -> None:
    before = parse_feed(RSS, url="https://news.example.org/rss.xml").entries[0]
    changed = RSS.replace(b"again", b"once more")
    after = parse_feed(changed, url="https://news.example.org/rss.xml").entries[0]
    assert after.entry_key == before.entry_key
    assert after.content_hash != before.content_hash
    assert after.story_key == before.story_key


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<html><head><title>Not a feed</title></head><body><p>Hello</p></body></html>",
        b"\x00\x01\x02 garbage",
        b'{"version": "https://jsonfeed.org/version/1", "items": []}',
    ],
)
def test_non_feeds_raise_a_parse_error(body: bytes) -> None:
    with pytest.raises(FeedParseError):
        parse_feed(body, url="https://example.org/x", content_type="text/html")


def test_an_empty_but_valid_feed_is_not_an_error() -> None:
    body = b'<?xml version="1.0"?><rss version="2.0"><channel><title>Quiet</title></channel></rss>'
    feed = parse_feed(body, url="https://example.org/quiet")
    assert feed.entries == ()
    assert feed.title == "Quiet"


@pytest.mark.parametrize(
    ("link", "expected"),
    [
        (
            "HTTPS://WWW.Example.ORG:443/Path?b=2&utm_campaign=x&a=1#frag",
            "https://www.example.org/Path?b=2&a=1",
        ),
        ("http://example.org:8080/x?fbclid=1&mc_eid=2", "http://example.org:8080/x"),
        ("https://example.org", "https://example.org/"),
        ("mailto:someone@example.org", None),
        ("javascript:alert(1)", None),
        ("", None),
        (None, None),
        ("https://example.org:99999/bad-port", None),
    ],
)
def test_canonical_link(link: str | None, expected: str | None) -> None:
    assert canonical_link(link) == expected


@pytest.mark.parametrize(
    ("html", "text"),
    [
        ("<p>A &amp; B</p><p>C&nbsp;D</p>", "A & B\nC D"),
        ("x<br/>y", "x\ny"),
        ("<style>p{}</style><script>bad()</script>kept", "kept"),
        ("&lt;not a tag&gt; &#8220;quoted&#8221;", "<not a tag> \u201cquoted\u201d"),
        ("  lots   of\t\tspace  ", "lots of space"),
        ("<p>unclosed <b>bold", "unclosed bold"),
        ("", ""),
        (None, ""),
    ],
)
def test_html_to_text(html: str | None, text: str) -> None:
    assert html_to_text(html) == text


def test_story_key_links_the_same_story_across_feeds() -> None:
    assert story_key("https://www.example.org/a/1/", "One") == story_key(
        "http://example.org/a/1", "Other title"
    )
    assert story_key(None, "Iran’s talks — resume!") == story_key(None, "IRAN'S TALKS RESUME")
    assert title_fingerprint("Élan, vital") == "elan vital"
    assert story_key("https://example.org/a/1", "x") != story_key("https://example.org/a/2", "x")


def test_every_corpus_feed_parses_to_its_manifest_entry_count() -> None:
    manifest = json.loads(shared_path("corpus", "manifest.json").read_text(encoding="utf-8"))
    assert len(manifest) == 46
    for item in manifest:
        path = shared_path(item["file"])
        feed = parse_feed(path.read_bytes(), url=f"https://feeds.example/{path.name}")
        assert len(feed.entries) + feed.duplicates == item["entries"], item["file"]
        for entry in feed.entries:
            assert entry.published_at is None or entry.published_at.tzinfo is UTC
            assert "<" not in entry.summary or "&lt;" in path.read_text(errors="replace")


def test_untitled_linkless_entries_are_separate_stories() -> None:
    body = (
        b'<?xml version="1.0"?><rss version="2.0"><channel><title>T</title>'
        b'<item><guid isPermaLink="false">one</guid><description>a</description></item>'
        b'<item><guid isPermaLink="false">two</guid><description>b</description></item>'
        b"</channel></rss>"
    )
    first, second = parse_feed(body, url="https://example.org/feed").entries
    assert first.story_key != second.story_key


def test_keys_and_links_do_not_depend_on_where_the_feed_was_fetched() -> None:
    """A relative id stays as written, or as the document's own xml:base makes it (the key
    survives a moved feed); relative links are resolved against the document's address,
    through xml:base where the feed sets one."""
    body = (
        b'<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><title>T</title>'
        b"<entry><id>item-7</id><title>One</title><link href='/news/7?utm_medium=x'/></entry>"
        b'<entry xml:base="https://cdn.example.com/base/"><id>item-8</id><title>Two</title>'
        b"<link href='eight'/></entry></feed>"
    )
    here = parse_feed(body, url="https://old.example.org/feed.xml").entries
    there = parse_feed(body, url="https://new.example.net/atom").entries
    keys = ["item-7", "https://cdn.example.com/base/item-8"]
    assert [e.entry_key for e in here] == keys
    assert [e.entry_key for e in there] == keys
    assert [e.link for e in here] == [
        "https://old.example.org/news/7",
        "https://cdn.example.com/base/eight",
    ]
    assert there[0].link == "https://new.example.net/news/7"
    assert [e.content_hash for e in here] != [e.content_hash for e in there]
