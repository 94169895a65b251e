"""Build the matcher's evaluation items (JSON lines) from ../shared, read in place.

The item texts are other people's writing, so they are never committed: this script writes them
to a path given on the command line (outside the repo); eval/dev-labels.jsonl holds only ids and
labels.

Items come from two places:

* every line of ``corpus/dev-items.jsonl`` (1,213 real 2025 news items), copied field for field;
* entries of the English-language real feeds in ``corpus/feeds/``, parsed with feedparser, kept when
  they are worth labelling (see ``is_relevant`` and ``is_sampled_negative``), deduplicated by link.
  Their id is ``"f-" + sha1(file name + "\\n" + entry id or link)[:12]``, stable across runs.

Usage::

    python eval/make_items.py /tmp/eval-items.jsonl [--shared ../shared]
"""

from __future__ import annotations

import argparse
import calendar
import hashlib
import html
import json
import re
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import feedparser

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SHARED = REPO.parent / "shared"

# Feeds left out: not English (the themes and the matcher are English-language), so a reader of
# the English digest would not be shown them and labelling them would measure nothing useful.
NON_ENGLISH_FEEDS = frozenset(
    {
        "bbc-urdu-2018-01-11.xml",
        "faz-aktuell-de-2025-12-17.xml",
        "ntv-de-2025-12-17.xml",
        "suspilne-ukrnet-uk-2023-12-22.xml",
        "tagesschau-de-atom-2025-12-28.xml",
        "uol-noticias-pt-windows1252.xml",
    }
)

# A feed entry is worth labelling when it names an actor, place or subject any theme is about.
RELEVANT = re.compile(
    r"\b(russia\w*|ukrain\w*|kremlin|putin|moscow|kyiv|kiev|zelensk\w*|donbas\w*|crimea\w*|"
    r"iran\w*|tehran|khamenei|hormuz|venezuel\w*|maduro|caracas|cuba\w*|havana|d[ií]az-canel|"
    r"syria\w*|damascus|assad|oil|crude|opec\w*|brent|sanction\w*|lng|gas prices?|"
    r"witkoff|kushner|dmitriev|lavrov|peskov)\b",
    re.IGNORECASE,
)

# Of the remaining entries, one in NEGATIVE_SAMPLE_MODULUS (chosen by the id hash, so stable)
# is kept as an easy negative, so the set is not made only of items that name the actors.
NEGATIVE_SAMPLE_MODULUS = 12


class _TextExtractor(HTMLParser):
    """Collects the text of an HTML fragment, with block elements turned into spaces."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        self.parts.append(" ")


def plain_text(fragment: str) -> str:
    """The fragment as plain text: tags dropped, entities decoded, whitespace collapsed."""
    if "<" in fragment:
        extractor = _TextExtractor()
        extractor.feed(fragment)
        extractor.close()
        fragment = "".join(extractor.parts)
    return re.sub(r"\s+", " ", html.unescape(fragment)).strip()


def feed_item_id(file_name: str, entry_key: str) -> str:
    """The stable id of a feed entry: "f-" + sha1(file name, newline, entry id or link)[:12]."""
    digest = hashlib.sha1(f"{file_name}\n{entry_key}".encode(), usedforsecurity=False)
    return "f-" + digest.hexdigest()[:12]


def _published(entry: Any) -> str | None:
    parsed = entry.get("published_parsed") or entry.get("updated_parsed")
    if not parsed:
        return None
    return datetime.fromtimestamp(calendar.timegm(parsed), tz=UTC).isoformat()


def _content(entry: Any) -> str:
    """Full text from content:encoded / atom:content, when the feed carries it."""
    texts = [plain_text(part.get("value", "")) for part in entry.get("content", [])]
    return max(texts, key=len, default="")


def is_relevant(item: dict[str, Any]) -> bool:
    """Whether the entry names any actor, place or subject of the themes."""
    text = " ".join(str(item.get(k, "")) for k in ("title", "summary", "content"))
    return RELEVANT.search(text) is not None


def is_sampled_negative(item_id: str) -> bool:
    """The stable 1-in-N sample of the other entries, kept as easy negatives."""
    digest = hashlib.sha1(item_id.encode(), usedforsecurity=False).hexdigest()
    return int(digest, 16) % NEGATIVE_SAMPLE_MODULUS == 0


def feed_items(feeds_dir: Path) -> Iterator[dict[str, Any]]:
    """The feed entries worth labelling, in file order, each link at most once."""
    seen_links: set[str] = set()
    for path in sorted(feeds_dir.glob("*.xml")):
        if path.name in NON_ENGLISH_FEEDS:
            continue
        parsed = feedparser.parse(path.read_bytes())
        for entry in parsed.entries:
            link = str(entry.get("link", ""))
            key = str(entry.get("id") or link or entry.get("title", ""))
            title = plain_text(str(entry.get("title", "")))
            if not title or (link and link in seen_links):
                continue
            seen_links.add(link)
            item: dict[str, Any] = {
                "id": feed_item_id(path.name, key),
                "title": title,
                "summary": plain_text(str(entry.get("summary", ""))),
                "published": _published(entry),
                "source": path.name,
                "link": link,
            }
            content = _content(entry)
            if content and content != item["summary"]:
                item["content"] = content
            if is_relevant(item) or is_sampled_negative(item["id"]):
                yield item


def dev_items(dev_path: Path) -> Iterator[dict[str, Any]]:
    """The lines of corpus/dev-items.jsonl, unchanged."""
    with dev_path.open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                yield json.loads(line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="where to write the items (outside the repo)")
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED, help="the ../shared folder")
    args = parser.parse_args(argv)
    out: Path = args.out.resolve()
    if out.is_relative_to(REPO):
        parser.error(f"{out} is inside the repo; item texts must not be committed")
    corpus = args.shared / "corpus"
    if not corpus.is_dir():
        parser.error(f"{corpus} is absent; pass --shared with the folder that holds corpus/")
    count = 0
    ids: set[str] = set()
    with out.open("w", encoding="utf-8") as sink:
        for item in [*dev_items(corpus / "dev-items.jsonl"), *feed_items(corpus / "feeds")]:
            if item["id"] in ids:
                continue
            ids.add(item["id"])
            sink.write(json.dumps(item, ensure_ascii=False) + "\n")
            count += 1
    print(f"wrote {count} items to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
