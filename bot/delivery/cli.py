"""Sub-commands of the delivery capability: ``run``, ``digest --print``, ``claims``, ``claim``,
``demo``.

``digest --print``, ``claims`` and ``claim ID`` print what the slash commands show, through the
shared command core (:class:`bot.commands.core.CommandCore`) and the console renderer.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.cli import UsageError, settings_from_args
from bot.settings import Settings, parse_duration


def register(commands: argparse._SubParsersAction[Any]) -> None:
    """Add this capability's sub-commands to the `counterparty` parser."""
    run = commands.add_parser(
        "run",
        help="run the bot: poll, match, post digests (console output when no token is set)",
        description="Run everything until SIGTERM or Ctrl-C. With no DISCORD_TOKEN or "
        "TELEGRAM_TOKEN, digests are printed to stdout.",
    )
    run.set_defaults(handler=_run)

    digest = commands.add_parser(
        "digest", help="render a digest of recent matches on demand (nothing is posted)"
    )
    digest.add_argument(
        "--print", dest="print_", action="store_true", required=True, help="print it to stdout"
    )
    digest.add_argument(
        "--since", default="24h", help="how far back to look, e.g. 6h, 2d (default 24h)"
    )
    digest.add_argument(
        "--theme", action="append", metavar="ID", help="only this theme (repeatable)"
    )
    digest.add_argument(
        "--max-items", type=int, default=10, help="at most this many stories (default 10)"
    )
    digest.set_defaults(handler=_digest)

    claims = commands.add_parser("claims", help="list the claims the bot tracks")
    claims.set_defaults(handler=_claims)

    claim = commands.add_parser("claim", help="show one claim and its latest evidence")
    claim.add_argument("claim_id", metavar="ID")
    claim.set_defaults(handler=_claim)

    demo = commands.add_parser(
        "demo",
        help="run the whole pipeline once on a built-in sample feed, offline, and print the digest",
    )
    demo.set_defaults(handler=_demo)


def _catalog(settings: Settings) -> Any:
    from bot.matching.catalog import CatalogError, load_catalog

    themes_file = settings.file.bot.themes_file
    try:
        return load_catalog(settings.resolve(themes_file) if themes_file else None)
    except CatalogError as exc:
        raise UsageError(f"the theme file is unusable: {exc}") from None


def _run(args: argparse.Namespace) -> int:
    from bot.app import run
    from bot.ops.logging import setup_logging
    from bot.storage.db import DatabaseUrlError, normalise_url

    settings = settings_from_args(args)
    catalog = _catalog(settings)
    try:
        normalise_url(settings.database_url)
    except DatabaseUrlError as exc:
        raise UsageError(str(exc)) from None
    setup_logging(settings)
    return asyncio.run(run(settings, catalog=catalog))


def _digest(args: argparse.Namespace) -> int:
    from bot.delivery.console import render_text
    from bot.digest.compose import compose
    from bot.storage import subscriptions as subs_repo
    from bot.storage.db import open_database

    try:
        window = parse_duration(args.since)
    except ValueError as exc:
        raise UsageError(f"--since: {exc}") from None
    if args.max_items < 1:
        raise UsageError("--max-items must be at least 1")
    settings = settings_from_args(args)
    catalog = _catalog(settings)
    themes = None
    if args.theme:
        themes = [t.strip().lower() for t in args.theme]
        unknown = [t for t in themes if t not in catalog.themes]
        if unknown:
            raise UsageError(
                f"unknown theme {unknown[0]!r}; known themes: {', '.join(catalog.themes)}"
            )
    now = datetime.now(UTC)
    engine = open_database(settings.database_url)
    try:
        with engine.connect() as conn:
            pending = subs_repo.recent_matches(conn, since=now - window, themes=themes)
    finally:
        engine.dispose()
    result = compose(
        pending, catalog=catalog, now=now, max_items=args.max_items, window_start=now - window
    )
    if result.digest is None:
        print(f"Nothing matched in the last {_human(window)}.")
        return 0
    sys.stdout.write(render_text(result.digest))
    return 0


def _human(window: timedelta) -> str:
    hours = window.total_seconds() / 3600
    return f"{hours:g} hours" if hours < 48 else f"{hours / 24:g} days"


def _claims(args: argparse.Namespace) -> int:
    from bot.commands.core import CommandCore
    from bot.delivery.console import render_claims
    from bot.storage.db import make_engine

    settings = settings_from_args(args)
    catalog = _catalog(settings)

    # Listing claims needs no stored data; a throwaway in-memory engine satisfies the core.
    engine = make_engine("sqlite://")
    try:
        answer = CommandCore(engine, catalog).claims()
    finally:
        engine.dispose()
    sys.stdout.write(render_claims(answer.claims))
    return 0


def _claim(args: argparse.Namespace) -> int:
    from bot.commands.answers import CommandError
    from bot.commands.core import CommandCore
    from bot.delivery.console import render_claim
    from bot.storage.db import open_database

    settings = settings_from_args(args)
    catalog = _catalog(settings)
    engine = open_database(settings.database_url)
    try:
        answer = CommandCore(engine, catalog).claim(args.claim_id)
    except CommandError as exc:
        raise UsageError(exc.message) from None
    finally:
        engine.dispose()
    sys.stdout.write(render_claim(answer.claim, answer.recent))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from bot.delivery.demo import run_demo

    print("counterparty demo: sample data (invented items), served from 127.0.0.1", flush=True)
    sent = asyncio.run(run_demo(sys.stdout))
    if not sent:
        print("demo: nothing was matched; the pipeline did not produce a digest", file=sys.stderr)
        return 1
    return 0
