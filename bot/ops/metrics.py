"""Prometheus metrics: a private registry, cheap recording functions, an optional HTTP endpoint.

Other modules call the small functions below (``metrics.feed_polled(ok=True)``...). They only
bump in-memory counters (a lock and an addition), so they cost next to nothing whether or not
the endpoint is enabled; ``serve(settings)`` exposes the registry on ``[metrics] host:port`` when
``[metrics].enabled`` is true. Label values come from small fixed sets (platforms, theme ids,
error kinds), never from URLs or user text, to keep the number of series bounded.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from bot.settings import Settings

REGISTRY = CollectorRegistry(auto_describe=True)

FEEDS_POLLED = Counter(
    "counterparty_feeds_polled",
    "Feed fetches finished, by result (ok or failed).",
    ["result"],
    registry=REGISTRY,
)
FETCH_FAILURES = Counter(
    "counterparty_fetch_failures",
    "Failed feed fetches by kind (gone, parse, http, server, timeout, network, too_large...).",
    ["kind"],
    registry=REGISTRY,
)
ITEMS_MATCHED = Counter(
    "counterparty_items_matched",
    "Entries matched to a theme, by theme id.",
    ["theme"],
    registry=REGISTRY,
)
DIGESTS_SENT = Counter(
    "counterparty_digests_sent",
    "Digests composed and queued for delivery, by platform.",
    ["platform"],
    registry=REGISTRY,
)
MESSAGES_SENT = Counter(
    "counterparty_messages_sent",
    "Messages delivered to a platform, by platform.",
    ["platform"],
    registry=REGISTRY,
)
PLATFORM_ERRORS = Counter(
    "counterparty_platform_errors",
    "Errors returned by a chat platform, by platform and kind (retry, unavailable, rejected).",
    ["platform", "kind"],
    registry=REGISTRY,
)
OUTBOX_DEPTH = Gauge(
    "counterparty_outbox_depth",
    "Outbox messages waiting to be delivered (status pending).",
    registry=REGISTRY,
)


# The two most frequent series, bound once: ``labels()`` costs a lock and a lookup per call.
_POLLED_OK = FEEDS_POLLED.labels("ok")
_POLLED_FAILED = FEEDS_POLLED.labels("failed")


def feed_polled(ok: bool, *, error_kind: str | None = None) -> None:
    """One feed fetch finished; on failure ``error_kind`` is ``feeds.last_error_kind``."""
    if ok:
        _POLLED_OK.inc()
        return
    _POLLED_FAILED.inc()
    if not ok:
        FETCH_FAILURES.labels(error_kind or "unknown").inc()


def item_matched(theme_id: str, count: int = 1) -> None:
    """``count`` entries were matched to theme ``theme_id``."""
    ITEMS_MATCHED.labels(theme_id).inc(count)


def digest_sent(platform: str) -> None:
    """A digest for a ``platform`` subscription was composed and queued."""
    DIGESTS_SENT.labels(platform).inc()


def message_sent(platform: str) -> None:
    """One outbox message was delivered to ``platform``."""
    MESSAGES_SENT.labels(platform).inc()


def platform_error(platform: str, kind: str) -> None:
    """``platform`` answered with an error of ``kind``: retry, unavailable or rejected."""
    PLATFORM_ERRORS.labels(platform, kind).inc()


def set_outbox_depth(depth: int) -> None:
    """The outbox holds ``depth`` pending messages (measured by the drain job)."""
    OUTBOX_DEPTH.set(depth)


@dataclass(frozen=True, slots=True)
class MetricsServer:
    """A running ``/metrics`` endpoint; ``close()`` stops it."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def serve(settings: Settings) -> MetricsServer | None:
    """Start the endpoint on ``[metrics] host:port`` when enabled; ``None`` when disabled.

    Port 0 picks a free port (read it back from ``MetricsServer.port``). Raises ``OSError`` when
    the address is taken, so a misconfiguration stops start-up with a clear message.
    """
    section = settings.file.metrics
    if not section.enabled:
        return None
    server, thread = start_http_server(section.port, addr=section.host, registry=REGISTRY)
    return MetricsServer(server, thread)
