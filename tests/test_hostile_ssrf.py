"""SSRF: a feed added by chat command may reach public addresses only, checked after DNS
resolution on the first hop and on every redirect hop; config-file feeds may go anywhere.

DNS is faked at the boundary: the guard gets a resolver that answers from a table, and the HTTP
transport sends requests for those invented host names to the local feed server (keeping the
Host header), so the real fetcher, httpx and the real guard run unchanged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx
import pytest

from bot.feeds.fetch import Fetcher
from bot.feeds.records import Fetched, FetchFailed
from bot.settings import FetchSection
from tests.support.feedserver import FeedServer, redirect
from tests.support.replicas import sample_rss

NOW = datetime(2026, 3, 6, 12, tzinfo=UTC)
PUBLIC = "93.184.216.34"


class FakeDns:
    """The resolver the guard uses; ``answers`` may change between calls (DNS rebinding)."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        if host not in self.answers:
            raise OSError(f"no such host {host}")
        return list(self.answers[host])


class ToLocalServer(httpx.AsyncBaseTransport):
    """Connects requests for the invented ``*.test`` hosts to the local feed server."""

    def __init__(self, server_url: str) -> None:
        parts = urlsplit(server_url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port
        self._inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host.endswith(".test"):
            request.url = request.url.copy_with(host=self._host, port=self._port)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


@pytest.fixture
def server() -> Iterator[FeedServer]:
    with FeedServer() as srv:
        srv.put("feed.xml", sample_rss(0, NOW))
        srv.put("private.xml", sample_rss(1, NOW))
        for name, target in {
            "to-loopback.xml": "http://127.0.0.1:{port}/private.xml",
            "to-metadata.xml": "http://metadata.test/private.xml",
            "to-private.xml": "http://intranet.test/private.xml",
            "to-v6-mapped.xml": "http://[::ffff:127.0.0.1]:{port}/private.xml",
            "to-public.xml": "http://other.test/feed.xml",
        }.items():
            srv.put(name, b"")
            port = urlsplit(srv.base_url).port
            srv.behave(name, redirect(target.format(port=port), 302))
        yield srv


@pytest.fixture
def dns() -> FakeDns:
    return FakeDns(
        {
            "feeds.test": [PUBLIC],
            "other.test": ["2606:2800:220:1:248:1893:25c8:1946"],
            "metadata.test": ["169.254.169.254"],
            "intranet.test": ["10.1.2.3"],
            "split.test": [PUBLIC, "192.168.1.10"],
        }
    )


@pytest.fixture
async def fetcher(server: FeedServer, dns: FakeDns) -> AsyncIterator[Fetcher]:
    settings = FetchSection(max_redirects=5)
    async with Fetcher(
        settings, contact="test", transport=ToLocalServer(server.base_url), resolve=dns
    ) as client:
        yield client


def feed_url(path: str, host: str = "feeds.test") -> str:
    return f"http://{host}/{path}"


async def test_public_host_is_fetched(fetcher: Fetcher, dns: FakeDns) -> None:
    result = await fetcher.fetch(feed_url("feed.xml"), now=NOW, public_only=True)
    assert isinstance(result, Fetched), result
    assert dns.asked == ["feeds.test"]


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("to-loopback.xml", "loopback"),
        ("to-metadata.xml", "link-local"),
        ("to-private.xml", "private"),
        ("to-v6-mapped.xml", "loopback"),
    ],
)
async def test_a_redirect_hop_to_a_non_public_address_is_refused(
    fetcher: Fetcher, server: FeedServer, path: str, reason: str
) -> None:
    result = await fetcher.fetch(feed_url(path), now=NOW, public_only=True)
    assert isinstance(result, FetchFailed), result
    assert result.kind == "blocked"
    assert reason in result.message
    # The refused hop was never requested.
    assert server.requests_for("private.xml") == []
    assert len(server.requests_for(path)) == 1


async def test_a_redirect_to_another_public_host_is_followed(
    fetcher: Fetcher, dns: FakeDns
) -> None:
    result = await fetcher.fetch(feed_url("to-public.xml"), now=NOW, public_only=True)
    assert isinstance(result, Fetched), result
    assert dns.asked == ["feeds.test", "other.test"]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/feed.xml",
        "http://[::1]:9/feed.xml",
        "http://169.254.169.254/latest/meta-data/",
        "http://split.test/feed.xml",  # one public and one private address: refused
        "http://nowhere.test/feed.xml",  # does not resolve
        "http://user:secret@feeds.test/feed.xml",
    ],
)
async def test_first_hop_is_checked_after_resolution(
    fetcher: Fetcher, server: FeedServer, url: str
) -> None:
    result = await fetcher.fetch(url, now=NOW, public_only=True)
    assert isinstance(result, FetchFailed), result
    assert result.kind == "blocked"
    assert "secret" not in result.message or "user name or password" in result.message
    assert server.requests == []


async def test_a_host_that_starts_resolving_privately_is_refused_at_fetch_time(
    fetcher: Fetcher, dns: FakeDns, server: FeedServer
) -> None:
    """Checked when added (public), then the name moves to a private address."""
    assert isinstance(await fetcher.fetch(feed_url("feed.xml"), now=NOW, public_only=True), Fetched)
    dns.answers["feeds.test"] = ["127.0.0.1"]
    result = await fetcher.fetch(feed_url("feed.xml"), now=NOW, public_only=True)
    assert isinstance(result, FetchFailed)
    assert result.kind == "blocked"
    assert len(server.requests_for("feed.xml")) == 1


@pytest.mark.parametrize("path", ["to-loopback.xml", "to-v6-mapped.xml"])
async def test_config_feeds_may_reach_private_addresses(
    fetcher: Fetcher, server: FeedServer, path: str
) -> None:
    result = await fetcher.fetch(server.url(path), now=NOW)
    assert isinstance(result, Fetched), result
    assert len(server.requests_for("private.xml")) == 1
