"""``counterparty check``: validate everything the bot needs before it starts, all at once.

Three things are checked, and every problem found is reported, not just the first:

1. the configuration file and environment (``bot.settings.load_settings``), each problem as
   ``FILE:LINE: KEY: what is wrong``;
2. the theme/claim catalog (the packaged one, or ``[bot].themes_file``);
3. the database URL: it must parse, and the database must answer.

The outcome is a :class:`CheckReport`; printing and exit codes belong to ``bot.ops.cli``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from bot.settings import ConfigError, Settings, load_settings, problem_at
from bot.storage.db import DatabaseUrlError, is_migrated, make_engine, normalise_url


@dataclass(frozen=True, slots=True)
class CheckReport:
    """``config_problems`` make the configuration unusable (exit 2); ``runtime_problems`` are
    things outside the files that stop the bot (exit 1); ``notes`` are facts worth showing."""

    config_problems: list[str] = field(default_factory=list)
    runtime_problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if self.config_problems:
            return 2
        return 1 if self.runtime_problems else 0


def _check_catalog(settings: Settings, report: CheckReport) -> None:
    themes_file = settings.file.bot.themes_file
    path = settings.resolve(themes_file) if themes_file is not None else None
    try:
        from bot.matching.catalog import CatalogError, load_catalog
    except ImportError as exc:  # the matcher is built in parallel; say so rather than crash
        report.runtime_problems.append(f"theme catalog cannot be loaded: {exc}")
        return
    where = str(path) if path is not None else "the packaged theme file"
    if path is not None and not path.is_file():
        report.config_problems.append(
            problem_at(settings.config_path, ("bot", "themes_file"), f"{path} does not exist")
        )
        return
    try:
        catalog = load_catalog(path)
    except CatalogError as exc:
        source = getattr(exc, "path", None) or where
        problems = list(getattr(exc, "problems", None) or [str(exc)])
        report.config_problems.extend(f"{source}: {problem}" for problem in problems)
        return
    except OSError as exc:
        report.config_problems.append(f"{where}: cannot read the theme file: {exc}")
        return
    report.notes.append(
        f"themes: {len(catalog.themes)} themes, {len(catalog.claims)} claims from {where}"
    )
    _check_subscription_ids(settings, set(catalog.themes), set(catalog.claims), report)


def _check_subscription_ids(
    settings: Settings, themes: set[str], claims: set[str], report: CheckReport
) -> None:
    """Every theme and claim id a subscription names must exist in the catalog."""
    for index, sub in enumerate(settings.subscriptions):
        for key, wanted, known in (
            ("themes", sub.themes or [], themes),
            ("claims", sub.claims, claims),
        ):
            for ref in wanted:
                if ref not in known:
                    report.config_problems.append(
                        problem_at(
                            settings.config_path,
                            ("subscriptions", index, key),
                            f"unknown {key[:-1]} id {ref!r}; known: {', '.join(sorted(known))}",
                        )
                    )


def _check_database(url: str, report: CheckReport, *, origin: str) -> None:
    try:
        url = normalise_url(url)
    except DatabaseUrlError as exc:
        report.config_problems.append(f"{origin}: {exc}")
        return
    parsed = make_url(url)
    shown = parsed.render_as_string(hide_password=True)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        database = Path(parsed.database or "")
        if not database.exists():
            folder = next((p for p in database.absolute().parents if p.exists()), None)
            if folder is None or not folder.is_dir():
                report.runtime_problems.append(f"database {shown}: no folder to create it in")
            elif not os.access(folder, os.W_OK):
                report.runtime_problems.append(
                    f"database {shown} does not exist and {folder} is not writable, "
                    "so it cannot be created"
                )
            else:
                report.notes.append(f"database: {shown} does not exist yet; 'run' creates it")
            return
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        migrated = is_migrated(engine)
    except SQLAlchemyError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        report.runtime_problems.append(f"database {shown} does not answer: {first}")
        return
    finally:
        engine.dispose()
    state = "migrated" if migrated else "empty (migrations run at start)"
    report.notes.append(f"database: {shown} answers, {state}")


def run_check(
    config_path: Path | None,
    *,
    database_url: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> CheckReport:
    """Check the configuration, the theme catalog and the database; collect every problem."""
    env = os.environ if environ is None else environ
    report = CheckReport()
    try:
        settings = load_settings(config_path, database_url=database_url, environ=env)
    except ConfigError as exc:
        report.config_problems.extend(exc.problems)
        # The file is unusable, but a database named on the command line or in the
        # environment can still be checked, so the user sees those problems in the same run.
        url = database_url or env.get("COUNTERPARTY_DATABASE_URL", "").strip()
        if url:
            _check_database(
                url, report, origin="--db" if database_url else "COUNTERPARTY_DATABASE_URL"
            )
        return report
    where = str(settings.config_path) if settings.config_path else "(no file: all defaults)"
    report.notes.append(
        f"config: {where}: {len(settings.feeds)} feeds, {len(settings.subscriptions)} subscriptions"
    )
    _check_catalog(settings, report)
    origin = (
        "--db"
        if database_url
        else "COUNTERPARTY_DATABASE_URL"
        if settings.env.database_url
        else problem_at(settings.config_path, ("bot", "database_url"), "").removesuffix(": ")
    )
    _check_database(settings.database_url, report, origin=origin)
    platforms = {s.platform for s in settings.subscriptions}
    for platform, token, variable in (
        ("discord", settings.env.discord_token, "DISCORD_TOKEN"),
        ("telegram", settings.env.telegram_token, "TELEGRAM_TOKEN"),
    ):
        if token is not None:
            report.notes.append(f"{platform}: token set ({variable})")
        elif platform in platforms:
            report.runtime_problems.append(
                f"{where}: subscriptions: there are {platform} subscriptions but {variable} is not "
                "set in the environment"
            )
    return report
