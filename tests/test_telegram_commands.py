"""Telegram commands end to end: the real service from ``build()``, python-telegram-bot's real
Application long-polling the fake Bot API server; commands arrive as injected updates and the
tests read what the bot sent back (the fake refuses HTML Telegram would refuse)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import Engine

from bot.delivery.records import OutboxMessage, Sent
from bot.delivery.telegram.render import TelegramMessage
from bot.delivery.telegram.service import (
    BOT_COMMANDS,
    TelegramService,
    TelegramStartError,
    UpdatesLock,
    build,
    parse_subscribe_args,
)
from bot.matching.catalog import load_catalog
from bot.settings import Settings, load_settings
from bot.storage import subscriptions as subs_repo
from tests.store_fixtures import add_entry, add_feed, add_match
from tests.support.fake_telegram import BOT_USERNAME, TOKEN, FakeTelegram, check_telegram_html
from tests.support.fake_telegram import Sent as FakeSent

PRIVATE = 5550001
GROUP = -1005550002
ADMIN = 777
MEMBER = 778
NOW = datetime.now(UTC)


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        server.add_chat(PRIVATE, "private", title="Reader")
        server.add_chat(GROUP, "supergroup", title="Policy <desk> & co", is_forum=True)
        server.set_member(GROUP, ADMIN, "administrator")
        server.set_member(GROUP, MEMBER, "member")
        yield server


def settings_for(
    tmp_path: Path, database_url: str, fake: FakeTelegram, *, config: str = "", token: str = TOKEN
) -> Settings:
    path = tmp_path / "feeds.toml"
    path.write_text(config, encoding="utf-8")
    environ = {"COUNTERPARTY_TELEGRAM_API_BASE": fake.base_url}
    if token:
        environ["TELEGRAM_TOKEN"] = token
    return load_settings(path, database_url=database_url, environ=environ)


@asynccontextmanager
async def started(
    settings: Settings, engine: Engine, *, updates_lock: UpdatesLock | None = None
) -> AsyncIterator[TelegramService]:
    """The service ``build()`` makes from ``settings``, started; stopped when the block ends."""
    built = build(settings, engine, load_catalog(), updates_lock=updates_lock)
    assert built is not None
    await built.start()
    try:
        yield built
    finally:
        await built.stop()


@pytest.fixture
async def service(
    fake: FakeTelegram, engine: Engine, tmp_path: Path, database_url: str
) -> AsyncIterator[TelegramService]:
    async with started(settings_for(tmp_path, database_url, fake), engine) as built:
        yield built


async def command(
    fake: FakeTelegram, chat: int, user: int, text: str, *, thread_id: int | None = None
) -> list[FakeSent]:
    """Send ``text`` as ``user`` in ``chat`` and return the bot's messages in answer."""
    before = len(fake.sent)
    fake.command(chat, user, text, thread_id=thread_id)
    await fake.wait_for(lambda f: len(f.sent) > before)
    # Multi-message answers: wait until the last one carries its (i/n) or the reply settles.
    await fake.wait_for(lambda f: _complete(f.sent[before:]))
    answer = fake.sent[before:]
    for message in answer:
        check_telegram_html(message.text)
        assert message.chat_id == chat
        assert message.params["link_preview_options"] == {"is_disabled": True}
    return answer


def _complete(messages: list[FakeSent]) -> bool:
    last = messages[-1].text.rstrip()
    if not last.endswith("</i>") or "(" not in last.rsplit("<i>", 1)[-1]:
        return True
    marker = last.rsplit("<i>(", 1)[-1].removesuffix(")</i>")
    index, _, total = marker.partition("/")
    return not (index.isdigit() and total.isdigit()) or len(messages) >= int(total)


def text_of(messages: list[FakeSent]) -> str:
    return "\n".join(check_telegram_html(m.text) for m in messages)


# -- start-up -------------------------------------------------------------------------------


async def test_start_checks_the_token_registers_commands_and_polls(
    fake: FakeTelegram, service: TelegramService
) -> None:
    assert service.receiving
    assert fake.calls[0].method == "getMe"
    registered = [c["command"] for c in fake.commands["default"]]
    assert registered == [c.command for c in BOT_COMMANDS]
    assert {"subscribe", "claim", "digest", "search", "feeds", "status", "help"} <= set(registered)
    await fake.wait_for_calls("getUpdates")
    assert fake.calls_to("deleteWebhook")  # polling clears any webhook first


async def test_a_refused_token_gives_a_clear_error_without_the_token(
    fake: FakeTelegram, engine: Engine, tmp_path: Path, database_url: str
) -> None:
    wrong = "1:wrong-token-value"
    settings = settings_for(tmp_path, database_url, fake, token=wrong)
    built = build(settings, engine, load_catalog())
    assert built is not None
    with pytest.raises(TelegramStartError) as raised:
        await built.start()
    assert wrong not in str(raised.value)
    assert "TELEGRAM_TOKEN" in str(raised.value)


async def test_no_token_no_service(
    fake: FakeTelegram, engine: Engine, tmp_path: Path, database_url: str
) -> None:
    assert (
        build(settings_for(tmp_path, database_url, fake, token=""), engine, load_catalog()) is None
    )


# -- read-only commands ---------------------------------------------------------------------


async def test_help_and_start_explain_every_command(
    fake: FakeTelegram, service: TelegramService
) -> None:
    text = text_of(await command(fake, PRIVATE, ADMIN, "/help"))
    for name in ("/subscribe", "/claim", "/digest", "/search", "/feeds", "/status"):
        assert name in text
    assert text_of(await command(fake, PRIVATE, ADMIN, "/start")) == text


async def test_themes_lists_every_theme(fake: FakeTelegram, service: TelegramService) -> None:
    text = text_of(await command(fake, PRIVATE, ADMIN, "/themes"))
    for theme_id in load_catalog().themes:
        assert theme_id in text


async def test_theme_with_and_without_id(fake: FakeTelegram, service: TelegramService) -> None:
    catalog = load_catalog()
    theme = catalog.themes["putin-deal"]
    text = text_of(await command(fake, PRIVATE, ADMIN, "/theme putin-deal"))
    assert theme.title in text
    assert "putin-ready-to-deal" in text  # its claims are listed
    assert "No matched items yet." in text
    listing = text_of(await command(fake, PRIVATE, ADMIN, "/theme"))
    assert all(t in listing for t in catalog.themes)


async def test_claims_and_claim_by_id(fake: FakeTelegram, service: TelegramService) -> None:
    catalog = load_catalog()
    text = text_of(await command(fake, PRIVATE, ADMIN, "/claims"))
    assert all(c in text for c in catalog.claims)
    # In groups people address the bot by name; PTB checks it against getMe's username.
    addressed = text_of(await command(fake, GROUP, MEMBER, f"/claims@{BOT_USERNAME}"))
    assert addressed == text
    claim = catalog.claims["not-our-war"]
    shown = text_of(await command(fake, PRIVATE, ADMIN, "/claim not-our-war"))
    assert claim.claimant in shown
    assert "No matched items yet." in shown


async def test_unknown_claim_gets_a_clear_sentence(
    fake: FakeTelegram, service: TelegramService
) -> None:
    text = text_of(await command(fake, PRIVATE, ADMIN, "/claim not-our-wat"))
    assert "There is no claim called 'not-our-wat'" in text
    assert "Did you mean not-our-war?" in text


async def test_claim_without_id_offers_a_keyboard_and_a_press_shows_the_claim(
    fake: FakeTelegram, service: TelegramService
) -> None:
    catalog = load_catalog()
    (picker,) = await command(fake, GROUP, MEMBER, "/claim")
    keyboard = picker.params["reply_markup"]["inline_keyboard"]
    data = [row[0]["callback_data"] for row in keyboard]
    assert data == [f"claim:{c}" for c in catalog.claims]
    assert all(len(d.encode()) <= 64 for d in data)
    before = len(fake.sent)
    fake.callback(GROUP, MEMBER, "claim:iran-no-counterparty", message_id=picker.message_id)
    await fake.wait_for(lambda f: len(f.sent) > before and bool(f.calls_to("answerCallbackQuery")))
    shown = text_of(fake.sent[before:])
    assert catalog.claims["iran-no-counterparty"].claimant in shown


async def test_search_digest_feeds_status_answer(
    fake: FakeTelegram, service: TelegramService, engine: Engine
) -> None:
    feed = add_feed(engine, name="Invented <Wire> & Co", now=NOW)
    entry = add_entry(
        engine, feed_id=feed, key="k1", now=NOW, title="Envoys <b>meet</b> & talk ceasefire"
    )
    add_match(engine, entry_id=entry, ref_id="putin-deal", now=NOW)
    found = text_of(await command(fake, PRIVATE, ADMIN, "/search ceasefire"))
    assert "Envoys <b>meet</b> & talk ceasefire" in found
    assert "Invented <Wire> & Co" in found
    none = text_of(await command(fake, PRIVATE, ADMIN, "/search zzzz"))
    assert "Nothing matched" in none
    empty = text_of(await command(fake, PRIVATE, ADMIN, "/search"))
    assert "Give at least one word" in empty
    preview = text_of(await command(fake, PRIVATE, ADMIN, "/digest"))
    assert "Envoys <b>meet</b> & talk ceasefire" in preview
    assert "no subscription here" in preview
    feeds_text = text_of(await command(fake, PRIVATE, ADMIN, "/feeds"))
    assert "Invented <Wire> & Co" in feeds_text
    status = text_of(await command(fake, PRIVATE, ADMIN, "/status"))
    assert "Subscriptions here: 0" in status


async def test_a_failed_reply_is_logged_and_reported_in_one_sentence(
    fake: FakeTelegram, service: TelegramService, caplog: pytest.LogCaptureFixture
) -> None:
    fake.fail(500, method="sendMessage")  # the first reply is lost
    (sorry,) = await command(fake, PRIVATE, ADMIN, "/themes")
    assert "Sorry, that command failed" in check_telegram_html(sorry.text)
    assert any("handling an update failed" in r.getMessage() for r in caplog.records)
    assert any(r.exc_info for r in caplog.records if r.name == "bot.delivery.telegram.service")


# -- subscriptions and admin rights ---------------------------------------------------------


def stored(engine: Engine, target: str) -> subs_repo.Subscription | None:
    with engine.connect() as conn:
        return subs_repo.find(conn, "telegram", target)


async def test_a_group_member_who_is_not_admin_is_refused(
    fake: FakeTelegram, service: TelegramService, engine: Engine
) -> None:
    text = text_of(await command(fake, GROUP, MEMBER, "/subscribe"))
    assert "Only an administrator of this chat" in text
    assert stored(engine, str(GROUP)) is None
    (check,) = fake.calls_to("getChatMember")
    assert check.params["user_id"] == str(MEMBER)
    text = text_of(await command(fake, GROUP, MEMBER, "/unsubscribe"))
    assert "Only an administrator" in text


async def test_an_admin_subscribes_a_group_with_options(
    fake: FakeTelegram, service: TelegramService, engine: Engine
) -> None:
    text = text_of(
        await command(
            fake,
            GROUP,
            ADMIN,
            "/subscribe putin-deal energy-windfall cadence=daily 08:00 "
            "Europe/Kyiv min=0.6 max=5 claims=not-our-war",
        )
    )
    assert "Subscribed" in text
    assert "Policy <desk> & co" in text
    sub = stored(engine, str(GROUP))
    assert sub is not None
    assert sub.themes == ("putin-deal", "energy-windfall")
    assert sub.claims == ("not-our-war",)
    assert sub.cadence == "daily 08:00 Europe/Kyiv"
    assert sub.min_score == pytest.approx(0.6)
    assert sub.max_items == 5
    listing = text_of(await command(fake, GROUP, MEMBER, "/subscriptions"))
    assert "putin-deal, energy-windfall" in listing
    bye = text_of(await command(fake, GROUP, ADMIN, "/unsubscribe"))
    assert "Unsubscribed" in bye
    assert stored(engine, str(GROUP)) is None


async def test_bad_subscribe_options_are_explained(
    fake: FakeTelegram, service: TelegramService, engine: Engine
) -> None:
    for text, expected in [
        ("/subscribe no-such-theme", "There is no theme called 'no-such-theme'"),
        ("/subscribe every=1h", "Unknown option 'every'"),
        ("/subscribe min=lots", "min must be a number"),
        ("/subscribe cadence=sometimes", "is not a cadence"),
    ]:
        assert expected in text_of(await command(fake, PRIVATE, ADMIN, text))
    assert stored(engine, str(PRIVATE)) is None


async def test_subscribing_in_a_topic_targets_the_topic_and_replies_there(
    fake: FakeTelegram, service: TelegramService, engine: Engine
) -> None:
    (reply,) = await command(fake, GROUP, ADMIN, "/subscribe", thread_id=42)
    assert reply.thread_id == 42
    sub = stored(engine, f"{GROUP}:42")
    assert sub is not None
    assert sub.guild_id == str(GROUP)
    assert sub.themes is None


async def test_a_private_chat_needs_no_admin_check(
    fake: FakeTelegram, service: TelegramService, engine: Engine
) -> None:
    text = text_of(await command(fake, PRIVATE, ADMIN, "/subscribe"))
    assert "Subscribed: private chat with Reader" in text
    assert fake.calls_to("getChatMember") == []
    assert stored(engine, str(PRIVATE)) is not None


async def test_a_channel_post_subscribes_the_channel(
    fake: FakeTelegram, service: TelegramService, engine: Engine
) -> None:
    channel = -1005550009
    fake.add_chat(channel, "channel", title="Digest channel")
    before = len(fake.sent)
    fake.channel_post(channel, "/subscribe words-not-deeds")
    await fake.wait_for(lambda f: len(f.sent) > before)
    assert "Subscribed: Digest channel" in text_of(fake.sent[before:])
    sub = stored(engine, str(channel))
    assert sub is not None
    assert sub.themes == ("words-not-deeds",)
    assert fake.calls_to("getChatMember") == []  # only administrators can post in a channel


async def test_an_anonymous_group_admin_may_subscribe(
    fake: FakeTelegram, service: TelegramService, engine: Engine
) -> None:
    before = len(fake.sent)
    # Someone posting "as" another channel is not the group speaking: refused.
    impostor = fake.message_update(GROUP, MEMBER, "/subscribe")
    impostor["message"]["sender_chat"] = fake.add_chat(-1005550010, "channel").payload()
    fake.push_update(impostor)
    await fake.wait_for(lambda f: len(f.sent) > before)
    assert "Only an administrator" in text_of(fake.sent[before:])
    assert stored(engine, str(GROUP)) is None
    before = len(fake.sent)
    fake.anonymous_admin_command(GROUP, "/subscribe")
    await fake.wait_for(lambda f: len(f.sent) > before)
    assert "Subscribed" in text_of(fake.sent[before:])
    assert stored(engine, str(GROUP)) is not None


async def test_status_shows_a_paused_subscription_and_why(
    fake: FakeTelegram, service: TelegramService, engine: Engine
) -> None:
    await command(fake, PRIVATE, ADMIN, "/subscribe")
    sub = stored(engine, str(PRIVATE))
    assert sub is not None
    with engine.begin() as conn:
        subs_repo.pause(conn, sub.id, "Forbidden: bot was blocked by the user")
    text = text_of(await command(fake, PRIVATE, ADMIN, "/status"))
    assert "1 paused" in text
    assert "bot was blocked by the user" in text
    # Subscribing again is how a person says "fixed": delivery resumes.
    again = text_of(await command(fake, PRIVATE, ADMIN, "/subscribe"))
    assert "Delivery resumed" in again
    resumed = stored(engine, str(PRIVATE))
    assert resumed is not None
    assert not resumed.paused


# -- the service's sender and helpers -------------------------------------------------------


async def test_the_service_sender_posts_through_the_started_bot(
    fake: FakeTelegram, service: TelegramService
) -> None:
    (sender,) = service.senders
    (renderer,) = service.renderers
    assert sender.platforms == ("telegram",) == renderer.platforms
    payload = TelegramMessage(text="<b>digest</b>").payload()
    outcome = await sender.send(OutboxMessage(1, "telegram", str(GROUP), payload, "n", 0, None))
    assert outcome == Sent(message_id=f"{GROUP}:1")


async def test_a_migrated_group_moves_its_subscription(
    fake: FakeTelegram, service: TelegramService, engine: Engine
) -> None:
    old, new = -4005550003, -1004005550003
    fake.add_chat(old, "group", title="Old group")
    fake.set_member(old, ADMIN, "creator")
    await command(fake, old, ADMIN, "/subscribe")
    fake.migrate(old, new)
    (sender,) = service.senders
    payload = TelegramMessage(text="hello").payload()
    outcome = await sender.send(OutboxMessage(1, "telegram", str(old), payload, "n", 0, None))
    assert isinstance(outcome, Sent)
    assert outcome.message_id.startswith(f"{new}:")
    assert stored(engine, str(old)) is None
    assert stored(engine, str(new)) is not None


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], {}),
        (["putin-deal", "energy-windfall"], {"themes": "putin-deal energy-windfall"}),
        (
            ["cadence=daily", "08:00", "Europe/Kyiv", "min=0.7"],
            {"cadence": "daily 08:00 Europe/Kyiv", "min": "0.7"},
        ),
        (["claims=a,b", "max=3"], {"claims": "a,b", "max": "3"}),
    ],
)
def test_parse_subscribe_args(args: list[str], expected: dict[str, str]) -> None:
    assert parse_subscribe_args(args) == expected


# -- updates lock and webhook ---------------------------------------------------------------


class HeldElsewhere:
    """An updates lock another process holds."""

    retry_interval = 3600.0

    def __init__(self) -> None:
        self.asked = 0
        self.lost = asyncio.Event()

    async def acquire(self) -> bool:
        self.asked += 1
        return False

    async def release(self) -> None:
        raise AssertionError("never acquired, never released")


async def test_without_the_updates_lock_the_service_only_sends(
    fake: FakeTelegram, engine: Engine, tmp_path: Path, database_url: str
) -> None:
    lock = HeldElsewhere()
    async with started(
        settings_for(tmp_path, database_url, fake), engine, updates_lock=lock
    ) as built:
        assert not built.receiving
        assert lock.asked == 1
        (sender,) = built.senders
        payload = TelegramMessage(text="still sending").payload()
        outcome = await sender.send(
            OutboxMessage(1, "telegram", str(PRIVATE), payload, "n", 0, None)
        )
        assert isinstance(outcome, Sent)
        assert fake.calls_to("getUpdates") == []


class FreedLater:
    """An updates lock another process holds at first and then gives up."""

    retry_interval = 0.05

    def __init__(self) -> None:
        self.answers = [False, True]
        self.released = asyncio.Event()
        self.lost = asyncio.Event()

    async def acquire(self) -> bool:
        return self.answers.pop(0) if self.answers else True

    async def release(self) -> None:
        self.released.set()


async def test_a_standby_takes_over_when_the_lock_frees(
    fake: FakeTelegram, engine: Engine, tmp_path: Path, database_url: str
) -> None:
    lock = FreedLater()
    settings = settings_for(tmp_path, database_url, fake)
    async with started(settings, engine, updates_lock=lock) as built:
        assert not built.receiving
        await fake.wait_for_calls("getUpdates")
        assert built.receiving
        assert "putin-deal" in text_of(await command(fake, PRIVATE, ADMIN, "/themes"))
    assert lock.released.is_set()


class LostOnce:
    """An updates lock that is lost once while held, then can be taken again."""

    retry_interval = 0.05

    def __init__(self) -> None:
        self.lost = asyncio.Event()
        self.released = asyncio.Event()
        self.acquired = 0

    async def acquire(self) -> bool:
        self.acquired += 1
        self.lost.clear()
        return True

    async def release(self) -> None:
        self.released.set()


async def test_losing_the_updates_lock_stops_receiving_until_it_is_regained(
    fake: FakeTelegram, engine: Engine, tmp_path: Path, database_url: str
) -> None:
    lock = LostOnce()
    async with started(
        settings_for(tmp_path, database_url, fake), engine, updates_lock=lock
    ) as built:
        assert built.receiving
        lock.lost.set()
        await asyncio.wait_for(lock.released.wait(), 10)
        # Polling restarts (PTB clears the webhook first) once the lock is taken again.
        await fake.wait_for(lambda f: len(f.calls_to("deleteWebhook")) == 2)
        assert lock.acquired == 2
        assert "putin-deal" in text_of(await command(fake, PRIVATE, ADMIN, "/themes"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_webhook_mode_registers_and_accepts_only_telegrams_secret(
    fake: FakeTelegram, engine: Engine, tmp_path: Path, database_url: str
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/telegram/hook"
    config = (
        f'[telegram]\nmode = "webhook"\nwebhook_url = "{url}"\n'
        f'webhook_listen = "127.0.0.1"\nwebhook_port = {port}\n'
    )
    async with started(settings_for(tmp_path, database_url, fake, config=config), engine):
        (registered,) = fake.calls_to("setWebhook")
        assert registered.params["url"] == url
        secret = registered.params["secret_token"]
        update = {"update_id": 1, **fake.message_update(PRIVATE, ADMIN, "/themes")}
        async with aiohttp.ClientSession() as http:
            async with http.post(url, data=json.dumps(update)) as refused:
                assert refused.status == 403
            headers = {
                "X-Telegram-Bot-Api-Secret-Token": secret,
                "Content-Type": "application/json",
            }
            async with http.post(url, data=json.dumps(update), headers=headers) as accepted:
                assert accepted.status == 200
        await fake.wait_for(lambda f: bool(f.sent_to(PRIVATE)))
        assert "putin-deal" in text_of(fake.sent_to(PRIVATE))
        assert fake.calls_to("getUpdates") == []
    assert fake.calls_to("deleteWebhook")
