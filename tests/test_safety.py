"""The safety engine with small hand-written content: phrases, clause-scoped guards, the classifier, the cascade."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pytest

from bot.core.safety import classifier
from bot.core.safety.classifier import LABELS, TrainingSet
from bot.core.safety.model import Examples, Guard, Level, Rule, Rules, TriageFile
from bot.core.safety.phrases import PhraseError, compile_phrase, normalise, phrase_regex
from bot.core.safety.rules import RuleSet, check_rules, excerpt
from bot.core.safety.triage import Outcome, Triage

GUARDS = {
    "negated": Guard(scope="before", window=3, phrases=("no", "not", "don't have", "without")),
    "hypothetical": Guard(scope="before", phrases=("if", "what if")),
    "past": Guard(scope="clause", phrases=("last year", "years ago")),
    "mild": Guard(scope="before", window=2, effect="ask", phrases=("a bit", "slightly")),
}
EN = TriageFile(
    clause_breaks=("but", "however"),
    filler=("a", "the", "or", "any"),
    guards=GUARDS,
    default_guards={
        Level.EMERGENCY: ("negated", "hypothetical", "past", "mild"),
        Level.URGENT: ("negated", "hypothetical", "past"),
    },
    rules=Rules(
        emergency=(
            Rule(id="breathing", phrases=("{can't|cannot} breath*", "hard to breath*"), match=("I can't breathe",)),
            Rule(id="throat", phrases=("throat ... {tight*|clos*}",), match=("my throat is closing",)),
            Rule(id="lips", phrases=("lips ... swell*",), ask=True, match=("my lips are swelling",)),
        ),
        urgent=(Rule(id="fever", phrases=("fever", "re:\\b3[89](?:[.,]\\d)?\\b"), match=("I have a fever",)),),
        crisis=(Rule(id="suicide", phrases=("kill myself",), unless=("negated",), match=("I want to kill myself",)),),
    ),
)
IT = TriageFile(
    guards={"hypothetical": Guard(scope="before", phrases=("se",))},
    default_guards={Level.URGENT: ("hypothetical",), Level.EMERGENCY: ("hypothetical",)},
    rules=Rules(urgent=(Rule(id="febbre", phrases=("febbre",), match=("ho la febbre",)),)),
)
ES = TriageFile(
    guards={"hypothetical": Guard(scope="before", phrases=("si",))},
    default_guards={Level.EMERGENCY: ("hypothetical",)},
    rules=Rules(emergency=(Rule(id="labios", phrases=("hinch* ... labios",), match=("se me hinchan los labios",)),)),
)


@pytest.fixture(scope="module")
def rules() -> RuleSet:
    return RuleSet({"en": EN, "it": IT, "es": ES})


def levels(rules: RuleSet, text: str, lang: str = "en") -> list[tuple[str, str | None]]:
    return [(h.rule, h.effect) for h in rules.hits(text, lang)]


# -- phrases ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("phrase", "text", "matches"),
    [
        ("{can't|cannot} breath*", "I CANT breathe!!", True),
        ("throat ... tight*", "my throat is kind of getting tight", True),
        ("throat ... tight*", "my throat is so so so so so tight", False),  # more than four words between
        ("[really] hard to breath*", "hard to breathe", True),
        ("[very|so] dizzy", "so dizzy", True),
        ("light headed", "light-headed since this morning", True),
        ("kill myself", "skill myselfie", False),  # whole words only
    ],
)
def test_phrases_match_as_patients_type(phrase: str, text: str, matches: bool) -> None:
    pattern = phrase_regex([phrase])
    assert pattern is not None
    assert bool(pattern.search(normalise(text))) is matches


@pytest.mark.parametrize("bad", ["", "...", "{a|b", "a]", "re:(", "x" * 201, "{|a}", "[ ]", "a $ b"])
def test_a_bad_phrase_is_refused_with_a_reason(bad: str) -> None:
    with pytest.raises(PhraseError):
        compile_phrase(bad)


def test_invisible_characters_and_accents_are_normalised() -> None:
    assert normalise("Thr\u200boat\u00ad CLÓSING\n now") == "throat closing ; now"


# -- guards, per clause ---------------------------------------------------------------------------
def test_a_negation_cancels_only_the_sign_it_stands_next_to(rules: RuleSet) -> None:
    assert levels(rules, "I don't have a fever") == [("en:fever", "cancel")]
    assert levels(rules, "no fever, but I can't breathe") == [("en:breathing", None), ("en:fever", "cancel")]


def test_a_negation_inside_the_sign_counts(rules: RuleSet) -> None:
    assert levels(rules, "my throat is not closing") == [("en:throat", "cancel")]


def test_a_calm_marker_in_another_clause_never_cancels(rules: RuleSet) -> None:
    assert levels(rules, "years ago I had acne. However I can't breathe now") == [("en:breathing", None)]
    assert levels(rules, "I can't breathe; years ago the same happened") == [("en:breathing", None)]


def test_a_mild_word_or_an_ask_rule_makes_a_question_not_an_alarm(rules: RuleSet) -> None:
    assert levels(rules, "it is slightly hard to breathe") == [("en:breathing", "ask")]
    assert levels(rules, "my lips are swelling") == [("en:lips", "ask")]


def test_self_harm_words_are_never_cancelled_at_most_asked(rules: RuleSet) -> None:
    assert levels(rules, "I would not kill myself") == [("en:suicide", "ask")]
    assert levels(rules, "I want to kill myself") == [("en:suicide", None)]


def test_guards_come_from_the_rules_language_and_the_messages_language(rules: RuleSet) -> None:
    # Italian "se" (if) must not cancel a Spanish sign: Spanish "se" is a pronoun.
    assert levels(rules, "se me hinchan los labios", "es") == [("es:labios", None)]
    assert levels(rules, "se ho la febbre cosa faccio", "it") == [("it:febbre", "cancel")]
    # An English "if" cancels the Italian rule in an English message.
    assert levels(rules, "what if I get a febbre", "en")[0][1] == "cancel"


def test_the_alert_quotes_the_sentence_with_the_sign_however_long_the_message() -> None:
    text = "Hello there. " * 500 + "Suddenly I can't breathe at all. Thanks!"
    assert excerpt(text, "can't breathe") == "Suddenly I can't breathe at all."


def test_check_runs_every_rules_examples() -> None:
    broken = TriageFile(
        guards=GUARDS,
        rules=Rules(
            emergency=(
                Rule(id="a", phrases=("fainted",), match=("I passed out",)),
                Rule(id="a", phrases=("fainted",), match=("I fainted",), ignore=("I fainted",)),
                Rule(id="c", phrases=("dizzy",), unless=("nope",), match=("dizzy",)),
            )
        ),
    )
    messages = [p.message for p in check_rules(broken, "en", {"en": broken})]
    assert any("does not catch its example 'I passed out'" in m for m in messages)
    assert any("catches 'I fainted', which it must not" in m for m in messages)
    assert any("duplicate rule id 'a'" in m for m in messages)
    assert any("duplicate phrase 'fainted'" in m for m in messages)
    assert any("unknown guard 'nope'" in m for m in messages)
    unclosed = TriageFile(rules=Rules(emergency=(Rule(id="b", phrases=("{x",), match=("x",)),)))
    assert any("unclosed" in p.message for p in check_rules(unclosed, "en", {"en": unclosed}))


# -- the classifier --------------------------------------------------------------------------------
def _clusters(seed: int = 1) -> tuple[npt.NDArray[np.float32], TrainingSet]:
    """Four well-separated clusters in 16 dimensions, one per label, with a few groups of paraphrases."""
    rng = np.random.default_rng(seed)
    centres = np.eye(4, 16) * 3
    vectors, labels, groups = [], [], []
    for label in range(4):
        for index in range(60 if label else 240):
            vectors.append(centres[label] + rng.normal(0, 0.4, 16))
            labels.append(label)
            groups.append(label * 1000 + index // 2)
    x = np.array(vectors, dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    data = TrainingSet(
        tuple(f"t{i}" for i in range(len(labels))),
        np.array(labels),
        np.array(groups),
        ("en",) * len(labels),
        np.array(labels) > 0,  # the calm rows play the FAQ's own questions
    )
    return x, data


def test_thresholds_come_from_cross_validation_and_catch_every_separable_example() -> None:
    x, data = _clusters()
    model, report = classifier.fit(x, data)
    for level in (Level.EMERGENCY, Level.CRISIS):
        figures = report.levels["en"][level]
        assert figures.caught == figures.examples
        assert classifier.LOWEST_MARGIN[level] <= model.thresholds[level].margin < model.thresholds[level].certain
    count, asked, alerted = report.questions["en"]
    assert asked + alerted <= count * classifier.MAX_CALM_QUESTIONS * len(classifier.DANGER)
    probabilities = model.probabilities(x)
    assert (probabilities.argmax(axis=1) == data.labels).mean() > 0.95


class _Encoder:
    """Maps known texts to fixed vectors: enough to drive the cascade without a real model."""

    def __init__(self, table: dict[str, npt.NDArray[np.float32]], dim: int) -> None:
        self.table = table
        self.dim = dim

    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        return np.array([self.table.get(t, np.zeros(self.dim, dtype=np.float32)) for t in texts], dtype=np.float32)


def test_the_cascade_certain_unsure_and_clear() -> None:
    x, data = _clusters()
    model, _ = classifier.fit(x, data)
    crisis = x[data.labels == LABELS.index("crisis")][0]
    calm = x[data.labels == LABELS.index("none")][0]
    encoder = _Encoder({"I have saved up my pills": crisis, "how long do bruises last": calm}, x.shape[1])
    triage = Triage({"en": EN}, model, encoder)
    assert triage.assess("I can't breathe", "en").outcome is Outcome.CERTAIN
    assert triage.assess("my lips are swelling", "en").outcome is Outcome.UNSURE
    found = triage.assess("I have saved up my pills", "en")
    assert found.level is Level.CRISIS and found.source == "semantic"
    assert triage.assess("how long do bruises last", "en").outcome is Outcome.CLEAR


def test_the_next_message_can_complete_a_danger_sign() -> None:
    triage = Triage({"en": EN})
    alone = triage.assess("it's getting worse really quickly", "en")
    assert alone.outcome is Outcome.CLEAR
    together = triage.assess("and now I can't breathe", "en", recent=["my lips are swelling"])
    assert together.outcome is Outcome.CERTAIN


def test_a_sign_already_reported_is_not_raised_again_by_every_later_message() -> None:
    triage = Triage({"en": EN})
    assert triage.assess("thanks", "en", recent=["I can't breathe"]).outcome is Outcome.CLEAR


def test_the_examples_model_validates_groups() -> None:
    examples = Examples.model_validate({"emergency": ["a", ["b", "c"]], "none": ["d"]})
    assert examples.groups("emergency") == (("a",), ("b", "c")) and examples.count("emergency") == 3


def test_a_sure_urgent_sign_beside_a_possible_emergency_is_an_emergency() -> None:
    """The danger is certain and its level unclear: the stricter safety message goes out, not a question."""
    triage = Triage({"en": EN})
    assert triage.assess("I have a fever", "en").level is Level.URGENT
    assert triage.assess("my lips are swelling", "en").outcome is Outcome.UNSURE
    both = triage.assess("I have a fever and my lips are swelling", "en")
    assert (both.outcome, both.level) == (Outcome.CERTAIN, Level.EMERGENCY)
