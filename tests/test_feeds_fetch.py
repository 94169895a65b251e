"""The HTTP adapter against a real local server: conditional GET, caps, redirects, errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from bot.feeds.fetch import Fetcher
from bot.feeds.records import Fetched, FetchFailed, NotModified
from bot.settings import FetchSection
from tests.support.feedserver import (
    FeedServer,
    error,
    gzip_bomb,
    gzipped,
    oversize,
    rate_limited,
    redirect,
    slow,
)

NOW = datetime(2026, 3, 6, 12, 0, tzinfo=UTC)
DOC = (
    b'<?xml version="1.0"?><rss version="2.0"><channel><title>T</title>'
    + b"".join(b"<item><guid>g%d</guid><title>Item %d</title></item>" % (i, i) for i in range(50))
    + b"</channel></rss>"
)


@pytest.fixture
def server() -> Iterator[FeedServer]:
    with FeedServer() as running:
        running.put("feed.xml", DOC)
        yield running


def settings(**overrides: object) -> FetchSection:
    return FetchSection.model_validate(overrides)


@pytest.fixture
async def fetcher() -> AsyncIterator[Fetcher]:
    async with Fetcher(
        settings(max_body_bytes=100_000, max_decompressed_bytes=200_000, deadline="2s"),
        contact="ops@example.org",
    ) as client:
        yield client


async def test_conditional_get_then_304(server: FeedServer, fetcher: Fetcher) -> None:
    first = await fetcher.fetch(server.url("feed.xml"), now=NOW)
    assert isinstance(first, Fetched)
    assert first.body == DOC
    assert first.etag
    assert first.last_modified
    second = await fetcher.fetch(
        server.url("feed.xml"), now=NOW, etag=first.etag, last_modified=first.last_modified
    )
    assert isinstance(second, NotModified)
    seen = server.requests_for("feed.xml")
    assert seen[1].headers["If-None-Match"] == first.etag
    assert seen[1].headers["If-Modified-Since"] == first.last_modified
    assert [s.status for s in seen] == [200, 304]
    assert seen[0].headers["User-Agent"] == "counterparty/0.1.0 (+ops@example.org)"


async def test_last_modified_alone_gets_a_304(server: FeedServer, fetcher: Fetcher) -> None:
    first = await fetcher.fetch(server.url("feed.xml"), now=NOW)
    assert isinstance(first, Fetched)
    again = await fetcher.fetch(server.url("feed.xml"), now=NOW, last_modified=first.last_modified)
    assert isinstance(again, NotModified)


async def test_a_changed_document_is_fetched_again(server: FeedServer, fetcher: Fetcher) -> None:
    first = await fetcher.fetch(server.url("feed.xml"), now=NOW)
    assert isinstance(first, Fetched)
    server.put("feed.xml", DOC.replace(b"Item 1<", b"Item one<"))
    second = await fetcher.fetch(server.url("feed.xml"), now=NOW, etag=first.etag)
    assert isinstance(second, Fetched)
    assert b"Item one" in second.body


async def test_cache_hints_are_read(server: FeedServer, fetcher: Fetcher) -> None:
    from tests.support.feedserver import Behaviour

    server.behave("feed.xml", Behaviour(headers={"Cache-Control": "public, max-age=3600"}))
    result = await fetcher.fetch(server.url("feed.xml"), now=NOW)
    assert isinstance(result, Fetched)
    assert result.hints.max_age == timedelta(hours=1)


@pytest.mark.parametrize(
    ("behaviour", "kind", "status"),
    [
        (error(404), "gone", 404),
        (error(410), "gone", 410),
        (error(403), "http", 403),
        (error(500), "server", 500),
        (error(503), "server", 503),
        (rate_limited("120"), "rate_limited", 429),
        (rate_limited("60", status=503), "rate_limited", 503),
    ],
)
async def test_error_statuses_are_told_apart(
    server: FeedServer, fetcher: Fetcher, behaviour: object, kind: str, status: int
) -> None:
    server.behave("feed.xml", behaviour)  # type: ignore[arg-type]
    result = await fetcher.fetch(server.url("feed.xml"), now=NOW)
    assert isinstance(result, FetchFailed)
    assert (result.kind, result.status) == (kind, status)


async def test_retry_after_is_reported(server: FeedServer, fetcher: Fetcher) -> None:
    server.behave("feed.xml", rate_limited("120"))
    result = await fetcher.fetch(server.url("feed.xml"), now=NOW)
    assert isinstance(result, FetchFailed)
    assert result.hints.retry_after == timedelta(seconds=120)


@pytest.mark.parametrize("status", [301, 308])
async def test_permanent_redirect_reports_the_new_url(
    server: FeedServer, fetcher: Fetcher, status: int
) -> None:
    server.behave("old.xml", redirect("/feed.xml", status))
    result = await fetcher.fetch(server.url("old.xml"), now=NOW)
    assert isinstance(result, Fetched)
    assert result.permanent_url == server.url("feed.xml")
    assert result.body == DOC


@pytest.mark.parametrize("status", [302, 307])
async def test_temporary_redirect_keeps_the_url(
    server: FeedServer, fetcher: Fetcher, status: int
) -> None:
    server.behave("old.xml", redirect("/feed.xml", status))
    result = await fetcher.fetch(server.url("old.xml"), now=NOW)
    assert isinstance(result, Fetched)
    assert result.permanent_url is None
    assert result.final_url == server.url("feed.xml")


async def test_a_mixed_chain_is_not_permanent(server: FeedServer, fetcher: Fetcher) -> None:
    server.behave("a.xml", redirect("/b.xml", 301))
    server.behave("b.xml", redirect("/feed.xml", 302))
    result = await fetcher.fetch(server.url("a.xml"), now=NOW)
    assert isinstance(result, Fetched)
    assert result.permanent_url is None


async def test_redirect_loop_is_a_redirect_error(server: FeedServer, fetcher: Fetcher) -> None:
    server.behave("a.xml", redirect("/b.xml", 301))
    server.behave("b.xml", redirect("/a.xml", 302))
    result = await fetcher.fetch(server.url("a.xml"), now=NOW)
    assert isinstance(result, FetchFailed)
    assert result.kind == "redirect"
    assert len(server.requests) == 6  # the first request plus max_redirects (5) hops


async def test_redirect_to_another_scheme_is_a_redirect_error(
    server: FeedServer, fetcher: Fetcher
) -> None:
    server.behave("a.xml", redirect("ftp://example.org/feed.xml", 301))
    result = await fetcher.fetch(server.url("a.xml"), now=NOW)
    assert isinstance(result, FetchFailed)
    assert result.kind == "redirect"


@pytest.mark.parametrize("declare_length", [True, False])
async def test_oversize_bodies_are_refused(
    server: FeedServer, fetcher: Fetcher, declare_length: bool
) -> None:
    server.behave("big.xml", oversize(5_000_000, declare_length=declare_length))
    result = await fetcher.fetch(server.url("big.xml"), now=NOW)
    assert isinstance(result, FetchFailed)
    assert result.kind == "too_large"
    assert ("Content-Length" in result.message) is declare_length


async def test_gzip_bodies_are_decoded(server: FeedServer, fetcher: Fetcher) -> None:
    server.behave("feed.xml", gzipped())
    result = await fetcher.fetch(server.url("feed.xml"), now=NOW)
    assert isinstance(result, Fetched)
    assert result.body == DOC
    assert server.requests[0].headers["Accept-Encoding"] == "gzip, deflate"


async def test_a_gzip_bomb_stops_at_the_decompressed_cap(
    server: FeedServer, fetcher: Fetcher
) -> None:
    server.behave("bomb.xml", gzip_bomb(50_000_000))
    result = await fetcher.fetch(server.url("bomb.xml"), now=NOW)
    assert isinstance(result, FetchFailed)
    assert result.kind == "too_large"
    assert "decompressed" in result.message


async def test_a_slow_server_hits_the_deadline(server: FeedServer) -> None:
    server.behave("feed.xml", slow(30))
    async with Fetcher(
        settings(deadline="0.5s", read_timeout="10s"), contact="ops@example.org"
    ) as client:
        result = await client.fetch(server.url("feed.xml"), now=NOW)
    assert isinstance(result, FetchFailed)
    assert result.kind == "timeout"


async def test_a_slow_read_hits_the_read_timeout(server: FeedServer) -> None:
    server.behave("feed.xml", slow(30))
    async with Fetcher(
        settings(deadline="10s", read_timeout="0.3s"), contact="ops@example.org"
    ) as client:
        result = await client.fetch(server.url("feed.xml"), now=NOW)
    assert isinstance(result, FetchFailed)
    assert result.kind == "timeout"


async def test_connection_refused_is_a_network_error() -> None:
    with FeedServer() as gone:
        url = gone.url("feed.xml")
    async with Fetcher(settings(), contact="ops@example.org") as client:
        result = await client.fetch(url, now=NOW)
    assert isinstance(result, FetchFailed)
    assert result.kind == "network"


async def test_per_host_and_global_caps(server: FeedServer) -> None:
    # Every request is held 0.3 s, so requests overlap as much as the caps allow.
    for i in range(8):
        server.put(f"f{i}.xml", DOC)
        server.behave(f"f{i}.xml", slow(0.3))
    async with Fetcher(
        settings(per_host_concurrency=2, global_concurrency=8), contact="ops@example.org"
    ) as client:
        results = await asyncio.gather(
            *(client.fetch(server.url(f"f{i}.xml"), now=NOW) for i in range(8))
        )
    assert all(isinstance(r, Fetched) for r in results)
    assert server.peak_in_flight() == 2

    server2_peak = 0
    with FeedServer() as other:
        for i in range(6):
            other.put(f"f{i}.xml", DOC)
            other.behave(f"f{i}.xml", slow(0.3))
        async with Fetcher(
            settings(per_host_concurrency=8, global_concurrency=3), contact="ops@example.org"
        ) as client:
            await asyncio.gather(*(client.fetch(other.url(f"f{i}.xml"), now=NOW) for i in range(6)))
        server2_peak = other.peak_in_flight()
    assert server2_peak == 3


async def test_a_validator_that_cannot_be_a_header_is_dropped(
    server: FeedServer, fetcher: Fetcher
) -> None:
    result = await fetcher.fetch(server.url("feed.xml"), now=NOW, etag='"caf\u00e9"')
    assert isinstance(result, Fetched)
    assert "If-None-Match" not in server.requests[0].headers


async def test_304s_reuse_one_connection() -> None:
    """A warm pass is mostly 304s: each must leave its connection open for the next request.
    A minimal HTTP/1.1 server counts the TCP connections it accepts."""
    accepted = 0
    answered = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted, answered
        accepted += 1
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                answered += 1
                writer.write(b'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\n\r\n')
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    listener = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        async with Fetcher(settings(), contact="ops@example.org") as client:
            results = [
                await client.fetch(f"http://127.0.0.1:{port}/feed.xml", now=NOW, etag='"v1"')
                for _ in range(5)
            ]
    finally:
        listener.close()
        await listener.wait_closed()
    assert all(isinstance(r, NotModified) for r in results)
    assert answered == 5
    assert accepted == 1
