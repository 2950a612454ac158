"""Facts every answer must agree on, written once in `faq/facts.yaml` and placed into texts by placeholders.

A waiting time typed into one answer drifts from the same waiting time in another answer or another
language. So the numbers that must agree everywhere (how long before make-up, sport or alcohol;
when to stop non-prescribed aspirin; how many sessions) are facts: each has a value ("24h", "2-3d")
and its wording in every language, and texts say `{makeup_wait}`. `check_numbers` finds a duration
typed into a text where a fact says it (use the placeholder) or where a sentence about a fact's
subject gives a different one (a contradiction).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bot.core.text import fold

# Units of a duration, as written in a fact's value.
UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks", "mo": "months"}
_VALUE = re.compile(r"^(\d+)(?:-(\d+))?(mo|m|h|d|w)$")

# Time-unit words per language (folded), for finding durations typed into texts.
UNIT_WORDS: dict[str, dict[str, str]] = {
    "en": {"minute": "m", "min": "m", "hour": "h", "hr": "h", "day": "d", "week": "w", "month": "mo"},
    "it": {"minut": "m", "or": "h", "giorn": "d", "settiman": "w", "mes": "mo"},
    "pl": {
        "minut": "m",
        "godzin": "h",
        "dni": "d",
        "dzien": "d",
        "doba": "d",
        "dob": "d",
        "tydzien": "w",
        "tygodni": "w",
        "miesiac": "mo",
        "miesiec": "mo",
    },
    "es": {"minuto": "m", "hora": "h", "dia": "d", "semana": "w", "mes": "mo"},
}
_NUMBER = r"(\d+)(?:\s*(?:-|–|—|to|a|al|do|o|or|i|e|y|and)\s*(\d+))?"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class Fact(_Strict):
    value: str  # "24h", "2-3d", "2w", "3-6" (a count with no unit)
    text: dict[str, str] = Field(min_length=1)  # how it reads in each language
    about: dict[str, tuple[str, ...]] = {}  # per language: words whose sentences must not state another duration

    @field_validator("value")
    @classmethod
    def _known_value(cls, value: str) -> str:
        if not (_VALUE.match(value) or re.fullmatch(r"\d+(?:-\d+)?", value)):
            raise ValueError(f"value '{value}' must be a number or range with a unit: 24h, 2-3d, 2w, 2-4mo, 3-6")
        return value


class FactsFile(_Strict):
    facts: dict[str, Fact] = {}


@dataclass(frozen=True, slots=True)
class Duration:
    low: int
    high: int
    unit: str  # a key of UNITS

    def __str__(self) -> str:
        span = f"{self.low}" if self.low == self.high else f"{self.low}-{self.high}"
        return f"{span}{self.unit}"


def parse_value(value: str) -> Duration | None:
    """The duration a fact's value states; None for a plain count such as "3-6" sessions."""
    found = _VALUE.match(value)
    if found is None:
        return None
    low = int(found.group(1))
    return Duration(low, int(found.group(2) or low), found.group(3))


def _unit_pattern(lang: str) -> re.Pattern[str] | None:
    words = UNIT_WORDS.get(lang)
    if not words:
        return None
    stems = "|".join(sorted(map(re.escape, words), key=len, reverse=True))
    return re.compile(rf"(?<![\d.,]){_NUMBER}\s*(?:-\s*)?({stems})[a-z]*\b|(?<![\d.,]){_NUMBER}\s*(h)\b")


def durations(text: str, lang: str) -> Iterator[tuple[Duration, str]]:
    """Durations typed into a (folded or not) text, with the words they were written as."""
    pattern = _unit_pattern(lang)
    if pattern is None:
        return
    folded = fold(text)
    words = UNIT_WORDS[lang]
    for found in pattern.finditer(folded):
        if found.group(1) is not None:
            low, high, stem = found.group(1), found.group(2), found.group(3)
            unit = words[stem]
        else:
            low, high, unit = found.group(4), found.group(5), "h"
        yield Duration(int(low), int(high or low), unit), found.group(0)


_SENTENCE = re.compile(r"(?<=[.!?;:\n•])\s+|\n")


def check_numbers(text: str, lang: str, facts: Mapping[str, Fact]) -> Iterator[str]:
    """Problems with durations typed into `text`: one a fact states (use its placeholder), or one that
    contradicts the fact whose subject the sentence is about."""
    parsed = {name: parse_value(fact.value) for name, fact in facts.items()}
    for sentence in _SENTENCE.split(text):
        folded = fold(sentence)
        for duration, written in durations(sentence, lang):
            same = [f"{{{name}}}" for name, value in parsed.items() if value == duration]
            if same:
                which = same[0] if len(same) == 1 else "one of " + ", ".join(same)
                yield f"'{written}' is the fact {which}: write its placeholder, so every text stays in step"
                continue
            for name, fact in facts.items():
                value = parsed[name]
                if value is None or value.unit != duration.unit:
                    continue
                if any(_mentions(folded, word) for word in fact.about.get(lang, ())):
                    yield (
                        f"'{written}' contradicts the fact {{{name}}} ({fact.text.get(lang, fact.value)}) "
                        "in a sentence about it: use the placeholder, or a fact of its own"
                    )
                    break


def _mentions(folded: str, word: str) -> bool:
    stem = fold(word).rstrip("*")
    if word.endswith("*"):
        return re.search(rf"(?<![a-z]){re.escape(stem)}", folded) is not None
    return re.search(rf"(?<![a-z]){re.escape(stem)}(?![a-z])", folded) is not None


def check_fact_texts(name: str, fact: Fact, languages: tuple[str, ...]) -> Iterator[str]:
    """A fact must read in every language, and each wording must state its value's numbers."""
    numbers = re.findall(r"\d+", fact.value)
    for lang in languages:
        text = fact.text.get(lang)
        if text is None:
            yield f"missing translation: fact '{name}' has no text in '{lang}'"
            continue
        if any(n not in re.findall(r"\d+", text) for n in numbers):
            yield f"fact '{name}' in '{lang}' reads '{text}', which does not state its value {fact.value}"


def values(facts: Mapping[str, Fact], lang: str, default_lang: str) -> dict[str, str]:
    """The placeholder values of the facts in one language."""
    return {name: fact.text.get(lang) or fact.text.get(default_lang) or fact.value for name, fact in facts.items()}
