"""Scale-out benchmark: N feeds and M Discord subscriptions on loopback, one PostgreSQL, a bounded
run with 1 and then with 3 ``counterparty run`` replicas.

    .venv/bin/python bench/scale.py [--feeds 2000] [--subscriptions 50] [--matching 0.1]
                                    [--replicas 1 3] [--cap 300]

Pieces: the local feed server (``tests/support/feedserver.py``) in its own process on 16 loopback
addresses, serving generated test-sample feeds (one item each, a matching one in ``--matching``
of them); the fake Discord server (``tests/support/fake_discord.py``) in this process, counting
every post; a fresh PostgreSQL database per run (``COUNTERPARTY_BENCH_PG_URL``, default
postgres@127.0.0.1:5432/test). Each run ends when every feed was fetched and every outbox row
is sent (or at ``--cap`` seconds).

Reported per run, all timed from the start of the replicas (so start-up is included): feeds/s
(feeds fetched / seconds until every feed was fetched once), messages/s (posts / seconds until
the last post, when every matching item had reached every channel), and duplicates, which
must be 0: repeated nonces among the POST requests, plus (channel, item) pairs that reached a
channel more than once. The 1-replica run is the baseline of the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bot.storage.schema import feeds, outbox  # noqa: E402
from tests.support.fake_discord import FakeDiscord  # noqa: E402
from tests.support.feedserver import serving_in_process  # noqa: E402
from tests.support.replicas import (  # noqa: E402
    QUIET_TITLE,
    child_env,
    item_marker,
    sample_rss,
    start_run,
)

PG_URL = os.environ.get(
    "COUNTERPARTY_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
MARKER = re.compile(r"\b[A-Z][a-z]+ (\d{4})\b")
HOSTS = ",".join(f"127.0.0.{n}" for n in range(1, 17))


def quiet_rss(n: int, now: datetime) -> bytes:
    title = QUIET_TITLE.format(place=item_marker(n))
    return (
        '<?xml version="1.0"?><rss version="2.0"><channel>'
        f"<title>Test sample wire {n}</title><link>https://sample.example/{n}</link>"
        f"<description>test sample</description><item><title>{title}</title>"
        f"<link>https://sample.example/{n}/q</link><guid>sample-{n}-q</guid>"
        f"<pubDate>{format_datetime(now)}</pubDate>"
        "<description>Test sample text: nothing to see.</description></item></channel></rss>"
    ).encode()


def write_feeds(root: Path, count: int, matching: float) -> list[int]:
    """Feed ``n`` has one item: a matching one for a ``matching`` share of feeds, else a quiet
    one. Returns the numbers of the matching feeds."""
    now = datetime.now(UTC)
    step = max(1, round(1 / matching)) if matching > 0 else count + 1
    matched = []
    for n in range(count):
        if n % step == 0:
            matched.append(n)
            body = sample_rss(n, now, quiet=False)
        else:
            body = quiet_rss(n, now)
        (root / f"f{n}.xml").write_bytes(body)
    return matched


def write_config(folder: Path, bases: list[str], feeds_count: int, subscriptions: int) -> Path:
    lines = [
        '[bot]\nleader_lease = "10s"\nlog_level = "WARNING"\n',
        '[fetch]\nparse_workers = 1\ntick = "1s"\nper_host_concurrency = 8\n'
        "global_concurrency = 64\n",
        '[delivery]\ndrain_interval = "1s"\n',
    ]
    for n in range(feeds_count):
        lines.append(f'[[feeds]]\nurl = "{bases[n % len(bases)]}/f{n}.xml"\ninterval = "1h"\n')
    for s in range(subscriptions):
        lines.append(
            f'[[subscriptions]]\nplatform = "discord"\ntarget = "{800000000000000000 + s}"\n'
            'cadence = "instant"\nmax_items = 100\n'
        )
    config = folder / "feeds.toml"
    config.write_text("\n".join(lines), encoding="utf-8")
    return config


@dataclass(frozen=True, slots=True)
class RunResult:
    replicas: int
    seconds: float
    feeds_fetched: int
    fetch_seconds: float
    posts: int
    post_seconds: float
    duplicates: int
    finished: bool

    @property
    def feeds_per_second(self) -> float:
        return self.feeds_fetched / self.fetch_seconds if self.fetch_seconds else 0.0

    @property
    def messages_per_second(self) -> float:
        return self.posts / self.post_seconds if self.post_seconds else 0.0


def fresh_database() -> tuple[str, str]:
    name = f"cp_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return name, make_url(PG_URL).set(database=name).render_as_string(hide_password=False)


def drop_database(name: str) -> None:
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def progress(db_url: str) -> tuple[int, int, int]:
    """(feeds fetched at least once, outbox rows, outbox rows not yet sent)."""
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            fetched = conn.execute(
                select(func.count()).select_from(feeds).where(feeds.c.last_fetched_at.is_not(None))
            ).scalar_one()
            rows = conn.execute(select(func.count()).select_from(outbox)).scalar_one()
            unsent = conn.execute(
                select(func.count()).select_from(outbox).where(outbox.c.status != "sent")
            ).scalar_one()
        return int(fetched), int(rows), int(unsent)
    finally:
        engine.dispose()


def duplicates(fake: FakeDiscord, matched: list[int]) -> int:
    posts = [r for r in fake.requests if r.method == "POST" and "/messages" in r.path]
    repeated_nonces = len(posts) - len({(r.path, r.body.get("nonce")) for r in posts})
    repeated_items = 0
    for channel, messages in fake.messages.items():
        bodies = [json.dumps(m, ensure_ascii=False) for m in messages]
        for n in matched:
            carrying = sum(item_marker(n) in body for body in bodies)
            repeated_items += max(0, carrying - 1)
        assert channel
    return repeated_nonces + repeated_items


async def run_once(
    replicas: int, bases: list[str], args: argparse.Namespace, matched: list[int], folder: Path
) -> RunResult:
    name, db_url = fresh_database()
    config = write_config(folder, bases, args.feeds, args.subscriptions)
    async with FakeDiscord() as fake:
        env = child_env(**fake.bot_env("fake-token-for-bench"))
        # Migrate once, as a deploy step would, so the replicas start together.
        migrate = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            "--db",
            db_url,
            "--config",
            str(config),
            "migrate",
            env=env,
            cwd=folder,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        await migrate.wait()
        logs = [folder / f"replica-{replicas}-{n}.log" for n in range(replicas)]
        started = time.monotonic()
        processes = [await start_run(folder, config, db_url, env, log) for log in logs]
        fetched_at = last_post = None
        finished = False
        seen_posts = 0
        found: dict[str, set[int]] = {}
        scanned: dict[str, int] = {}
        wanted = set(matched)
        try:
            while time.monotonic() - started < args.cap:
                await asyncio.sleep(0.5)  # sampling progress for the report
                now = time.monotonic()
                fetched, rows, unsent = await asyncio.to_thread(progress, db_url)
                posts = sum(len(m) for m in fake.messages.values())
                if posts != seen_posts:
                    last_post, seen_posts = now, posts
                for channel, messages in list(fake.messages.items()):
                    for message in messages[scanned.get(channel, 0) :]:
                        numbers = MARKER.findall(json.dumps(message, ensure_ascii=False))
                        found.setdefault(channel, set()).update(int(n) for n in numbers)
                    scanned[channel] = len(messages)
                if fetched >= args.feeds and fetched_at is None:
                    fetched_at = now
                delivered = len(found) == args.subscriptions and all(
                    wanted <= numbers for numbers in found.values()
                )
                if fetched_at is not None and delivered and rows and not unsent:
                    finished = True
                    break
        finally:
            for process in processes:
                if process.returncode is None:
                    process.send_signal(signal.SIGTERM)
            for process in processes:
                try:
                    await asyncio.wait_for(process.wait(), 60)
                except TimeoutError:
                    process.kill()
                    await process.wait()
        end = time.monotonic()
        fetched, _, _ = progress(db_url)
        result = RunResult(
            replicas=replicas,
            seconds=end - started,
            feeds_fetched=fetched,
            fetch_seconds=(fetched_at or end) - started,
            posts=sum(len(m) for m in fake.messages.values()),
            post_seconds=(last_post or end) - started,
            duplicates=duplicates(fake, matched),
            finished=finished,
        )
    drop_database(name)
    return result


async def main_async(args: argparse.Namespace) -> list[RunResult]:
    results = []
    with tempfile.TemporaryDirectory(prefix="cp-scale-") as tmp:
        folder = Path(tmp)
        root = folder / "feeds"
        root.mkdir()
        matched = write_feeds(root, args.feeds, args.matching)
        with serving_in_process(root, HOSTS) as bases:  # started once, before any timing
            for replicas in args.replicas:
                result = await run_once(replicas, bases, args, matched, folder)
                results.append(result)
                print(
                    f"{replicas} replica(s): {result.feeds_fetched} feeds in "
                    f"{result.fetch_seconds:.1f} s ({result.feeds_per_second:.0f} feeds/s), "
                    f"{result.posts} posts in {result.post_seconds:.1f} s "
                    f"({result.messages_per_second:.1f} messages/s), "
                    f"duplicates {result.duplicates}, "
                    f"{'finished' if result.finished else 'CUT AT THE CAP'} "
                    f"after {result.seconds:.1f} s",
                    flush=True,
                )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--feeds", type=int, default=2000)
    parser.add_argument("--subscriptions", type=int, default=50)
    parser.add_argument("--matching", type=float, default=0.1, help="share of matching feeds")
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--cap", type=float, default=300.0, help="seconds per run at most")
    args = parser.parse_args()
    results = asyncio.run(main_async(args))
    base = results[0]
    for result in results[1:]:
        print(
            f"{result.replicas} vs {base.replicas} replica(s): feeds/s x"
            f"{result.feeds_per_second / max(base.feeds_per_second, 1e-9):.2f}, messages/s x"
            f"{result.messages_per_second / max(base.messages_per_second, 1e-9):.2f}"
        )
    if any(r.duplicates for r in results):
        sys.exit("DUPLICATES FOUND")


if __name__ == "__main__":
    main()
