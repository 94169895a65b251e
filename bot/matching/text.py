"""Plain-text helpers for matching: HTML to text, accent folding, sentence splitting, quote spans.

All functions are pure. :func:`fold` keeps string length, so offsets found in folded text are
valid in the original, which lets the matcher search folded text and cut excerpts from the
original.
"""

from __future__ import annotations

import html
import re
import unicodedata


def _fold_table() -> dict[int, str]:
    """One-character replacements: accented Latin letters to ASCII, typographic quotes to plain."""
    table: dict[int, str] = {}
    for code in range(0xC0, 0x250):
        char = chr(code)
        base = unicodedata.normalize("NFKD", char)[0]
        if base.isascii() and base.isalpha() and base != char:
            table[code] = base
    table.update({ord(c): "'" for c in "‘’‚‛ʼ′"})
    table.update({ord(c): '"' for c in "“”„‟″«»"})
    table.update({ord(c): "-" for c in "‐‑‒–—―"})
    table[0xA0] = " "
    return table


_FOLD = _fold_table()


def fold(text: str) -> str:
    """Accents off, quotes and dashes plain, same length as ``text`` (so offsets carry over)."""
    return text.translate(_FOLD)


_TAG = re.compile(
    r"<(?:script|style)\b.*?</(?:script|style)\s*>|<[^>]+>", re.DOTALL | re.IGNORECASE
)
_BLOCK = re.compile(r"</?(?:p|div|br|li|h[1-6]|blockquote|tr)\b[^>]*>", re.IGNORECASE)
_SPACE = re.compile(r"[ \t\r\f\v\u00a0]+")
_LINES = re.compile(r"\s*\n\s*")


def plain_text(text: str) -> str:
    """Markup removed (block tags become line breaks), entities decoded, whitespace squeezed."""
    if "<" in text and ">" in text:
        text = _BLOCK.sub("\n", text)
        text = _TAG.sub(" ", text)
    if "&" in text:
        text = html.unescape(text)
    text = _SPACE.sub(" ", text)
    return _LINES.sub("\n", text).strip()


# Words that end with a full stop without ending the sentence.
_ABBREVIATIONS = frozenset(
    [
        "mr",
        "mrs",
        "ms",
        "dr",
        "st",
        "sr",
        "jr",
        "gen",
        "col",
        "lt",
        "sgt",
        "capt",
        "sen",
        "rep",
        "gov",
        "pres",
        "prof",
        "rev",
        "no",
        "vs",
        "etc",
        "inc",
        "ltd",
        "co",
        "corp",
        "jan",
        "feb",
        "mar",
        "apr",
        "jun",
        "jul",
        "aug",
        "sep",
        "sept",
        "oct",
        "nov",
        "dec",
        "u.s",
        "u.k",
        "u.n",
        "e.u",
        "a.m",
        "p.m",
        "i.e",
        "e.g",
    ]
)
_BREAK = re.compile(r"[.!?…]+[\"'”’)\]]*\s+|\n+")
_OPENERS = "“‘\"'([" + "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def _open_quote(text: str) -> bool:
    """True when ``text`` leaves a double quotation open (so a full stop inside it is no break)."""
    curly = text.count("“") - text.count("”")
    straight = text.count('"') % 2
    return curly > 0 or straight == 1


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) offsets of the sentences of ``text``, quotations kept inside one sentence."""
    spans: list[tuple[int, int]] = []
    start = 0
    for match in _BREAK.finditer(text):
        end = match.end()
        if end >= len(text):
            break
        piece = text[start : match.start() + 1]
        if "\n" not in match.group(0):
            nxt = text[end]
            if nxt not in _OPENERS and not nxt.isupper():
                continue
            words = text[start : match.start()].split()
            last = words[-1].lower().strip("(\"'“‘") if words else ""
            if last in _ABBREVIATIONS or (len(last) == 1 and last.isalpha()):
                continue
            if _open_quote(piece):
                continue
        stripped_end = match.start() + len(match.group(0).rstrip())
        if text[start:stripped_end].strip():
            spans.append((start, stripped_end))
        start = end
    if text[start:].strip():
        spans.append((start, len(text.rstrip())))
    return spans


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text`` as strings (see :func:`sentence_spans`)."""
    return [text[a:b].strip() for a, b in sentence_spans(text)]


_QUOTE = re.compile(r"“[^“”]{2,}”|\"[^\"]{2,}\"|‘[^‘’]{8,}’")


def quote_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) offsets of the quotations in ``text``, quote marks included."""
    return [(m.start(), m.end()) for m in _QUOTE.finditer(text)]
