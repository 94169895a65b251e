"""Slash commands end to end: the real service built by ``build()``, logged in against the fake
Discord server, connected to its gateway; interactions arrive as ``INTERACTION_CREATE`` events
and the tests read the callbacks and follow-ups the fake server received."""

from __future__ import annotations

import itertools
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import discord
import pytest
import yarl
from discord.gateway import DiscordWebSocket
from pydantic import SecretStr
from sqlalchemy import Engine, insert, select

from bot.commands.answers import Notice
from bot.commands.core import CommandCore
from bot.delivery.discord.render import payload_problems, render_answer
from bot.delivery.discord.service import DiscordService, WebhookOnlyService, build
from bot.delivery.records import OutboxMessage, Sent
from bot.matching.catalog import load_catalog
from bot.settings import DiscordSection, load_settings
from bot.storage import subscriptions as subs_repo
from bot.storage.schema import feeds
from tests.support.discord_client import fake_discord_for_the_bot
from tests.support.fake_discord import APP_ID, FakeDiscord, Recorded, user_payload

GUILD = "700000000000000001"
CHANNEL = "700000000000000002"
MANAGE_GUILD = str(1 << 5)
ADMINISTRATOR = str(1 << 3)
MANAGE_CHANNELS = str(1 << 4)
DM_CHANNEL = "700000000000000003"
PRIVILEGED_INTENTS = (1 << 1) | (1 << 8) | (1 << 15)
EPHEMERAL = 64
_ids = itertools.count(800_000_000_000_000_001)


@pytest.fixture
async def fake(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeDiscord]:
    async with fake_discord_for_the_bot(monkeypatch) as server:
        yield server


@pytest.fixture
async def service(
    fake: FakeDiscord, engine: Engine, tmp_path: Path, database_url: str
) -> AsyncIterator[DiscordService]:
    config = tmp_path / "feeds.toml"
    config.write_text(
        "[fetch]\nallow_private_addresses_from_commands = true\n[discord]\nsync_commands = true\n",
        encoding="utf-8",
    )
    settings = load_settings(
        config,
        database_url=database_url,
        environ=fake.bot_env(),
    )
    built = build(settings, engine, load_catalog())
    assert built is not None
    await built.start()
    # IDENTIFY answered with READY is enough for interactions; wait_until_ready would add
    # discord.py's 2 s wait for GUILD_CREATE events that the fake server never sends.
    await fake.wait_identified()
    yield built
    await built.stop()


def interaction(
    name: str,
    options: list[dict[str, Any]] | None = None,
    *,
    kind: int = 2,
    permissions: str = "0",
) -> dict[str, Any]:
    ident = str(next(_ids))
    return {
        "id": ident,
        "application_id": str(APP_ID),
        "type": kind,
        "token": f"interaction-token-{ident}",
        "version": 1,
        "guild_id": GUILD,
        "channel_id": CHANNEL,
        "channel": {
            "id": CHANNEL,
            "type": 0,
            "guild_id": GUILD,
            "name": "news",
            "position": 0,
            "permission_overwrites": [],
            "nsfw": False,
            "parent_id": None,
        },
        "member": {
            "user": user_payload(600000000000000001, "reader"),
            "roles": [],
            "joined_at": "2025-01-01T00:00:00+00:00",
            "deaf": False,
            "mute": False,
            "flags": 0,
            "permissions": permissions,
        },
        "app_permissions": "2048",
        "attachment_size_limit": 10485760,
        "locale": "en-US",
        "guild_locale": "en-US",
        "entitlements": [],
        "authorizing_integration_owners": {"0": GUILD},
        "context": 0,
        "data": {"id": "1", "name": name, "type": 1, "options": options or []},
    }


def option(name: str, value: Any, *, kind: int = 3, focused: bool = False) -> dict[str, Any]:
    item: dict[str, Any] = {"type": kind, "name": name, "value": value}
    if focused:
        item["focused"] = True
    return item


async def invoke(
    fake: FakeDiscord, payload: dict[str, Any], *, follow_ups: int = 0
) -> tuple[Recorded, list[Recorded]]:
    """Dispatch one interaction; return its callback and the follow-ups it produced."""
    await fake.dispatch("INTERACTION_CREATE", payload)
    [callback] = await fake.wait_for_request("POST", f"/interactions/{payload['id']}/")
    later: list[Recorded] = []
    if follow_ups:
        later = await fake.wait_for_request(
            "POST", f"/webhooks/{APP_ID}/{payload['token']}", count=follow_ups
        )
    return callback, later


def text_of(body: dict[str, Any]) -> str:
    """Every visible string of a message body (callback ``data`` or follow-up)."""
    data = body.get("data", body)
    parts = [data.get("content") or ""]
    for embed in data.get("embeds") or []:
        parts += [embed.get("title", ""), embed.get("description", "")]
        parts += [f"{f['name']} {f['value']}" for f in embed.get("fields", [])]
    return "\n".join(parts)


def assert_message_ok(body: dict[str, Any]) -> None:
    data = body.get("data", body)
    assert data.get("allowed_mentions") == {"parse": []}
    assert payload_problems({"content": data.get("content"), "embeds": data.get("embeds")}) == []


# --- start-up ------------------------------------------------------------------------------


async def test_start_syncs_every_command_and_asks_no_privileged_intent(
    fake: FakeDiscord, service: DiscordService
) -> None:
    names = {c["name"] for c in fake.commands["global"]}
    assert names == {
        "subscribe",
        "unsubscribe",
        "subscriptions",
        "themes",
        "theme",
        "claims",
        "claim",
        "digest",
        "search",
        "status",
        "feeds",
    }
    feeds_command = next(c for c in fake.commands["global"] if c["name"] == "feeds")
    assert {o["name"] for o in feeds_command["options"]} == {"list", "add", "remove"}
    claim_command = next(c for c in fake.commands["global"] if c["name"] == "claim")
    assert claim_command["options"][0]["autocomplete"] is True
    identify = next(r.body for r in fake.requests if r.method == "WS" and r.body["op"] == 2)
    assert identify["d"]["intents"] & PRIVILEGED_INTENTS == 0
    assert identify["d"]["token"] == "fake-token-for-tests"
    assert all("fake-token-for-tests" not in r.path for r in fake.requests)


async def test_service_sender_posts_through_the_logged_in_client(
    fake: FakeDiscord, service: DiscordService
) -> None:
    [sender] = service.senders
    outcome = await sender.send(
        OutboxMessage(1, "discord", CHANNEL, render_answer(Notice("Sample."))[0], "n-1", 0, None)
    )
    assert isinstance(outcome, Sent)
    assert fake.messages[CHANNEL][0]["id"] == outcome.message_id


# --- commands ------------------------------------------------------------------------------


async def test_themes_answers_at_once_with_embeds(
    fake: FakeDiscord, service: DiscordService
) -> None:
    callback, _ = await invoke(fake, interaction("themes"))
    assert callback.body["type"] == 4
    assert_message_ok(callback.body)
    assert "putin-deal" in text_of(callback.body)


async def test_subscribe_defers_then_confirms_and_stores(
    fake: FakeDiscord, service: DiscordService, engine: Engine
) -> None:
    payload = interaction(
        "subscribe",
        [option("themes", "putin-deal, energy-windfall"), option("cadence", "6h")],
        permissions=MANAGE_GUILD,
    )
    callback, [follow_up] = await invoke(fake, payload, follow_ups=1)
    assert callback.body == {"type": 5}
    assert_message_ok(follow_up.body)
    assert "Subscribed" in text_of(follow_up.body)
    with engine.connect() as conn:
        sub = subs_repo.find(conn, "discord", CHANNEL)
    assert sub is not None
    assert sub.themes == ("putin-deal", "energy-windfall")
    assert (sub.cadence, sub.guild_id) == ("6h", GUILD)

    _, [listing] = await invoke(fake, interaction("subscriptions"), follow_ups=1)
    assert listing.body["flags"] & EPHEMERAL
    assert "energy-windfall" in text_of(listing.body)


async def test_bad_arguments_get_a_clear_sentence(
    fake: FakeDiscord, service: DiscordService, engine: Engine
) -> None:
    payload = interaction("subscribe", [option("themes", "putin-dea")], permissions=MANAGE_GUILD)
    _, [follow_up] = await invoke(fake, payload, follow_ups=1)
    text = text_of(follow_up.body)
    assert "Cannot do that" in text
    assert "Did you mean putin-deal?" in text
    with engine.connect() as conn:
        assert subs_repo.find(conn, "discord", CHANNEL) is None


def private_interaction(
    name: str, options: list[dict[str, Any]] | None = None, *, group: bool = False
) -> dict[str, Any]:
    """An interaction outside a server: the user's DM with the bot, or a group conversation
    (where a user-installed app can run)."""
    payload = interaction(name, options)
    for key in ("guild_id", "member", "guild_locale"):
        del payload[key]
    payload["user"] = user_payload(600000000000000001, "reader")
    payload["channel_id"] = DM_CHANNEL
    payload["channel"] = {"id": DM_CHANNEL, "type": 3 if group else 1, "recipients": []}
    payload["authorizing_integration_owners"] = {"1": "600000000000000001"}
    payload["context"] = 2 if group else 1
    return payload


@pytest.mark.parametrize("permissions", ["0", MANAGE_CHANNELS])
async def test_subscribe_is_refused_without_manage_server(
    fake: FakeDiscord, service: DiscordService, engine: Engine, permissions: str
) -> None:
    # Manage Channels is what the command's default permission asks for; it is not enough.
    payload = interaction("subscribe", [option("themes", "putin-deal")], permissions=permissions)
    callback, _ = await invoke(fake, payload)
    assert callback.body["type"] == 4
    assert callback.body["data"]["flags"] & EPHEMERAL
    assert "Manage Server permission" in text_of(callback.body)
    with engine.connect() as conn:
        assert subs_repo.find(conn, "discord", CHANNEL) is None


async def test_unsubscribe_needs_manage_server_or_administrator(
    fake: FakeDiscord, service: DiscordService, engine: Engine
) -> None:
    with engine.begin() as conn:
        subs_repo.upsert(
            conn, platform="discord", target=CHANNEL, now=datetime.now(UTC), guild_id=GUILD
        )
    callback, _ = await invoke(fake, interaction("unsubscribe"))
    assert "Manage Server permission" in text_of(callback.body)
    with engine.connect() as conn:
        assert subs_repo.find(conn, "discord", CHANNEL) is not None

    admin = interaction("unsubscribe", permissions=ADMINISTRATOR)
    _, [done] = await invoke(fake, admin, follow_ups=1)
    assert "Unsubscribed" in text_of(done.body)
    with engine.connect() as conn:
        assert subs_repo.find(conn, "discord", CHANNEL) is None


async def test_subscribe_in_the_users_own_dm_is_allowed(
    fake: FakeDiscord, service: DiscordService, engine: Engine
) -> None:
    _, [follow_up] = await invoke(
        fake, private_interaction("subscribe", [option("themes", "putin-deal")]), follow_ups=1
    )
    assert "Subscribed" in text_of(follow_up.body)
    with engine.connect() as conn:
        sub = subs_repo.find(conn, "discord", DM_CHANNEL)
    assert sub is not None
    assert sub.guild_id is None

    _, [gone] = await invoke(fake, private_interaction("unsubscribe"), follow_ups=1)
    assert "Unsubscribed" in text_of(gone.body)


async def test_subscribe_in_a_group_conversation_is_refused(
    fake: FakeDiscord, service: DiscordService, engine: Engine
) -> None:
    callback, _ = await invoke(fake, private_interaction("subscribe", group=True))
    assert "not in a group conversation" in text_of(callback.body)
    with engine.connect() as conn:
        assert subs_repo.find(conn, "discord", DM_CHANNEL) is None


async def test_claim_autocomplete_offers_ids_and_titles(
    fake: FakeDiscord, service: DiscordService
) -> None:
    payload = interaction("claim", [option("claim", "peskov", focused=True)], kind=4)
    callback, _ = await invoke(fake, payload)
    assert callback.body["type"] == 8
    choices = callback.body["data"]["choices"]
    assert [c["value"] for c in choices] == ["not-our-war"]
    assert "Peskov" in choices[0]["name"]


async def test_claim_shows_the_claim(fake: FakeDiscord, service: DiscordService) -> None:
    _, [follow_up] = await invoke(
        fake, interaction("claim", [option("claim", "zelenskyy-obstacle")]), follow_ups=1
    )
    assert_message_ok(follow_up.body)
    text = text_of(follow_up.body)
    assert "Donald Trump" in text
    assert "No matching news items yet." in text


async def test_feeds_add_is_refused_without_manage_server(
    fake: FakeDiscord, service: DiscordService, engine: Engine
) -> None:
    payload = interaction(
        "feeds",
        [{"type": 1, "name": "add", "options": [option("url", "http://127.0.0.1:9/f.xml")]}],
    )
    callback, _ = await invoke(fake, payload)
    assert callback.body["type"] == 4
    assert callback.body["data"]["flags"] & EPHEMERAL
    assert "Manage Server" in text_of(callback.body)
    with engine.connect() as conn:
        assert conn.execute(select(feeds.c.id)).all() == []


async def test_feeds_add_and_remove_with_manage_server(
    fake: FakeDiscord, service: DiscordService, engine: Engine
) -> None:
    url = "http://127.0.0.1:9/f.xml"  # allowed: the test config allows private addresses
    add = interaction(
        "feeds",
        [{"type": 1, "name": "add", "options": [option("url", url)]}],
        permissions=MANAGE_GUILD,
    )
    callback, [added] = await invoke(fake, add, follow_ups=1)
    assert callback.body == {"type": 5, "data": {"flags": EPHEMERAL}}
    assert "Added" in text_of(added.body)
    _, [listing] = await invoke(
        fake, interaction("feeds", [{"type": 1, "name": "list", "options": []}]), follow_ups=1
    )
    assert "NEW" in text_of(listing.body)
    remove = interaction(
        "feeds",
        [{"type": 1, "name": "remove", "options": [option("url", url)]}],
        permissions=MANAGE_GUILD,
    )
    _, [removed] = await invoke(fake, remove, follow_ups=1)
    assert "Removed" in text_of(removed.body)
    with engine.connect() as conn:
        assert conn.execute(select(feeds.c.enabled)).scalars().all() == [False]


async def test_digest_preview_is_ephemeral(fake: FakeDiscord, service: DiscordService) -> None:
    callback, [follow_up] = await invoke(fake, interaction("digest"), follow_ups=1)
    assert callback.body == {"type": 5, "data": {"flags": EPHEMERAL}}
    assert follow_up.body["flags"] & EPHEMERAL
    assert "Nothing new would be posted" in text_of(follow_up.body)


async def test_status_shows_paused_subscription_reason(
    fake: FakeDiscord, service: DiscordService, engine: Engine
) -> None:
    with engine.begin() as conn:
        sub = subs_repo.upsert(
            conn, platform="discord", target=CHANNEL, now=datetime.now(UTC), guild_id=GUILD
        )
        subs_repo.pause(conn, sub.id, "403 Missing Access")
    _, [follow_up] = await invoke(fake, interaction("status"), follow_ups=1)
    text = text_of(follow_up.body)
    assert "1 paused" in text
    assert "403 Missing Access" in text


async def test_search_reports_no_results_and_escapes_the_query(
    fake: FakeDiscord, service: DiscordService, engine: Engine
) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(feeds).values(url="https://feeds.example/a", created_at=datetime.now(UTC))
        )
    _, [follow_up] = await invoke(
        fake, interaction("search", [option("words", "@everyone ceasefire")]), follow_ups=1
    )
    assert_message_ok(follow_up.body)
    text = text_of(follow_up.body)
    assert "No matched items" in text
    assert "@everyone" not in text


async def test_long_answers_are_split_into_follow_ups_within_limits(
    fake: FakeDiscord, service: DiscordService, engine: Engine
) -> None:
    with engine.begin() as conn:
        for n in range(60):
            conn.execute(
                insert(feeds).values(
                    url=f"https://feeds.example/{n}/" + "p" * 300,
                    name=f"Sample feed {n} " + "n" * 150,
                    created_at=datetime.now(UTC),
                )
            )
    list_feeds = interaction("feeds", [{"type": 1, "name": "list", "options": []}])
    await fake.dispatch("INTERACTION_CREATE", list_feeds)
    await fake.wait_for_request("POST", f"/interactions/{list_feeds['id']}/")
    path = f"/webhooks/{APP_ID}/{list_feeds['token']}"

    def names_seen(f: FakeDiscord) -> int:
        return sum(text_of(r.body).count("Sample feed") for r in f.requests_to("POST", path))

    await fake.wait_for(lambda f: names_seen(f) == 60)
    follow_ups = fake.requests_to("POST", path)
    assert len(follow_ups) > 1
    for follow_up in follow_ups:
        assert_message_ok(follow_up.body)
        assert follow_up.body["flags"] & EPHEMERAL


async def test_slow_work_is_deferred_before_it_starts(
    fake: FakeDiscord, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The defer reaches Discord while the core is still blocked (here: in DNS resolution)."""
    monkeypatch.setattr(discord.http.Route, "BASE", fake.api_base)
    monkeypatch.setattr(DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(fake.gateway_url))
    resolving = threading.Event()
    answer_dns = threading.Event()

    def slow_resolve(host: str, port: int) -> list[str]:
        resolving.set()
        assert answer_dns.wait(30), "the test never let DNS answer"
        return ["93.184.216.34"]

    core = CommandCore(engine, load_catalog(), resolve=slow_resolve)
    options = DiscordSection(sync_commands=False)
    slow = DiscordService(token=SecretStr("fake-token-for-tests"), core=core, options=options)
    await slow.start()
    try:
        await fake.wait_identified()
        payload = interaction(
            "feeds",
            [{"type": 1, "name": "add", "options": [option("url", "https://slow.example/f")]}],
            permissions=MANAGE_GUILD,
        )
        await fake.dispatch("INTERACTION_CREATE", payload)
        [callback] = await fake.wait_for_request("POST", f"/interactions/{payload['id']}/")
        assert callback.body["type"] == 5
        assert resolving.is_set()
        assert not fake.requests_to("POST", f"/webhooks/{APP_ID}/{payload['token']}")
        answer_dns.set()
        [added] = await fake.wait_for_request("POST", f"/webhooks/{APP_ID}/{payload['token']}")
        assert "Added https://slow.example/f" in text_of(added.body)
        assert fake.commands == {}  # sync_commands = false: nothing synced
    finally:
        answer_dns.set()
        await slow.stop()


@pytest.mark.parametrize("with_webhook", [True, False])
def test_build_without_a_token(tmp_path: Path, engine: Engine, with_webhook: bool) -> None:
    config = tmp_path / "feeds.toml"
    webhook = (
        '[[subscriptions]]\nplatform = "discord-webhook"\n'
        'target = "https://discord.com/api/webhooks/123456789012345678/' + "t" * 68 + '"\n'
    )
    config.write_text(webhook if with_webhook else "", encoding="utf-8")
    settings = load_settings(config, database_url="sqlite://", environ={})
    built = build(settings, engine, load_catalog())
    if not with_webhook:
        assert built is None
        return
    assert isinstance(built, WebhookOnlyService)
    assert [s.platforms for s in built.senders] == [("discord-webhook",)]
    assert [r.platforms for r in built.renderers] == [("discord-webhook",)]


async def test_commands_sync_to_configured_guilds_at_once(
    fake: FakeDiscord, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(discord.http.Route, "BASE", fake.api_base)
    core = CommandCore(engine, load_catalog())
    options = DiscordSection(guild_ids=[int(GUILD)])
    guild_synced = DiscordService(
        token=SecretStr("fake-token-for-tests"), core=core, options=options
    )
    await guild_synced.client.login("fake-token-for-tests")  # login runs setup_hook: the sync
    try:
        assert {c["name"] for c in fake.commands[GUILD]} == {
            c["name"] for c in fake.commands["global"]
        }
        assert len(fake.commands[GUILD]) == 11
        assert fake.requests_to("PUT", f"/applications/{APP_ID}/guilds/{GUILD}/commands")
    finally:
        await guild_synced.stop()


async def test_theme_autocomplete_completes_the_last_of_several_ids(
    fake: FakeDiscord, service: DiscordService
) -> None:
    payload = interaction(
        "subscribe", [option("themes", "putin-deal, energy", focused=True)], kind=4
    )
    callback, _ = await invoke(fake, payload)
    assert callback.body["type"] == 8
    assert [c["value"] for c in callback.body["data"]["choices"]] == ["putin-deal, energy-windfall"]
