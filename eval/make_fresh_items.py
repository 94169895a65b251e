"""Build the items of the fresh evaluation days (JSON lines) from RSS-Link-Database-2025 files.

The fresh days (``eval/fresh-sources.tsv``) are whole days of the same world-news feeds as
``../shared/corpus/dev-items.jsonl``, taken from the public repository
``rumca-js/RSS-Link-Database-2025`` at pinned commits. Their texts are other people's writing and
are not in ``../shared`` either, so the repo keeps only ids and labels
(``eval/fresh-labels.jsonl``); this script rebuilds the items:

* ``--download DIR`` fetches each listed file at its commit into ``DIR/<day>/`` (needs network);
* then every ``DIR/<day>/*_entries.json`` is flattened the same way as the dev items: tags
  dropped, entities decoded, whitespace collapsed, deduplicated by link and by title, and each
  item's id is ``sha1(link)[:12]``.

Usage::

    python eval/make_fresh_items.py /tmp/fresh-days /tmp/fresh-items.jsonl --download
    counterparty eval eval/fresh-labels.jsonl --items /tmp/fresh-items.jsonl --split fresh-2
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import html
import json
import re
import sys
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SOURCES = REPO / "eval" / "fresh-sources.tsv"
RAW_BASE = "https://raw.githubusercontent.com/rumca-js/RSS-Link-Database-2025"

_TAG = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")


def plain(text: str | None) -> str:
    """Feed text as plain text: tags, then entities, then tags that were entity-escaped."""
    if not text:
        return ""
    text = _TAG.sub(" ", html.unescape(_TAG.sub(" ", text)))
    return _SPACE.sub(" ", text).strip()


def read_sources(path: Path = SOURCES) -> list[tuple[str, str, str]]:
    """(day, commit, file name) rows of the sources table."""
    with path.open(encoding="utf-8", newline="") as handle:
        rows = csv.DictReader(handle, delimiter="\t")
        return [(row["day"], row["commit"], row["file"]) for row in rows]


def download(days_dir: Path, base: str = RAW_BASE, sources: Path = SOURCES) -> int:
    """Fetch every listed entries file at its commit into ``days_dir/<day>/``; return the count."""
    count = 0
    for day, commit, name in read_sources(sources):
        target = days_dir / day / name
        if target.exists():
            continue
        year, month = day[:4], day[5:7]
        url = f"{base}/{commit}/{year}/{month}/{day}/{urllib.request.quote(name)}"
        with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 (fixed https base)
            body = response.read()
        json.loads(body)  # a truncated or HTML error page must not pass for a day file
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(body)
        count += 1
    return count


def items_of_day(day_dir: Path) -> list[dict[str, Any]]:
    """The day's entries as items, deduplicated by link and title, in file-name order."""
    items: list[dict[str, Any]] = []
    links: set[str] = set()
    titles: set[str] = set()
    for path in sorted(day_dir.glob("*_entries.json")):
        for entry in json.loads(path.read_text(encoding="utf-8")):
            link = (entry.get("link") or "").strip()
            title = plain(entry.get("title"))
            if not link or not title or link in links or title.lower() in titles:
                continue
            links.add(link)
            titles.add(title.lower())
            items.append(
                {
                    "id": hashlib.sha1(link.encode(), usedforsecurity=False).hexdigest()[:12],
                    "title": title,
                    "summary": plain(entry.get("description")),
                    "published": entry.get("date_published"),
                    "source": entry.get("source_url"),
                    "link": link,
                }
            )
    return items


def build(days_dir: Path) -> list[dict[str, Any]]:
    """Items of every day folder under ``days_dir``; an id seen on an earlier day is kept once."""
    seen: set[str] = set()
    out: list[dict[str, Any]] = []
    for day_dir in sorted(p for p in days_dir.iterdir() if p.is_dir()):
        for item in items_of_day(day_dir):
            if item["id"] not in seen:
                seen.add(item["id"])
                out.append(item)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("days_dir", type=Path, help="folder of <day>/ folders of entry files")
    parser.add_argument("out", type=Path, help="items file to write (outside the repo)")
    parser.add_argument("--download", action="store_true", help="fetch the listed files first")
    parser.add_argument("--base-url", default=RAW_BASE, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.out.resolve().is_relative_to(REPO):
        print("error: write the items outside the repo (other people's text)", file=sys.stderr)
        return 2
    if args.download:
        fetched = download(args.days_dir, args.base_url)
        print(f"downloaded {fetched} files into {args.days_dir}", file=sys.stderr)
    if not args.days_dir.is_dir():
        print(f"error: {args.days_dir} is not a folder (use --download)", file=sys.stderr)
        return 2
    items = build(args.days_dir)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8") as handle:
        for item in items:
            handle.write(json.dumps(item, ensure_ascii=False) + "\n")
    print(f"wrote {len(items)} items to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
