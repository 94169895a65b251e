"""Building python-telegram-bot's ``Bot`` from the settings (token and API base)."""

from __future__ import annotations

import os

from pydantic import SecretStr
from telegram import Bot
from telegram.request import HTTPXRequest

DEFAULT_API_BASE = "https://api.telegram.org/bot"


def make_bot(
    token: SecretStr,
    *,
    api_base: str | None = None,
    connect_timeout: float = 10.0,
    read_timeout: float = 20.0,
    pool_size: int = 8,
) -> Bot:
    """A ``Bot`` (not yet initialised) for ``token``.

    ``api_base`` is PTB's ``base_url`` form, e.g. ``http://127.0.0.1:8081/bot``: the token is
    appended to it (``COUNTERPARTY_TELEGRAM_API_BASE``; Telegram's own server by default).

    Opts in to PTB's ``PTB_TIMEDELTA`` (durations such as ``RetryAfter.retry_after`` as
    ``timedelta``, PTB 23's behaviour): without it PTB 22 emits a deprecation warning from
    inside ``RetryAfter.__init__`` on every 429."""
    os.environ.setdefault("PTB_TIMEDELTA", "1")
    request = HTTPXRequest(
        connection_pool_size=pool_size,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        write_timeout=read_timeout,
        pool_timeout=read_timeout,
    )
    # getUpdates gets its own connection, so a long poll never blocks a send.
    updates_request = HTTPXRequest(
        connection_pool_size=1,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        write_timeout=read_timeout,
        pool_timeout=read_timeout,
    )
    return Bot(
        token=token.get_secret_value(),
        base_url=api_base or DEFAULT_API_BASE,
        request=request,
        get_updates_request=updates_request,
    )
