"""Waiting, with a deadline, for state that has no event to wait on.

A child process's database or log, or requests counted by a fake server in another thread, do
not wake an ``await``: :func:`until` looks again every 50 ms until the condition holds or the
deadline passes. Fakes in this process wait on their own conditions instead (``wait_for``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

POLL_INTERVAL = 0.05  # seconds between looks; short against every deadline the tests use


async def until(condition: Callable[[], bool], what: str, within: float) -> None:
    """Return once ``condition()`` is true; raise :class:`AssertionError` naming ``what`` if it
    is still false after ``within`` seconds."""
    try:
        async with asyncio.timeout(within):
            # State in another process or thread has no event to wait on: look again.
            while not condition():  # noqa: ASYNC110
                await asyncio.sleep(POLL_INTERVAL)
    except TimeoutError:
        raise AssertionError(f"not reached within {within:g} s: {what}") from None
