"""Instant-cadence latency: a matching item appears in a feed -> its digest is posted.

Runs the real ``counterparty run`` as a subprocess against the local feed server
(tests/support/feedserver.py). ``--sink console`` (no token): the digest is printed on stdout.
``--sink discord``: ``DISCORD_TOKEN`` is set, the bot logs in to the fake Discord server
(tests/support/fake_discord.py, REST and gateway, run here in a thread of its own) and a
``discord`` channel subscription gets the digest as a POST to ``/channels/ID/messages``.
The live feed is polled every ``--live-interval`` seconds; the other feeds are copies of the
shared corpus (``/copy/N/...``) at the default interval, so the bot carries the polling, parsing
and matching load of N feeds.

For each sample the bench adds one new matching item to the live feed, waits until the server
has answered a request for the new version (the poll that fetches it), and times from that
answer to the line with the item's title on the bot's stdout, or to the fake Discord server
receiving the POST that carries it. The same run first measures a baseline with the live feed
alone and reports the ratio.

    .venv/bin/python -m bench.bench_instant_latency --feeds 500 --samples 10
    .venv/bin/python -m bench.bench_instant_latency --sink discord --feeds 500 --samples 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Coroutine
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from sqlalchemy import create_engine, func, select

from bot.storage.schema import entries
from tests.support.fake_discord import FakeDiscord
from tests.support.feedserver import FeedServer
from tests.support.replicas import child_env

REPO = Path(__file__).resolve().parent.parent
CORPUS = Path(os.environ.get("COUNTERPARTY_SHARED", REPO.parent / "shared")) / "corpus"
CHANNEL = "700000000000000777"
T = TypeVar("T")


class DiscordInThread:
    """The fake Discord server on an event loop of its own thread, for this threaded bench."""

    def __enter__(self) -> DiscordInThread:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.fake = self._call(self._start())
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._call(self.fake.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @staticmethod
    async def _start() -> FakeDiscord:
        fake = FakeDiscord()
        await fake.start()
        return fake

    def posted_at(self, text: str, timeout: float) -> float:
        """``time.monotonic()`` when the fake server had answered a post containing ``text``
        (the condition is checked after every request the fake handles)."""

        def has_text(fake: FakeDiscord) -> bool:
            return any(text in json.dumps(m) for m in fake.messages.get(CHANNEL, []))

        async def wait() -> float:
            await self.fake.wait_for(has_text, within=timeout)
            return time.monotonic()

        return self._call(wait(), timeout + 5)


def live_feed(items: list[tuple[str, str]]) -> bytes:
    now = format_datetime(datetime.now(UTC), usegmt=True)
    body = "".join(
        f"<item><title>{title}</title><guid isPermaLink='false'>{guid}</guid>"
        f"<link>http://127.0.0.1/bench/{guid}</link><pubDate>{now}</pubDate>"
        "<description>The Kremlin rejected the US ceasefire plan, saying its demands on "
        "Ukraine had not changed (invented benchmark item).</description></item>"
        for guid, title in items
    )
    return (
        "<?xml version='1.0' encoding='utf-8'?><rss version='2.0'><channel>"
        f"<title>Bench live feed (invented)</title><link>http://127.0.0.1/</link>{body}"
        "</channel></rss>"
    ).encode()


def corpus_files() -> list[str]:
    manifest = json.loads((CORPUS / "manifest.json").read_text(encoding="utf-8"))
    return [m["file"].removeprefix("corpus/") for m in manifest if m.get("entries", 0) > 0]


def write_config(
    folder: Path, server: FeedServer, feeds: int, live_interval: float, sink: str = "console"
) -> Path:
    lines = [
        "[fetch]",
        'min_interval = "1s"',
        'tick = "1s"',
        'jitter = "0.1s"',
        "",
        "[[feeds]]",
        f'url = "{server.url("live.xml")}"',
        'name = "Live"',
        f'interval = "{live_interval}s"',
    ]
    if sink == "discord":
        lines += ["", "[[subscriptions]]", 'platform = "discord"', f'target = "{CHANNEL}"']
        lines += ['cadence = "instant"']
    files = corpus_files()
    for n in range(feeds - 1):
        lines += ["", "[[feeds]]", f'url = "{server.url(files[n % len(files)], copy=n)}"']
    path = folder / "feeds.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def pump(stream: object, sink: queue.Queue[tuple[float, str]]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        sink.put((time.monotonic(), line))


def wait_line(lines: queue.Queue[tuple[float, str]], text: str, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while True:
        stamp, line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
        if text in line:
            return stamp


def unmatched(db_url: str) -> int:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            query = select(func.count()).select_from(entries).where(entries.c.matched_at.is_(None))
            return int(conn.execute(query).scalar_one())
    finally:
        engine.dispose()


def measure(
    feeds: int, samples: int, live_interval: float, sink: str = "console"
) -> tuple[list[float], float]:
    """Latencies of ``samples`` items, and seconds from launch until the start-up backlog
    (first poll of every feed, matching of every stored entry) was done."""
    if sink == "discord":
        with DiscordInThread() as discord:
            return _measure(feeds, samples, live_interval, discord)
    return _measure(feeds, samples, live_interval, None)


def _measure(
    feeds: int, samples: int, live_interval: float, discord: DiscordInThread | None
) -> tuple[list[float], float]:
    with tempfile.TemporaryDirectory() as tmp, FeedServer(CORPUS, record=True) as server:
        folder = Path(tmp)
        items = [("bench-0", "Harvest festival opens (invented, matches nothing)")]
        server.put("live.xml", live_feed(items))
        sink = "discord" if discord is not None else "console"
        config = write_config(folder, server, feeds, live_interval, sink)
        db_url = f"sqlite:///{folder / 'bench.db'}"
        env = child_env(**(discord.fake.bot_env("fake-token-for-bench") if discord else {}))
        command = [sys.executable, "-m", "bot", "--config", str(config), "--db", db_url, "run"]
        with subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp
        ) as child:
            out: queue.Queue[tuple[float, str]] = queue.Queue()
            err: queue.Queue[tuple[float, str]] = queue.Queue()
            threading.Thread(target=pump, args=(child.stdout, out), daemon=True).start()
            threading.Thread(target=pump, args=(child.stderr, err), daemon=True).start()
            launched = time.monotonic()
            try:
                wait_line(err, "counterparty is running", timeout=600)
                # Let the start-up backlog (baseline entries of every feed) be matched first.
                deadline = time.monotonic() + 600
                while unmatched(db_url) and time.monotonic() < deadline:
                    threading.Event().wait(1.0)
                ready = time.monotonic() - launched
                latencies = []
                for k in range(1, samples + 1):
                    before = len(server.requests_for("live.xml"))
                    title = f"Kremlin rejects ceasefire plan, bench item {k:03d}"
                    items.append((f"bench-{k}", title))
                    server.put("live.xml", live_feed(items))
                    # The poll that fetches the new version: the next answered request for it
                    # (checked every 10 ms, which bounds the timing error).
                    deadline = time.monotonic() + 60
                    while len(server.requests_for("live.xml")) == before:
                        if time.monotonic() > deadline:
                            raise TimeoutError("the live feed was not polled within 60 s")
                        threading.Event().wait(0.01)
                    fetched = time.monotonic()
                    if discord is not None:
                        posted = discord.posted_at(title, timeout=60)
                    else:
                        posted = wait_line(out, title, timeout=60)
                    latencies.append(posted - fetched)
            finally:
                child.terminate()
                child.wait(timeout=60)
        return latencies, ready


def summary(values: list[float]) -> str:
    return f"median {statistics.median(values):.3f} s, max {max(values):.3f} s (n={len(values)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feeds", type=int, default=500)
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--live-interval", type=float, default=2.0)
    parser.add_argument("--sink", choices=("console", "discord"), default="console")
    args = parser.parse_args()
    print(f"sink: {args.sink}", flush=True)
    baseline, ready = measure(1, args.samples, args.live_interval, args.sink)
    print(f"baseline (1 feed):     {summary(baseline)}; ready after {ready:.1f} s", flush=True)
    loaded, ready = measure(args.feeds, args.samples, args.live_interval, args.sink)
    print(f"loaded ({args.feeds} feeds): {summary(loaded)}; ready after {ready:.1f} s", flush=True)
    ratio = statistics.median(loaded) / statistics.median(baseline)
    print(f"ratio of medians (loaded / baseline): {ratio:.2f}")


if __name__ == "__main__":
    main()
