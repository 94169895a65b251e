"""Hostile and broken feeds, all in one poll beside good ones: each bad feed gets a clear error of
its own (stored on the feed), each odd-but-valid one is stored sensibly, and the good feeds are
stored exactly as if the others were not there.

The fetch-level cases (caps, deadline, redirects) are unit-tested in ``test_feeds_fetch.py``;
this is the whole pipeline (fetch -> parse in the worker pool -> store) with every hostile feed
at once. Every feed body here is written for the test.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from bot.feeds.pipeline import Poller
from bot.settings import Environment, FileConfig, Settings
from bot.storage.schema import entries, feeds
from tests.support.feedserver import FeedServer, gzip_bomb, oversize, redirect
from tests.support.replicas import sample_rss

NOW = datetime.now(UTC).replace(microsecond=0)
DEADLINE = 6.0


def rss(items: list[tuple[str, str, datetime]], *, declaration: str = "") -> bytes:
    body = "".join(
        f"<item><title>{title}</title><link>https://sample.example/h/{guid}/{n}</link>"
        f"<guid>{guid}</guid><pubDate>{format_datetime(when)}</pubDate>"
        f"<description>Test sample text {n}.</description></item>"
        for n, (title, guid, when) in enumerate(items)
    )
    return (
        f'{declaration}<rss version="2.0"><channel><title>Test sample</title>'
        f"<link>https://sample.example/</link><description>d</description>{body}</channel></rss>"
    ).encode()


class _Drip(BaseHTTPRequestHandler):
    """Answers 200 and then one byte every 0.2 s, forever: each read is quick, so only the
    fetcher's total deadline can stop it."""

    stopping: threading.Event

    def log_message(self, format: str, *args: object) -> None:
        return None

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/rss+xml")
        self.end_headers()
        try:
            self.wfile.write(b'<?xml version="1.0"?><rss version="2.0"><channel>')
            while not self.stopping.wait(0.2):  # the server's pace, not test synchronisation
                self.wfile.write(b" ")
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            return


@pytest.fixture
def drip_url() -> Iterator[str]:
    stopping = threading.Event()
    handler = type("_BoundDrip", (_Drip,), {"stopping": stopping})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/drip.xml"
    finally:
        stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


HTML_PAGE = (
    b"<!doctype html><html><head><title>Test sample page</title></head>"
    b"<body><h1>Not a feed</h1><p>Test sample text.</p></body></html>"
)


@pytest.fixture
def server() -> Iterator[FeedServer]:
    with FeedServer() as srv:
        srv.put("good-a.xml", sample_rss(0, NOW))
        srv.put("good-b.xml", sample_rss(1, NOW))
        srv.put("html.xml", HTML_PAGE, content_type="text/html; charset=utf-8")
        srv.put("empty.xml", b"")
        # Declared UTF-8, but the bytes are Windows-1252 ("Café" with a bare 0xE9).
        srv.put(
            "wrong-charset.xml",
            rss(
                [("Test sample Caf\xe9 strike", "wc-1", NOW)],
                declaration='<?xml version="1.0" encoding="utf-8"?>',
            )
            .decode("utf-8")
            .encode("cp1252"),
            content_type="application/rss+xml; charset=utf-8",
        )
        # No charset anywhere: UTF-8 must be assumed.
        srv.put(
            "no-charset.xml",
            rss([("Test sample Київ і Тегеран", "nc-1", NOW)]),
            content_type="application/rss+xml",
        )
        srv.put("huge.xml", b"")
        srv.behave("huge.xml", oversize(50_000_000, declare_length=False))
        srv.put("huge-declared.xml", b"")
        srv.behave("huge-declared.xml", oversize(50_000_000, declare_length=True))
        srv.put("bomb.xml", b"")
        srv.behave("bomb.xml", gzip_bomb(60_000_000))
        srv.put("loop-a.xml", b"")
        srv.behave("loop-a.xml", redirect("/loop-b.xml", 302))
        srv.put("loop-b.xml", b"")
        srv.behave("loop-b.xml", redirect("/loop-a.xml", 302))
        srv.put(
            "same-guid.xml",
            rss([(f"Test sample item {n}", "the-only-guid", NOW) for n in range(50)]),
        )
        srv.put(
            "ten-thousand.xml",
            rss([(f"Test sample item {n}", f"tk-{n}", NOW) for n in range(10_000)]),
        )
        srv.put(
            "future.xml",
            rss(
                [
                    ("Test sample from the future", "fu-1", datetime(2099, 1, 1, tzinfo=UTC)),
                    ("Test sample next week", "fu-2", NOW + timedelta(days=7)),
                ]
            ),
        )
        yield srv


def feed_rows(engine: Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        counts: dict[int, int] = dict(
            conn.execute(select(entries.c.feed_id, func.count()).group_by(entries.c.feed_id)).all()
        )
        rows = conn.execute(select(feeds)).all()
    return {row.url.rsplit("/", 1)[-1]: (row, counts.get(row.id, 0)) for row in rows}


async def test_every_hostile_feed_fails_alone_and_good_feeds_are_stored(
    engine: Engine, server: FeedServer, drip_url: str, database_url: str
) -> None:
    names = [
        "good-a.xml", "good-b.xml", "html.xml", "empty.xml", "wrong-charset.xml",
        "no-charset.xml", "huge.xml", "huge-declared.xml", "bomb.xml", "loop-a.xml",
        "same-guid.xml", "ten-thousand.xml", "future.xml",
    ]  # fmt: skip
    urls = [server.url(name) for name in names] + [drip_url]
    file = FileConfig.model_validate(
        {
            "fetch": {
                "parse_workers": 1,
                "jitter": "1s",
                "deadline": f"{DEADLINE:.0f}s",
                "read_timeout": "5s",
                "connect_timeout": "2s",
                "per_host_concurrency": 16,
                "max_body_bytes": 5_000_000,
                "max_decompressed_bytes": 20_000_000,
            },
            "feeds": [{"url": url} for url in urls],
        }
    )
    settings = Settings(file=file, env=Environment(), config_path=None, database_url=database_url)
    started = time.monotonic()
    async with Poller(settings, engine) as poller:
        await poller.sync_config(NOW)
        summary = await poller.poll_all(NOW)
    elapsed = time.monotonic() - started
    got = feed_rows(engine)

    def error(name: str) -> tuple[str | None, str | None]:
        row, count = got[name]
        assert count == 0, name
        assert row.consecutive_failures == 1, name
        return row.last_error_kind, row.last_error

    # Good feeds: stored exactly as alone (one matching item and one quiet item each).
    for name in ("good-a.xml", "good-b.xml"):
        row, count = got[name]
        assert (count, row.last_error_kind, row.consecutive_failures) == (2, None, 0), name
    # Not feeds at all.
    for name in ("html.xml", "empty.xml"):
        kind, message = error(name)
        assert kind == "parse", (name, message)
        assert message
    # Too big: streamed, declared, or inflated; all stopped at the caps.
    for name in ("huge.xml", "huge-declared.xml", "bomb.xml"):
        kind, message = error(name)
        assert kind == "too_large", (name, message)
    kind, message = error("loop-a.xml")
    assert kind == "redirect", message
    kind, message = error("drip.xml")
    assert kind == "timeout", message
    # The slow drip was cut at the total deadline; nothing waited on it longer.
    assert elapsed < DEADLINE + 25, elapsed
    # Odd but valid.
    assert got["same-guid.xml"][1] == 1
    assert got["ten-thousand.xml"][1] == 10_000
    assert got["future.xml"][1] == 2
    with engine.connect() as conn:
        titles = set(conn.execute(select(entries.c.title)).scalars())
    assert "Test sample Київ і Тегеран" in titles
    assert "Test sample Café strike" in titles
    assert summary.failed == 7
    assert summary.feeds == len(urls)
