"""A chat that changes its id keeps its subscription and its undelivered posts."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import insert, select

from bot.storage import subscriptions as subs_repo
from bot.storage.db import open_database
from bot.storage.schema import outbox

NOW = datetime(2026, 3, 6, 12, 0, tzinfo=UTC)


def test_chat_migration_moves_subscription_and_undelivered_rows(database_url: str) -> None:
    engine = open_database(database_url)
    try:
        with engine.begin() as conn:
            sub = subs_repo.upsert(conn, platform="telegram", target="-100", now=NOW)
            other = subs_repo.upsert(conn, platform="discord", target="-100", now=NOW)
            for index, (sub_id, platform, status) in enumerate(
                [
                    (sub.id, "telegram", "pending"),
                    (sub.id, "telegram", "held"),
                    (sub.id, "telegram", "sent"),
                    (other.id, "discord", "pending"),
                ]
            ):
                conn.execute(
                    insert(outbox).values(
                        subscription_id=sub_id,
                        platform=platform,
                        target="-100",
                        payload={"text": f"post {index}"},
                        nonce=f"nonce-{index}",
                        status=status,
                        next_attempt_at=NOW,
                        created_at=NOW,
                    )
                )
            subs_repo.record_chat_migration(conn, "telegram", "-100", "-1009")

        with engine.connect() as conn:
            assert subs_repo.find(conn, "telegram", "-100") is None
            moved = subs_repo.find(conn, "telegram", "-1009")
            assert moved is not None
            assert moved.id == sub.id
            untouched = subs_repo.find(conn, "discord", "-100")
            assert untouched is not None
            rows = conn.execute(
                select(outbox.c.platform, outbox.c.status, outbox.c.target).order_by(outbox.c.id)
            ).all()
        assert [tuple(row) for row in rows] == [
            ("telegram", "pending", "-1009"),
            ("telegram", "held", "-1009"),
            ("telegram", "sent", "-100"),  # delivered history stays where it was sent
            ("discord", "pending", "-100"),
        ]
    finally:
        engine.dispose()
