"""The platform-neutral command core, on a real (SQLite or PostgreSQL) database, no chat platform.

Rows are written directly with small sample values made up for these tests. DNS is the boundary
faked for ``add_feed``: a resolver function returning fixed addresses.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, insert, select

from bot.commands.answers import CommandError, DigestPreviewAnswer, Notice
from bot.commands.core import Caller, CommandCore
from bot.commands.ssrf import UnsafeUrlError, address_problem, check_feed_url
from bot.matching.catalog import Catalog, load_catalog
from bot.storage import subscriptions as subs_repo
from bot.storage.schema import digest_items, entries, feeds, matches, outbox

NOW = datetime(2026, 3, 7, 12, 0, tzinfo=UTC)
HERE = Caller("discord", "111111111111111111", "<#111111111111111111>", "42", "900", True)
MEMBER = Caller("discord", "111111111111111111", "<#111111111111111111>", "43", "900", False)

PUBLIC_DNS = {"feeds.example": ["93.184.216.34"], "sneaky.example": ["93.184.216.34", "10.0.0.5"]}


def fake_resolve(host: str, port: int) -> list[str]:
    if host not in PUBLIC_DNS:
        raise OSError(f"no such host {host}")
    return PUBLIC_DNS[host]


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


@pytest.fixture
def core(engine: Engine, catalog: Catalog) -> CommandCore:
    return CommandCore(engine, catalog, resolve=fake_resolve, clock=lambda: NOW)


def add_feed_row(engine: Engine, url: str, **values: Any) -> int:
    row = {"url": url, "created_at": NOW - timedelta(days=2), "origin": "config", **values}
    with engine.begin() as conn:
        return int(conn.execute(insert(feeds).values(**row)).inserted_primary_key[0])


def add_item(
    engine: Engine,
    feed_id: int,
    n: int,
    title: str,
    refs: list[tuple[str, str, float]],
    *,
    age: timedelta = timedelta(hours=1),
    summary: str = "",
) -> int:
    seen = NOW - age
    with engine.begin() as conn:
        entry_id = int(
            conn.execute(
                insert(entries).values(
                    feed_id=feed_id,
                    entry_key=f"k{n}",
                    link=f"https://feeds.example/{n}",
                    title=title,
                    summary=summary,
                    published_at=seen,
                    content_hash=f"h{n}",
                    story_key=f"s{n}",
                    first_seen_at=seen,
                    updated_at=seen,
                    matched_at=seen,
                )
            ).inserted_primary_key[0]
        )
        for kind, ref, score in refs:
            conn.execute(
                insert(matches).values(
                    entry_id=entry_id,
                    kind=kind,
                    ref_id=ref,
                    score=score,
                    excerpt=f"Sample excerpt {n} for {ref}.",
                    created_at=seen,
                )
            )
    return entry_id


# --- themes and claims ----------------------------------------------------------------------


def test_themes_and_claims_list_the_catalog(core: CommandCore, catalog: Catalog) -> None:
    assert [t.id for t in core.themes().themes] == list(catalog.themes)
    assert [c.id for c in core.claims().claims] == list(catalog.claims)


def test_theme_shows_its_claims_and_recent_items(core: CommandCore, engine: Engine) -> None:
    feed = add_feed_row(engine, "https://feeds.example/a.xml", name="Sample Feed")
    add_item(engine, feed, 1, "Sample talks item", [("theme", "putin-deal", 0.9)])
    add_item(engine, feed, 2, "Unrelated sample", [("theme", "energy-windfall", 0.9)])
    answer = core.theme(" Putin-Deal ")
    assert answer.theme.id == "putin-deal"
    assert {"putin-ready-to-deal", "zelenskyy-obstacle"} <= {c.id for c in answer.claims}
    assert [i.title for i in answer.recent] == ["Sample talks item"]
    assert answer.recent[0].outlet == "Sample Feed"


def test_unknown_theme_suggests_the_closest(core: CommandCore) -> None:
    with pytest.raises(CommandError, match="Did you mean putin-deal"):
        core.theme("putin-dea")
    with pytest.raises(CommandError, match="Known themes: russia-overstretched"):
        core.theme("zzz")


def test_claim_shows_latest_evidence(core: CommandCore, engine: Engine) -> None:
    feed = add_feed_row(engine, "https://feeds.example/a.xml")
    add_item(engine, feed, 1, "Older", [("claim", "not-our-war", 0.7)], age=timedelta(hours=5))
    add_item(engine, feed, 2, "Newer", [("claim", "not-our-war", 0.6)], age=timedelta(hours=1))
    answer = core.claim("not-our-war")
    assert answer.claim.claimant.startswith("Dmitri Peskov")
    assert [i.title for i in answer.recent] == ["Newer", "Older"]
    with pytest.raises(CommandError):
        core.claim("no-such-claim")


def test_claim_autocomplete(core: CommandCore) -> None:
    by_id = core.claim_choices("zel")
    assert by_id[0][1] == "zelenskyy-obstacle"
    by_claimant = {value for _, value in core.claim_choices("peskov")}
    assert by_claimant == {"not-our-war"}
    everything = core.claim_choices("")
    assert len(everything) == 10
    assert all(len(label) <= 100 for label, _ in everything)
    assert core.claim_choices("nothing-like-this") == []


# --- subscriptions -------------------------------------------------------------------------


def test_subscribe_update_list_unsubscribe(core: CommandCore, engine: Engine) -> None:
    first = core.subscribe(HERE, themes="putin-deal, pressure-on-kyiv", cadence="6h")
    assert first.text.startswith("Subscribed")
    second = core.subscribe(HERE, themes="all", claims="not-our-war", min_score=0.7, max_items=5)
    assert second.text.startswith("Updated")
    [info] = core.subscriptions(HERE).subscriptions
    assert info.themes is None
    assert info.claims == ("not-our-war",)
    assert (info.cadence, info.min_score, info.max_items) == ("instant", 0.7, 5)
    with engine.connect() as conn:
        sub = subs_repo.find(conn, "discord", HERE.target)
    assert sub is not None
    assert sub.guild_id == "900"
    assert sub.created_by == "42"
    assert isinstance(core.unsubscribe(HERE), Notice)
    assert core.subscriptions(HERE).subscriptions == ()
    with pytest.raises(CommandError, match="has no subscription"):
        core.unsubscribe(HERE)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"themes": "putin-deal, nope"}, "no theme called 'nope'"),
        ({"claims": "putin-ready"}, "Did you mean putin-ready-to-deal"),
        ({"cadence": "hourly"}, "not a cadence"),
        ({"cadence": "daily 08:00 Mars/Base"}, "Unknown time zone 'Mars/Base'"),
        ({"min_score": 1.5}, "between 0 and 1"),
        ({"max_items": 0}, "between 1 and 100"),
    ],
)
def test_subscribe_rejects_bad_arguments_with_a_sentence(
    core: CommandCore, engine: Engine, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(CommandError, match=message):
        core.subscribe(HERE, **kwargs)
    assert core.subscriptions(HERE).subscriptions == ()


def test_config_subscriptions_cannot_be_removed_by_command(
    core: CommandCore, engine: Engine
) -> None:
    with engine.begin() as conn:
        subs_repo.upsert(conn, platform="discord", target=HERE.target, now=NOW, origin="config")
    with pytest.raises(CommandError, match=r"feeds\.toml"):
        core.unsubscribe(HERE)


def test_subscriptions_lists_the_whole_server(core: CommandCore) -> None:
    other = Caller("discord", "222222222222222222", "<#222222222222222222>", "42", "900", True)
    elsewhere = Caller("discord", "333333333333333333", "<#333333333333333333>", "42", "901", True)
    core.subscribe(HERE)
    core.subscribe(other)
    core.subscribe(elsewhere)
    labels = [s.target_label for s in core.subscriptions(HERE).subscriptions]
    assert labels == ["<#111111111111111111>", "<#222222222222222222>"]


# --- search and preview --------------------------------------------------------------------


def test_search_finds_matched_items_with_every_word(core: CommandCore, engine: Engine) -> None:
    feed = add_feed_row(engine, "https://feeds.example/a.xml")
    add_item(engine, feed, 1, "Sample ceasefire talks stall", [("theme", "putin-deal", 0.8)])
    add_item(
        engine,
        feed,
        2,
        "Sample ceasefire",
        [("theme", "putin-deal", 0.8)],
        summary="Talks",
        age=timedelta(hours=2),
    )
    add_item(engine, feed, 3, "Ceasefire talks, unmatched", [])
    add_item(
        engine,
        feed,
        4,
        "Old ceasefire talks",
        [("theme", "putin-deal", 0.8)],
        age=timedelta(days=40),
    )
    add_item(engine, feed, 5, "100% sample", [("theme", "putin-deal", 0.8)])
    found = core.search("ceasefire TALKS")
    assert [i.title for i in found.items] == ["Sample ceasefire talks stall", "Sample ceasefire"]
    assert found.items[0].ref_ids == ("putin-deal",)
    # LIKE wildcards in the query are literal
    assert [i.title for i in core.search("0%").items] == ["100% sample"]
    assert core.search("_a").items == ()
    with pytest.raises(CommandError):
        core.search(" x ")


def test_digest_preview_composes_without_enqueuing(core: CommandCore, engine: Engine) -> None:
    feed = add_feed_row(engine, "https://feeds.example/a.xml", name="Sample Feed")
    core.subscribe(HERE, themes="putin-deal")
    with engine.begin() as conn:  # the subscription starts fresh at NOW; move it back
        conn.execute(subs_repo.subscriptions.update().values(since=NOW - timedelta(days=1)))
    add_item(engine, feed, 1, "Sample talks item", [("theme", "putin-deal", 0.9)])
    add_item(engine, feed, 2, "Sample energy item", [("theme", "energy-windfall", 0.9)])
    answer = core.digest_preview(HERE)
    assert isinstance(answer, DigestPreviewAnswer)
    assert answer.subscribed
    assert answer.digest is not None
    assert [e.title for s in answer.digest.sections for e in s.entries] == ["Sample talks item"]
    again = core.digest_preview(HERE)
    assert again.digest == answer.digest
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(outbox)).scalar() == 0
        assert conn.execute(select(func.count()).select_from(digest_items)).scalar() == 0


def test_digest_preview_without_subscription_uses_last_day(
    core: CommandCore, engine: Engine
) -> None:
    feed = add_feed_row(engine, "https://feeds.example/a.xml")
    add_item(engine, feed, 1, "Fresh", [("theme", "energy-windfall", 0.9)])
    add_item(engine, feed, 2, "Stale", [("theme", "energy-windfall", 0.9)], age=timedelta(days=3))
    answer = core.digest_preview(MEMBER)
    assert not answer.subscribed
    assert answer.digest is not None
    assert [e.title for s in answer.digest.sections for e in s.entries] == ["Fresh"]


# --- feeds ---------------------------------------------------------------------------------


def test_add_feed_then_list_and_remove(core: CommandCore, engine: Engine) -> None:
    notice = core.add_feed(HERE, " https://feeds.example/new.xml ")
    assert "https://feeds.example/new.xml" in notice.text
    [feed] = core.feeds().feeds
    assert (feed.url, feed.origin, feed.health) == (
        "https://feeds.example/new.xml",
        "command",
        "new",
    )
    with pytest.raises(CommandError, match="already follows"):
        core.add_feed(HERE, "https://feeds.example/new.xml")
    core.remove_feed(HERE, "https://feeds.example/new.xml")
    assert core.feeds().feeds[0].health == "disabled"
    core.add_feed(HERE, "https://feeds.example/new.xml")  # re-enabled, not duplicated
    assert [f.health for f in core.feeds().feeds] == ["new"]


def test_feed_changes_need_manage_server(core: CommandCore, engine: Engine) -> None:
    with pytest.raises(CommandError, match="Manage Server"):
        core.add_feed(MEMBER, "https://feeds.example/new.xml")
    with pytest.raises(CommandError, match="Manage Server"):
        core.remove_feed(MEMBER, "https://feeds.example/new.xml")
    assert core.feeds().feeds == ()


def test_config_feeds_cannot_be_removed_by_command(core: CommandCore, engine: Engine) -> None:
    add_feed_row(engine, "https://feeds.example/a.xml")
    with pytest.raises(CommandError, match=r"feeds\.toml"):
        core.remove_feed(HERE, "https://feeds.example/a.xml")
    with pytest.raises(CommandError, match="does not follow"):
        core.remove_feed(HERE, "https://feeds.example/unknown.xml")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://feeds.example/a", "Only http"),
        ("file:///etc/passwd", "Only http"),
        ("http://127.0.0.1/feed", "loopback"),
        ("http://localhost/feed", "does not resolve"),
        ("http://[::1]/feed", "loopback"),
        ("http://[::ffff:127.0.0.1]/feed", "loopback"),
        ("http://10.1.2.3/feed", "private"),
        ("http://192.168.0.1/feed", "private"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://100.64.0.1/feed", "not a public address"),
        ("http://0.0.0.0/feed", "unspecified"),
        ("http://sneaky.example/feed", "10.0.0.5"),
        ("http://user:pw@feeds.example/feed", "user name or password"),
        ("http://feeds.example:99999/feed", "not a valid URL"),
        ("https://" + "a" * 2100 + ".example/", "longer than"),
    ],
)
def test_unsafe_feed_urls_are_refused(
    core: CommandCore, engine: Engine, url: str, reason: str
) -> None:
    with pytest.raises(UnsafeUrlError, match=reason):
        core.add_feed(HERE, url)
    assert core.feeds().feeds == ()


def test_private_addresses_allowed_when_the_operator_says_so(
    engine: Engine, catalog: Catalog
) -> None:
    core = CommandCore(
        engine, catalog, allow_private_feeds=True, resolve=fake_resolve, clock=lambda: NOW
    )
    core.add_feed(HERE, "http://127.0.0.1:8080/feed.xml")
    assert [f.url for f in core.feeds().feeds] == ["http://127.0.0.1:8080/feed.xml"]
    with pytest.raises(UnsafeUrlError):
        check_feed_url("gopher://127.0.0.1/", resolve=fake_resolve, allow_private=True)


def test_address_problem() -> None:
    assert address_problem("93.184.216.34") is None
    assert address_problem("2606:4700::1111") is None
    assert address_problem("fd00:ec2::254") == "a private network address"


# --- status --------------------------------------------------------------------------------


def test_status_shows_paused_subscriptions_outbox_and_feed_health(
    core: CommandCore, engine: Engine
) -> None:
    core.subscribe(HERE)
    add_feed_row(engine, "https://feeds.example/ok.xml", last_fetched_at=NOW - timedelta(minutes=3))
    add_feed_row(
        engine,
        "https://feeds.example/bad.xml",
        last_fetched_at=NOW - timedelta(minutes=9),
        consecutive_failures=3,
        last_error="timed out",
    )
    add_feed_row(engine, "https://feeds.example/new.xml")
    with engine.begin() as conn:
        sub = subs_repo.find(conn, "discord", HERE.target)
        assert sub is not None
        for n, status in enumerate(["pending", "pending", "failed", "sent"]):
            conn.execute(
                insert(outbox).values(
                    subscription_id=sub.id,
                    platform="discord",
                    target=HERE.target,
                    payload={"content": "x"},
                    nonce=f"n{n}",
                    status=status,
                    next_attempt_at=NOW,
                    created_at=NOW,
                )
            )
        subs_repo.pause(conn, sub.id, "403 Missing Access: the bot cannot post here")
    status = core.status(HERE)
    assert status.subscriptions == 1
    [paused] = status.paused
    assert paused.pause_reason == "403 Missing Access: the bot cannot post here"
    assert (status.outbox_pending, status.outbox_failed) == (2, 1)  # held rows count as waiting
    assert (status.feeds_total, status.feeds_failing, status.feeds_never_fetched) == (3, 1, 1)
    assert status.last_poll_at == NOW - timedelta(minutes=3)
    feeds_by_url = {f.url: f.health for f in core.feeds().feeds}
    assert feeds_by_url == {
        "https://feeds.example/ok.xml": "ok",
        "https://feeds.example/bad.xml": "failing",
        "https://feeds.example/new.xml": "new",
    }


def test_subscribing_again_resumes_a_paused_subscription(core: CommandCore, engine: Engine) -> None:
    core.subscribe(HERE)
    with engine.begin() as conn:
        sub = subs_repo.find(conn, "discord", HERE.target)
        assert sub is not None
        subs_repo.pause(conn, sub.id, "403 Missing Access")
    notice = core.subscribe(HERE)
    assert "Delivery resumed (it was paused: 403 Missing Access)" in notice.text
    [info] = core.subscriptions(HERE).subscriptions
    assert not info.paused
    assert core.status(HERE).paused == ()
