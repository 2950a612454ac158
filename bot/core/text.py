"""Text normalisation shared by triage and matching.

Patients type without diacritics, so both the content and the message are folded
to the same accent-free, lower-case form before anything is compared.
"""

from __future__ import annotations

import re
import unicodedata

# Letters that NFKD does not decompose into base + combining mark.
_SPECIAL = str.maketrans({"ł": "l", "Ł": "l", "ß": "ss", "æ": "ae", "ø": "o", "đ": "d", "ı": "i"})
_APOSTROPHES = str.maketrans({"’": "'", "‘": "'", "`": "'", "´": "'", "ʼ": "'"})
_SPACE = re.compile(r"\s+")
_WORD = re.compile(r"[a-z0-9]+")


class _CombiningMarks(dict[int, int | None]):
    """A `str.translate` table that drops combining marks, filled in as characters are met: the table
    lookups run in C, where testing each character in Python made folding most of content loading."""

    def __missing__(self, code: int) -> int | None:
        value = None if unicodedata.combining(chr(code)) else code
        if len(self) < _MARKS_KEPT:
            self[code] = value
        return value


_MARKS_KEPT = 20_000  # distinct characters remembered (a message of every script cannot grow it for ever)
_MARKS = _CombiningMarks()


def fold(text: str) -> str:
    """Lower-case, strip accents and unify apostrophes and white space; punctuation stays."""
    text = text.translate(_APOSTROPHES)
    if not text.isascii():  # (ASCII has nothing to decompose)
        text = unicodedata.normalize("NFKD", text.translate(_SPECIAL)).translate(_MARKS)
    return _SPACE.sub(" ", text.lower()).strip()


def words(folded: str) -> list[str]:
    """The alphanumeric words of an already folded text."""
    return _WORD.findall(folded)


def split_message(text: str, limit: int = 4096) -> list[str]:
    """Split a long reply into messages of at most `limit` characters, at paragraph boundaries when possible."""
    if len(text) <= limit:
        return [text]
    parts: list[str] = []
    current = ""
    for paragraph in text.split("\n\n"):
        candidate = f"{current}\n\n{paragraph}" if current else paragraph
        if len(candidate) <= limit:
            current = candidate
            continue
        if current:
            parts.append(current)
        while len(paragraph) > limit:  # one paragraph longer than a message: cut at a line, then a space
            cut = paragraph.rfind("\n", 0, limit)
            if cut <= 0:
                cut = paragraph.rfind(" ", 0, limit)
            if cut <= 0:
                cut = limit
            parts.append(paragraph[:cut].rstrip())
            paragraph = paragraph[cut:].lstrip()
        current = paragraph
    if current:
        parts.append(current)
    return parts
