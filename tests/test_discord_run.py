"""``counterparty run`` with a Discord token, as a real subprocess, against the fake Discord server
(REST and gateway) and the local feed server, both on 127.0.0.1.

The feed is a tiny RSS document written for this test; every item is marked as test sample text.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select

from bot.storage.schema import outbox
from tests.support.fake_discord import APP_ID, FakeDiscord
from tests.support.feedserver import FeedServer

pytestmark = pytest.mark.slow

CHANNEL = "700000000000000099"
TIMEOUT = 90.0
SAMPLE_ITEMS = [
    (
        "[Test sample] Kremlin rejects the US ceasefire proposal as Witkoff arrives in Moscow",
        "Test sample text: the Kremlin said Putin would not accept the ceasefire terms proposed "
        "by Washington envoy Witkoff.",
    ),
    (
        "[Test sample] Oil prices jump and Russia gains export revenue as Hormuz shipping halts",
        "Test sample text: analysts said higher oil prices boost Russian oil export revenues.",
    ),
    ("[Test sample] Town library extends opening hours", "Test sample text: nothing to match."),
]


def sample_rss(now: datetime) -> bytes:
    items = "".join(
        f"<item><title>{title}</title><link>https://sample.example/{n}</link>"
        f"<guid>sample-{n}</guid><pubDate>{format_datetime(now)}</pubDate>"
        f"<description>{summary}</description></item>"
        for n, (title, summary) in enumerate(SAMPLE_ITEMS)
    )
    return (
        '<?xml version="1.0"?><rss version="2.0"><channel><title>Test sample wire</title>'
        f"<link>https://sample.example/</link><description>test</description>{items}"
        "</channel></rss>"
    ).encode()


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    with FeedServer() as server:
        server.put("wire.xml", sample_rss(datetime.now(UTC)))
        yield server


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as server:
        yield server


def write_config(tmp_path: Path, feed_url: str) -> Path:
    config = tmp_path / "feeds.toml"
    config.write_text(
        # a short outbox lease: the restarted bot may take over a dead one's claim soon
        '[fetch]\nparse_workers = 1\n\n[delivery]\nlease = "3s"\n\n'
        f'[[feeds]]\nurl = "{feed_url}"\nname = "Test Wire"\n\n'
        f'[[subscriptions]]\nplatform = "discord"\ntarget = "{CHANNEL}"\ncadence = "instant"\n',
        encoding="utf-8",
    )
    return config


@asynccontextmanager
async def running(
    tmp_path: Path, config: Path, db_url: str, fake: FakeDiscord, name: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DISCORD_TOKEN", "TELEGRAM_TOKEN") and not k.startswith("COUNTERPARTY_")
    }
    env.update(
        PYTHONUNBUFFERED="1",
        DISCORD_TOKEN="fake-token-for-tests",
        COUNTERPARTY_DISCORD_API_BASE=fake.api_base,
        COUNTERPARTY_DISCORD_GATEWAY=fake.gateway_url,
    )
    log = tmp_path / f"{name}.log"
    with log.open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            "--config",
            str(config),
            "--db",
            db_url,
            "run",
            stdout=output,
            stderr=output,
            env=env,
            cwd=tmp_path,
        )
        try:
            yield process
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


async def until(condition: Callable[[], bool], what: str, within: float = TIMEOUT) -> None:
    """Wait for a condition outside this process (the child's database) with a deadline."""
    try:
        async with asyncio.timeout(within):
            # Another process's database has no event to wait on: poll it, within the deadline.
            while not condition():  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    except TimeoutError:
        pytest.fail(f"not reached within {within} s: {what}")


def outbox_rows(db_url: str) -> list[tuple[str, str | None, str]]:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            query = select(outbox.c.status, outbox.c.platform_message_id, outbox.c.nonce)
            return [(r.status, r.platform_message_id, r.nonce) for r in conn.execute(query)]
    finally:
        engine.dispose()


async def test_run_posts_digest_and_answers_slash_commands(
    fake: FakeDiscord, feed_server: FeedServer, tmp_path: Path
) -> None:
    config = write_config(tmp_path, feed_server.url("wire.xml"))
    db_url = f"sqlite:///{tmp_path / 'bot.db'}"
    async with running(tmp_path, config, db_url, fake, "run") as process:
        await fake.wait_for(lambda f: bool(f.messages.get(CHANNEL)), within=TIMEOUT)
        await fake.wait_identified(within=TIMEOUT)
        payload = {
            "id": "810000000000000001",
            "application_id": str(APP_ID),
            "type": 2,
            "token": "interaction-token-run",
            "version": 1,
            "channel_id": CHANNEL,
            "user": {"id": "600000000000000001", "username": "reader", "discriminator": "0"},
            "attachment_size_limit": 10485760,
            "app_permissions": "2048",
            "locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {},
            "context": 1,
            "data": {"id": "1", "name": "claims", "type": 1, "options": []},
        }
        await fake.dispatch("INTERACTION_CREATE", payload)
        [callback] = await fake.wait_for_request("POST", "/interactions/810000000000000001/")
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), TIMEOUT)
    log = (tmp_path / "run.log").read_text(encoding="utf-8")
    assert code == 0, log[-3000:]
    assert "Traceback" not in log
    assert "fake-token-for-tests" not in log
    assert callback.body["type"] == 4
    assert "not-our-war" in str(callback.body["data"]["embeds"])
    posted = str(fake.messages[CHANNEL])
    assert "Kremlin rejects the US ceasefire proposal" in posted
    assert "Oil prices jump" in posted
    assert "Town library" not in posted
    [post] = fake.requests_to("POST", f"/channels/{CHANNEL}/messages")[:1]
    assert post.body["allowed_mentions"] == {"parse": []}
    assert post.body["enforce_nonce"] is True


async def test_killed_mid_delivery_then_restarted_posts_each_message_once(
    fake: FakeDiscord, feed_server: FeedServer, tmp_path: Path
) -> None:
    config = write_config(tmp_path, feed_server.url("wire.xml"))
    db_url = f"sqlite:///{tmp_path / 'bot.db'}"
    fake.hold()  # Discord creates the post, but the bot never hears back before it dies
    async with running(tmp_path, config, db_url, fake, "first") as process:
        [first] = await fake.wait_for_request("POST", f"/channels/{CHANNEL}/messages")
        process.kill()
        await process.wait()
    fake.release()
    assert len(fake.messages[CHANNEL]) == 1
    assert any(status == "pending" for status, _, _ in outbox_rows(db_url))

    async with running(tmp_path, config, db_url, fake, "second") as process:

        def all_sent() -> bool:
            rows = outbox_rows(db_url)
            return bool(rows) and all(status == "sent" for status, _, _ in rows)

        # first the resend reaches Discord, then the bot records the outcome
        await fake.wait_for_request("POST", f"/channels/{CHANNEL}/messages", count=2)
        await until(all_sent, "every outbox row sent")
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), TIMEOUT)
    assert code == 0, (tmp_path / "second.log").read_text(encoding="utf-8")[-3000:]
    rows = outbox_rows(db_url)
    posts = fake.requests_to("POST", f"/channels/{CHANNEL}/messages")
    # the resend carried the same nonce, and Discord answered with the first message
    assert [p.body["nonce"] for p in posts].count(first.body["nonce"]) == 2
    assert len(fake.messages[CHANNEL]) == len(rows)
    assert sorted(m["id"] for m in fake.messages[CHANNEL]) == sorted(r[1] for r in rows)
    assert len({m["nonce"] for m in fake.messages[CHANNEL]}) == len(rows)
