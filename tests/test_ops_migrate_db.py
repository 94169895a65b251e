"""``counterparty migrate-db --to URL``: every row copied, FK order kept, sequences fixed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, delete, func, insert, select

from bot.cli import main
from bot.ops import transfer
from bot.storage.db import make_engine, migrate
from bot.storage.schema import (
    digest_items,
    entries,
    feeds,
    heartbeats,
    matches,
    metadata,
    outbox,
    subscriptions,
    targets,
)

T0 = datetime(2026, 3, 6, 9, 30, 15, 123456, tzinfo=UTC)


def populate(engine: Engine) -> None:
    """A small but complete database: every table, JSON, NULLs, unicode, id gaps."""
    migrate(engine)
    with engine.begin() as c:
        for n in range(1, 5):
            c.execute(
                insert(feeds).values(
                    url=f"https://feeds{n}.example/rss",
                    name=f"Outlet {n} — «новости»",
                    etag=f'W/"{n}"' if n % 2 else None,
                    next_poll_at=T0 + timedelta(minutes=n),
                    baseline_done=n > 1,
                    consecutive_failures=n - 1,
                    created_at=T0,
                )
            )
        for n in range(1, 41):
            c.execute(
                insert(entries).values(
                    feed_id=(n % 4) + 1,
                    entry_key=f"guid-{n}",
                    link=f"https://feeds.example/item/{n}",
                    title=f"Item {n}: Kyiv, Tehran & Moscow",
                    summary="s" * n,
                    authors=[{"name": f"Author {n}"}] if n % 3 else None,
                    published_at=T0 - timedelta(hours=n) if n % 5 else None,
                    content_hash=f"{n:064x}",
                    story_key=f"story-{n // 2}",
                    announce=n % 7 != 0,
                    first_seen_at=T0,
                    updated_at=T0 + timedelta(seconds=n),
                    matched_at=T0 if n % 2 else None,
                )
            )
        for n in range(1, 41, 2):
            c.execute(
                insert(matches).values(
                    entry_id=n,
                    kind="theme" if n % 4 == 1 else "claim",
                    ref_id=f"ref-{n % 3}",
                    score=n / 41,
                    excerpt=f"“quoted” excerpt {n}",
                    evidence={"terms": ["sanctions", "ceasefire"], "n": n},
                    created_at=T0,
                )
            )
        for n in range(1, 4):
            c.execute(
                insert(subscriptions).values(
                    platform="telegram" if n != 2 else "discord",
                    target=f"-100{n}" if n != 2 else "123456789012345678",
                    themes=["russia-sanctions"] if n == 1 else None,
                    claims=[] if n == 1 else None,
                    cadence="daily 08:00 Europe/Kyiv" if n == 3 else "instant",
                    paused=n == 2,
                    pause_reason="bot removed" if n == 2 else None,
                    since=T0,
                    created_at=T0,
                )
            )
        for n in range(1, 6):
            c.execute(
                insert(outbox).values(
                    subscription_id=(n % 3) + 1,
                    platform="telegram",
                    target="-1001",
                    payload={"text": f"<b>digest {n}</b>", "parts": [1, 2]},
                    nonce=f"cp-{n:021d}",
                    seq=n,
                    status="sent" if n < 3 else "pending",
                    next_attempt_at=T0,
                    platform_message_id=str(1000 + n) if n < 3 else None,
                    created_at=T0,
                    sent_at=T0 if n < 3 else None,
                )
            )
            c.execute(
                insert(digest_items).values(
                    subscription_id=(n % 3) + 1, entry_id=n, outbox_id=n, created_at=T0
                )
            )
        c.execute(insert(targets).values(platform="telegram", target="-1001", next_send_at=T0))
        c.execute(
            insert(heartbeats).values(name="scheduler", owner="old:1", beat_at=T0, info={"a": 1})
        )
        # Gaps in the ids: the copy must keep ids, not renumber them.
        c.execute(delete(feeds).where(feeds.c.id == 2))


def dump(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    with engine.connect() as c:
        return {
            table.name: [
                dict(row._mapping)
                for row in c.execute(select(table).order_by(*table.primary_key.columns))
            ]
            for table in metadata.sorted_tables
        }


def test_copy_sqlite_to_sqlite_keeps_every_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transfer, "BATCH_ROWS", 7)  # several batches per table
    source = make_engine(f"sqlite:///{tmp_path / 'a.db'}")
    target = make_engine(f"sqlite:///{tmp_path / 'b.db'}")
    populate(source)
    copied = transfer.copy_database(source, target)
    before, after = dump(source), dump(target)
    assert {c.table: c.rows for c in copied} == {name: len(rows) for name, rows in before.items()}
    assert after == before
    assert len(after["entries"]) == 30  # feed 2's entries went with it (ON DELETE CASCADE)
    source.dispose()
    target.dispose()


def test_target_with_data_is_refused(tmp_path: Path) -> None:
    source = make_engine(f"sqlite:///{tmp_path / 'a.db'}")
    target = make_engine(f"sqlite:///{tmp_path / 'b.db'}")
    populate(source)
    populate(target)
    with pytest.raises(transfer.TransferError, match="already holds data"):
        transfer.copy_database(source, target)
    source.dispose()
    target.dispose()


@pytest.mark.postgres
def test_migrate_db_sqlite_to_postgresql(
    tmp_path: Path, postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    sqlite_url = f"sqlite:///{tmp_path / 'counterparty.db'}"
    source = make_engine(sqlite_url)
    populate(source)
    before = dump(source)
    source.dispose()

    assert main(["--db", sqlite_url, "migrate-db", "--to", postgres_url]) == 0
    out = capsys.readouterr().out
    assert "entries: 30 rows" in out

    target = make_engine(postgres_url)
    after = dump(target)
    for name, rows in before.items():
        assert len(after[name]) == len(rows), name
    assert after == before  # every value, including JSON, aware datetimes, booleans, unicode
    sample = after["entries"][0]
    assert sample["published_at"] is None or sample["published_at"].tzinfo is not None
    first_match = after["matches"][0]
    assert first_match["evidence"] == {"terms": ["sanctions", "ceasefire"], "n": 3}
    assert first_match["entry_id"] == 3  # entry 1 belonged to the deleted feed 2
    assert after["feeds"][0]["name"] == "Outlet 1 — «новости»"

    # Sequences moved past the copied ids: new rows get fresh ids instead of colliding.
    with target.begin() as c:
        feed_id = c.execute(
            insert(feeds).values(url="https://new.example/rss", created_at=T0).returning(feeds.c.id)
        ).scalar_one()
        entry_id = c.execute(
            insert(entries)
            .values(
                feed_id=feed_id,
                entry_key="new",
                content_hash="0" * 64,
                story_key="new",
                first_seen_at=T0,
                updated_at=T0,
            )
            .returning(entries.c.id)
        ).scalar_one()
        max_outbox = c.execute(select(func.max(outbox.c.id))).scalar_one()
    assert feed_id == max(row["id"] for row in before["feeds"]) + 1
    assert entry_id == 41

    # And back: PostgreSQL -> a fresh SQLite file gives the same rows (a portable snapshot).
    back = make_engine(f"sqlite:///{tmp_path / 'back.db'}")
    transfer.copy_database(target, back)
    assert dump(back) == dump(target)
    back.dispose()

    # A second run refuses to copy over the data now there.
    assert main(["--db", sqlite_url, "migrate-db", "--to", postgres_url]) == 1
    assert "already holds data" in capsys.readouterr().err
    assert max_outbox == 5
    target.dispose()


def test_missing_source_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "--db",
            f"sqlite:///{tmp_path / 'none.db'}",
            "migrate-db",
            "--to",
            f"sqlite:///{tmp_path / 'target.db'}",
        ]
    )
    assert code == 2
    assert "source database file" in capsys.readouterr().err
    assert not (tmp_path / "none.db").exists()
    assert not (tmp_path / "target.db").exists()
