"""Process-wide logging: text or JSON lines on stderr, with every secret redacted.

``setup_logging(settings)`` is called once at start by ``counterparty run``. It installs one
handler on the root logger whose filter rewrites each record before any formatter sees it: the
bot tokens from the environment (raw and URL-encoded), Discord webhook tokens and the database
password are replaced by ``***`` in the message, its arguments, the traceback and the stack.

httpx and httpcore are turned down to WARNING because their INFO/DEBUG lines print request URLs,
and Telegram's Bot API puts the token in every URL (``/bot<TOKEN>/sendMessage``). The filter
would redact those too; quieting them keeps the log readable as well as safe.

APScheduler logs every job run at INFO (the poll tick runs every few seconds), so its loggers
are set to WARNING unless the level is DEBUG. Alembic's "Context impl ..." and "Will assume ..."
lines at every start are dropped; its "Running upgrade ..." lines stay.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import IO, Any
from urllib.parse import quote

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from bot.settings import Settings

REDACTED = "***"
_NOISY_LOGGERS = ("httpx", "httpcore", "hpack", "urllib3")
_SCHEDULER_LOGGER = "apscheduler"
_ALEMBIC_LOGGER = "alembic.runtime.migration"
_ALEMBIC_NOISE = ("Context impl ", "Will assume ")
_WEBHOOK_TOKEN = re.compile(r"(/api/webhooks/\d+/)[A-Za-z0-9._\-]+")
_HANDLER_MARK = "_counterparty_handler"


class Redactor:
    """Replaces known secrets (and Discord webhook tokens) in text."""

    def __init__(self, secrets: Iterable[str]) -> None:
        variants: set[str] = set()
        for secret in secrets:
            if len(secret) < 4:  # too short to redact without mangling ordinary words
                continue
            variants.update({secret, quote(secret, safe=""), quote(secret)})
        # Longest first, so a secret that contains another is replaced whole.
        self._pattern = (
            re.compile("|".join(re.escape(v) for v in sorted(variants, key=len, reverse=True)))
            if variants
            else None
        )

    def __call__(self, text: str) -> str:
        if self._pattern is not None:
            text = self._pattern.sub(REDACTED, text)
        return _WEBHOOK_TOKEN.sub(rf"\g<1>{REDACTED}", text)


class RedactingFilter(logging.Filter):
    """Rewrites a record's message, traceback and stack with the secrets redacted.

    The record is flattened: ``msg`` becomes the final redacted message and ``args`` is emptied,
    so no formatter downstream can re-insert an argument that held a secret.
    """

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self._redact = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self._redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self._redact(record.stack_info)
        return True


class AlembicNoiseFilter(logging.Filter):
    """Drops alembic's per-start "Context impl"/"Will assume" lines, keeps the rest."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.startswith(_ALEMBIC_NOISE))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC ISO 8601), level, logger, message, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, ensure_ascii=False)


TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def setup_logging(settings: Settings, *, stream: IO[str] | None = None) -> logging.Handler:
    """Configure the root logger from ``settings`` and return the handler it installed.

    Level from ``[bot].log_level`` (or ``COUNTERPARTY_LOG_LEVEL``), format from
    ``[bot].log_format`` (``text`` or ``json``), output to ``stream`` (default stderr). Calling it
    again replaces the previous handler rather than adding a second one.
    """
    bot = settings.file.bot
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    setattr(handler, _HANDLER_MARK, True)
    handler.addFilter(
        RedactingFilter(Redactor([*settings.env.secrets(), *_url_password(settings)]))
    )
    if bot.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        formatter = logging.Formatter(TEXT_FORMAT, datefmt="%Y-%m-%dT%H:%M:%SZ")
        formatter.converter = _utc_timetuple
        handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(bot.log_level)
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    # At DEBUG the job runs are wanted; otherwise only the scheduler's warnings and errors.
    scheduler_level = logging.NOTSET if root.level <= logging.DEBUG else logging.WARNING
    logging.getLogger(_SCHEDULER_LOGGER).setLevel(scheduler_level)
    alembic = logging.getLogger(_ALEMBIC_LOGGER)
    if not any(isinstance(f, AlembicNoiseFilter) for f in alembic.filters):
        alembic.addFilter(AlembicNoiseFilter())
    return handler


def _url_password(settings: Settings) -> list[str]:
    """The database password, if the URL has one: driver errors sometimes echo the URL."""
    try:
        password = make_url(settings.database_url).password
    except ArgumentError:
        return []
    return [str(password)] if password else []


def _utc_timetuple(seconds: float | None) -> Any:
    return datetime.fromtimestamp(seconds if seconds is not None else 0, UTC).timetuple()
