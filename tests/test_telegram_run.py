"""``counterparty run`` with a Telegram token, as a real subprocess, against the fake Bot API
server and the local feed server, both on 127.0.0.1: digests reach a private chat, a forum topic
and a channel, and commands are answered. Then Discord and Telegram from one process.

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

from tests.support.fake_discord import FakeDiscord
from tests.support.fake_telegram import TOKEN, FakeTelegram, check_telegram_html
from tests.support.feedserver import FeedServer
from tests.support.replicas import child_env
from tests.support.replicas import running as run_bot
from tests.support.sample_feeds import sample_wire

pytestmark = pytest.mark.slow

PRIVATE = 6660001
FORUM = -1006660002
TOPIC = 17
CHANNEL_ID = -1006660003
CHANNEL = "counterparty_test_channel"
DISCORD_CHANNEL = "700000000000000077"
READER = 4242
TIMEOUT = 90.0
SAMPLE_ITEMS = [
    (
        "[Test sample] Kremlin turns down the envoy's ceasefire plan & asks for more <land>",
        "Test sample text: the Kremlin said Putin rejected the ceasefire plan that the US envoy "
        "Witkoff brought to Moscow for talks.",
    ),
    (
        "[Test sample] Zelenskyy told he has no cards as Washington presses Kyiv to settle",
        "Test sample text: the US president said Zelenskyy must accept a deal and territorial "
        "concessions, pressing Ukraine to settle.",
    ),
    ("[Test sample] Harbour ferry timetable changes", "Test sample text: nothing to match."),
]


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    with FeedServer() as server:
        server.put("tg-wire.xml", sample_wire(SAMPLE_ITEMS, datetime.now(UTC), key="tg"))
        yield server


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        server.add_chat(PRIVATE, "private", title="Reader")
        server.add_chat(FORUM, "supergroup", title="Forum desk", is_forum=True)
        server.add_chat(CHANNEL_ID, "channel", title="Digest channel", username=CHANNEL)
        yield server


def write_config(tmp_path: Path, feed_url: str, *, discord: bool = False) -> Path:
    subscriptions = "".join(
        f'[[subscriptions]]\nplatform = "telegram"\ntarget = "{target}"\ncadence = "instant"\n\n'
        for target in (str(PRIVATE), f"{FORUM}:{TOPIC}", f"@{CHANNEL}")
    )
    if discord:
        subscriptions += (
            f'[[subscriptions]]\nplatform = "discord"\ntarget = "{DISCORD_CHANNEL}"\n'
            'cadence = "instant"\n'
        )
    config = tmp_path / "feeds.toml"
    config.write_text(
        "[fetch]\nparse_workers = 1\n\n"
        f'[[feeds]]\nurl = "{feed_url}"\nname = "Test <Wire> & Co"\n\n{subscriptions}',
        encoding="utf-8",
    )
    return config


def running(
    tmp_path: Path, config: Path, env_extra: dict[str, str], name: str
) -> AbstractAsyncContextManager[asyncio.subprocess.Process]:
    db_url = f"sqlite:///{tmp_path / 'bot.db'}"
    return run_bot(tmp_path, config, db_url, child_env(**env_extra), tmp_path / f"{name}.log")


async def stop(process: asyncio.subprocess.Process, log: Path) -> str:
    process.send_signal(signal.SIGTERM)
    code = await asyncio.wait_for(process.wait(), TIMEOUT)
    text = await asyncio.to_thread(log.read_text, encoding="utf-8")
    assert code == 0, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    assert TOKEN not in text
    return text


def assert_digest(posts: list[str]) -> None:
    visible = "\n".join(check_telegram_html(p) for p in posts)
    assert "Kremlin turns down the envoy's ceasefire plan & asks for more <land>" in visible
    assert "Zelenskyy told he has no cards" in visible
    assert "Harbour ferry" not in visible
    assert "Test <Wire> & Co" in visible


async def test_run_posts_to_a_chat_a_topic_and_a_channel_and_answers_commands(
    fake: FakeTelegram, feed_server: FeedServer, tmp_path: Path
) -> None:
    config = write_config(tmp_path, feed_server.url("tg-wire.xml"))
    env = {"TELEGRAM_TOKEN": TOKEN, "COUNTERPARTY_TELEGRAM_API_BASE": fake.base_url}
    async with running(tmp_path, config, env, "run") as process:

        def delivered(f: FakeTelegram) -> bool:
            return all(
                any("Zelenskyy" in s.text for s in f.sent_to(chat, thread))
                and any("Kremlin" in s.text for s in f.sent_to(chat, thread))
                for chat, thread in ((PRIVATE, None), (FORUM, TOPIC), (CHANNEL_ID, None))
            )

        await fake.wait_for(delivered, within=TIMEOUT)
        await fake.wait_for_calls("getUpdates", within=TIMEOUT)
        digest_posts = len(fake.sent)
        fake.command(PRIVATE, READER, "/claim putin-ready-to-deal")
        await fake.wait_for(lambda f: len(f.sent) > digest_posts, within=TIMEOUT)
        await stop(process, tmp_path / "run.log")
    assert_digest([s.text for s in fake.sent_to(PRIVATE)][:-1])
    assert_digest([s.text for s in fake.sent_to(FORUM, TOPIC)])
    assert_digest([s.text for s in fake.sent_to(CHANNEL_ID)])
    # The channel was addressed by its @name, as configured.
    channel_calls = [
        c for c in fake.calls_to("sendMessage") if c.params["chat_id"] == f"@{CHANNEL}"
    ]
    assert channel_calls
    assert all(c.params["link_preview_options"] == {"is_disabled": True} for c in channel_calls)
    answer = check_telegram_html(fake.sent_to(PRIVATE)[-1].text)
    assert "I think Putin is ready to make a deal" in answer
    assert [c["command"] for c in fake.commands["default"]][:2] == ["subscribe", "unsubscribe"]


async def test_discord_and_telegram_run_together_from_one_process(
    fake: FakeTelegram, feed_server: FeedServer, tmp_path: Path
) -> None:
    config = write_config(tmp_path, feed_server.url("tg-wire.xml"), discord=True)
    async with FakeDiscord() as discord_fake:
        env = {
            "TELEGRAM_TOKEN": TOKEN,
            "COUNTERPARTY_TELEGRAM_API_BASE": fake.base_url,
            **discord_fake.bot_env("fake-discord-token-for-tests"),
        }
        async with running(tmp_path, config, env, "both") as process:
            await fake.wait_for(
                lambda f: any("Zelenskyy" in s.text for s in f.sent_to(CHANNEL_ID)),
                within=TIMEOUT,
            )
            await discord_fake.wait_for(
                lambda f: "Zelenskyy" in str(f.messages.get(DISCORD_CHANNEL)), within=TIMEOUT
            )
            log = await stop(process, tmp_path / "both.log")
    assert "fake-discord-token-for-tests" not in log
    assert_digest([s.text for s in fake.sent_to(PRIVATE)])
