"""The safety content of one language (`faq/<lang>/triage.yaml`): rules, guards and example messages.

Curators read and extend it as plain text: rules are short phrases (see `phrases`) that name the
guards that cancel them; every rule carries messages it must and must not match, which `aftercare
check` runs; example messages per level teach the semantic classifier what danger sounds like in
words no rule lists, and hard negatives teach it what calm sounds like.
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MIN_EXAMPLES = 60  # per level and language: fewer and the classifier's recall is a guess


class Level(StrEnum):
    """How urgently a message needs a person; ordered from the least to the most strict."""

    URGENT = "urgent"
    EMERGENCY = "emergency"
    CRISIS = "crisis"


# The order the rules are tried in and the stricter level wins: crisis, emergency, urgent.
PRECEDENCE = (Level.CRISIS, Level.EMERGENCY, Level.URGENT)


def stricter(a: Level | None, b: Level | None) -> Level | None:
    """The stricter of two levels (emergency over urgent; crisis apart, and first)."""
    if a is None or b is None:
        return a or b
    return min(a, b, key=PRECEDENCE.index)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class Guard(_Strict):
    """Words that make a sign in the same clause not a report of danger now ("no", "if", "last year")."""

    # before: between the start of the clause and the sign (within `window` words, if given);
    # clause: anywhere in the sign's clause, before or after it.
    scope: Literal["before", "clause"] = "before"
    window: int | None = Field(default=None, ge=1, le=12)
    # cancel: the sign does not count; ask: the bot asks whether it is happening now.
    effect: Literal["cancel", "ask"] = "cancel"
    phrases: tuple[str, ...] = Field(min_length=1)


class Rule(_Strict):
    id: str = Field(pattern=r"^[a-z0-9_]{1,40}$")
    phrases: tuple[str, ...] = Field(min_length=1)
    # Guards that cancel this rule; omitted: the level's defaults (`default_guards`).
    unless: tuple[str, ...] | None = None
    # A sign this rule finds is never certain on its own: the bot asks (plain "my lips are swollen").
    ask: bool = False
    match: tuple[str, ...] = Field(default=(), description="messages the rule must catch")
    ignore: tuple[str, ...] = Field(default=(), description="messages the rule must not catch")


ExampleGroup = str | tuple[str, ...]  # one message, or paraphrases of one message (kept in one CV fold)


class Examples(_Strict):
    emergency: tuple[ExampleGroup, ...] = ()
    urgent: tuple[ExampleGroup, ...] = ()
    crisis: tuple[ExampleGroup, ...] = ()
    none: tuple[ExampleGroup, ...] = ()  # hard negatives: idioms, hypotheticals, negations, past events...

    @field_validator("emergency", "urgent", "crisis", "none", mode="before")
    @classmethod
    def _groups(cls, value: object) -> object:
        if isinstance(value, list):
            return tuple(tuple(item) if isinstance(item, list) else item for item in value)
        return value

    def groups(self, label: str) -> tuple[tuple[str, ...], ...]:
        """The examples of a label ("none" or a level) as groups of paraphrases."""
        items: tuple[ExampleGroup, ...] = getattr(self, label)
        return tuple((item,) if isinstance(item, str) else item for item in items)

    def count(self, label: str) -> int:
        return sum(len(group) for group in self.groups(label))


class Rules(_Strict):
    emergency: tuple[Rule, ...] = ()
    urgent: tuple[Rule, ...] = ()
    crisis: tuple[Rule, ...] = ()

    def of(self, level: Level) -> tuple[Rule, ...]:
        rules: tuple[Rule, ...] = getattr(self, level.value)
        return rules


class TriageFile(_Strict):
    # Words that start a new clause besides punctuation ("but", "however"): a guard never crosses them.
    clause_breaks: tuple[str, ...] = ()
    # Words a guard's window does not count ("a", "the", "any", "or"): "no fever, chills or pus".
    filler: tuple[str, ...] = ()
    guards: dict[str, Guard] = {}
    default_guards: dict[Level, tuple[str, ...]] = {}
    rules: Rules = Rules()
    examples: Examples = Examples()

    def guards_of(self, level: Level, rule: Rule) -> tuple[str, ...]:
        return rule.unless if rule.unless is not None else self.default_guards.get(level, ())

    def every_rule(self) -> Iterator[tuple[Level, int, Rule]]:
        for level in PRECEDENCE:
            for index, rule in enumerate(self.rules.of(level)):
                yield level, index, rule
