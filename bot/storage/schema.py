"""The database schema, as SQLAlchemy Core tables: the single description of what is stored.

Alembic migrations in ``bot/storage/migrations/versions`` create exactly this; a test compares
the migrated database with this metadata, so the two cannot drift apart.

All timestamps are timezone-aware UTC (``UtcDateTime`` stores them naive-UTC on SQLite and as
``timestamptz`` on PostgreSQL, and always hands back aware datetimes).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)


class UtcDateTime(TypeDecorator[datetime]):
    """A datetime column that only accepts and only returns aware UTC datetimes."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]
        return value.astimezone(UTC)  # type: ignore[no-any-return]


# Big integer ids on PostgreSQL, plain INTEGER PRIMARY KEY (rowid) on SQLite.
Id = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

feeds = Table(
    "feeds",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("url", Text, nullable=False, unique=True),
    # The URL as configured; differs from ``url`` after a permanent redirect.
    Column("config_url", Text, nullable=True),
    Column("name", Text, nullable=True),
    Column("title", Text, nullable=True),
    # 'config' (from feeds.toml) or 'command' (added through a chat command).
    Column("origin", String(16), nullable=False, server_default="config"),
    Column("added_by", Text, nullable=True),
    Column("enabled", Boolean, nullable=False, server_default="1"),
    Column("interval_seconds", Integer, nullable=True),
    Column("etag", Text, nullable=True),
    Column("last_modified", Text, nullable=True),
    Column("body_hash", String(64), nullable=True),
    Column("next_poll_at", UtcDateTime, nullable=True),
    Column("last_fetched_at", UtcDateTime, nullable=True),
    Column("last_success_at", UtcDateTime, nullable=True),
    Column("last_status", Integer, nullable=True),
    Column("consecutive_failures", Integer, nullable=False, server_default="0"),
    # 'gone' (404/410), 'parse', 'http' (other 4xx), 'server' (5xx), 'timeout', 'network',
    # 'too_large', 'rate_limited', 'redirect', 'blocked' (a command-added feed reaching a private
    # address); NULL when the last poll succeeded.
    Column("last_error_kind", String(32), nullable=True),
    Column("last_error", Text, nullable=True),
    Column("baseline_done", Boolean, nullable=False, server_default="0"),
    Column("entry_count", Integer, nullable=False, server_default="0"),
    Column("lease_owner", String(64), nullable=True),
    Column("lease_until", UtcDateTime, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Index(None, "next_poll_at"),
)

entries = Table(
    "entries",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("feed_id", Id, ForeignKey("feeds.id", ondelete="CASCADE"), nullable=False),
    # Stable id within the feed: guid, else link, else a hash of title and date.
    Column("entry_key", Text, nullable=False),
    Column("link", Text, nullable=True),
    Column("title", Text, nullable=False, server_default=""),
    Column("summary", Text, nullable=False, server_default=""),
    Column("content", Text, nullable=True),
    Column("authors", JSON, nullable=True),
    Column("published_at", UtcDateTime, nullable=True),
    Column("content_hash", String(64), nullable=False),
    Column("update_count", Integer, nullable=False, server_default="0"),
    # Same story from several feeds: canonical URL or title fingerprint.
    Column("story_key", String(64), nullable=False),
    # False for baseline items older than the baseline window: stored, never announced.
    Column("announce", Boolean, nullable=False, server_default="1"),
    Column("first_seen_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    # Set once the matcher has run over the entry's current content.
    Column("matched_at", UtcDateTime, nullable=True),
    UniqueConstraint("feed_id", "entry_key"),
    Index(None, "story_key"),
    Index(None, "matched_at"),
    Index(None, "first_seen_at"),
)

matches = Table(
    "matches",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("entry_id", Id, ForeignKey("entries.id", ondelete="CASCADE"), nullable=False),
    # 'theme' or 'claim'
    Column("kind", String(8), nullable=False),
    Column("ref_id", String(64), nullable=False),
    Column("score", Float, nullable=False),
    Column("excerpt", Text, nullable=True),
    Column("evidence", JSON, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    UniqueConstraint("entry_id", "kind", "ref_id"),
    Index(None, "kind", "ref_id", "created_at"),
)

subscriptions = Table(
    "subscriptions",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    # 'discord', 'discord-webhook', 'telegram'
    Column("platform", String(24), nullable=False),
    # Channel/thread id, webhook URL, or 'CHAT_ID[:TOPIC_ID]'.
    Column("target", Text, nullable=False),
    # Display label for lists (channel name, chat title); the webhook URL is never shown.
    Column("label", Text, nullable=True),
    Column("guild_id", Text, nullable=True),
    # JSON list of theme ids; NULL means every theme.
    Column("themes", JSON, nullable=True),
    Column("claims", JSON, nullable=True),
    Column("cadence", String(64), nullable=False, server_default="instant"),
    Column("min_score", Float, nullable=False, server_default="0.5"),
    Column("max_items", Integer, nullable=False, server_default="10"),
    Column("origin", String(16), nullable=False, server_default="command"),
    Column("created_by", Text, nullable=True),
    Column("paused", Boolean, nullable=False, server_default="0"),
    Column("pause_reason", Text, nullable=True),
    Column("last_digest_at", UtcDateTime, nullable=True),
    Column("next_digest_at", UtcDateTime, nullable=True),
    # Deliver nothing stored before this moment (a new subscription starts fresh).
    Column("since", UtcDateTime, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    UniqueConstraint("platform", "target"),
)

# Which entry went to which subscription, written in the same transaction as the outbox rows:
# the record that makes delivery exactly-once across restarts and replicas.
digest_items = Table(
    "digest_items",
    metadata,
    Column(
        "subscription_id", Id, ForeignKey("subscriptions.id", ondelete="CASCADE"), primary_key=True
    ),
    Column("entry_id", Id, ForeignKey("entries.id", ondelete="CASCADE"), primary_key=True),
    Column("outbox_id", Id, ForeignKey("outbox.id", ondelete="SET NULL"), nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column(
        "subscription_id", Id, ForeignKey("subscriptions.id", ondelete="CASCADE"), nullable=True
    ),
    Column("platform", String(24), nullable=False),
    Column("target", Text, nullable=False),
    # Platform-ready message (already rendered and split), JSON.
    Column("payload", JSON, nullable=False),
    # Stable idempotency key (Discord 'nonce', at most 25 characters).
    Column("nonce", String(25), nullable=False, unique=True),
    # Order of messages within one digest.
    Column("seq", Integer, nullable=False, server_default="0"),
    # 'pending', 'sent', 'failed' (gave up), 'held' (subscription paused)
    Column("status", String(12), nullable=False, server_default="pending"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", UtcDateTime, nullable=False),
    Column("last_error", Text, nullable=True),
    Column("platform_message_id", Text, nullable=True),
    Column("lease_owner", String(64), nullable=True),
    Column("lease_until", UtcDateTime, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("sent_at", UtcDateTime, nullable=True),
    Index(None, "status", "next_attempt_at"),
)

# Per-target pacing shared by every process (platform limits are per chat, not per process).
targets = Table(
    "targets",
    metadata,
    Column("platform", String(24), primary_key=True),
    Column("target", Text, primary_key=True),
    Column("next_send_at", UtcDateTime, nullable=True),
)

# Liveness of each process's scheduler, and leader leases on SQLite.
heartbeats = Table(
    "heartbeats",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("owner", String(64), nullable=False),
    Column("beat_at", UtcDateTime, nullable=False),
    Column("info", JSON, nullable=True),
)
