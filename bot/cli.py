"""The ``counterparty`` command line: global options, then one sub-command per job.

Each capability registers its own sub-commands (``bot.feeds.cli``, ``bot.matching.cli``,
``bot.delivery.cli``, ``bot.ops.cli``); this module only owns the global options and the
error-to-exit-code contract:

* 0 - success; 1 - the job ran and found a problem (``check``, ``health``); 2 - bad usage or
  configuration (a clear message on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from bot import __version__
from bot.settings import ConfigError, Settings, load_settings

Handler = Callable[[argparse.Namespace], int]


class UsageError(Exception):
    """A command was given arguments it cannot use; the message is shown to the user."""


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Load the validated settings named by ``--config``/``--db`` (or the environment)."""
    return load_settings(args.config, database_url=args.db)


def build_parser() -> argparse.ArgumentParser:
    from bot.delivery import cli as delivery_cli
    from bot.feeds import cli as feeds_cli
    from bot.matching import cli as matching_cli
    from bot.ops import cli as ops_cli

    parser = argparse.ArgumentParser(
        prog="counterparty",
        description="News-commentary bot: polls feeds, matches items to the essay's themes and "
        "claims, and posts digests to Discord, Telegram or the console.",
    )
    parser.add_argument("--version", action="version", version=f"counterparty {__version__}")
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="configuration file (default: $COUNTERPARTY_CONFIG, else ./feeds.toml)",
    )
    parser.add_argument(
        "--db",
        default=None,
        metavar="URL",
        help="database URL (default: $COUNTERPARTY_DATABASE_URL, else the config's, "
        "else sqlite:///data/counterparty.db)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (feeds_cli, matching_cli, delivery_cli, ops_cli):
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except ConfigError as exc:
        print("configuration error:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    except UsageError as exc:
        print(f"counterparty {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
