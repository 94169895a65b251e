"""``counterparty run`` with a Discord token, as a real subprocess, against the fake Discord server
(REST and gateway) and the local feed server, both on 127.0.0.1.

The feed is a tiny RSS document written for this test; every item is marked as test sample text.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.support.fake_discord import APP_ID, FakeDiscord
from tests.support.feedserver import FeedServer
from tests.support.replicas import child_env, outbox_rows
from tests.support.replicas import running as run_bot
from tests.support.sample_feeds import sample_wire
from tests.support.waiting import until

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


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    with FeedServer() as server:
        server.put("wire.xml", sample_wire(SAMPLE_ITEMS, datetime.now(UTC), key="discord"))
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


def running(
    tmp_path: Path, config: Path, db_url: str, fake: FakeDiscord, name: str
) -> AbstractAsyncContextManager[asyncio.subprocess.Process]:
    return run_bot(tmp_path, config, db_url, child_env(**fake.bot_env()), tmp_path / f"{name}.log")


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
    assert any(r.status == "pending" for r in outbox_rows(db_url))

    async with running(tmp_path, config, db_url, fake, "second") as process:

        def all_sent() -> bool:
            rows = outbox_rows(db_url)
            return bool(rows) and all(r.status == "sent" for r in rows)

        # first the resend reaches Discord, then the bot records the outcome
        await fake.wait_for_request("POST", f"/channels/{CHANNEL}/messages", count=2)
        await until(all_sent, "every outbox row sent", TIMEOUT)
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), TIMEOUT)
    assert code == 0, (tmp_path / "second.log").read_text(encoding="utf-8")[-3000:]
    rows = outbox_rows(db_url)
    posts = fake.requests_to("POST", f"/channels/{CHANNEL}/messages")
    # the resend carried the same nonce, and Discord answered with the first message
    assert [p.body["nonce"] for p in posts].count(first.body["nonce"]) == 2
    assert len(fake.messages[CHANNEL]) == len(rows)
    assert sorted(m["id"] for m in fake.messages[CHANNEL]) == sorted(
        r.platform_message_id for r in rows
    )
    assert len({m["nonce"] for m in fake.messages[CHANNEL]}) == len(rows)
