"""What the fake platform servers share: an aiohttp app served on a free 127.0.0.1 port for
the length of an ``async with``, and waiting for what the app has recorded.

A subclass adds its routes in :meth:`LoopbackFake.add_routes`, records each request, then
wakes waiters with ``async with self._changed: self._changed.notify_all()``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Self

from aiohttp import web


class LoopbackFake:
    """The lifecycle of a fake server: ``async with Fake() as fake:`` starts it on a free loopback
    port (``fake.port``) and stops it at the end."""

    def __init__(self) -> None:
        self.port = 0
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def add_routes(self, app: web.Application) -> None:
        """Add the fake's handlers to ``app``."""
        raise NotImplementedError

    async def start(self) -> None:
        app = web.Application()
        self.add_routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)
        self.port = server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def wait_for(self, predicate: Callable[[Self], bool], *, within: float = 10.0) -> None:
        """Wait until ``predicate(self)`` holds (checked after every recorded request); fail on
        timeout."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: predicate(self)), within)
