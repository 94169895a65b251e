"""Operations sub-commands: check, health, migrate, migrate-db, export and import.

Exit codes follow ``bot.cli``: 0 success, 1 the job ran and found a problem, 2 bad usage or
configuration. ``health`` never exits 2 (Docker reserves it): any failure there is 1.
"""

from __future__ import annotations

import argparse
import socket
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from bot.cli import UsageError, settings_from_args
from bot.ops.check import run_check
from bot.ops.health import check_health
from bot.ops.portable import (
    FORMATS,
    ImportProblemsError,
    apply_bundle,
    bundle_from_db,
    format_for,
    read_bundle,
    write_bundle,
)
from bot.ops.transfer import TransferError, copy_database
from bot.settings import ConfigError
from bot.storage.db import DatabaseUrlError, make_engine, migrate, normalise_url


def _shown(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _missing_sqlite_file(url: str) -> str | None:
    """The path of a SQLite database file that does not exist, else None."""
    try:
        parsed = make_url(normalise_url(url))
    except DatabaseUrlError:
        return None
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or database in (None, "", ":memory:"):
        return None
    return None if Path(database or "").exists() else str(database)


def cmd_check(args: argparse.Namespace) -> int:
    report = run_check(args.config, database_url=args.db)
    for note in report.notes:
        print(f"ok: {note}")
    problems = report.config_problems + report.runtime_problems
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s) found", file=sys.stderr)
    else:
        print("everything checks out")
    return report.exit_code


def cmd_health(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args)
    except ConfigError as exc:
        print("unhealthy: the configuration is invalid:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    try:
        url = normalise_url(settings.database_url)
    except DatabaseUrlError as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    missing = _missing_sqlite_file(url)
    if missing is not None:
        print(
            f"unhealthy: the database file {missing} does not exist "
            "(the bot has never run with this database)",
            file=sys.stderr,
        )
        return 1
    engine = make_engine(url)
    try:
        report = check_health(
            engine,
            datetime.now(UTC),
            settings.file.bot.health_max_age,
            name=args.name,
            host=socket.gethostname(),
        )
    finally:
        engine.dispose()
    if report.healthy:
        print(report.reason)
        return 0
    print(f"unhealthy: {report.reason}", file=sys.stderr)
    return 1


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    engine = _engine_or_usage_error(settings.database_url)
    try:
        migrate(engine)
    except SQLAlchemyError as exc:
        print(f"migration failed on {_shown(str(engine.url))}: {_first_line(exc)}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    print(f"database {_shown(settings.database_url)} is at the newest schema")
    return 0


def _engine_or_usage_error(url: str) -> Any:
    try:
        return make_engine(url)
    except DatabaseUrlError as exc:
        raise UsageError(str(exc)) from None


def cmd_migrate_db(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    missing = _missing_sqlite_file(settings.database_url)
    if missing is not None:
        raise UsageError(f"the source database file {missing} does not exist")
    source = _engine_or_usage_error(settings.database_url)
    target = _engine_or_usage_error(args.to)
    print(f"copying {_shown(settings.database_url)} -> {_shown(args.to)} (stop the bot first)")
    try:
        copied = copy_database(
            source, target, progress=lambda table, rows: print(f"  {table}: {rows} rows")
        )
    except TransferError as exc:
        print(f"migrate-db: {exc}", file=sys.stderr)
        return 1
    except SQLAlchemyError as exc:
        print(f"migrate-db failed, nothing was written: {_first_line(exc)}", file=sys.stderr)
        return 1
    finally:
        source.dispose()
        target.dispose()
    total = sum(table.rows for table in copied)
    print(
        f"done: {total} rows in {len(copied)} tables. Point COUNTERPARTY_DATABASE_URL at the new "
        "database and start the bot."
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    try:
        fmt = args.format or (format_for(args.output, None) if args.output else "toml")
    except ImportProblemsError as exc:
        raise UsageError(exc.problems[0]) from None
    missing = _missing_sqlite_file(settings.database_url)
    if missing is not None:
        raise UsageError(f"the database file {missing} does not exist; nothing to export")
    engine = _engine_or_usage_error(settings.database_url)
    try:
        migrate(engine)
        bundle = bundle_from_db(engine)
    finally:
        engine.dispose()
    text = write_bundle(bundle, fmt, now=datetime.now(UTC))
    if args.output is None or str(args.output) == "-":
        sys.stdout.write(text)
    else:
        args.output.write_text(text, encoding="utf-8")
        what = "feeds" if fmt == "opml" else "feeds and subscriptions"
        print(
            f"exported {len(bundle.feeds)} feeds"
            + ("" if fmt == "opml" else f" and {len(bundle.subscriptions)} subscriptions")
            + f" ({what}, {fmt}) to {args.output}",
            file=sys.stderr,
        )
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    try:
        fmt = format_for(args.file, args.format)
        bundle = read_bundle(args.file, fmt)
    except ImportProblemsError as exc:
        print("nothing imported:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    engine = _engine_or_usage_error(settings.database_url)
    try:
        migrate(engine)
        summary = apply_bundle(engine, bundle, now=datetime.now(UTC), dry_run=args.dry_run)
    finally:
        engine.dispose()
    prefix = "would import" if args.dry_run else "imported"
    print(
        f"{prefix}: feeds {summary.feeds_added} new, {summary.feeds_present} already present; "
        f"subscriptions {summary.subscriptions_added} new, "
        f"{summary.subscriptions_updated} updated, "
        f"{summary.subscriptions_unchanged} unchanged"
    )
    return 0


def register(commands: argparse._SubParsersAction[Any]) -> None:
    """Add the operations sub-commands to the ``counterparty`` parser."""
    check = commands.add_parser(
        "check",
        help="validate the configuration, theme file and database; report every problem",
    )
    check.set_defaults(handler=cmd_check)

    health = commands.add_parser(
        "health", help="exit 0 when the scheduler heartbeat is recent and the database answers"
    )
    health.add_argument(
        "--name", default="scheduler", help="heartbeat to check (default: scheduler)"
    )
    health.set_defaults(handler=cmd_health)

    migrate_parser = commands.add_parser(
        "migrate", help="bring the database schema up to date, then exit"
    )
    migrate_parser.set_defaults(handler=cmd_migrate)

    migrate_db = commands.add_parser(
        "migrate-db",
        help="copy everything from the current database to another (e.g. SQLite -> PostgreSQL)",
    )
    migrate_db.add_argument(
        "--to",
        required=True,
        metavar="URL",
        help="the empty target database (it is migrated first)",
    )
    migrate_db.set_defaults(handler=cmd_migrate_db)

    export = commands.add_parser(
        "export", help="write the stored feeds and subscriptions as TOML, JSON or OPML (feeds)"
    )
    export.add_argument(
        "--format", choices=FORMATS, default=None, help="default: from -o's suffix, else toml"
    )
    export.add_argument(
        "-o", "--output", type=Path, default=None, help="file to write (default: stdout)"
    )
    export.set_defaults(handler=cmd_export)

    import_parser = commands.add_parser(
        "import", help="add feeds and subscriptions from a TOML, JSON or OPML file"
    )
    import_parser.add_argument("file", type=Path)
    import_parser.add_argument(
        "--format", choices=FORMATS, default=None, help="default: from the suffix"
    )
    import_parser.add_argument(
        "--dry-run", action="store_true", help="validate and count, but write nothing"
    )
    import_parser.set_defaults(handler=cmd_import)
