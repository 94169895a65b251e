"""Benchmark: matcher throughput on real items, against the keyword baseline in the same run.

Workloads (read in place from ../shared, nothing copied):

* title+summary: every item of ``corpus/dev-items.jsonl`` (1,213 real 2025 news items);
* full text: every entry of the real feeds in ``corpus/feeds/`` whose content is at least
  1,500 characters (HTML as the feed gives it; the matcher strips it).

Each workload runs for at least ``--seconds`` on one core (single thread, one process). The
baseline is the keyword-only matcher of ``bot.matching.eval`` over the same items, so the
report's ratios are machine-independent even where the absolute numbers are not.

    .venv/bin/python bench/match.py [--shared ../shared] [--seconds 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import feedparser

from bot.matching.catalog import load_catalog
from bot.matching.eval import KeywordBaseline
from bot.matching.matcher import Matcher
from bot.matching.records import Item

REPO = Path(__file__).resolve().parent.parent


def short_items(shared: Path) -> list[Item]:
    items = []
    with (shared / "corpus" / "dev-items.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            data = json.loads(line)
            items.append(Item(id=data["id"], title=data["title"], summary=data["summary"] or ""))
    return items


def full_text_items(shared: Path, min_chars: int = 1500) -> list[Item]:
    items = []
    for path in sorted((shared / "corpus" / "feeds").iterdir()):
        parsed: Any = feedparser.parse(str(path))
        for n, entry in enumerate(parsed.entries):
            content = entry.get("content")
            if not content or len(content[0].get("value", "")) < min_chars:
                continue
            items.append(
                Item(
                    id=f"{path.name}#{n}",
                    title=entry.get("title", ""),
                    summary=entry.get("summary", ""),
                    content=content[0]["value"],
                )
            )
    return items


def throughput(run: Callable[[Item], object], items: Sequence[Item], seconds: float) -> float:
    """Items per second, over whole passes until ``seconds`` have gone by (at least one pass)."""
    done = 0
    start = time.perf_counter()
    while True:
        for item in items:
            run(item)
        done += len(items)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return done / elapsed


def latency_p95_ms(run: Callable[[Item], object], items: Sequence[Item]) -> float:
    samples = []
    for item in items:
        start = time.perf_counter()
        run(item)
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.quantiles(samples, n=20)[18]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args(argv)
    if not (args.shared / "corpus").exists():
        print(f"{args.shared}/corpus is absent: nothing to measure", file=sys.stderr)
        return 2

    start = time.perf_counter()
    catalog = load_catalog()
    matcher = Matcher(catalog)
    build_ms = (time.perf_counter() - start) * 1000
    baseline = KeywordBaseline(catalog)

    workloads = {
        "title+summary": short_items(args.shared),
        "full text": full_text_items(args.shared),
    }
    print(f"matcher built in {build_ms:.0f} ms (catalog load + term index)")
    print(
        f"{'workload':<14} {'items':>6} {'avg chars':>9} {'matcher/s':>10} {'baseline/s':>11} "
        f"{'ratio':>6} {'p95 ms':>7}"
    )
    for name, items in workloads.items():
        chars = statistics.mean(len(i.title) + len(i.summary) + len(i.content or "") for i in items)
        base = throughput(baseline, items, args.seconds)
        rate = throughput(matcher.match, items, args.seconds)
        p95 = latency_p95_ms(matcher.match, items)
        print(
            f"{name:<14} {len(items):>6} {chars:>9.0f} {rate:>10.0f} {base:>11.0f} "
            f"{rate / base:>6.2f} {p95:>7.2f}"
        )
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS: {peak_mb:.0f} MB (whole process, including feedparser and the corpus)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
