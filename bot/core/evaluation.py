"""Scoring labelled patient messages, so a clinic can keep its own regression set."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from bot.core.triage import Level

# A row labelled `urgent` is also caught by `emergency`; crisis is its own path.
_SATISFIES: dict[Level, frozenset[Level]] = {
    Level.URGENT: frozenset({Level.URGENT, Level.EMERGENCY}),
    Level.EMERGENCY: frozenset({Level.EMERGENCY}),
    Level.CRISIS: frozenset({Level.CRISIS}),
}


@dataclass(frozen=True, slots=True)
class LabelledRow:
    text: str
    lang: str
    expect: str | None
    triage: Level | None
    source: str = ""


@dataclass(frozen=True, slots=True)
class Prediction:
    triage: Level | None
    faq_id: str | None


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
    recall: dict[Level, Ratio] = field(default_factory=lambda: {level: Ratio() for level in Level})
    false_positives: Ratio = field(default_factory=Ratio)  # hit = triaged although calm
    misses: list[Miss] = field(default_factory=list)


def score_rows(rows: Iterable[LabelledRow], predict: Callable[[LabelledRow], Prediction]) -> dict[str, LanguageScore]:
    """Score every row; results per language, in first-seen order."""
    scores: dict[str, LanguageScore] = {}
    for row in rows:
        score = scores.setdefault(row.lang, LanguageScore())
        got = predict(row)
        if row.triage is not None:
            ok = got.triage in _SATISFIES[row.triage]
            score.recall[row.triage].add(ok)
            if not ok:
                score.misses.append(Miss(row, got, f"triage {got.triage or 'none'}, expected {row.triage}"))
            continue
        score.false_positives.add(got.triage is not None)
        if got.triage is not None:
            score.misses.append(Miss(row, got, f"false alarm: triaged {got.triage}"))
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
