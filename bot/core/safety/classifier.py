"""The semantic layer of triage: danger said in words no rule lists, judged against the curated examples.

It learns from the example messages of every language (`examples` in triage.yaml): one class per
level, and a `none` class made of the hard negatives, every FAQ example question and every
out-of-scope question. Two views of a message's sentence-encoder vector are combined:

* **Neighbours**: how much closer the message is to the curated examples of a level than to the
  calm ones (the mean similarity of the three nearest of each). Curators can read why: "it is
  like these three crisis examples".
* **A multinomial logistic regression** on the vectors, which weighs the whole space of examples.

A whole message is unsure when its neighbour margin clears the level's threshold; a single
sentence of a longer message must clear it by more and be backed by the regression, because a
long message offers many chances for one sentence to look alarming. Certain needs a clearly
higher margin and a confident regression.

The thresholds are not set by hand: grouped cross-validation on the curated examples (paraphrases
of one message stay in one fold, so they cannot vouch for each other) gives every example scores
from a model that never saw it, and each level's threshold is the lowest at which ordinary calm
messages — the FAQ's own questions — are almost never asked about.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from bot.core.safety.model import Level

VERSION = 4  # of the method: a cached model of another version is trained again
LABELS: tuple[str, ...] = ("none", Level.URGENT.value, Level.EMERGENCY.value, Level.CRISIS.value)
DANGER = (Level.URGENT, Level.EMERGENCY, Level.CRISIS)
FOLDS = 5
NEIGHBOURS = 3
ITERATIONS = 400
LEARNING_RATE = 0.05
L2 = 1e-4
# Share of ordinary calm messages (FAQ questions, cross-validated) a level may ask about, and of hard negatives.
MAX_CALM_QUESTIONS = 0.01
MAX_HARD_QUESTIONS = 0.3
# A sentence inside a longer message needs this much more margin, and the regression's backing.
SEGMENT_EXTRA = 0.02
SEGMENT_PROBABILITY = 0.6
# Certain without a rule: this much more margin than the question's, and a confident regression.
CERTAIN_EXTRA = 0.1
CERTAIN_PROBABILITY = 0.97
# The search range of a level's margin threshold. Below zero a message is nearer the calm examples than the
# level's: the FAQ's short questions allow that for urgent and crisis, but patients' longer messages do not (on
# the tune half, "sorry for the long message" was asked about self-harm; a floor of zero halved such questions
# and missed nothing). Airway signs keep the wider range: an extra question is cheaper than a missed one.
LOWEST_MARGIN = {Level.URGENT: 0.0, Level.EMERGENCY: -0.05, Level.CRISIS: 0.0}
HIGHEST_MARGIN = 0.2

Vectors = npt.NDArray[np.float32]
Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]


@dataclass(frozen=True)
class TrainingSet:
    """Texts with their label index (into LABELS), paraphrase group, language, and whether curated as hard."""

    texts: tuple[str, ...]
    labels: Ints
    groups: Ints
    langs: tuple[str, ...]
    hard: npt.NDArray[np.bool_]  # a curated example (not an FAQ question): what the figures are measured on


@dataclass(frozen=True)
class Thresholds:
    """A level's margin threshold for a question (whole message); stricter ones follow from it."""

    margin: float

    @property
    def segment(self) -> float:
        return self.margin + SEGMENT_EXTRA

    @property
    def certain(self) -> float:
        return self.margin + CERTAIN_EXTRA


@dataclass(frozen=True, slots=True)
class Evidence:
    """What the semantic layer saw for one level in one message."""

    margin: float  # neighbour margin of the whole message (or of its best piece, for a long one)
    probability: float  # regression's probability of the whole message
    segment_margin: float  # the best sentence's margin
    segment_probability: float  # ...and the regression's probability of that sentence
    segment: str  # that sentence, for the staff alert


@dataclass(frozen=True)
class LevelFigures:
    """Cross-validated figures of one level in one language, as `aftercare check` prints them."""

    examples: int
    caught: int  # at the question's threshold or above (a question counts as caught)
    certain: int

    @property
    def recall(self) -> float:
        return self.caught / self.examples if self.examples else 1.0


@dataclass(frozen=True)
class Report:
    """What cross-validation says about the classifier, per language."""

    levels: dict[str, dict[Level, LevelFigures]]
    hard_negatives: dict[str, tuple[int, int, int]]  # lang -> (examples, asked, alerted)
    questions: dict[str, tuple[int, int, int]]  # FAQ/out-of-scope questions: lang -> (count, asked, alerted)


@dataclass(frozen=True)
class Model:
    weights: Floats  # (dimensions, classes)
    bias: Floats  # (classes,)
    examples: Vectors  # every training vector, grouped by label
    starts: Ints  # where each label's rows begin in `examples` (len(LABELS) + 1 entries)
    thresholds: dict[Level, Thresholds]

    def probabilities(self, vectors: Vectors) -> Floats:
        return _softmax(vectors.astype(np.float64) @ self.weights + self.bias)

    def margins(self, vectors: Vectors) -> Floats:
        """Per vector and label: mean similarity to the label's nearest examples, minus that of `none`."""
        return _margins(vectors, self.examples, self.starts)

    def evidence(self, vectors: Vectors, segments: list[str], whole: int | None) -> dict[Level, Evidence]:
        """Evidence per level for a message whose pieces are `segments` (`whole`: the index of the whole one)."""
        margins = self.margins(vectors)
        probabilities = self.probabilities(vectors)
        found: dict[Level, Evidence] = {}
        for level in DANGER:
            column = LABELS.index(level.value)
            pieces = [i for i in range(len(segments)) if i != whole] or [0]
            best = max(pieces, key=lambda i: (margins[i, column], probabilities[i, column]))
            top = whole if whole is not None else best
            found[level] = Evidence(
                float(margins[top, column]),
                float(probabilities[top, column]),
                float(margins[best, column]),
                float(probabilities[best, column]),
                segments[best] if whole is None or margins[best, column] > margins[whole, column] else segments[whole],
            )
        return found

    def asks(self, level: Level, evidence: Evidence) -> bool:
        limit = self.thresholds[level]
        return evidence.margin >= limit.margin or (
            evidence.segment_margin >= limit.segment and evidence.segment_probability >= SEGMENT_PROBABILITY
        )

    def certain(self, level: Level, evidence: Evidence) -> bool:
        limit = self.thresholds[level]
        return evidence.margin >= limit.certain and evidence.probability >= CERTAIN_PROBABILITY


def fit(vectors: Vectors, data: TrainingSet) -> tuple[Model, Report]:
    """Cross-validate to choose thresholds, then train on everything."""
    order = np.argsort(data.labels, kind="stable")
    vectors = _normalised(vectors[order])
    data = TrainingSet(
        tuple(data.texts[i] for i in order),
        data.labels[order],
        data.groups[order],
        tuple(data.langs[i] for i in order),
        data.hard[order],
    )
    margins, probabilities = cross_validated(vectors, data)
    thresholds = {level: choose(margins, data, level) for level in DANGER}
    weights, bias = train(vectors, data.labels)
    starts = np.searchsorted(data.labels, np.arange(len(LABELS) + 1)).astype(np.int64)
    model = Model(weights, bias, vectors, starts, thresholds)
    return model, report(margins, probabilities, data, thresholds)


def train(vectors: Vectors, labels: Ints) -> tuple[Floats, Floats]:
    """Multinomial logistic regression with balanced class weights, full-batch Adam; deterministic."""
    x = vectors.astype(np.float64)
    n, d = x.shape
    k = len(LABELS)
    y = np.zeros((n, k))
    y[np.arange(n), labels] = 1.0
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    class_weight = np.where(counts > 0, n / (k * np.maximum(counts, 1)), 0.0)
    sample_weight = class_weight[labels][:, None] / n
    w = np.zeros((d, k))
    b = np.zeros(k)
    m_w, v_w, m_b, v_b = np.zeros_like(w), np.zeros_like(w), np.zeros_like(b), np.zeros_like(b)
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    for step in range(1, ITERATIONS + 1):
        p = _softmax(x @ w + b)
        error = (p - y) * sample_weight
        grad_w = x.T @ error + L2 * w
        grad_b = error.sum(axis=0)
        m_w = beta1 * m_w + (1 - beta1) * grad_w
        v_w = beta2 * v_w + (1 - beta2) * grad_w**2
        m_b = beta1 * m_b + (1 - beta1) * grad_b
        v_b = beta2 * v_b + (1 - beta2) * grad_b**2
        correction1, correction2 = 1 - beta1**step, 1 - beta2**step
        w -= LEARNING_RATE * (m_w / correction1) / (np.sqrt(v_w / correction2) + eps)
        b -= LEARNING_RATE * (m_b / correction1) / (np.sqrt(v_b / correction2) + eps)
    return w, b


def cross_validated(vectors: Vectors, data: TrainingSet) -> tuple[Floats, Floats]:
    """Every example's neighbour margins and class probabilities from a model of the other folds."""
    folds = _fold_of(data.groups)
    margins = np.zeros((len(data.labels), len(LABELS)))
    probabilities = np.zeros((len(data.labels), len(LABELS)))
    for fold in range(FOLDS):
        held = folds == fold
        if not held.any() or held.all():
            continue
        rest = vectors[~held]
        rest_labels = data.labels[~held]
        starts = np.searchsorted(rest_labels, np.arange(len(LABELS) + 1)).astype(np.int64)
        margins[held] = _margins(vectors[held], rest, starts)
        weights, bias = train(rest, rest_labels)
        probabilities[held] = _softmax(vectors[held].astype(np.float64) @ weights + bias)
    return margins, probabilities


def choose(margins: Floats, data: TrainingSet, level: Level) -> Thresholds:
    """The lowest margin at which the FAQ's own questions (ordinary calm talk) and the curated hard negatives
    are asked about no more often than their budgets allow."""
    column = LABELS.index(level.value)
    calm = margins[(data.labels == 0) & ~data.hard, column]
    hard = margins[(data.labels == 0) & data.hard, column]
    by_calm = _quantile(calm, 1.0 - MAX_CALM_QUESTIONS)
    by_hard = _quantile(hard, 1.0 - MAX_HARD_QUESTIONS)
    margin = min(max(by_calm, by_hard, LOWEST_MARGIN[level]), HIGHEST_MARGIN)
    return Thresholds(round(margin, 4))


def report(margins: Floats, probabilities: Floats, data: TrainingSet, thresholds: dict[Level, Thresholds]) -> Report:
    levels: dict[str, dict[Level, LevelFigures]] = {}
    hard: dict[str, tuple[int, int, int]] = {}
    questions: dict[str, tuple[int, int, int]] = {}
    langs = np.array(data.langs)
    asked_any = np.zeros(len(data.labels), dtype=bool)
    alerted_any = np.zeros(len(data.labels), dtype=bool)
    for level in DANGER:
        column = LABELS.index(level.value)
        limit = thresholds[level]
        asked_any |= margins[:, column] >= limit.margin
        alerted_any |= (margins[:, column] >= limit.certain) & (probabilities[:, column] >= CERTAIN_PROBABILITY)
    for lang in sorted(set(data.langs)):
        mine = langs == lang
        levels[lang] = {}
        for level in DANGER:
            rows = mine & (data.labels == LABELS.index(level.value))
            levels[lang][level] = LevelFigures(
                int(rows.sum()), int((rows & asked_any).sum()), int((rows & alerted_any).sum())
            )
        for target, selection in ((hard, mine & (data.labels == 0) & data.hard), (questions, mine & ~data.hard)):
            target[lang] = (
                int(selection.sum()),
                int((selection & asked_any & ~alerted_any).sum()),
                int((selection & alerted_any).sum()),
            )
    return Report(levels, hard, questions)


def _margins(vectors: Vectors, examples: Vectors, starts: Ints) -> Floats:
    similarity = _normalised(vectors).astype(np.float32) @ examples.T
    means = np.zeros((len(vectors), len(LABELS)))
    for label in range(len(LABELS)):
        block = similarity[:, starts[label] : starts[label + 1]]
        if block.shape[1] == 0:
            means[:, label] = -1.0
            continue
        k = min(NEIGHBOURS, block.shape[1])
        nearest = np.partition(block, block.shape[1] - k, axis=1)[:, -k:]
        means[:, label] = nearest.mean(axis=1)
    result: Floats = means - means[:, :1]
    return result


def _normalised(vectors: Vectors) -> Vectors:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    result: Vectors = (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
    return result


def _fold_of(groups: Ints) -> Ints:
    """A deterministic fold per group: paraphrases of one message share a fold."""
    unique = np.unique(groups)
    order = np.argsort((unique * 2654435761) % 4294967296, kind="stable")
    fold_of_group = dict(zip(unique[order].tolist(), (np.arange(len(unique)) % FOLDS).tolist(), strict=True))
    return np.array([fold_of_group[g] for g in groups.tolist()], dtype=np.int64)


def _quantile(values: Floats, q: float) -> float:
    if len(values) == 0:
        return 0.0
    return float(np.quantile(values, q, method="higher"))


def _softmax(logits: Floats) -> Floats:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    result: Floats = exp / exp.sum(axis=1, keepdims=True)
    return result
