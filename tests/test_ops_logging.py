"""Tokens from the environment never reach the log: messages, arguments, httpx lines, tracebacks."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from bot.ops.logging import setup_logging
from bot.settings import Settings, load_settings

TELEGRAM_TOKEN = "7712345678:AAH-test_telegram-token-value-xyz"
DISCORD_TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4.GhIjKl.discord-token-value-abcdefghijkl"
WEBHOOK = "https://discord.com/api/webhooks/123456789012345678/webhook-secret-token-ABCDEFG"


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Silence the stdlib server's own stderr lines."""


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: logging.getLogger(name).level for name in ("httpx", "httpcore", "apscheduler")}
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)
    for name, old in levels.items():
        logging.getLogger(name).setLevel(old)


def make_settings(tmp_path: Path, log_format: str = "text") -> Settings:
    config = tmp_path / "feeds.toml"
    config.write_text(
        f'[bot]\nlog_level = "DEBUG"\nlog_format = "{log_format}"\n', encoding="utf-8"
    )
    return load_settings(
        config, environ={"TELEGRAM_TOKEN": TELEGRAM_TOKEN, "DISCORD_TOKEN": DISCORD_TOKEN}
    )


def _fail_with_token(url: str) -> None:
    try:
        raise ConnectionError(f"cannot reach {url}")
    except ConnectionError as exc:
        raise RuntimeError(f"sending with token {TELEGRAM_TOKEN} failed") from exc


def _exercise(base: str) -> None:
    log = logging.getLogger("bot.test")
    url = f"{base}/bot{TELEGRAM_TOKEN}/getMe"
    with httpx.Client() as client:
        assert client.get(url).json() == {"ok": True}
    log.info("telegram url %s, discord token %r", url, DISCORD_TOKEN)
    log.warning("encoded %s", quote(TELEGRAM_TOKEN, safe=""))
    log.info("posting to webhook %s", WEBHOOK)
    try:
        _fail_with_token(url)
    except RuntimeError:
        log.exception("delivery failed for %s", DISCORD_TOKEN)
    log.debug("stack check", stack_info=True)


def _assert_no_secret(output: str) -> None:
    for secret in (TELEGRAM_TOKEN, DISCORD_TOKEN, quote(TELEGRAM_TOKEN, safe=""), "webhook-secret"):
        assert secret not in output
    # Pieces of the tokens do not leak either (e.g. the part after the colon).
    assert TELEGRAM_TOKEN.split(":")[1] not in output


@pytest.mark.usefixtures("restore_logging")
def test_tokens_are_redacted_in_text_logs_and_httpx_is_quiet(tmp_path: Path, server: str) -> None:
    stream = io.StringIO()
    setup_logging(make_settings(tmp_path), stream=stream)
    _exercise(server)
    output = stream.getvalue()
    _assert_no_secret(output)
    assert "HTTP Request" not in output, "httpx request lines should be quiet"
    assert "/bot***/getMe" in output
    assert "discord token '***'" in output
    assert "encoded ***" in output
    assert "/api/webhooks/123456789012345678/***" in output
    assert "Traceback (most recent call last)" in output
    assert "RuntimeError: sending with token *** failed" in output
    assert "ConnectionError: cannot reach" in output
    assert "Stack (most recent call last)" in output


@pytest.mark.usefixtures("restore_logging")
def test_httpx_request_lines_are_redacted_even_when_enabled(tmp_path: Path, server: str) -> None:
    stream = io.StringIO()
    setup_logging(make_settings(tmp_path), stream=stream)
    logging.getLogger("httpx").setLevel(logging.DEBUG)  # someone turns it back on
    logging.getLogger("httpcore").setLevel(logging.DEBUG)
    with httpx.Client() as client:
        client.get(f"{server}/bot{TELEGRAM_TOKEN}/sendMessage")
    output = stream.getvalue()
    assert "HTTP Request: GET" in output
    assert "/bot***/sendMessage" in output
    _assert_no_secret(output)


@pytest.mark.usefixtures("restore_logging")
def test_json_lines_are_valid_and_redacted(tmp_path: Path, server: str) -> None:
    stream = io.StringIO()
    setup_logging(make_settings(tmp_path, "json"), stream=stream)
    _exercise(server)
    output = stream.getvalue()
    _assert_no_secret(output)
    records = [json.loads(line) for line in output.splitlines()]
    assert {r["level"] for r in records} >= {"INFO", "WARNING", "ERROR"}
    failed = next(r for r in records if r["message"].startswith("delivery failed"))
    assert failed["message"] == "delivery failed for ***"
    assert "RuntimeError: sending with token *** failed" in failed["exception"]
    assert all(r["time"].endswith("+00:00") for r in records)


@pytest.mark.usefixtures("restore_logging")
def test_calling_setup_twice_keeps_one_handler(tmp_path: Path) -> None:
    first, second = io.StringIO(), io.StringIO()
    settings = make_settings(tmp_path)
    setup_logging(settings, stream=first)
    setup_logging(settings, stream=second)
    logging.getLogger("bot.test").warning("once")
    assert first.getvalue() == ""
    assert second.getvalue().count("once") == 1


@pytest.mark.usefixtures("restore_logging")
def test_level_comes_from_the_environment(tmp_path: Path) -> None:
    stream = io.StringIO()
    config = tmp_path / "feeds.toml"
    config.write_text('[bot]\nlog_level = "DEBUG"\n', encoding="utf-8")
    settings = load_settings(config, environ={"COUNTERPARTY_LOG_LEVEL": "warning"})
    setup_logging(settings, stream=stream)
    log = logging.getLogger("bot.test")
    log.info("not shown")
    log.warning("shown")
    assert "not shown" not in stream.getvalue()
    assert "WARNING bot.test: shown" in stream.getvalue()


@pytest.mark.usefixtures("restore_logging")
def test_database_password_is_redacted(tmp_path: Path) -> None:
    stream = io.StringIO()
    config = tmp_path / "feeds.toml"
    config.write_text("", encoding="utf-8")
    settings = load_settings(
        config,
        environ={
            "COUNTERPARTY_DATABASE_URL": "postgresql://bot:pg-Secret-Pass@db:5432/counterparty"
        },
    )
    setup_logging(settings, stream=stream)
    logging.getLogger("bot.test").error("cannot connect to %s", settings.database_url)
    output = stream.getvalue()
    assert "pg-Secret-Pass" not in output
    assert "postgresql://bot:***@db:5432/counterparty" in output


def _settings_at(tmp_path: Path, level: str) -> Settings:
    config = tmp_path / "feeds.toml"
    config.write_text(f'[bot]\nlog_level = "{level}"\n', encoding="utf-8")
    return load_settings(config, environ={})


@pytest.mark.usefixtures("restore_logging")
def test_scheduler_job_runs_are_quiet_unless_debug(tmp_path: Path) -> None:
    stream = io.StringIO()
    setup_logging(_settings_at(tmp_path, "INFO"), stream=stream)
    scheduler_log = logging.getLogger("apscheduler.executors.default")
    scheduler_log.info('Running job "poll" (scheduled at ...)')
    scheduler_log.warning("Run time of job was missed")
    assert "Running job" not in stream.getvalue()
    assert "was missed" in stream.getvalue()

    debug_stream = io.StringIO()
    setup_logging(_settings_at(tmp_path, "DEBUG"), stream=debug_stream)
    scheduler_log.info('Running job "poll" (scheduled at ...)')
    assert "Running job" in debug_stream.getvalue()


@pytest.mark.usefixtures("restore_logging")
def test_alembic_start_up_noise_is_dropped_but_upgrades_show(
    tmp_path: Path, database_url: str
) -> None:
    from bot.storage.db import open_database

    stream = io.StringIO()
    setup_logging(_settings_at(tmp_path, "INFO"), stream=stream)
    engine = open_database(database_url)
    engine.dispose()
    output = stream.getvalue()
    assert "Running upgrade" in output
    assert "Context impl" not in output
    assert "Will assume" not in output
