"""Safety phrases: the small pattern language curators write triage rules in, compiled to regexes.

A phrase is words as a patient types them, matched on the normalised message (lower case, no
accents, no invisible characters), whole words only:

* ``breath*``      a word starting with "breath" (breathe, breathing, breathless)
* ``{tight*|clos*|swell*}``   one of the alternatives; an alternative may be several words
* ``[really]``     an optional word (or ``[a bit]``, ``[very|so]``)
* ``...``          up to four other words in between (``throat ... tight*``); a guard's words there
                   count as the sign's context ("throat is not tight" is negated)
* ``can't``        the apostrophe is optional: also "cant"
* ``re:<regex>``   a raw regular expression, for what words cannot say (a temperature of 38.5)

Phrases are short and readable, so a clinic can audit what the bot reacts to; the reusable
conditions that cancel a rule ("no", "if", "last year") are guards, written once per language.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping

from bot.core.text import fold

MAX_PATTERN = 200
GAP_WORDS = 4
_SEP = r"[\s,]+"
_WORD = r"[a-z0-9']+"
_LEFT = r"(?<![a-z0-9'])"
_RIGHT = r"(?![a-z0-9'])"
# Characters that join or separate words without being letters: treated as spaces.
_LINES = re.compile(r"\s*\n\s*")
_JOINERS = str.maketrans({"-": " ", "/": " ", "_": " ", "–": " ", "—": " ", "·": " "})


class PhraseError(ValueError):
    """A phrase that cannot be compiled; the message says why, for `aftercare check`."""


def normalise(text: str) -> str:
    """The form rules and guards are matched on: folded, invisible characters removed, hyphens as spaces.

    Zero-width spaces, joiners, soft hyphens and other format characters (Unicode category Cf) are
    dropped, so "thr\u200boat" is "throat": a danger sign cannot hide inside an invisible character.
    """
    visible = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")
    # A line break ends a clause, and folding would make it a space: keep it as punctuation.
    return fold(_LINES.sub(" ; ", visible.translate(_JOINERS)))


_COMPILED: dict[str, re.Pattern[str]] = {}


def compiled(source: str) -> re.Pattern[str]:
    """`re.compile` remembered for good: the rules are compiled again for every language's check and for the
    bot, and their thousands of large patterns overflow the `re` module's own small cache (start-up took 11 s)."""
    found = _COMPILED.get(source)
    if found is None:
        found = _COMPILED[source] = re.compile(source)
    return found


def compiled_patterns() -> dict[str, re.Pattern[str]]:
    """Every pattern compiled so far, by source (what a start-up cache can keep)."""
    return dict(_COMPILED)


def remember(patterns: Mapping[str, re.Pattern[str]]) -> None:
    """Patterns compiled elsewhere (read back from a start-up cache): `compiled` will not compile them again."""
    for source, pattern in patterns.items():
        if pattern.pattern == source:
            _COMPILED.setdefault(source, pattern)


_SOURCES: dict[str, str] = {}


def compile_phrase(phrase: str) -> str:
    """The regex source of a phrase (without word boundaries); raises PhraseError."""
    found = _SOURCES.get(phrase)
    if found is None:
        found = _SOURCES[phrase] = _compile_phrase(phrase)
    return found


def phrase_sources() -> dict[str, str]:
    """Every phrase compiled so far and its regex source (what a start-up cache can keep)."""
    return dict(_SOURCES)


def remember_sources(sources: Mapping[str, str]) -> None:
    """Phrases compiled by an earlier start (read back from its cache)."""
    for phrase, source in sources.items():
        _SOURCES.setdefault(phrase, source)


def _compile_phrase(phrase: str) -> str:
    source = phrase.strip()
    if not source:
        raise PhraseError("empty phrase")
    if len(source) > MAX_PATTERN:
        raise PhraseError(f"phrase is {len(source)} characters; at most {MAX_PATTERN}")
    if source.startswith("re:"):
        raw = source[3:].strip()
        try:
            compiled(raw)
        except re.error as exc:
            raise PhraseError(f"invalid regular expression: {exc}") from None
        return raw
    return _sequence(normalise(source), phrase)


def phrase_regex(phrases: list[str] | tuple[str, ...]) -> re.Pattern[str] | None:
    """One regex matching any of the phrases as whole words, longest alternatives first."""
    # Longest first, then alphabetical: the same phrases always make the same regex (a set's order changes
    # from one process to the next, and the start-up cache keys patterns by their source).
    parts = sorted({compile_phrase(p) for p in phrases}, key=lambda part: (-len(part), part))
    if not parts:
        return None
    return compiled(_LEFT + "(?:" + "|".join(f"(?:{p})" for p in parts) + ")" + _RIGHT)


def _sequence(source: str, original: str) -> str:
    items = _items(source, original)
    if all(kind in {"optional", "gap"} for kind, _ in items):
        raise PhraseError(f"phrase '{original}' has no required word")
    out = ""
    started = False
    for kind, regex in items:
        if kind == "gap":
            if not started:
                raise PhraseError(f"phrase '{original}' starts with '...'")
            # A capturing group: a guard's word inside the gap ("throat is NOT closing") still counts.
            out += f"((?:{_SEP}{_WORD}){{0,{GAP_WORDS}}})"
        elif kind == "optional":
            out += f"(?:{_SEP}{regex})?" if started else f"(?:{regex}{_SEP})?"
        else:
            out += f"{_SEP}{regex}" if started else regex
            started = True
    return out


def _items(source: str, original: str) -> list[tuple[str, str]]:
    """Split a phrase into (kind, regex) items: word, optional, gap."""
    items: list[tuple[str, str]] = []
    i = 0
    while i < len(source):
        ch = source[i]
        if ch.isspace():
            i += 1
        elif source.startswith("...", i):
            items.append(("gap", ""))
            i += 3
        elif ch in "{[":
            close = _closing(source, i, original)
            inner = source[i + 1 : close]
            regex = _alternatives(inner, original) if ch == "{" else _optional(inner, original)
            items.append(("optional" if ch == "[" else "word", regex))
            i = close + 1
        elif ch in "}]|":
            raise PhraseError(f"unbalanced '{ch}' in phrase '{original}'")
        else:
            end = i
            while end < len(source) and not source[end].isspace() and source[end] not in "{}[]|":
                end += 1
            items.append(("word", _word(source[i:end], original)))
            i = end
    return items


def _closing(source: str, start: int, original: str) -> int:
    pairs = {"{": "}", "[": "]"}
    stack = [pairs[source[start]]]
    for j in range(start + 1, len(source)):
        if source[j] in pairs:
            stack.append(pairs[source[j]])
        elif source[j] in "}]":
            if source[j] != stack.pop():
                raise PhraseError(f"mismatched brackets in phrase '{original}'")
            if not stack:
                return j
    raise PhraseError(f"unclosed '{source[start]}' in phrase '{original}'")


def _split_top(inner: str) -> list[str]:
    """Split on '|' outside nested brackets."""
    parts, depth, current = [], 0, ""
    for ch in inner:
        if ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
        if ch == "|" and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return parts


def _alternatives(inner: str, original: str) -> str:
    options = [part.strip() for part in _split_top(inner)]
    if any(not option for option in options):
        raise PhraseError(f"empty alternative in phrase '{original}'")
    return "(?:" + "|".join(_sequence(option, original) for option in options) + ")"


def _optional(inner: str, original: str) -> str:
    if not inner.strip():
        raise PhraseError(f"empty optional part in phrase '{original}'")
    if len(_split_top(inner)) > 1:  # [a|b]: one of them, or none
        return _alternatives(inner, original)
    return "(?:" + _sequence(inner.strip(), original) + ")"


def _word(token: str, original: str) -> str:
    if "..." in token:
        raise PhraseError(f"write '...' as a word of its own in phrase '{original}'")
    out = ""
    for ch in token:
        if ch == "*":
            out += r"[a-z0-9']*"
        elif ch == "'":
            out += "'?"
        elif ch.isalnum() or ch in ".,:;!?°%+#&":
            out += re.escape(ch)
        else:
            raise PhraseError(f"character '{ch}' is not allowed in phrase '{original}' (use re: for regexes)")
    if not out.replace("'?", "").replace(r"[a-z0-9']*", ""):
        raise PhraseError(f"word '{token}' in phrase '{original}' has no letters")
    return out
