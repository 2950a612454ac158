"""Scoring labelled patient messages, so a clinic can keep its own regression set.

A row is `{"text", "lang", "expect": topic | null, "triage": null | level}`, optionally with
`"near_miss": true` for a calm message written to look like danger. Figures per language:
in-scope top-1; the fallback rate on questions no topic answers; **wrong answers** (a topic other
than the label, or any topic for a question no topic answers — worse than "I don't know");
recall per triage level (a confirmation question counts as caught: it carries the emergency
number or crisis line); and on calm rows, alerts and confirmation questions counted apart, with
near-miss rows on their own line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from bot.core.safety.model import Level

# A row labelled `urgent` is also caught by `emergency`; crisis is its own path.
_SATISFIES: dict[Level, frozenset[Level]] = {
    Level.URGENT: frozenset({Level.URGENT, Level.EMERGENCY}),
    Level.EMERGENCY: frozenset({Level.EMERGENCY}),
    Level.CRISIS: frozenset({Level.CRISIS}),
}
# A confirmation question at emergency or urgent carries the emergency number either way.
_QUESTION_SATISFIES: dict[Level, frozenset[Level]] = {
    Level.URGENT: frozenset({Level.URGENT, Level.EMERGENCY}),
    Level.EMERGENCY: frozenset({Level.URGENT, Level.EMERGENCY}),
    Level.CRISIS: frozenset({Level.CRISIS}),
}


@dataclass(frozen=True, slots=True)
class LabelledRow:
    text: str
    lang: str
    expect: str | None
    triage: Level | None
    source: str = ""
    near_miss: bool = False


@dataclass(frozen=True, slots=True)
class Prediction:
    triage: Level | None  # the level the bot acted on (an alert or a confirmation question)
    faq_id: str | None
    confirm: bool = False  # True when the bot asked instead of escalating at once


@dataclass(frozen=True, slots=True)
class Miss:
    row: LabelledRow
    got: Prediction
    why: str


@dataclass
class Ratio:
    hit: int = 0
    total: int = 0

    def add(self, ok: bool) -> None:
        self.hit += ok
        self.total += 1

    @property
    def percent(self) -> float | None:
        return 100.0 * self.hit / self.total if self.total else None

    def __str__(self) -> str:
        pct = self.percent
        return "-" if pct is None else f"{self.hit}/{self.total} {pct:5.1f}%"


@dataclass
class LanguageScore:
    in_scope: Ratio = field(default_factory=Ratio)
    out_of_scope: Ratio = field(default_factory=Ratio)
    wrong: Ratio = field(default_factory=Ratio)  # hit = a wrong answer, over every row without a triage label
    recall: dict[Level, Ratio] = field(default_factory=lambda: {level: Ratio() for level in Level})
    alerts: Ratio = field(default_factory=Ratio)  # hit = an alert on an ordinary calm row
    questions: Ratio = field(default_factory=Ratio)  # hit = a confirmation question on an ordinary calm row
    near_miss_alerts: Ratio = field(default_factory=Ratio)
    near_miss_questions: Ratio = field(default_factory=Ratio)
    misses: list[Miss] = field(default_factory=list)

    @property
    def false_positives(self) -> Ratio:
        """Alerts plus questions on every calm row (the single figure of older reports)."""
        return Ratio(
            self.alerts.hit + self.questions.hit + self.near_miss_alerts.hit + self.near_miss_questions.hit,
            self.alerts.total + self.near_miss_alerts.total,
        )


def score_rows(rows: Iterable[LabelledRow], predict: Callable[[LabelledRow], Prediction]) -> dict[str, LanguageScore]:
    """Score every row; results per language, in first-seen order."""
    scores: dict[str, LanguageScore] = {}
    for row in rows:
        score = scores.setdefault(row.lang, LanguageScore())
        got = predict(row)
        if row.triage is not None:
            allowed = _QUESTION_SATISFIES if got.confirm else _SATISFIES
            ok = got.triage in allowed[row.triage]
            score.recall[row.triage].add(ok)
            if not ok:
                how = "asked" if got.confirm else "triage"
                score.misses.append(Miss(row, got, f"{how} {got.triage or 'none'}, expected {row.triage}"))
            continue
        alerted = got.triage is not None and not got.confirm
        asked = got.triage is not None and got.confirm
        (score.near_miss_alerts if row.near_miss else score.alerts).add(alerted)
        (score.near_miss_questions if row.near_miss else score.questions).add(asked)
        if got.triage is not None:
            score.misses.append(Miss(row, got, f"false alarm: {'asked' if asked else 'alerted'} {got.triage}"))
        score.wrong.add(got.triage is None and got.faq_id is not None and got.faq_id != row.expect)
        if row.expect is None:
            ok = got.triage is None and got.faq_id is None
            score.out_of_scope.add(ok)
            if not ok and got.triage is None:
                score.misses.append(Miss(row, got, f"answered {got.faq_id}, expected the fallback"))
        else:
            ok = got.triage is None and got.faq_id == row.expect
            score.in_scope.add(ok)
            if not ok and got.triage is None:
                score.misses.append(Miss(row, got, f"answered {got.faq_id or 'nothing'}, expected {row.expect}"))
    return scores
