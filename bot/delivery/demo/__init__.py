"""``counterparty demo``: the whole pipeline once, offline, on a sample feed kept in the package.

The sample feed (``sample-feed.xml``, invented items clearly marked as sample data) is served from
a local HTTP server on 127.0.0.1 with every ``pubDate`` moved into the last few hours (so the
poller's first-poll baseline announces them). A temporary SQLite database and configuration are
made, and the real services run in order: :class:`~bot.feeds.pipeline.Poller` (poll),
:func:`bot.matching.store.match_pending` (match), :func:`bot.digest.service.run_due_digests`
(digest, for the built-in console subscription) and :class:`~bot.delivery.outbox.Outbox`
(delivery through the console sender), which prints the digest.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.resources import files
from pathlib import Path
from typing import TextIO

from bot.delivery.console import ConsoleRenderer, ConsoleSender
from bot.delivery.outbox import DeliveryPolicy, Outbox
from bot.digest.service import run_due_digests
from bot.matching.catalog import load_catalog
from bot.settings import load_settings
from bot.storage import subscriptions as subs_repo
from bot.storage.db import open_database

SAMPLE_FEED = "sample-feed.xml"
_PUBDATE = re.compile(rb"<pubDate>[^<]*</pubDate>")


def sample_feed(now: datetime) -> bytes:
    """The sample feed with its items dated 1, 2, 3... hours before ``now``."""
    body = files(__package__).joinpath(SAMPLE_FEED).read_bytes()
    counter = iter(range(1, 1000))

    def redate(_match: re.Match[bytes]) -> bytes:
        moment = now - timedelta(hours=next(counter))
        return f"<pubDate>{format_datetime(moment, usegmt=True)}</pubDate>".encode()

    return _PUBDATE.sub(redate, body)


@contextmanager
def serve_sample(now: datetime) -> Iterator[str]:
    """Serve the sample feed on 127.0.0.1 (a free port) and yield its URL."""
    body = sample_feed(now)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != f"/{SAMPLE_FEED}":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/rss+xml; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: the demo's output is the digest."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="demo-feed", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/{SAMPLE_FEED}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


async def run_demo(out: TextIO, *, workdir: Path | None = None) -> int:
    """Run poll -> match -> digest -> deliver once and print the digest to ``out``.

    Returns the number of digest messages printed (0 would mean the pipeline is broken)."""
    from bot.feeds.pipeline import Poller
    from bot.matching.matcher import Matcher
    from bot.matching.store import match_pending

    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="counterparty-demo-") as tmp:
        folder = workdir or Path(tmp)
        with serve_sample(now) as url:
            config = folder / "feeds.toml"
            config.write_text(
                f'[fetch]\nparse_workers = 1\n\n[[feeds]]\nurl = "{url}"\nname = "Demo Wire"\n',
                encoding="utf-8",
            )
            database_url = f"sqlite:///{folder / 'demo.db'}"
            settings = load_settings(config, database_url=database_url, environ={})
            engine = await asyncio.to_thread(open_database, settings.database_url)
            try:
                catalog = load_catalog()
                with engine.begin() as conn:
                    subs_repo.ensure_console(conn, active=True, now=now)
                async with Poller(settings, engine) as poller:
                    await poller.sync_config(now)
                    await poller.poll_all(now)
                matched_at = datetime.now(UTC)
                await asyncio.to_thread(match_pending, engine, Matcher(catalog), now=matched_at)
                await asyncio.to_thread(
                    run_due_digests,
                    engine,
                    catalog=catalog,
                    renderers={"console": ConsoleRenderer()},
                    now=datetime.now(UTC),
                )
                outbox = Outbox(
                    engine, senders={"console": ConsoleSender(out)}, policy=DeliveryPolicy()
                )
                summary = await outbox.drain(now=datetime.now(UTC))
            finally:
                engine.dispose()
    return summary.sent
