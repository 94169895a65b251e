"""Golden-file tests of console-rendered digests.

Set ``COUNTERPARTY_UPDATE_GOLDEN=1`` to rewrite the golden files after an intended change, then
review the diff like any other code change."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from bot.delivery.console import ConsoleRenderer, ConsoleSender
from bot.delivery.records import OutboxMessage, Rejected, Sent
from bot.digest.compose import compose
from tests.digest_fixtures import CATALOG, NOW, match

GOLDEN = Path(__file__).parent / "golden"


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("COUNTERPARTY_UPDATE_GOLDEN") == "1":
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8")


def test_mixed_digest_matches_golden() -> None:
    rows = [
        match(
            1,
            "putin-deal",
            score=0.92,
            outlet="Outlet A",
            story_key="talks",
            title="Envoys meet again on an invented ceasefire draft",
        ),
        match(2, "putin-deal", score=0.81, outlet="Outlet B", story_key="talks"),
        match(3, "putin-deal", score=0.7, outlet="Outlet C", story_key="talks"),
        match(
            4,
            "russia-overstretched",
            score=0.77,
            outlet="Outlet B",
            hours_ago=5,
            title="Invented report: recruitment bonuses raised again",
            excerpt="The regional budget line for bonuses was raised for the third time "
            "this year, an invented official said, while stocks of older armour kept falling "
            "according to the same invented source.",
        ),
        match(4, "words-not-deeds", score=0.55, outlet="Outlet B", hours_ago=5),
        match(
            5,
            "words-not-deeds",
            score=0.6,
            outlet="Outlet D",
            hours_ago=2,
            title="Invented statement condemns a strike on a partner",
        ),
        match(5, "not-our-war", kind="claim", score=0.66, outlet="Outlet D", hours_ago=2),
    ]
    result = compose(rows, catalog=CATALOG, now=NOW, max_items=10)
    assert result.digest is not None
    (payload,) = ConsoleRenderer().render(result.digest)
    check_golden("console_mixed.txt", payload["text"])


def test_single_item_digest_matches_golden() -> None:
    result = compose([match(9, "words-not-deeds")], catalog=CATALOG, now=NOW, max_items=5)
    assert result.digest is not None
    (payload,) = ConsoleRenderer().render(result.digest)
    check_golden("console_single.txt", payload["text"])


def test_excerpt_is_a_block_without_added_quote_marks() -> None:
    """An excerpt is not necessarily a quotation: the console adds no quote marks, and keeps
    the ones an excerpt has of its own."""
    plain = "An invented sentence that nobody said."
    quoted = "“We will never agree,” an invented minister said."
    result = compose(
        [match(1, excerpt=plain), match(2, excerpt=quoted, hours_ago=2)],
        catalog=CATALOG,
        now=NOW,
        max_items=5,
    )
    assert result.digest is not None
    (payload,) = ConsoleRenderer().render(result.digest)
    text = str(payload["text"])
    assert f"    > {plain}\n" in text
    assert f"    > {quoted}\n" in text
    assert text.count("“") == 1
    assert text.count("”") == 1


def _message(payload: dict[str, object]) -> OutboxMessage:
    return OutboxMessage(
        id=1,
        platform="console",
        target="stdout",
        payload=payload,
        nonce="n1",
        attempts=0,
        subscription_id=None,
    )


async def test_console_sender_prints_and_reports_sent() -> None:
    stream = io.StringIO()
    outcome = await ConsoleSender(stream).send(_message({"text": "hello"}))
    assert outcome == Sent(message_id="console-n1")
    assert stream.getvalue() == "hello\n"


@pytest.mark.parametrize("payload", [{}, {"text": 3}])
async def test_console_sender_rejects_a_payload_without_text(payload: dict[str, object]) -> None:
    outcome = await ConsoleSender(io.StringIO()).send(_message(payload))
    assert isinstance(outcome, Rejected)
