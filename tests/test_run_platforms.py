"""The platform hook of ``counterparty run``: a token makes bot.app build that platform's service,
start it, route its subscriptions' digests through its renderer and sender, and stop it.

The platform here is a small in-test service registered under the Discord token's module slot;
everything else (feed server, poller, matcher, digest job, outbox) is the real thing.
"""

from __future__ import annotations

import asyncio
import sys
import types
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import feedparser
import pytest
from sqlalchemy import Engine, select

from bot import app as app_module
from bot.delivery.demo import sample_feed
from bot.delivery.records import OutboxMessage, SendOutcome, Sent
from bot.digest.records import Digest
from bot.matching.catalog import load_catalog
from bot.matching.matcher import Matcher
from bot.matching.records import Item
from bot.settings import load_settings
from bot.storage.db import open_database
from bot.storage.schema import subscriptions
from tests.support.feedserver import FeedServer

MATCHER = Matcher(load_catalog())


def sample_entries() -> list[Any]:
    """The sample feed's entries, newest first (the digest's order)."""
    return list(feedparser.parse(sample_feed(datetime.now(UTC))).entries)


def putin_deal_titles() -> list[str]:
    """The sample feed's titles in putin-deal, newest first."""
    return [
        entry.title
        for entry in sample_entries()
        if any(
            m.theme_id == "putin-deal"
            for m in MATCHER.match(
                Item(id=entry.id, title=entry.title, summary=entry.get("summary", ""))
            ).themes
        )
    ]


CHANNEL = "123456789012345678"


class RecordingService:
    """A platform service that keeps what it was asked to post."""

    name = "recording"

    def __init__(self) -> None:
        self.events: list[str] = []
        self.posted: list[OutboxMessage] = []
        self.first_post = asyncio.Event()
        service = self

        class Renderer:
            platforms = ("discord",)

            def render(self, digest: Digest) -> list[dict[str, Any]]:
                titles = [e.title for s in digest.sections for e in s.entries]
                return [{"titles": titles}]

        class Sender:
            platforms = ("discord",)

            async def send(self, message: OutboxMessage) -> SendOutcome:
                service.posted.append(message)
                service.first_post.set()
                return Sent(f"msg-{len(service.posted)}")

        self.renderers = [Renderer()]
        self.senders = [Sender()]

    async def start(self) -> None:
        self.events.append("start")

    async def stop(self) -> None:
        self.events.append("stop")


class Built(list[RecordingService]):
    """Services built so far, with an event set when the first one is."""

    def __init__(self) -> None:
        super().__init__()
        self.ready = asyncio.Event()


@pytest.fixture
def plugin(monkeypatch: pytest.MonkeyPatch) -> Built:
    built = Built()
    module = types.ModuleType("counterparty_test_platform")

    def build(settings: Any, engine: Engine, catalog: Any) -> RecordingService:
        service = RecordingService()
        built.append(service)
        built.ready.set()
        return service

    module.build = build  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(app_module.PLATFORM_MODULES, "discord", module.__name__)
    return built


async def test_a_token_starts_the_platform_and_its_digests_go_to_its_sender(
    plugin: Built, tmp_path: Path, database_url: str
) -> None:
    with FeedServer() as server:
        server.put("wire.xml", sample_feed(datetime.now(UTC)))
        config = tmp_path / "feeds.toml"
        config.write_text(
            f'[fetch]\nparse_workers = 1\n\n[[feeds]]\nurl = "{server.url("wire.xml")}"\n\n'
            f'[[subscriptions]]\nplatform = "discord"\ntarget = "{CHANNEL}"\n'
            'themes = ["putin-deal"]\n',
            encoding="utf-8",
        )
        settings = load_settings(
            config, database_url=database_url, environ={"DISCORD_TOKEN": "not-a-real-token"}
        )
        stop = asyncio.Event()
        task = asyncio.create_task(app_module.run(settings, stop=stop))
        try:
            await asyncio.wait_for(plugin_post(plugin), timeout=60)
        finally:
            stop.set()
            code = await asyncio.wait_for(task, timeout=60)
    assert code == 0
    (service,) = plugin
    assert service.events == ["start", "stop"]
    (message,) = service.posted
    assert message.platform == "discord"
    assert message.target == CHANNEL
    # The subscription's theme decides what is sent: exactly the sample items the matcher puts in
    # putin-deal (the Kremlin's refusal among them), and none of the others.
    assert message.payload == {"titles": putin_deal_titles()}
    assert "[Sample] Kremlin rejects the latest US ceasefire draft" in message.payload["titles"]
    assert len(message.payload["titles"]) < len(sample_entries())
    engine = open_database(database_url)
    try:
        with engine.connect() as conn:
            platforms = conn.execute(select(subscriptions.c.platform)).scalars().all()
    finally:
        engine.dispose()
    assert platforms == ["discord"]  # no console subscription when a platform is configured


async def plugin_post(plugin: Built) -> None:
    await plugin.ready.wait()
    await plugin[0].first_post.wait()
