"""The HTTP adapter: one polite, defensive conditional GET per call, as a :class:`FetchResult`.

:class:`Fetcher` wraps ``httpx.AsyncClient`` (one per host) and adds what httpx does not do itself:

* a global and a per-host concurrency cap (semaphores), so one slow site cannot hog the bot and
  no site gets more than ``per_host_concurrency`` requests from us at once;
* a total deadline per fetch on top of httpx's connect/read timeouts;
* a streamed cap on the bytes received and a separate cap on the decompressed size (gzip bombs),
  decompressing incrementally so memory never holds more than the cap;
* classification of every failure into one of the ``feeds.last_error_kind`` values, with the
  server's ``Retry-After`` and freshness hints attached.

It never raises for network or HTTP trouble: failures come back as :class:`FetchFailed`.
``transport`` is the seam for tests that want no sockets at all; the feed tests use a real
local server instead.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Mapping
from datetime import datetime
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import httpx

from bot import __version__
from bot.commands.ssrf import Resolver, resolve_host
from bot.feeds.guard import PUBLIC_ONLY, BlockedAddressError, PublicOnlyGuard
from bot.feeds.records import CacheHints, Fetched, FetchFailed, FetchResult, NotModified
from bot.feeds.schedule import parse_max_age, parse_retry_after
from bot.settings import FetchSection

_PERMANENT = frozenset({301, 308})


def user_agent(contact: str) -> str:
    """An honest User-Agent: the project, its version and how to reach the operator."""
    return f"counterparty/{__version__} (+{contact})"


class _TooLargeError(Exception):
    """The body went over one of the caps."""


class _Inflater:
    """Incremental decoder for ``Content-Encoding`` that refuses to produce more than ``limit``."""

    def __init__(self, encoding: str | None, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self.parts: list[bytes] = []
        coding = (encoding or "identity").strip().lower()
        self._deflate_fallback = False
        if coding in ("identity", ""):
            self._zlib: zlib._Decompress | None = None
        elif coding in ("gzip", "x-gzip"):
            self._zlib = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif coding == "deflate":
            self._zlib = zlib.decompressobj()
            self._deflate_fallback = True  # some servers send raw deflate without the zlib header
        else:
            raise ValueError(f"unsupported Content-Encoding {encoding!r}")

    def feed(self, chunk: bytes) -> None:
        if self._zlib is None:
            self._keep(chunk)
            return
        data = chunk
        while data:
            try:
                out = self._zlib.decompress(data, self.limit - self.size + 1)
            except zlib.error:
                if self._deflate_fallback and not self.size:
                    self._deflate_fallback = False
                    self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
                    continue
                raise
            self._keep(out)
            data = self._zlib.unconsumed_tail
            if self._zlib.eof:
                break

    def _keep(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            raise _TooLargeError(f"the decompressed body is larger than {self.limit:,} bytes")
        if data:
            self.parts.append(data)

    def body(self) -> bytes:
        if self._zlib is not None:
            self._keep(self._zlib.flush())
        return b"".join(self.parts)


def _header_safe(value: str) -> bool:
    return value.isascii() and value.isprintable()


def _hints(headers: Mapping[str, str], now: datetime) -> CacheHints:
    return CacheHints(
        max_age=parse_max_age(headers.get("cache-control"), headers.get("expires"), now),
        retry_after=parse_retry_after(headers.get("retry-after"), now),
    )


def _permanent_url(requested: str, response: httpx.Response) -> str | None:
    if response.history and all(r.status_code in _PERMANENT for r in response.history):
        final = str(response.url)
        return final if final != requested else None
    return None


def _failure_for_status(status: int, hints: CacheHints, reason: str) -> FetchFailed:
    text = f"HTTP {status} {reason}".strip()
    if status in (404, 410):
        return FetchFailed("gone", text, status, hints)
    if status == 429 or (status == 503 and hints.retry_after is not None):
        return FetchFailed("rate_limited", text, status, hints)
    if status >= 500:
        return FetchFailed("server", text, status, hints)
    if 300 <= status < 400:
        return FetchFailed("redirect", f"{text} without a usable Location", status, hints)
    return FetchFailed("http", text, status, hints)


class Fetcher:
    """Conditional GETs with caps. Use as ``async with Fetcher(fetch_settings, contact=...)``."""

    def __init__(
        self,
        settings: FetchSection,
        *,
        contact: str,
        transport: httpx.AsyncBaseTransport | None = None,
        resolve: Resolver = resolve_host,
    ) -> None:
        self._settings = settings
        self._global = asyncio.Semaphore(settings.global_concurrency)
        self._per_host: dict[str, asyncio.Semaphore] = {}
        self._transport = transport
        self._client_options: dict[str, Any] = {
            "timeout": httpx.Timeout(
                connect=settings.connect_timeout.total_seconds(),
                read=settings.read_timeout.total_seconds(),
                write=settings.read_timeout.total_seconds(),
                pool=settings.deadline.total_seconds(),
            ),
            "follow_redirects": True,
            "max_redirects": settings.max_redirects,
            "headers": {
                "User-Agent": user_agent(contact),
                "Accept": "application/rss+xml, application/atom+xml, application/xml;q=0.9, "
                "text/xml;q=0.9, */*;q=0.5",
                # Only codings we decode ourselves under the size cap.
                "Accept-Encoding": "gzip, deflate",
            },
            "trust_env": False,
            # Called on every hop: fetch(..., public_only=True) may reach public addresses only.
            "event_hooks": {"request": [PublicOnlyGuard(resolve)]},
        }
        # One TLS context for every client: building one loads the CA bundle (tens of ms).
        self._tls = httpx.create_ssl_context(trust_env=False) if transport is None else None
        # One client (so one connection pool) per host. httpcore looks at every pooled
        # connection of a pool for each request and each response it releases; with one pool
        # for all hosts that scan was a third of a warm pass's CPU. A test transport gets one
        # client, as the transport is the whole pool then.
        self._clients: dict[str, httpx.AsyncClient] = {}

    def _client_for(self, host: str) -> httpx.AsyncClient:
        key = host if self._transport is None else ""
        client = self._clients.get(key)
        if client is None:
            settings = self._settings
            client = self._clients[key] = httpx.AsyncClient(
                **self._client_options,
                limits=httpx.Limits(
                    max_connections=settings.global_concurrency,
                    max_keepalive_connections=settings.per_host_concurrency,
                ),
                transport=self._transport,
                verify=self._tls if self._tls is not None else True,
            )
        return client

    async def __aenter__(self) -> Fetcher:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()

    def _host_semaphore(self, host: str) -> asyncio.Semaphore:
        semaphore = self._per_host.get(host)
        if semaphore is None:
            semaphore = self._per_host[host] = asyncio.Semaphore(
                self._settings.per_host_concurrency
            )
        return semaphore

    async def fetch(
        self,
        url: str,
        *,
        now: datetime,
        etag: str | None = None,
        last_modified: str | None = None,
        public_only: bool = False,
    ) -> FetchResult:
        """GET ``url`` conditionally; ``now`` is used to read date-valued hints. With
        ``public_only`` (feeds added by chat command) every hop must resolve to public
        addresses only (:mod:`bot.feeds.guard`), else the fetch fails with kind ``blocked``."""
        headers = {}
        # Validators are echoed back as stored; one a server sent with non-ASCII bytes cannot go
        # in a header, so it is dropped (an unconditional GET) rather than failing the fetch.
        if etag and _header_safe(etag):
            headers["If-None-Match"] = etag
        if last_modified and _header_safe(last_modified):
            headers["If-Modified-Since"] = last_modified
        host = (urlsplit(url).hostname or "").lower()
        async with self._global, self._host_semaphore(host):
            try:
                async with asyncio.timeout(self._settings.deadline.total_seconds()):
                    return await self._get(
                        self._client_for(host), url, headers, now, public_only=public_only
                    )
            except TimeoutError:
                return FetchFailed(
                    "timeout", f"no complete answer within {self._settings.deadline}"
                )
            except BlockedAddressError as exc:
                return FetchFailed("blocked", str(exc))
            except httpx.TooManyRedirects as exc:
                return FetchFailed("redirect", f"too many redirects: {exc}")
            except httpx.UnsupportedProtocol as exc:
                return FetchFailed("redirect", f"redirected to an unsupported URL: {exc}")
            except httpx.TimeoutException as exc:
                return FetchFailed("timeout", f"{type(exc).__name__}: {exc}".rstrip(": "))
            except httpx.InvalidURL as exc:
                return FetchFailed("http", f"invalid URL: {exc}")
            except httpx.HTTPError as exc:
                return FetchFailed("network", f"{type(exc).__name__}: {exc}".rstrip(": "))

    async def _get(
        self,
        client: httpx.AsyncClient,
        url: str,
        headers: dict[str, str],
        now: datetime,
        *,
        public_only: bool,
    ) -> FetchResult:
        caps = self._settings
        extensions = {PUBLIC_ONLY: True} if public_only else {}
        async with client.stream("GET", url, headers=headers, extensions=extensions) as response:
            hints = _hints(response.headers, now)
            permanent = _permanent_url(url, response)
            status = response.status_code
            if status == 304:
                # A 304 has no body, but httpcore keeps the connection only for a response read
                # to its end: without this every 304 would cost a new TCP connection.
                await response.aread()
                return NotModified(
                    permanent_url=permanent,
                    etag=response.headers.get("etag"),
                    last_modified=response.headers.get("last-modified"),
                    hints=hints,
                )
            if not 200 <= status < 300 or status == 204:
                return _failure_for_status(status, hints, response.reason_phrase)
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > caps.max_body_bytes:
                return FetchFailed(
                    "too_large",
                    f"Content-Length {int(declared):,} is over the "
                    f"{caps.max_body_bytes:,}-byte cap",
                    status,
                    hints,
                )
            try:
                inflater = _Inflater(
                    response.headers.get("content-encoding"), caps.max_decompressed_bytes
                )
            except ValueError as exc:
                return FetchFailed("http", str(exc), status, hints)
            received = 0
            try:
                async for chunk in response.aiter_raw():
                    received += len(chunk)
                    if received > caps.max_body_bytes:
                        raise _TooLargeError(
                            f"the body is larger than {caps.max_body_bytes:,} bytes"
                        )
                    inflater.feed(chunk)
                body = inflater.body()
            except _TooLargeError as exc:
                return FetchFailed("too_large", str(exc), status, hints)
            except zlib.error as exc:
                return FetchFailed("http", f"cannot decompress the body: {exc}", status, hints)
            return Fetched(
                body=body,
                final_url=str(response.url),
                permanent_url=permanent,
                content_type=response.headers.get("content-type"),
                etag=response.headers.get("etag"),
                last_modified=response.headers.get("last-modified"),
                status=status,
                hints=hints,
            )
