"""``counterparty run`` and ``counterparty demo`` as real subprocesses, with no platform token.

The feeds come from the local feed server (tests/support/feedserver.py) on 127.0.0.1, serving the
package's invented sample feed. Output is read line by line with timeouts (no sleeps).
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import pytest
from sqlalchemy import create_engine, select

from bot.delivery.demo import sample_feed
from bot.storage.schema import outbox
from tests.support.feedserver import FeedServer, error

pytestmark = pytest.mark.slow

FIRST_TITLE = "[Sample] Kremlin rejects the latest US ceasefire draft"
TIMEOUT = 90.0


class Lines:
    """Lines of a child's stream, collected by a thread, taken with a timeout."""

    def __init__(self, stream: IO[str]) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, text: str, timeout: float = TIMEOUT) -> list[str]:
        """Lines up to and including the first containing ``text``; fails on EOF or timeout."""
        deadline = datetime.now(UTC).timestamp() + timeout
        while True:
            remaining = deadline - datetime.now(UTC).timestamp()
            if remaining <= 0:
                pytest.fail(f"no line with {text!r} within {timeout} s; got {self.seen[-20:]}")
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                pytest.fail(f"stream closed before {text!r}; got {self.seen[-20:]}")
            self.seen.append(line)
            if text in line:
                return self.seen

    def rest(self, timeout: float = 10.0) -> list[str]:
        """Everything until EOF (the process has exited)."""
        self._thread.join(timeout)
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                return self.seen
            if line is not None:
                self.seen.append(line)


def child_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DISCORD_TOKEN", "TELEGRAM_TOKEN") and not k.startswith("COUNTERPARTY_")
    }
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def server() -> Iterator[FeedServer]:
    with FeedServer() as feed_server:
        feed_server.put("wire.xml", sample_feed(datetime.now(UTC)))
        yield feed_server


def write_config(tmp_path: Path, url: str) -> Path:
    config = tmp_path / "feeds.toml"
    config.write_text(
        f'[fetch]\nparse_workers = 1\n\n[[feeds]]\nurl = "{url}"\nname = "Test Wire"\n',
        encoding="utf-8",
    )
    return config


def counterparty(*args: str) -> list[str]:
    return [sys.executable, "-m", "bot", *args]


@contextmanager
def running(
    config: Path, db_url: str, cwd: Path
) -> Iterator[tuple[subprocess.Popen[str], Lines, Lines]]:
    """``counterparty run`` as a child; killed (if still alive) and its pipes closed on exit."""
    with subprocess.Popen(
        counterparty("--config", str(config), "--db", db_url, "run"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
        cwd=cwd,
    ) as process:
        assert process.stdout is not None
        assert process.stderr is not None
        stdout, stderr = Lines(process.stdout), Lines(process.stderr)
        try:
            yield process, stdout, stderr
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=TIMEOUT)
            stdout.rest()
            stderr.rest()


def stop(
    process: subprocess.Popen[str], stderr: Lines, sig: signal.Signals = signal.SIGTERM
) -> int:
    process.send_signal(sig)
    try:
        code = process.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"run did not stop on SIGTERM; stderr: {stderr.rest()[-20:]}")
    return code


def sent_rows(db_url: str) -> list[tuple[str, str | None]]:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return [
                (r.status, r.platform_message_id)
                for r in conn.execute(select(outbox.c.status, outbox.c.platform_message_id))
            ]
    finally:
        engine.dispose()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_run_without_token_prints_the_digest_and_stops_cleanly(
    server: FeedServer, tmp_path: Path, sig: signal.Signals
) -> None:
    config = write_config(tmp_path, server.url("wire.xml"))
    db_url = f"sqlite:///{tmp_path / 'bot.db'}"
    with running(config, db_url, tmp_path) as (process, stdout, stderr):
        printed = stdout.wait_for(FIRST_TITLE)
        assert any("counterparty digest" in line for line in printed)
        # The never-fetched feed was fetched at start-up, once.
        assert len(server.requests_for("wire.xml")) == 1
        code = stop(process, stderr, sig)
    errors = stderr.rest()
    assert code == 0, errors[-20:]
    assert not any("Traceback" in line for line in errors), errors
    assert any("stopping" in line for line in errors)
    printed = stdout.rest()
    assert "Local bakery" not in "".join(printed)  # unmatched items stay out
    ((status, message_id),) = sent_rows(db_url)  # one digest, one message
    assert status == "sent"
    assert message_id is not None
    assert message_id.startswith("console-")


def test_run_delivers_matches_stored_by_another_process(server: FeedServer, tmp_path: Path) -> None:
    config = write_config(tmp_path, server.url("wire.xml"))
    db_url = f"sqlite:///{tmp_path / 'bot.db'}"
    poll = subprocess.run(
        counterparty("--config", str(config), "--db", db_url, "poll", "--once"),
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=tmp_path,
        timeout=TIMEOUT,
        check=False,
    )
    assert poll.returncode == 0, poll.stderr
    # From now on the feed is broken: whatever run prints must come from the database.
    server.behave("wire.xml", error(500))
    with running(config, db_url, tmp_path) as (process, stdout, stderr):
        stdout.wait_for(FIRST_TITLE)
        code = stop(process, stderr)
    assert code == 0, stderr.rest()[-20:]


def test_demo_prints_a_digest_offline(tmp_path: Path) -> None:
    result = subprocess.run(
        counterparty("demo"),
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "sample data" in result.stdout
    for theme in ("putin-deal", "words-not-deeds", "energy-windfall", "russia-overstretched"):
        assert f"({theme})" in result.stdout
    assert FIRST_TITLE in result.stdout
    assert "Local bakery" not in result.stdout
    assert not (tmp_path / "data").exists()  # the demo leaves nothing behind
