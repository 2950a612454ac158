"""The shipped content on labelled patient messages: regression sets a clinic can extend.

`tests/data/*.jsonl` are the older sets (written without seeing the content, since tuned against);
`tests/data/tune/` are the blind sets we tune on. The locked halves in `tests/data/locked/` are not
read here: they are measured once, at the end of a piece of work, with `aftercare eval`.
The limits sit a little below what the content reaches today, so the test fails on a regression.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.config import Config
from bot.core.conversation import Assistant, Kind
from bot.core.evaluation import LabelledRow, LanguageScore, Prediction, score_rows
from bot.core.safety.model import Level

DATA = Path(__file__).parent / "data"
LANGS = ("en", "it", "pl", "es")


def rows(paths: list[Path]) -> list[LabelledRow]:
    found = []
    for path in paths:
        for line in path.read_text(encoding="utf-8").splitlines():
            item = json.loads(line)
            triage = Level(item["triage"]) if item.get("triage") else None
            found.append(
                LabelledRow(item["text"], item["lang"], item["expect"], triage, path.name, bool(item.get("near_miss")))
            )
    return found


def score(assistant: Assistant, paths: list[Path]) -> dict[str, LanguageScore]:
    def predict(row: LabelledRow) -> Prediction:
        reply = assistant.answer(row.text, row.lang)
        return Prediction(reply.level, reply.topic, reply.kind is Kind.CONFIRM)

    return score_rows(rows(paths), predict)


@pytest.fixture(scope="module")
def regression(shipped: tuple[Config, Assistant]) -> dict[str, LanguageScore]:
    return score(shipped[1], sorted(DATA.glob("*.jsonl")))


@pytest.fixture(scope="module")
def tune(shipped: tuple[Config, Assistant]) -> dict[str, LanguageScore]:
    return score(shipped[1], sorted((DATA / "tune").glob("*.jsonl")))


@pytest.mark.parametrize("lang", LANGS)
def test_every_danger_sign_of_the_regression_set_is_escalated(regression: dict[str, LanguageScore], lang: str) -> None:
    found = regression[lang]
    for level in (Level.EMERGENCY, Level.CRISIS, Level.URGENT):
        ratio = found.recall[level]
        assert ratio.total > 0 and ratio.hit == ratio.total, f"{lang} {level}: {ratio}"
    assert (found.alerts.percent or 0) <= 1.0, f"{lang}: calm messages alerted {found.alerts}"


@pytest.mark.parametrize("lang", LANGS)
def test_blind_danger_signs_are_caught_and_calm_messages_rarely_questioned(
    tune: dict[str, LanguageScore], lang: str
) -> None:
    found = tune[lang]
    for level, least in ((Level.EMERGENCY, 95.0), (Level.CRISIS, 95.0), (Level.URGENT, 90.0)):
        ratio = found.recall[level]
        assert (ratio.percent or 0) >= least, f"{lang} {level}: {ratio}"
    assert (found.alerts.percent or 0) <= 1.0, f"{lang}: calm messages alerted {found.alerts}"
    assert (found.questions.percent or 0) <= 6.0, f"{lang}: calm messages questioned {found.questions}"


@pytest.mark.parametrize("lang", LANGS)
def test_questions_get_the_right_answer_or_an_honest_fallback(
    regression: dict[str, LanguageScore], tune: dict[str, LanguageScore], lang: str
) -> None:
    # Measured on 2026-12-01: regression in-scope 74-86%, fallback 62-88%; tune (chatty near-misses included, and
    # since the second and third safety suites their calm counterparts, often asked about) in-scope 52-57%,
    # fallback 90-97%; wrong answers 3-6% everywhere.
    limits = {"regression": (70.0, 60.0), "tune": (50.0, 85.0)}
    for name, found in (("regression", regression[lang]), ("tune", tune[lang])):
        in_scope, fallback = limits[name]
        assert (found.in_scope.percent or 0) >= in_scope, f"{name} {lang}: {found.in_scope}"
        assert (found.out_of_scope.percent or 0) >= fallback, f"{name} {lang}: {found.out_of_scope}"
        assert (found.wrong.percent or 0) <= 7.0, f"{name} {lang}: wrong answers {found.wrong}"
