"""The semantic layer of triage: a classifier over sentence embeddings, for danger said in words no rule lists.

It learns from the curated example messages of every language (`examples` in triage.yaml): one class
per level, and a `none` class made of the hard negatives, every FAQ example question and every
out-of-scope question. A multinomial logistic regression on the sentence encoder's vectors is small
(a 512 x 4 matrix), trains in about a second with numpy and scores a message in microseconds.

Its two thresholds per level are not set by hand: grouped cross-validation on the curated examples
(paraphrases of one message stay in one fold, so they cannot vouch for each other) gives each
example a score from a model that never saw it, and the thresholds are read off those scores:
`unsure` is where every emergency and crisis example (97% of urgent ones) would still be caught,
as long as calm examples are not asked about too often; `certain` is where calm examples almost
never reach.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from bot.core.safety.model import Level

LABELS: tuple[str, ...] = ("none", Level.URGENT.value, Level.EMERGENCY.value, Level.CRISIS.value)
FOLDS = 5
ITERATIONS = 400
LEARNING_RATE = 0.05
L2 = 1e-4
# Recall the `unsure` threshold aims for on cross-validated examples, per level.
RECALL_TARGET = {Level.URGENT: 0.97, Level.EMERGENCY: 1.0, Level.CRISIS: 1.0}
# ...as long as no more than this share of hard negatives would get a question.
MAX_UNSURE_FALSE_ALARMS = 0.08
# `certain` must keep alerts on hard negatives at or below this share.
MAX_CERTAIN_FALSE_ALARMS = 0.01
# Thresholds never go below these: a model that cannot separate a level must not alert on everything.
FLOOR_UNSURE = 0.3
FLOOR_CERTAIN = 0.75

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
    unsure: float
    certain: float


@dataclass(frozen=True)
class LevelFigures:
    """Cross-validated figures of one level in one language, as `aftercare check` prints them."""

    examples: int
    caught: int  # at `unsure` or above (a question counts as caught)
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
    thresholds: dict[Level, Thresholds]

    def probabilities(self, vectors: Vectors) -> Floats:
        return _softmax(vectors.astype(np.float64) @ self.weights + self.bias)


def fit(vectors: Vectors, data: TrainingSet) -> tuple[Model, Report]:
    """Cross-validate to choose thresholds, then train on everything."""
    scores = cross_validated(vectors, data)
    thresholds = {level: choose(scores, data, level) for level in (Level.URGENT, Level.EMERGENCY, Level.CRISIS)}
    weights, bias = train(vectors, data.labels)
    return Model(weights, bias, thresholds), report(scores, data, thresholds)


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


def cross_validated(vectors: Vectors, data: TrainingSet) -> Floats:
    """Every example's class probabilities from a model trained on the other folds (grouped by paraphrase)."""
    folds = _fold_of(data.groups)
    scores = np.zeros((len(data.labels), len(LABELS)))
    for fold in range(FOLDS):
        held = folds == fold
        if not held.any() or held.all():
            continue
        weights, bias = train(vectors[~held], data.labels[~held])
        scores[held] = _softmax(vectors[held].astype(np.float64) @ weights + bias)
    return scores


def choose(scores: Floats, data: TrainingSet, level: Level) -> Thresholds:
    """Thresholds for one level from cross-validated scores (see the module docstring).

    `unsure` is the lower of two scores: where the recall target is met, and where the budget of
    questions on hard negatives is spent; a missed crisis costs more than a question, so recall may
    take up to twice that budget, never more. `certain` is where almost no hard negative reaches.
    """
    column = LABELS.index(level.value)
    positive = scores[data.labels == column, column]
    calm = scores[(data.labels == 0) & data.hard, column]
    if len(positive) == 0:
        return Thresholds(0.999, 0.999)
    missed = 1.0 - RECALL_TARGET[level]
    by_recall = float(np.quantile(positive, missed, method="lower")) if missed > 0 else float(positive.min())
    by_budget = _quantile(calm, 1.0 - MAX_UNSURE_FALSE_ALARMS)
    hard_cap = _quantile(calm, 1.0 - 2 * MAX_UNSURE_FALSE_ALARMS)
    unsure = max(min(by_recall, by_budget), hard_cap, FLOOR_UNSURE)
    certain = max(_quantile(calm, 1.0 - MAX_CERTAIN_FALSE_ALARMS) + 1e-6, FLOOR_CERTAIN, unsure)
    return Thresholds(round(min(unsure, 0.999), 4), round(min(certain, 0.999), 4))


def report(scores: Floats, data: TrainingSet, thresholds: dict[Level, Thresholds]) -> Report:
    levels: dict[str, dict[Level, LevelFigures]] = {}
    hard: dict[str, tuple[int, int, int]] = {}
    questions: dict[str, tuple[int, int, int]] = {}
    langs = np.array(data.langs)
    danger = [(LABELS.index(level.value), level) for level in thresholds]
    asked_any = np.zeros(len(data.labels), dtype=bool)
    alerted_any = np.zeros(len(data.labels), dtype=bool)
    for column, level in danger:
        asked_any |= scores[:, column] >= thresholds[level].unsure
        alerted_any |= scores[:, column] >= thresholds[level].certain
    for lang in sorted(set(data.langs)):
        mine = langs == lang
        levels[lang] = {}
        for column, level in danger:
            rows = mine & (data.labels == column)
            caught = rows & asked_any  # caught at any danger level: the bot asks or alerts
            certain = rows & alerted_any
            levels[lang][level] = LevelFigures(int(rows.sum()), int(caught.sum()), int(certain.sum()))
        for target, selection in ((hard, mine & (data.labels == 0) & data.hard), (questions, mine & ~data.hard)):
            target[lang] = (
                int(selection.sum()),
                int((selection & asked_any & ~alerted_any).sum()),
                int((selection & alerted_any).sum()),
            )
    return Report(levels, hard, questions)


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


def stack(parts: Sequence[Vectors]) -> Vectors:
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, 0), dtype=np.float32)
