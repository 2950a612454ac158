"""Explicit red flags: the curated rules of every language, evaluated clause by clause.

The rules of all languages run on every message (patients mix languages). A sign a rule finds is
judged only by the guards of its own clause: "no fever", "if my throat closes", "last year I
fainted" cancel the sign they stand next to, never a sign in another clause, so "just curious,
but my throat is closing" is an emergency. A guard's words come from the rule's language and the
language the message is written in, because one language's "if" is another's everyday word
(Italian *se* "if" is Spanish *se* in "se me hinchan los labios"). For the same reason another
language's rule is only ever sure when the message's own language agrees: alone, it asks ("my son
has a temp of 39" reads as an Italian fever, but the English guards know it is about a child).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Literal

from bot.core.safety.model import PRECEDENCE, Guard, Level, TriageFile
from bot.core.safety.phrases import compile_phrase, compiled, normalise, phrase_regex

_PUNCTUATION = r"[.!?;:()¿¡…](?!\d)"
_TOKEN = re.compile(r"[a-z0-9']+")
_SENTENCE = re.compile(r"(?<=[.!?…])\s+|\s*\n+\s*")


@dataclass(frozen=True, slots=True)
class RuleHit:
    level: Level
    rule: str  # "<lang>:<rule id>", for audits and tests
    sign: str  # the words that matched, normalised
    start: int  # offsets in the normalised message
    end: int
    guard: str | None = None  # the guard that applies, if any
    effect: Literal["cancel", "ask"] | None = None

    @property
    def counts(self) -> bool:
        """A sign no guard cancelled: certain, or worth a question when a guard says "ask"."""
        return self.effect != "cancel"


@dataclass(frozen=True)
class _CompiledRule:
    level: Level
    name: str
    pattern: re.Pattern[str]
    guards: tuple[str, ...]
    ask: bool = False


@dataclass(frozen=True)
class _CompiledGuard:
    guard: Guard
    patterns: tuple[re.Pattern[str], ...]  # one per phrase: a long phrase never hides a short one

    def finditer(self, text: str, start: int, end: int) -> list[re.Match[str]]:
        return [found for pattern in self.patterns for found in pattern.finditer(text, start, end)]


class RuleSet:
    """Compiled rules and guards of every language."""

    def __init__(self, files: Mapping[str, TriageFile]) -> None:
        self._files = dict(files)
        self._rules: dict[str, list[_CompiledRule]] = {}
        self._screens: dict[str, re.Pattern[str]] = {}
        for lang, file in files.items():
            language_rules = [
                _CompiledRule(level, f"{lang}:{rule.id}", pattern, file.guards_of(level, rule), rule.ask)
                for level, _, rule in file.every_rule()
                if (pattern := phrase_regex(rule.phrases)) is not None
            ]
            self._rules[lang] = language_rules
            if language_rules:  # one search tells whether any rule of the language can match at all
                self._screens[lang] = compiled("|".join(f"(?:{r.pattern.pattern})" for r in language_rules))
        self._guard_cache: dict[tuple[str, str, str], _CompiledGuard | None] = {}
        self._break_cache: dict[tuple[str, str], re.Pattern[str]] = {}
        self._filler = frozenset(w for f in files.values() for phrase in f.filler for w in _TOKEN.findall(phrase))

    def prepare(self) -> None:
        """Compile every guard and clause break now, at start-up, rather than at the first message that needs
        them (a guard's first use cost that message milliseconds)."""
        for rule_lang, rules in self._rules.items():
            for lang in self._files:
                self._breaks(rule_lang, lang)
                for name in {name for rule in rules for name in rule.guards}:
                    self._guard(rule_lang, lang, name)

    def hits(self, text: str, lang: str | None = None) -> list[RuleHit]:
        """Every sign the rules find in `text` (written in `lang`, if known), with the guard that applies."""
        normalised = normalise(text)
        found: list[RuleHit] = []
        for rule_lang, rules in self._rules.items():
            screen = self._screens.get(rule_lang)
            if screen is None or screen.search(normalised) is None:
                continue
            for rule in rules:
                for match in rule.pattern.finditer(normalised):
                    found.append(self._judge(normalised, match, rule, rule_lang, lang or rule_lang))
        if lang is not None and not any(h.effect is None and h.rule.startswith(f"{lang}:") for h in found):
            found = [replace(h, guard="another language", effect="ask") if h.effect is None else h for h in found]
        order = {level: i for i, level in enumerate(PRECEDENCE)}
        found.sort(key=lambda hit: (order[hit.level], hit.effect is not None, hit.start))
        return found

    # -- guards --------------------------------------------------------------------------------
    def _judge(self, text: str, match: re.Match[str], rule: _CompiledRule, rule_lang: str, lang: str) -> RuleHit:
        start, end = match.span()
        clause_start, clause_end = self._clause(text, start, end, rule_lang, lang)
        gaps = [match.span(i) for i in range(1, (match.re.groups or 0) + 1) if match.span(i)[0] >= 0]
        asked: str | None = None
        for name in rule.guards:
            compiled = self._guard(rule_lang, lang, name)
            if compiled is None or not self._applies(compiled, text, start, end, clause_start, clause_end, gaps):
                continue
            if compiled.guard.effect == "cancel" and rule.level is not Level.CRISIS:
                return RuleHit(rule.level, rule.name, match.group(0), start, end, name, "cancel")
            asked = asked or name  # words of self-harm are never explained away: at most, the bot asks
        if rule.ask and asked is None:
            asked = "rule"
        return RuleHit(rule.level, rule.name, match.group(0), start, end, asked, "ask" if asked else None)

    def _applies(
        self,
        compiled: _CompiledGuard,
        text: str,
        start: int,
        end: int,
        clause_start: int,
        clause_end: int,
        gaps: list[tuple[int, int]],
    ) -> bool:
        guard = compiled.guard

        def in_gap(found: re.Match[str]) -> bool:
            return any(g_start <= found.start() and found.end() <= g_end for g_start, g_end in gaps)

        if guard.scope == "clause":
            return any(
                found.end() <= start or found.start() >= end or in_gap(found)
                for found in compiled.finditer(text, clause_start, clause_end)
            )
        for found in compiled.finditer(text, clause_start, end):
            if in_gap(found):
                return True
            if found.end() > start:
                continue
            if guard.window is None:
                return True
            between = [w for w in _TOKEN.findall(text[found.end() : start]) if w not in self._filler]
            if len(between) < guard.window:
                return True
        return False

    def _guard(self, rule_lang: str, lang: str, name: str) -> _CompiledGuard | None:
        key = (rule_lang, lang, name)
        if key not in self._guard_cache:
            own = self._files[rule_lang].guards.get(name)
            other = self._files[lang].guards.get(name) if lang in self._files else None
            if own is None:
                self._guard_cache[key] = None
            else:
                phrases = [*own.phrases, *(other.phrases if other is not None else ())]
                patterns = tuple(p for phrase in dict.fromkeys(phrases) if (p := phrase_regex([phrase])) is not None)
                self._guard_cache[key] = _CompiledGuard(own, patterns) if patterns else None
        return self._guard_cache[key]

    def _clause(self, text: str, start: int, end: int, rule_lang: str, lang: str) -> tuple[int, int]:
        breaks = self._breaks(rule_lang, lang)
        clause_start = 0
        for boundary in breaks.finditer(text, 0, start):
            if boundary.end() <= start:
                clause_start = boundary.end()
        after = breaks.search(text, end)
        return clause_start, after.start() if after else len(text)

    def _breaks(self, rule_lang: str, lang: str) -> re.Pattern[str]:
        key = (rule_lang, lang)
        if key not in self._break_cache:
            words = [*self._files[rule_lang].clause_breaks]
            if lang in self._files and lang != rule_lang:
                words.extend(self._files[lang].clause_breaks)
            word_regex = phrase_regex(words)
            source = _PUNCTUATION + (f"|{word_regex.pattern}" if word_regex is not None else "")
            self._break_cache[key] = compiled(source)
        return self._break_cache[key]


@dataclass(frozen=True, slots=True)
class RuleProblem:
    """A problem with the rules of a file, located in it, for `aftercare check`."""

    loc: tuple[object, ...]
    message: str
    severity: Literal["error", "warning"] = "error"


def excerpt(text: str, sign: str, limit: int = 300) -> str:
    """The sentence of the original message that holds the sign, for the staff alert (whatever the length)."""
    for sentence in _SENTENCE.split(text):
        if sign and sign in normalise(sentence):
            return sentence.strip()[:limit]
    return sign[:limit]


def check_rules(
    file: TriageFile, lang: str, every: Mapping[str, TriageFile], *, examples: bool = True
) -> Iterator[RuleProblem]:
    """Problems with one language's rules: bad phrases, unknown guards, duplicates, examples that fail.

    Each problem has its location in the file. Examples run through the rules of every language, as
    messages do, so a rule that another language's guard breaks is found here.
    """
    seen: dict[str, tuple[object, ...]] = {}
    broken = False
    for field_name in ("clause_breaks", "filler"):
        for index, phrase in enumerate(getattr(file, field_name)):
            try:
                compile_phrase(phrase)
            except ValueError as exc:
                broken = True
                yield RuleProblem((field_name, index), f"{field_name}: {exc}")
    breaks = phrase_regex(list(file.clause_breaks)) if not broken else None
    for name, guard in file.guards.items():
        for index, phrase in enumerate(guard.phrases):
            try:
                compile_phrase(phrase)
            except ValueError as exc:
                broken = True
                yield RuleProblem(("guards", name, "phrases", index), f"guard '{name}': {exc}")
                continue
            if breaks is not None and breaks.search(normalise(phrase)):
                yield RuleProblem(
                    ("guards", name, "phrases", index),
                    f"guard '{name}': phrase '{phrase}' contains a clause break word: a clause ends there, so the "
                    "phrase only matches without it",
                    "warning",
                )
    for level in PRECEDENCE:
        for guard_name in file.default_guards.get(level, ()):
            if guard_name not in file.guards:
                yield RuleProblem(
                    ("default_guards", level.value), f"unknown guard '{guard_name}' in default_guards.{level.value}"
                )
    ids: set[str] = set()
    for level, index, rule in file.every_rule():
        loc: tuple[object, ...] = ("rules", level.value, index)
        if rule.id in ids:
            yield RuleProblem((*loc, "id"), f"duplicate rule id '{rule.id}'")
        ids.add(rule.id)
        for guard_name in rule.unless or ():
            if guard_name not in file.guards:
                yield RuleProblem((*loc, "unless"), f"rule '{rule.id}' names unknown guard '{guard_name}'")
        for p_index, phrase in enumerate(rule.phrases):
            try:
                key = compile_phrase(phrase)
            except ValueError as exc:
                broken = True
                yield RuleProblem((*loc, "phrases", p_index), f"rule '{rule.id}': {exc}")
                continue
            # A phrase of words always needs one (compile_phrase checks); only a raw regex can match nothing.
            if phrase.strip().startswith("re:") and compiled(key).fullmatch(""):
                yield RuleProblem(
                    (*loc, "phrases", p_index), f"rule '{rule.id}': phrase '{phrase}' matches an empty message"
                )
            if key in seen:
                yield RuleProblem(
                    (*loc, "phrases", p_index),
                    f"duplicate phrase '{phrase}' (also at {'.'.join(map(str, seen[key]))})",
                )
            seen.setdefault(key, (level.value, rule.id))
        if not rule.match:
            yield RuleProblem(loc, f"rule '{rule.id}' has no 'match' examples: write messages it must catch")
    if broken or not examples:
        return  # the examples run once every phrase compiles
    try:
        engine = RuleSet(every)
        for level, index, rule in file.every_rule():
            loc = ("rules", level.value, index)
            name = f"{lang}:{rule.id}"
            for e_index, message in enumerate(rule.match):
                if not any(h.rule == name and h.counts for h in engine.hits(message, lang)):
                    yield RuleProblem(
                        (*loc, "match", e_index), f"rule '{rule.id}' does not catch its example '{message}'"
                    )
            for e_index, message in enumerate(rule.ignore):
                if any(h.rule == name and h.counts for h in engine.hits(message, lang)):
                    yield RuleProblem(
                        (*loc, "ignore", e_index), f"rule '{rule.id}' catches '{message}', which it must not"
                    )
    except ValueError as exc:  # another language's phrases are broken: reported in its own file
        yield RuleProblem((), f"rule examples not checked: {exc}")
