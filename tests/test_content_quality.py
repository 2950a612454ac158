"""The shipped content on labelled patient messages: a regression set a clinic can extend.

`tests/data/patients.*.jsonl` were written independently of the content (by someone who did not
see it); `tests/data/triage.*.jsonl` are danger signs and calm near-misses. The limits are below
what the content reaches today, so the test fails on a real regression, not on noise.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.config import Config
from bot.core.conversation import Assistant
from bot.core.evaluation import LabelledRow, Prediction, score_rows
from bot.core.safety.model import Level

DATA = Path(__file__).parent / "data"


def rows() -> list[LabelledRow]:
    found = []
    for path in sorted(DATA.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            item = json.loads(line)
            triage = Level(item["triage"]) if item["triage"] else None
            found.append(LabelledRow(item["text"], item["lang"], item["expect"], triage, path.name))
    return found


@pytest.fixture(scope="module")
def scores(shipped: tuple[Config, Assistant]) -> dict[str, object]:
    assistant = shipped[1]

    def predict(row: LabelledRow) -> Prediction:
        reply = assistant.answer(row.text, row.lang)
        return Prediction(reply.triage, reply.topic)

    return dict(score_rows(rows(), predict))


@pytest.mark.parametrize("lang", ["en", "it", "pl", "es"])
def test_every_danger_sign_is_escalated(scores: dict[str, object], lang: str) -> None:
    score = scores[lang]
    for level in (Level.EMERGENCY, Level.CRISIS, Level.URGENT):
        ratio = score.recall[level]  # type: ignore[attr-defined]
        assert ratio.total > 0 and ratio.hit == ratio.total, f"{lang} {level}: {ratio}"
    assert score.false_positives.percent <= 2.0, f"{lang}: {score.false_positives}"  # type: ignore[attr-defined]


@pytest.mark.parametrize("lang", ["en", "it", "pl", "es"])
def test_questions_get_the_right_answer_or_an_honest_fallback(scores: dict[str, object], lang: str) -> None:
    score = scores[lang]
    assert score.in_scope.percent >= 88.0, f"{lang}: {score.in_scope}"  # type: ignore[attr-defined]
    assert score.out_of_scope.percent >= 80.0, f"{lang}: {score.out_of_scope}"  # type: ignore[attr-defined]
