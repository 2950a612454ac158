"""Safety triage: decide whether a message reports a danger sign, before any FAQ matching.

The rules are content (`faq/<lang>/triage.yaml`), and the rules of every language run
on every message, because patients mix languages. A symptom found in a message is
ignored when the same clause negates it ("no fever") or puts it under a condition
("if I get a fever"), or when the whole message is calm (asked in advance, about the
distant past). Self-harm words are never ignored.

Negators and calm markers apply across languages; conditionals and clause breaks apply
to the symptoms of their own language and of the language the message is written in
(English "if" cancels the Italian rule for "pus" in "if I ever got pus"), not to all,
because one language's "if" is another's everyday word (Italian *se* "if" is Spanish *se*,
as in "se me hinchan los labios"), and Polish *a* "and" is the English article.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from bot.core.content import TriageRules
from bot.core.text import fold


class Level(StrEnum):
    URGENT = "urgent"
    EMERGENCY = "emergency"
    CRISIS = "crisis"


# Checked in this order; the first level that fires wins.
PRECEDENCE = (Level.CRISIS, Level.EMERGENCY, Level.URGENT)
# A negator must stand among this many words right before the symptom.
NEGATION_WINDOW = 3
# Words skipped when counting that window ("I don't have *a* fever").
_ARTICLES = frozenset(
    ["a", "an", "the", "any", "il", "lo", "la", "le", "gli", "un", "uno", "una", "el", "los", "las", "del", "della"]
)
_CLAUSE_PUNCTUATION = r"[.!?;,:\n()](?!\d)"
_TOKEN = re.compile(r"[a-z0-9']+")


@dataclass(frozen=True, slots=True)
class TriageResult:
    level: Level | None
    excerpt: str = ""  # the words that raised it, for the staff alert

    def __bool__(self) -> bool:
        return self.level is not None


@dataclass(frozen=True, slots=True)
class _LanguageRules:
    lang: str
    pattern: re.Pattern[str]
    conditionals: re.Pattern[str] | None
    clause_break: re.Pattern[str]


def _clause_breaks(words: Iterable[str]) -> re.Pattern[str]:
    breaks = sorted({fold(w) for w in words if w.strip()}, key=len, reverse=True)
    alternatives = "|".join(re.escape(b) for b in breaks)
    return re.compile(_CLAUSE_PUNCTUATION + (rf"|\b(?:{alternatives})\b" if alternatives else ""))


def _alternation(patterns: Iterable[str]) -> re.Pattern[str] | None:
    parts = [f"(?:{p})" for p in patterns]
    return re.compile("|".join(parts), re.IGNORECASE) if parts else None


def _phrases(phrases: Iterable[str]) -> re.Pattern[str] | None:
    cleaned = sorted({fold(p) for p in phrases if p.strip()}, key=len, reverse=True)
    if not cleaned:
        return None
    return re.compile(r"(?<![a-z0-9'])(?:" + "|".join(re.escape(p) for p in cleaned) + r")(?![a-z0-9'])")


class Triage:
    """Compiled safety rules of all languages."""

    def __init__(self, rules: Mapping[str, TriageRules]) -> None:
        every = list(rules.values())
        self._levels: dict[Level, list[_LanguageRules]] = {
            level: [
                _LanguageRules(lang, pattern, _phrases(r.conditionals), _clause_breaks(r.clause_breaks))
                for lang, r in rules.items()
                if (pattern := _alternation(getattr(r, level.value))) is not None
            ]
            for level in PRECEDENCE
        }
        self._conditionals = {lang: _phrases(r.conditionals) for lang, r in rules.items()}
        self._calm = _alternation(p for r in every for p in r.calm)
        self._negators = _phrases(n for r in every for n in r.negators)

    def assess(self, text: str, lang: str | None = None) -> TriageResult:
        """The level of danger the message reports; `lang` is the language it is written in, if known."""
        folded = fold(text)
        message_conditionals = self._conditionals.get(lang or "")
        for rules in self._levels[Level.CRISIS]:
            if found := rules.pattern.search(folded):
                return TriageResult(Level.CRISIS, found.group(0))
        for level in (Level.EMERGENCY, Level.URGENT):
            for rules in self._levels[level]:
                for found in rules.pattern.finditer(folded):
                    if not self._cancelled(folded, found.start(), rules, message_conditionals):
                        # Calm markers are checked only now: most messages report nothing at all.
                        if self._calm is not None and self._calm.search(folded):
                            return TriageResult(None)
                        return TriageResult(level, found.group(0))
        return TriageResult(None)

    def _cancelled(
        self, folded: str, start: int, rules: _LanguageRules, message_conditionals: re.Pattern[str] | None
    ) -> bool:
        """True when the clause before the symptom negates it or makes it hypothetical."""
        clause_start = 0
        for boundary in rules.clause_break.finditer(folded, 0, start):
            clause_start = boundary.end()
        before = folded[clause_start:start]
        for conditionals in (rules.conditionals, message_conditionals):
            if conditionals is not None and conditionals.search(before):
                return True
        if self._negators is None:
            return False
        tail = [w for w in _TOKEN.findall(before) if w not in _ARTICLES][-NEGATION_WINDOW:]
        return bool(tail) and self._negators.search(" ".join(tail)) is not None
