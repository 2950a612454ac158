"""Triage semantics with small hand-written rules: negation, conditions, calm messages, languages."""

from __future__ import annotations

import pytest

from bot.core.content import TriageRules
from bot.core.triage import Level, Triage

EN = TriageRules(
    negators=("no", "not", "don't have", "without"),
    conditionals=("if", "in case"),
    clause_breaks=("but",),
    calm=(r"\bjust in case\b", r"\blast year\b"),
    emergency=(r"\b(hard|difficult) to breathe?\b", r"\blips? (are |is )?swelling\b"),
    urgent=(r"\bfever\b", r"\bpus\b", r"\b3[89]([.,]\d)?\b"),
    crisis=(r"\bkill myself\b",),
)
IT = TriageRules(
    negators=("non", "senza"),
    conditionals=("se",),
    emergency=(r"\brespirare\b",),
    urgent=(r"\bfebbre\b",),
    crisis=(r"\bfarla finita\b",),
)
ES = TriageRules(
    negators=("no", "sin"),
    conditionals=("si",),
    emergency=(r"\bhinchando los labios\b",),
    urgent=(r"\bfiebre\b",),
    crisis=(r"\bquitarme la vida\b",),
)


@pytest.fixture(scope="module")
def triage() -> Triage:
    return Triage({"en": EN, "it": IT, "es": ES})


@pytest.mark.parametrize(
    ("message", "level"),
    [
        ("My lips are swelling and it's hard to breathe", Level.EMERGENCY),
        ("I have a fever of 38.5", Level.URGENT),
        ("there's PUS coming out", Level.URGENT),
        ("ho la febbre", Level.URGENT),
        ("Non ho fame ma ho la febbre", Level.URGENT),  # the negation belongs to another word
        ("no appetite, but I have a fever", Level.URGENT),  # a new clause after 'but'
        ("se me están hinchando los labios", Level.EMERGENCY),  # Spanish 'se' is not Italian 'if'
        ("I want to kill myself", Level.CRISIS),
        ("just in case: I want to kill myself", Level.CRISIS),  # crisis is never calmed
        ("quiero quitarme la vida", Level.CRISIS),
    ],
)
def test_danger_signs_are_raised(triage: Triage, message: str, level: Level) -> None:
    assert triage.assess(message).level is level


@pytest.mark.parametrize(
    "message",
    [
        "no fever, just a bit red",
        "I don't have a fever",
        "without pus or anything",
        "what should I do if I get a fever?",
        "in case of fever, what do I take?",
        "I had a fever last year after a flu shot",
        "is a fever possible? asking just in case",
        "non ho febbre",
        "se mi venisse la febbre?",
        "sin fiebre, todo bien",
        "how long does the redness last?",
    ],
)
def test_calm_messages_are_not_raised(triage: Triage, message: str) -> None:
    assert triage.assess(message).level is None


def test_the_excerpt_says_what_raised_it(triage: Triage) -> None:
    result = triage.assess("Since yesterday there is pus on my chin")
    assert result.level is Level.URGENT and result.excerpt == "pus"
