"""Prometheus metrics: the recording functions count, and the endpoint serves them when enabled."""

from __future__ import annotations

from pathlib import Path

import httpx

from bot.ops import metrics
from bot.settings import Settings, load_settings


def value(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def settings_with_metrics(tmp_path: Path, *, enabled: bool) -> Settings:
    config = tmp_path / "feeds.toml"
    config.write_text(f"[metrics]\nenabled = {'true' if enabled else 'false'}\n", encoding="utf-8")
    settings = load_settings(config, environ={})
    # Port 0 lets the OS pick a free port; the file only accepts 1-65535, so set it here.
    section = settings.file.metrics.model_copy(update={"port": 0})
    return Settings(
        file=settings.file.model_copy(update={"metrics": section}),
        env=settings.env,
        config_path=settings.config_path,
        database_url=settings.database_url,
    )


def test_recording_functions_count() -> None:
    ok = value("counterparty_feeds_polled_total", result="ok")
    failed = value("counterparty_feeds_polled_total", result="failed")
    timeouts = value("counterparty_fetch_failures_total", kind="timeout")
    metrics.feed_polled(True)
    metrics.feed_polled(True)
    metrics.feed_polled(False, error_kind="timeout")
    assert value("counterparty_feeds_polled_total", result="ok") == ok + 2
    assert value("counterparty_feeds_polled_total", result="failed") == failed + 1
    assert value("counterparty_fetch_failures_total", kind="timeout") == timeouts + 1

    theme = value("counterparty_items_matched_total", theme="putin-deal")
    metrics.item_matched("putin-deal", 3)
    assert value("counterparty_items_matched_total", theme="putin-deal") == theme + 3

    sent = value("counterparty_messages_sent_total", platform="telegram")
    digests = value("counterparty_digests_sent_total", platform="telegram")
    errors = value("counterparty_platform_errors_total", platform="discord", kind="retry")
    metrics.message_sent("telegram")
    metrics.digest_sent("telegram")
    metrics.platform_error("discord", "retry")
    assert value("counterparty_messages_sent_total", platform="telegram") == sent + 1
    assert value("counterparty_digests_sent_total", platform="telegram") == digests + 1
    assert (
        value("counterparty_platform_errors_total", platform="discord", kind="retry") == errors + 1
    )

    metrics.set_outbox_depth(17)
    assert value("counterparty_outbox_depth") == 17


def test_disabled_metrics_serve_nothing(tmp_path: Path) -> None:
    assert metrics.serve(settings_with_metrics(tmp_path, enabled=False)) is None


def test_endpoint_serves_the_registry(tmp_path: Path) -> None:
    server = metrics.serve(settings_with_metrics(tmp_path, enabled=True))
    assert server is not None
    try:
        metrics.set_outbox_depth(5)
        metrics.feed_polled(False, error_kind="gone")
        response = httpx.get(f"http://127.0.0.1:{server.port}/metrics", timeout=10)
    finally:
        server.close()
    assert response.status_code == 200
    body = response.text
    assert "counterparty_outbox_depth 5.0" in body
    assert 'counterparty_fetch_failures_total{kind="gone"}' in body
    assert "# HELP counterparty_feeds_polled_total" in body
