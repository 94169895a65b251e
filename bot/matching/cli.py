"""Sub-commands of the matching capability: ``match`` and ``eval`` (no database needed).

* ``counterparty match --jsonl FILE`` (``-`` for stdin) writes one JSON line per input item:
  ``{"id", "themes": [{"id", "score", "excerpt"}], "claims": [{"id", "score"}]}``.
* ``counterparty eval FILE [--items ITEMS] [--split NAME]`` prints per-theme precision,
  recall and F1 with micro and macro averages, for the matcher and for a keyword-only baseline.

The catalog is the packaged one unless ``--themes FILE`` is given, or ``--config`` names a
``feeds.toml`` whose ``[bot].themes_file`` replaces it. Bad input is a usage error (exit 2) naming
the file and line; nothing is half-written for the lines before it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from bot.cli import UsageError, settings_from_args
from bot.matching.catalog import Catalog, CatalogError, load_catalog, themes_path_from_settings
from bot.matching.eval import (
    EvalInputError,
    KeywordBaseline,
    Labelled,
    claim_recall,
    evaluate,
    format_claims,
    format_report,
    item_from_json,
    read_json_lines,
    read_labelled,
)
from bot.matching.matcher import Matcher
from bot.matching.records import MatchResult


def _catalog(args: argparse.Namespace) -> Catalog:
    path: Path | None = args.themes
    if path is None and args.config is not None:
        path = themes_path_from_settings(settings_from_args(args))
    try:
        return load_catalog(path)
    except CatalogError as exc:
        raise UsageError(
            f"the theme file {exc.path} is not usable:\n  " + "\n  ".join(exc.problems)
        ) from None


def result_json(result: MatchResult) -> dict[str, Any]:
    """The ``match`` command's JSON object for one result."""
    return {
        "id": result.item_id,
        "themes": [
            {"id": m.theme_id, "score": m.score, "excerpt": m.excerpt} for m in result.themes
        ],
        "claims": [{"id": c.claim_id, "score": c.score} for c in result.claims],
    }


def _match_lines(matcher: Matcher, handle: TextIO, name: str) -> list[str]:
    """All output lines for the input, or a usage error naming the bad line (nothing written)."""
    out: list[str] = []
    try:
        for where, data in read_json_lines(handle, name):
            result = matcher.match(item_from_json(data, where))
            out.append(json.dumps(result_json(result), ensure_ascii=False))
    except EvalInputError as exc:
        raise UsageError(str(exc)) from None
    return out


def cmd_match(args: argparse.Namespace) -> int:
    matcher = Matcher(_catalog(args))
    if args.jsonl == "-":
        lines = _match_lines(matcher, sys.stdin, "<stdin>")
    else:
        try:
            with Path(args.jsonl).open(encoding="utf-8") as handle:
                lines = _match_lines(matcher, handle, args.jsonl)
        except OSError as exc:
            raise UsageError(f"cannot read {args.jsonl}: {exc.strerror}") from None
    for line in lines:
        sys.stdout.write(line + "\n")
    return 0


def excerpt_coverage(matcher: Matcher, labelled: list[Labelled]) -> tuple[int, int]:
    """(excerpts that show their theme alone, all theme matches) over the labelled items."""
    shown = total = 0
    for example in labelled:
        for match in matcher.match(example.item).themes:
            total += 1
            shown += matcher.shows_theme(match.theme_id, match.excerpt)
    return shown, total


def cmd_eval(args: argparse.Namespace) -> int:
    catalog = _catalog(args)
    try:
        labelled = read_labelled(Path(args.file), args.items, catalog.themes)
    except EvalInputError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"cannot read {exc.filename}: {exc.strerror}") from None
    if args.split != "all":
        splits = sorted({x.split for x in labelled if x.split})
        labelled = [x for x in labelled if x.split == args.split]
        if not labelled:
            known = ", ".join(splits) or "none: the file has no 'split' fields"
            raise UsageError(f"no labelled items in split {args.split!r} (splits: {known})")
    if not labelled:
        raise UsageError("no labelled items")
    matcher = Matcher(catalog)
    theme_ids = list(catalog.themes)
    reports = (
        evaluate(
            "matcher",
            lambda item: [m.theme_id for m in matcher.match(item).themes],
            labelled,
            theme_ids,
        ),
        evaluate("keyword baseline", KeywordBaseline(catalog), labelled, theme_ids),
    )
    print(f"split: {args.split}")
    for report in reports:
        print()
        print(format_report(report))
    print()
    print(
        format_claims(
            claim_recall(
                lambda item: [c.claim_id for c in matcher.match(item).claims],
                labelled,
                list(catalog.claims),
            )
        )
    )
    print()
    shown, total = excerpt_coverage(matcher, labelled)
    print(
        f"excerpts that show their theme on their own: {shown}/{total}"
        f" ({shown / total if total else 0:.1%}; a whole rule, or two of its term groups)"
    )
    print(
        f"macro-F1 gain over the keyword baseline: {reports[0].macro_f1 - reports[1].macro_f1:+.3f}"
    )
    return 0


def register(commands: argparse._SubParsersAction[Any]) -> None:
    """Add ``match`` and ``eval`` to the ``counterparty`` parser."""
    match = commands.add_parser(
        "match", help="match JSON-lines items against the themes and claims (no database)"
    )
    match.add_argument(
        "--jsonl", required=True, metavar="FILE", help="items, one JSON object a line ('-': stdin)"
    )
    match.add_argument(
        "--themes", type=Path, default=None, metavar="FILE", help="theme file (default: packaged)"
    )
    match.set_defaults(handler=cmd_match)

    ev = commands.add_parser(
        "eval", help="precision/recall/F1 of the matcher and a keyword baseline on labelled items"
    )
    ev.add_argument(
        "file", metavar="FILE", help="labelled JSON lines: id, labels[, split][, item text]"
    )
    ev.add_argument(
        "--items", type=Path, default=None, metavar="ITEMS", help="item texts joined by id"
    )
    ev.add_argument(
        "--split",
        default="all",
        metavar="NAME",
        help="score only the items of this split (e.g. tune, test, fresh-1); default: all",
    )
    ev.add_argument(
        "--themes", type=Path, default=None, metavar="FILE", help="theme file (default: packaged)"
    )
    ev.set_defaults(handler=cmd_eval)
