"""Discord adapter costs, as ratios against baselines measured in the same run.

* render: ``render_digest`` of a large digest (hostile feed text included) vs ``json.dumps`` of
  the payloads it produced (what storing them in the outbox costs anyway);
* send: ``DiscordSender.send`` (discord.py's HTTP code, nonce, outcome mapping) vs a bare aiohttp
  POST of the same JSON body to the same endpoint of the local fake Discord server.

Run from the repository root:
``.venv/bin/python bench/discord_adapter.py [--entries 200] [--posts 300]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import discord

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.delivery.discord.render import render_digest
from bot.delivery.discord.sender import DiscordSender, make_trace_config
from bot.delivery.records import OutboxMessage, Sent
from bot.digest.records import Digest, DigestEntry, DigestSection
from tests.support.fake_discord import FakeDiscord

CHANNEL = "123456789012345678"
NOW = datetime(2026, 3, 7, tzinfo=UTC)
HOSTILE = "@everyone <@123456789012345678> [x](https://evil.example) **b** `c` _u_ "


def big_digest(entries: int) -> Digest:
    sections = []
    for s in range(8):
        items = tuple(
            DigestEntry(
                entry_id=s * 10_000 + n,
                title=f"Sample headline {n} " + HOSTILE * 3,
                outlet=f"Sample outlet {n % 7}",
                link=f"https://news.example/{s}/{n}?q=(1)",
                published=NOW - timedelta(minutes=n),
                excerpt="Sample excerpt text. " * 20 + HOSTILE,
                score=0.9,
                theme_ids=(f"t{s}",),
            )
            for n in range(entries // 8)
        )
        sections.append(DigestSection("theme", f"t{s}", f"Theme {s}", "Framing. " * 30, items))
    return Digest(NOW, NOW - timedelta(hours=6), NOW, tuple(sections))


def timed(work: object, repeat: int) -> float:
    assert callable(work)
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return best


async def bench_send(posts: int) -> tuple[float, float]:
    async with FakeDiscord() as fake:
        discord.http.Route.BASE = fake.api_base
        client = discord.Client(
            intents=discord.Intents.none(),
            allowed_mentions=discord.AllowedMentions.none(),
            http_trace=make_trace_config(),
        )
        await client.login("bench-token")
        sender = DiscordSender(client)
        payload = render_digest(big_digest(16))[0]
        body = json.dumps({**payload, "nonce": "x", "allowed_mentions": {"parse": []}})
        url = f"{fake.api_base}/channels/{CHANNEL}/messages"
        async with aiohttp.ClientSession() as session:
            started = time.perf_counter()
            for n in range(posts):
                headers = {"Content-Type": "application/json", "Authorization": "Bot bench"}
                async with session.post(
                    url, data=body.replace('"x"', f'"b{n}"'), headers=headers
                ) as r:
                    await r.read()
            baseline = time.perf_counter() - started
        started = time.perf_counter()
        for n in range(posts):
            message = OutboxMessage(n, "discord", CHANNEL, payload, f"s{n}", 0, None)
            assert isinstance(await sender.send(message), Sent)
        measured = time.perf_counter() - started
        await client.close()
    return baseline, measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=200)
    parser.add_argument("--posts", type=int, default=300)
    args = parser.parse_args()

    digest = big_digest(args.entries)
    payloads = render_digest(digest)
    render = timed(lambda: render_digest(digest), 5)
    store = timed(lambda: json.dumps(payloads), 5)
    print(
        f"render {args.entries} entries -> {len(payloads)} messages: {render * 1000:.1f} ms "
        f"vs json.dumps {store * 1000:.1f} ms = {render / store:.1f}x"
    )
    baseline, measured = asyncio.run(bench_send(args.posts))
    print(
        f"send {args.posts} posts: DiscordSender {measured / args.posts * 1000:.2f} ms/post vs "
        f"bare aiohttp {baseline / args.posts * 1000:.2f} ms/post = {measured / baseline:.2f}x"
    )


if __name__ == "__main__":
    main()
