"""One validated settings object for the whole bot.

Settings come from two places, validated once at start-up:

* the configuration file (``feeds.toml`` by default; ``--config`` or ``COUNTERPARTY_CONFIG``):
  feeds, subscriptions and every non-secret knob, in sections ``[bot]``, ``[fetch]``,
  ``[delivery]``, ``[discord]``, ``[telegram]``, ``[metrics]``, ``[[feeds]]`` and
  ``[[subscriptions]]``;
* the environment: secrets (``DISCORD_TOKEN``, ``TELEGRAM_TOKEN``) and deployment overrides
  (``COUNTERPARTY_DATABASE_URL``, ``COUNTERPARTY_*_API_BASE``...). Secrets are never read from
  the file: a token key in the file is an error, so nobody commits one by accident.

``load_settings`` reports *every* problem at once as a :class:`ConfigError` whose lines name the
file, the key (``feeds[3].interval``) and, where it can be found, the line in the file.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

DEFAULT_CONFIG_PATH = Path("feeds.toml")
DEFAULT_DATABASE_URL = "sqlite:///data/counterparty.db"
DEFAULT_CONTACT = "https://github.com/counterparty-bot/counterparty"

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def parse_duration(value: object) -> timedelta:
    """Turn ``"90s"``, ``"10m"``, ``"6h"``, ``"1d"``, ``"2w"`` or a number of seconds into a
    positive :class:`timedelta`. Raises ``ValueError`` with a sentence a user can act on."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool):
        raise ValueError("expected a duration such as '10m', '6h' or '1d', not a boolean")
    elif isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION_RE.match(value)
        if not match:
            raise ValueError(f"{value!r} is not a duration; use e.g. '30s', '10m', '6h' or '1d'")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        raise ValueError(f"expected a duration such as '10m', got {type(value).__name__}")
    if seconds <= 0:
        raise ValueError("a duration must be greater than zero")
    return timedelta(seconds=seconds)


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{value!r} is not an http(s) URL")
    return value


_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class BotSection(_Section):
    """``[bot]``: identity and process-wide knobs."""

    contact: str = Field(
        default=DEFAULT_CONTACT,
        description="URL or e-mail put in the User-Agent so feed operators can reach you.",
    )
    database_url: str = Field(
        default=DEFAULT_DATABASE_URL,
        description="SQLAlchemy URL; COUNTERPARTY_DATABASE_URL and --db override it.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    themes_file: Path | None = Field(
        default=None, description="Replace the packaged theme file (relative to the config file)."
    )
    heartbeat_path: Path | None = None
    health_max_age: Duration = timedelta(minutes=3)
    leader_lease: Duration = Field(
        default=timedelta(seconds=30),
        description="How long a dead replica keeps the Discord gateway / Telegram poller role.",
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


class FetchSection(_Section):
    """``[fetch]``: how politely and how defensively feeds are fetched."""

    default_interval: Duration = timedelta(minutes=15)
    min_interval: Duration = timedelta(minutes=2)
    max_interval: Duration = timedelta(days=1)
    max_backoff: Duration = timedelta(days=1)
    jitter: Duration = timedelta(seconds=30)
    connect_timeout: Duration = timedelta(seconds=10)
    read_timeout: Duration = timedelta(seconds=20)
    deadline: Duration = timedelta(seconds=60)
    max_body_bytes: int = Field(default=10_000_000, gt=0)
    max_decompressed_bytes: int = Field(default=50_000_000, gt=0)
    max_redirects: int = Field(default=5, ge=0, le=20)
    per_host_concurrency: int = Field(default=2, ge=1, le=64)
    global_concurrency: int = Field(default=32, ge=1, le=1024)
    parse_workers: int = Field(default=0, ge=0, le=64, description="0 means one per CPU.")
    baseline_window: Duration = timedelta(hours=24)
    max_updates_per_entry: int = Field(default=5, ge=0)
    tick: Duration = timedelta(seconds=15)
    allow_private_addresses_from_commands: bool = False
    lease: Duration | None = Field(
        default=None,
        description="How long a poller holds a feed it is fetching; default 2 x deadline + 2m.",
    )

    @model_validator(mode="after")
    def _bounds_in_order(self) -> FetchSection:
        if self.min_interval > self.max_interval:
            raise ValueError("min_interval must not be greater than max_interval")
        if self.max_decompressed_bytes < self.max_body_bytes:
            raise ValueError("max_decompressed_bytes must be at least max_body_bytes")
        if self.lease is not None and self.lease <= self.deadline:
            raise ValueError("lease must be longer than deadline (a fetch may take that long)")
        return self


class FeedConfig(_Section):
    """One ``[[feeds]]`` table."""

    url: str
    name: str | None = None
    interval: Duration | None = None

    @field_validator("url")
    @classmethod
    def _url_is_http(cls, value: str) -> str:
        return _check_http_url(value)


_CADENCE_RE = re.compile(
    r"^(?:instant|\d+\s*[hm]|daily\s+([01]?\d|2[0-3]):([0-5]\d)(?:\s+[A-Za-z_]+(?:/[A-Za-z_+\-0-9]+)*)?)$"
)


def check_cadence(value: str) -> str:
    """Accept ``instant``, ``Nh``/``Nm`` (every N hours/minutes) or ``daily HH:MM [Area/City]``."""
    text = " ".join(value.split())
    if not _CADENCE_RE.match(text):
        raise ValueError(
            f"{value!r} is not a cadence; use 'instant', '6h' or 'daily 08:00 Europe/Kyiv'"
        )
    parts = text.split()
    if parts[0] == "daily" and len(parts) == 3:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(parts[2])
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {parts[2]!r} in cadence {value!r}") from None
    return text


Platform = Literal["discord", "discord-webhook", "telegram"]


class SubscriptionConfig(_Section):
    """One ``[[subscriptions]]`` table."""

    platform: Platform
    target: str
    themes: list[str] | None = Field(default=None, description="Theme ids; default all.")
    claims: list[str] = Field(default_factory=list)
    cadence: str = "instant"
    min_score: float = Field(default=0.5, ge=0.0, le=1.0)
    max_items: int = Field(default=10, ge=1, le=100)

    @field_validator("cadence")
    @classmethod
    def _cadence_is_known(cls, value: str) -> str:
        return check_cadence(value)

    @model_validator(mode="after")
    def _target_fits_platform(self) -> SubscriptionConfig:
        if self.platform == "discord" and not re.fullmatch(r"\d{15,21}", self.target):
            raise ValueError("a discord target is a channel or thread id (15-21 digits)")
        if self.platform == "discord-webhook":
            _check_http_url(self.target)
            if "/api/webhooks/" not in self.target:
                raise ValueError(
                    "a discord-webhook target is a webhook URL (.../api/webhooks/ID/TOKEN)"
                )
        if self.platform == "telegram" and not re.fullmatch(
            r"(-?\d+|@[A-Za-z][A-Za-z0-9_]{3,})(:\d+)?", self.target
        ):
            raise ValueError("a telegram target is 'CHAT_ID', 'CHAT_ID:TOPIC_ID' or '@channelname'")
        return self


class DeliverySection(_Section):
    """``[delivery]``: outbox retries and pacing shared by every platform."""

    max_attempts: int = Field(default=12, ge=1)
    max_retry_delay: Duration = timedelta(hours=1)
    drain_interval: Duration = timedelta(seconds=2)
    lease: Duration = timedelta(minutes=2)


class DiscordSection(_Section):
    """``[discord]``: non-secret Discord options (the token comes from ``DISCORD_TOKEN``)."""

    sync_commands: bool = True
    guild_ids: list[int] = Field(
        default_factory=list, description="Sync slash commands to these guilds at once."
    )


class TelegramSection(_Section):
    """``[telegram]``: non-secret Telegram options (the token comes from ``TELEGRAM_TOKEN``)."""

    mode: Literal["polling", "webhook"] = "polling"
    webhook_url: str | None = None
    webhook_listen: str = "0.0.0.0"  # noqa: S104 - a webhook must be reachable from outside
    webhook_port: int = Field(default=8443, ge=1, le=65535)

    @model_validator(mode="after")
    def _webhook_needs_url(self) -> TelegramSection:
        if self.mode == "webhook" and not self.webhook_url:
            raise ValueError("mode = 'webhook' needs webhook_url")
        return self


class MetricsSection(_Section):
    """``[metrics]``: optional Prometheus endpoint."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=9464, ge=1, le=65535)


class FileConfig(_Section):
    """Everything the configuration file may hold."""

    bot: BotSection = Field(default_factory=BotSection)
    fetch: FetchSection = Field(default_factory=FetchSection)
    delivery: DeliverySection = Field(default_factory=DeliverySection)
    discord: DiscordSection = Field(default_factory=DiscordSection)
    telegram: TelegramSection = Field(default_factory=TelegramSection)
    metrics: MetricsSection = Field(default_factory=MetricsSection)
    feeds: list[FeedConfig] = Field(default_factory=list)
    subscriptions: list[SubscriptionConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _no_duplicates(self) -> FileConfig:
        seen: set[str] = set()
        for feed in self.feeds:
            if feed.url in seen:
                raise ValueError(f"feed {feed.url!r} is listed twice")
            seen.add(feed.url)
        return self


@dataclass(frozen=True, slots=True)
class Environment:
    """What the bot takes from the environment. Tokens are ``SecretStr`` so they never print."""

    discord_token: SecretStr | None = None
    telegram_token: SecretStr | None = None
    discord_api_base: str | None = None
    discord_gateway: str | None = None
    telegram_api_base: str | None = None
    database_url: str | None = None
    log_level: str | None = None

    @classmethod
    def from_mapping(cls, env: Mapping[str, str]) -> Environment:
        def secret(name: str) -> SecretStr | None:
            value = env.get(name, "").strip()
            return SecretStr(value) if value else None

        def plain(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        return cls(
            discord_token=secret("DISCORD_TOKEN"),
            telegram_token=secret("TELEGRAM_TOKEN"),
            discord_api_base=plain("COUNTERPARTY_DISCORD_API_BASE"),
            discord_gateway=plain("COUNTERPARTY_DISCORD_GATEWAY"),
            telegram_api_base=plain("COUNTERPARTY_TELEGRAM_API_BASE"),
            database_url=plain("COUNTERPARTY_DATABASE_URL"),
            log_level=plain("COUNTERPARTY_LOG_LEVEL"),
        )

    def secrets(self) -> list[str]:
        """The secret values, for log redaction."""
        return [s.get_secret_value() for s in (self.discord_token, self.telegram_token) if s]


@dataclass(frozen=True, slots=True)
class Settings:
    """The validated settings: the file's content, the environment, and where the file was."""

    file: FileConfig
    env: Environment
    config_path: Path | None
    database_url: str

    @property
    def feeds(self) -> list[FeedConfig]:
        return self.file.feeds

    @property
    def subscriptions(self) -> list[SubscriptionConfig]:
        return self.file.subscriptions

    def resolve(self, path: Path) -> Path:
        """A path from the config file, taken relative to the file's folder."""
        if path.is_absolute() or self.config_path is None:
            return path
        return self.config_path.parent / path


class ConfigError(Exception):
    """The configuration is unusable. ``problems`` holds one readable line per problem."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


_SECRET_KEYS = {"token", "discord_token", "telegram_token", "bot_token", "password", "secret"}

Loc = tuple[str | int, ...]


def _find_line(text: str, loc: Sequence[str | int]) -> int | None:
    """Best-effort line number of ``loc`` (e.g. ``("feeds", 3, "interval")``) in TOML ``text``.

    tomllib keeps no positions, so this scans for the table header and then the key."""
    lines = text.splitlines()
    start, end = 0, len(lines)
    rest: list[str | int] = list(loc)
    first = rest[0] if rest else None
    if isinstance(first, str):
        section = first
        rest.pop(0)
        second = rest[0] if rest else None
        index = second if isinstance(second, int) else None
        if index is not None:
            rest.pop(0)
        headers = [
            i
            for i, line in enumerate(lines)
            if re.match(rf"^\s*\[\[?\s*{re.escape(section)}\s*\]\]?\s*(#.*)?$", line)
        ]
        if headers:
            pick = headers[index] if index is not None and index < len(headers) else headers[0]
            start = pick
            later = [i for i, line in enumerate(lines) if i > pick and re.match(r"^\s*\[", line)]
            end = later[0] if later else len(lines)
            if not rest:
                return start + 1
        elif not rest:
            pattern = rf"^\s*{re.escape(section)}\s*="
            key_line = next((i for i, line in enumerate(lines) if re.match(pattern, line)), None)
            return None if key_line is None else key_line + 1
    key = next((part for part in rest if isinstance(part, str)), None)
    if key is None:
        return start + 1 if start else None
    for i in range(start, end):
        if re.match(rf"^\s*{re.escape(key)}\s*=", lines[i]):
            return i + 1
    return start + 1 if start else None


def _dotted(loc: Sequence[str | int]) -> str:
    """``("feeds", 3, "interval")`` -> ``feeds[3].interval``."""
    key = ""
    for part in loc:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    return key


def _problem(where: str, text: str, loc: Sequence[str | int], message: str) -> str:
    """One ``FILE:LINE: KEY: message`` line (``FILE: KEY: message`` when no line is found)."""
    line = _find_line(text, loc) if text else None
    position = f"{where}:{line}" if line else where
    return f"{position}: {_dotted(loc) or '(top level)'}: {message}"


def problem_at(path: Path | None, loc: Sequence[str | int], message: str) -> str:
    """A ``FILE:LINE: KEY: message`` line for a problem found after loading (e.g. by ``check``).

    The line is looked up in the file as it is now; unreadable files just lose the line."""
    text = ""
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            text = ""
    return _problem(str(path) if path else "<config>", text, loc, message)


def _describe(path: Path | None, text: str, error: ValidationError) -> list[str]:
    where = str(path) if path else "<config>"
    problems = []
    for item in error.errors():
        loc = [part for part in item["loc"] if isinstance(part, str | int)]
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        problems.append(_problem(where, text, loc, message))
    return problems


def _secret_keys_in(data: Any, prefix: Loc = ()) -> list[Loc]:
    """Where the data holds a key named like a secret (``token``, ``password``...)."""
    found: list[Loc] = []
    if isinstance(data, Mapping):
        for key, value in data.items():
            if str(key).lower() in _SECRET_KEYS:
                found.append((*prefix, key))
            else:
                found.extend(_secret_keys_in(value, (*prefix, key)))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            found.extend(_secret_keys_in(value, (*prefix, index)))
    return found


def _remove(data: Any, loc: Loc) -> None:
    """Drop the key at ``loc`` so validation goes on to report the remaining problems."""
    for part in loc[:-1]:
        data = data[part]
    del data[loc[-1]]


def _duplicate_feeds(data: dict[str, Any]) -> list[tuple[Loc, str]]:
    """Feeds whose URL an earlier ``[[feeds]]`` table already has: (location, message)."""
    feed_list = data.get("feeds")
    if not isinstance(feed_list, list):
        return []
    first: dict[str, int] = {}
    found: list[tuple[Loc, str]] = []
    for index, feed in enumerate(feed_list):
        url = feed.get("url") if isinstance(feed, dict) else None
        if not isinstance(url, str):
            continue
        if url in first:
            found.append(
                (("feeds", index, "url"), f"{url!r} is already listed as feeds[{first[url]}]")
            )
        else:
            first[url] = index
    return found


_TOML_POSITION = re.compile(r"\(at line (\d+), column \d+\)")


def _toml_syntax_problem(where: str, text: str, exc: tomllib.TOMLDecodeError) -> str:
    """``FILE:LINE: KEY: not valid TOML: ...`` naming the table and key on the offending line."""
    match = _TOML_POSITION.search(str(exc))
    if not match:
        return f"{where}: not valid TOML: {exc}"
    number = int(match.group(1))
    lines = text.splitlines()
    table = ""
    for line in lines[: number - 1]:
        header = re.match(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?", line)
        if header:
            table = header.group(1)
    line_text = lines[number - 1] if 0 < number <= len(lines) else ""
    key_match = re.match(r"^\s*([A-Za-z0-9_.\-\"']+)\s*=", line_text)
    key = ".".join(part for part in (table, key_match.group(1) if key_match else "") if part)
    message = _TOML_POSITION.sub("", str(exc)).strip()
    return f"{where}:{number}: {key or '(top level)'}: not valid TOML: {message}"


def parse_config_text(text: str, *, path: Path | None = None) -> FileConfig:
    """Validate TOML text as a configuration file; raise :class:`ConfigError` listing every problem.

    Every line names the file, the line (where it can be found) and the key. Secret-looking keys
    and duplicate feeds are reported and then set aside so the rest is still validated."""
    where = str(path) if path else "<config>"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([_toml_syntax_problem(where, text, exc)]) from None
    problems = []
    for loc in _secret_keys_in(data):
        problems.append(
            _problem(
                where,
                text,
                loc,
                "secrets are read from the environment only (DISCORD_TOKEN, TELEGRAM_TOKEN); "
                "remove this key from the file",
            )
        )
        _remove(data, loc)
    duplicates = _duplicate_feeds(data)
    for loc, message in duplicates:
        problems.append(_problem(where, text, loc, message))
    for loc, _message in reversed(duplicates):
        del data["feeds"][loc[1]]
    try:
        config = FileConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(problems + _describe(path, text, exc)) from None
    if problems:
        raise ConfigError(problems)
    return config


def load_settings(
    config_path: Path | str | None = None,
    *,
    database_url: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Read and validate the configuration file plus the environment.

    ``config_path`` falls back to ``COUNTERPARTY_CONFIG`` and then ``./feeds.toml``; a missing
    default file means "all defaults", a missing file that was named explicitly is an error.
    ``database_url`` (the ``--db`` flag) beats ``COUNTERPARTY_DATABASE_URL``, which beats the file.
    """
    env_map = os.environ if environ is None else environ
    env = Environment.from_mapping(env_map)
    # Problems in the environment are reported together with the file's, not one at a time.
    env_problems = []
    if env.log_level and env.log_level.upper() not in _LOG_LEVELS:
        env_problems.append(
            f"COUNTERPARTY_LOG_LEVEL: {env.log_level!r} is not a log level; "
            f"use one of {', '.join(_LOG_LEVELS)}"
        )
    named = config_path or env_map.get("COUNTERPARTY_CONFIG") or None
    path = Path(named) if named else DEFAULT_CONFIG_PATH
    try:
        if path.exists():
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError([f"{path}: cannot read the configuration file: {exc}"]) from None
            file_config = parse_config_text(text, path=path)
        elif named:
            raise ConfigError([f"{path}: configuration file not found"])
        else:
            file_config, path = FileConfig(), None  # type: ignore[assignment]
    except ConfigError as exc:
        raise ConfigError(exc.problems + env_problems) from None
    if env_problems:
        raise ConfigError(env_problems)
    url = database_url or env.database_url or file_config.bot.database_url
    if env.log_level:
        file_config = file_config.model_copy(
            update={"bot": file_config.bot.model_copy(update={"log_level": env.log_level.upper()})}
        )
    return Settings(file=file_config, env=env, config_path=path, database_url=url)
