"""``counterparty run`` end to end for the polish items: Ctrl-C in a terminal, the start-up
message, the metrics endpoint, Discord webhooks without a token, and the outbox's metrics.

The bot runs as a real subprocess against the local feed server (and the fake Discord server),
all on 127.0.0.1. The feed is the package's invented sample feed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from bot.app import startup_message
from bot.delivery.demo import sample_feed
from bot.delivery.outbox import DeliveryPolicy, Outbox, enqueue_digest, pending_depth
from bot.delivery.platform import by_platform
from bot.delivery.records import OutboxMessage, Rejected, RetryLater, SendOutcome, Sent
from bot.feeds.pipeline import Poller
from bot.ops import metrics
from bot.settings import DeliverySection, Environment, FileConfig, Settings
from bot.storage import subscriptions as subs_repo
from tests.support.fake_discord import FakeDiscord
from tests.support.feedserver import FeedServer, error
from tests.support.replicas import child_env
from tests.support.replicas import running as run_bot
from tests.support.waiting import until

TIMEOUT = 90.0
WEBHOOK_ID = "123456789012345678"
WEBHOOK_TOKEN = "webhook-token-for-tests-" + "x" * 48  # discord.py wants >= 60 characters
WEBHOOK_URL = f"https://discord.com/api/webhooks/{WEBHOOK_ID}/{WEBHOOK_TOKEN}"


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    with FeedServer() as server:
        server.put("wire.xml", sample_feed(datetime.now(UTC)))
        yield server


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def write_config(tmp_path: Path, feed_url: str, extra: str = "") -> Path:
    config = tmp_path / "feeds.toml"
    config.write_text(
        f'[fetch]\nparse_workers = 2\n\n{extra}\n[[feeds]]\nurl = "{feed_url}"\nname = "Wire"\n',
        encoding="utf-8",
    )
    return config


@asynccontextmanager
async def running(
    tmp_path: Path, config: Path, env_extra: dict[str, str] | None = None
) -> AsyncIterator[tuple[asyncio.subprocess.Process, Path]]:
    """``counterparty run`` in its own process group (like a shell job), stdout and stderr
    to a log file; killed with its group if still alive at the end."""
    log = tmp_path / "run.log"
    db_url = f"sqlite:///{tmp_path / 'bot.db'}"
    env = child_env(**(env_extra or {}))
    async with run_bot(tmp_path, config, db_url, env, log, own_group=True) as process:
        yield process, log


def read(log: Path) -> str:
    return log.read_text(encoding="utf-8", errors="replace")


@pytest.mark.slow
async def test_ctrl_c_to_the_process_group_stops_cleanly_after_a_start_up_message(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    config = write_config(tmp_path, feed_server.url("wire.xml"))
    async with running(tmp_path, config) as (process, log):
        # The start-up round polled, parsed (in the worker processes) and printed a digest.
        await until(lambda: "counterparty is running" in read(log), "the start-up message", TIMEOUT)
        await until(lambda: "counterparty digest" in read(log), "a console digest", TIMEOUT)
        assert feed_server.requests_for("wire.xml")
        # Ctrl-C in a terminal: SIGINT to every process of the foreground group.
        os.killpg(process.pid, signal.SIGINT)
        code = await asyncio.wait_for(process.wait(), TIMEOUT)
    output = read(log)
    assert code == 0, output[-3000:]
    assert "Traceback" not in output
    assert "KeyboardInterrupt" not in output
    start = output[output.index("counterparty is running") :]
    assert "polling 1 feed," in start
    assert f"database sqlite:///{tmp_path / 'bot.db'}" in start
    assert "digests are printed here" in start
    assert "Ctrl-C" in start
    # The noise is gone at the default level.
    assert 'Running job "' not in output
    assert "Context impl" not in output


def test_startup_message_names_destinations_and_hides_the_password() -> None:
    text = startup_message(
        feed_count=46,
        database_url="postgresql+psycopg://bot:pg-Secret-Pass@db:5432/counterparty",
        subscriptions={"discord": 3, "telegram": 1, "console": 1},
        console=False,
    )
    assert "pg-Secret-Pass" not in text
    assert "postgresql+psycopg://bot:***@db:5432/counterparty" in text
    assert "polling 46 feeds" in text
    assert "Discord (3 subscriptions), Telegram (1 subscription)" in text
    assert "console" not in text
    assert len(text.splitlines()) <= 2
    none_yet = startup_message(
        feed_count=1, database_url="sqlite:///x.db", subscriptions={}, console=False
    )
    assert "no subscription yet" in none_yet


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    response.raise_for_status()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


@pytest.mark.slow
async def test_run_serves_metrics_of_its_polls_matches_digests_and_posts(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    port = free_port()
    config = write_config(
        tmp_path,
        feed_server.url("wire.xml"),
        f'[metrics]\nenabled = true\nhost = "127.0.0.1"\nport = {port}\n',
    )
    async with running(tmp_path, config) as (process, log):
        await until(lambda: "counterparty is running" in read(log), "the start-up message", TIMEOUT)

        def posted() -> bool:
            values = scrape(port)
            return (
                values.get(("counterparty_messages_sent_total", (("platform", "console"),)), 0) >= 1
            )

        await until(posted, "a console message counted", TIMEOUT)
        values = scrape(port)
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), TIMEOUT)
    assert code == 0, read(log)[-3000:]
    assert values[("counterparty_feeds_polled_total", (("result", "ok"),))] >= 1
    matched = [
        value
        for (name, _labels), value in values.items()
        if name == "counterparty_items_matched_total"
    ]
    assert sum(matched) >= 1
    assert values[("counterparty_digests_sent_total", (("platform", "console"),))] >= 1
    assert ("counterparty_outbox_depth", ()) in values
    # The endpoint closed with the bot.
    with pytest.raises(httpx.ConnectError):
        scrape(port)


@pytest.mark.slow
async def test_webhook_subscription_is_delivered_without_a_token(
    tmp_path: Path, feed_server: FeedServer
) -> None:
    async with FakeDiscord() as fake:
        config = write_config(
            tmp_path,
            feed_server.url("wire.xml"),
            f'[[subscriptions]]\nplatform = "discord-webhook"\ntarget = "{WEBHOOK_URL}"\n'
            'cadence = "instant"\n',
        )
        env = {"COUNTERPARTY_DISCORD_API_BASE": fake.api_base}  # and no DISCORD_TOKEN
        async with running(tmp_path, config, env) as (process, log):
            await fake.wait_for(lambda f: bool(f.messages.get(WEBHOOK_ID)), within=TIMEOUT)
            await until(
                lambda: "counterparty is running" in read(log), "the start-up message", TIMEOUT
            )
            process.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(process.wait(), TIMEOUT)
        output = read(log)
        assert code == 0, output[-3000:]
        assert "Discord webhooks (1 subscription)" in output
        assert WEBHOOK_TOKEN not in output
        [post, *_] = fake.requests_to("POST", f"/webhooks/{WEBHOOK_ID}/")
        assert post.body["allowed_mentions"] == {"parse": []}
        assert "Kremlin" in str(fake.messages[WEBHOOK_ID])
        # Nothing was printed to the console instead.
        assert "counterparty digest" not in output


# --- the outbox's metrics, with a scripted platform at the Sender boundary ------------------

PLATFORM = "fakechat"
T0 = datetime(2026, 3, 6, 12, 0, tzinfo=UTC)


class ScriptedSender:
    """Answers each send with the next outcome of its script."""

    platforms: tuple[str, ...] = (PLATFORM,)

    def __init__(self, script: list[SendOutcome]) -> None:
        self.script = script

    async def send(self, message: OutboxMessage) -> SendOutcome:
        return self.script.pop(0)


def _value(name: str, labels: dict[str, str] | None = None) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels or {}) or 0.0


async def test_drain_counts_posts_and_platform_errors(engine: Engine) -> None:
    with engine.begin() as conn:
        for n in range(3):
            sub = subs_repo.upsert(conn, platform=PLATFORM, target=f"room-{n}", now=T0)
            enqueue_digest(
                conn,
                subscription_id=sub.id,
                platform=PLATFORM,
                target=f"room-{n}",
                payloads=[{"text": f"post {n}"}],
                entry_ids=[],
                now=T0,
            )
    assert pending_depth(engine) == 3
    sent = ("counterparty_messages_sent_total", {"platform": PLATFORM})
    retry = ("counterparty_platform_errors_total", {"platform": PLATFORM, "kind": "retry"})
    rejected = ("counterparty_platform_errors_total", {"platform": PLATFORM, "kind": "rejected"})
    before = [_value(*sent), _value(*retry), _value(*rejected)]
    outbox = Outbox(
        engine,
        senders=by_platform([ScriptedSender([Sent("m1"), RetryLater("busy"), Rejected("bad")])]),
        policy=DeliveryPolicy.from_settings(DeliverySection()),
        owner="test",
    )
    summary = await outbox.drain(now=T0)
    assert (summary.sent, summary.retried, summary.failed) == (1, 1, 1)
    assert [_value(*sent), _value(*retry), _value(*rejected)] == [
        before[0] + 1,
        before[1] + 1,
        before[2] + 1,
    ]
    assert pending_depth(engine) == 1  # the retried one waits


async def test_poller_counts_polls_by_result_and_failures_by_kind(
    engine: Engine, database_url: str, feed_server: FeedServer
) -> None:
    feed_server.behave("down.xml", error(500))
    urls = [feed_server.url("wire.xml"), feed_server.url("down.xml")]
    config = FileConfig.model_validate(
        {"feeds": [{"url": u} for u in urls], "fetch": {"parse_workers": 1}}
    )
    settings = Settings(file=config, env=Environment(), config_path=None, database_url=database_url)
    ok = ("counterparty_feeds_polled_total", {"result": "ok"})
    failed = ("counterparty_feeds_polled_total", {"result": "failed"})
    server_errors = ("counterparty_fetch_failures_total", {"kind": "server"})
    before = [_value(*ok), _value(*failed), _value(*server_errors)]
    now = datetime.now(UTC)
    async with Poller(settings, engine) as poller:
        await poller.sync_config(now)
        summary = await poller.poll_all(now)
    assert (summary.feeds, summary.failed) == (2, 1)
    assert [_value(*ok), _value(*failed), _value(*server_errors)] == [
        before[0] + 1,
        before[1] + 1,
        before[2] + 1,
    ]
