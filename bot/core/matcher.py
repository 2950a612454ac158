"""FAQ matching: a free-text message and a language hint in, the best topic with a confidence out.

Lexical and deterministic, so it runs offline and starts in well under a second:
character n-grams (3-5, inside word boundaries) of accent-folded words survive typos,
missing diacritics and Polish inflection; TF-IDF weights make rare, topical n-grams count;
n-grams of the message that occur nowhere in the content still count in its norm, so an
off-topic message scores low. Every example question and every keyword is a small
document of its topic, in every language at once (a patient may write in a language other
than their hint), and a topic scores by its best document plus its centroid, which lets
long rambling messages add up evidence spread over several examples.

The matcher answers only when the best topic clears a threshold and beats the runner-up
by a margin; near-ties become "did you mean" candidates rather than a guess.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from bot.core.content import Content
from bot.core.text import fold, words

NGRAM_SIZES = (3, 4, 5)
STEM_LENGTH = 6
# How a topic's score is made of its best document and its centroid.
BEST_WEIGHT = 0.7
CENTROID_WEIGHT = 0.3
# Decision thresholds on the fused score (0..1).
ANSWER_THRESHOLD = 0.30
UNSURE_THRESHOLD = 0.22
MARGIN = 0.04
CANDIDATE_RATIO = 0.75
MAX_CANDIDATES = 3
# Small talk only counts for short messages made of greeting/thanks words: "hi, can I shave?" is a question.
SMALLTALK_MAX_WORDS = 5
# A message in another language than the hint switches language only on clear evidence.
LANGUAGE_SWITCH_RATIO = 1.25
LANGUAGE_MIN_WORDS = 2


class Outcome(StrEnum):
    ANSWER = "answer"
    UNSURE = "unsure"
    NONE = "none"
    GREETING = "greeting"
    THANKS = "thanks"


@dataclass(frozen=True, slots=True)
class MatchResult:
    outcome: Outcome
    topic: str | None
    score: float
    candidates: tuple[str, ...]
    lang: str


FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


class _Vectoriser:
    """Sparse TF-IDF over character n-grams and word stems, fitted once on the content."""

    def __init__(self, stopwords: frozenset[str]) -> None:
        self.stopwords = stopwords
        self.vocabulary: dict[str, int] = {}
        self.idf: FloatArray = np.zeros(0)
        self.oov_idf = 1.0

    def features(self, text: str) -> Counter[str]:
        tokens = [w for w in words(fold(text)) if w not in self.stopwords]
        counts: Counter[str] = Counter()
        for token in tokens:
            padded = f" {token} "
            for size in NGRAM_SIZES:
                if len(padded) < size:
                    continue
                counts.update(padded[i : i + size] for i in range(len(padded) - size + 1))
            counts["w:" + token[:STEM_LENGTH]] += 1
        return counts

    def fit(self, documents: Sequence[Counter[str]]) -> None:
        document_frequency: Counter[str] = Counter()
        for features in documents:
            document_frequency.update(features.keys())
        self.vocabulary = {feature: i for i, feature in enumerate(sorted(document_frequency))}
        n = len(documents)
        self.idf = np.array([math.log((1 + n) / (1 + document_frequency[f])) + 1 for f in sorted(document_frequency)])
        self.oov_idf = math.log(1 + n) + 1

    def weigh(self, features: Counter[str]) -> tuple[IntArray, FloatArray, float]:
        """Known feature ids, their weights, and the norm (which includes unknown features)."""
        ids: list[int] = []
        weights: list[float] = []
        unknown = 0.0
        for feature, count in features.items():
            tf = 1 + math.log(count)
            index = self.vocabulary.get(feature)
            if index is None:
                unknown += (tf * self.oov_idf) ** 2
            else:
                ids.append(index)
                weights.append(tf * float(self.idf[index]))
        weight_array = np.array(weights, dtype=np.float64)
        norm = math.sqrt(float(weight_array @ weight_array) + unknown)
        return np.array(ids, dtype=np.int64), weight_array, norm


class _Index:
    """Documents as a sparse matrix in column form: for each feature, the documents holding it."""

    def __init__(self, vectoriser: _Vectoriser, documents: Sequence[Counter[str]]) -> None:
        postings: list[list[tuple[int, float]]] = [[] for _ in vectoriser.vocabulary]
        for doc_id, features in enumerate(documents):
            ids, weights, norm = vectoriser.weigh(features)
            if norm == 0:
                continue
            for index, weight in zip(ids.tolist(), (weights / norm).tolist(), strict=True):
                postings[index].append((doc_id, weight))
        self.size = len(documents)
        self.doc_ids = [np.array([d for d, _ in p], dtype=np.int64) for p in postings]
        self.weights = [np.array([w for _, w in p], dtype=np.float64) for p in postings]

    def cosine(self, ids: IntArray, weights: FloatArray, norm: float) -> FloatArray:
        if norm == 0 or len(ids) == 0:
            return np.zeros(self.size)
        doc_ids = np.concatenate([self.doc_ids[i] for i in ids.tolist()])
        values = np.concatenate(
            [self.weights[i] * (w / norm) for i, w in zip(ids.tolist(), weights.tolist(), strict=True)]
        )
        return np.bincount(doc_ids, weights=values, minlength=self.size).astype(np.float64)


@dataclass(frozen=True, slots=True)
class _Document:
    topic: str
    lang: str
    text: str


class Matcher:
    """Built once from the content; `match` is pure and fast."""

    def __init__(self, content: Content) -> None:
        self.languages = content.languages
        stopwords = frozenset(w for pack in content.packs.values() for s in pack.faq.stopwords for w in words(fold(s)))
        self._vectoriser = _Vectoriser(stopwords)
        self._greeting_words = _vocabulary(p.faq.smalltalk.greeting for p in content.packs.values())
        self._thanks_words = _vocabulary(p.faq.smalltalk.thanks for p in content.packs.values())
        documents = list(_documents(content))
        self.topics: list[str] = sorted({d.topic for d in documents})
        topic_index = {topic: i for i, topic in enumerate(self.topics)}
        features = [self._vectoriser.features(d.text) for d in documents]
        self._vectoriser.fit(features)
        self._examples = _Index(self._vectoriser, features)
        self._doc_topic = np.array([topic_index[d.topic] for d in documents], dtype=np.int64)

        # A centroid per topic (all languages), and a profile per language for language detection.
        centroids = [Counter[str]() for _ in self.topics]
        profiles = {lang: Counter[str]() for lang in self.languages}
        for document, feats in zip(documents, features, strict=True):
            centroids[topic_index[document.topic]].update(feats)
            profiles[document.lang].update(feats)
        for lang, pack in content.packs.items():
            profiles[lang].update(self._vectoriser.features(" ".join(pack.faq.stopwords)))
        self._centroids = _Index(self._vectoriser, centroids)
        self._profile_langs = list(profiles)
        self._profiles = _Index(self._vectoriser, list(profiles.values()))

    def match(self, text: str, lang_hint: str) -> MatchResult:
        hint = lang_hint if lang_hint in self.languages else self.languages[0]
        smalltalk = self._smalltalk(text)
        if smalltalk is not None:
            return MatchResult(smalltalk, None, 1.0, (), hint)
        feats = self._vectoriser.features(text)
        ids, weights, norm = self._vectoriser.weigh(feats)
        lang = self._language(ids, weights, norm, hint, text)
        best_doc = np.zeros(len(self.topics))
        np.maximum.at(best_doc, self._doc_topic, self._examples.cosine(ids, weights, norm))
        scores = BEST_WEIGHT * best_doc + CENTROID_WEIGHT * self._centroids.cosine(ids, weights, norm)

        order = [int(i) for i in np.argsort(-scores, kind="stable")]
        ranked = [(self.topics[i], float(scores[i])) for i in order]
        top_topic, top_score = ranked[0]
        runner_up = ranked[1][1] if len(ranked) > 1 else 0.0
        if top_score >= ANSWER_THRESHOLD and top_score - runner_up >= MARGIN:
            return MatchResult(Outcome.ANSWER, top_topic, round(top_score, 4), _candidates(ranked[1:], top_score), lang)
        if top_score >= UNSURE_THRESHOLD:
            return MatchResult(Outcome.UNSURE, None, round(top_score, 4), _candidates(ranked, top_score), lang)
        return MatchResult(Outcome.NONE, None, round(top_score, 4), tuple(t for t, _ in ranked[:2]), lang)

    def _smalltalk(self, text: str) -> Outcome | None:
        """A short message made only of greeting or thanks words (and filler) is small talk."""
        tokens = words(fold(text))
        if not tokens or len(tokens) > SMALLTALK_MAX_WORDS:
            return None
        greeting = sum(t in self._greeting_words for t in tokens)
        thanks = sum(t in self._thanks_words for t in tokens)
        if not greeting and not thanks:
            return None
        if all(t in self._greeting_words or t in self._thanks_words or t in self._vectoriser.stopwords for t in tokens):
            return Outcome.THANKS if thanks >= greeting else Outcome.GREETING
        return None

    def _language(self, ids: IntArray, weights: FloatArray, norm: float, hint: str, text: str) -> str:
        if len(words(fold(text))) < LANGUAGE_MIN_WORDS:
            return hint
        similarity = self._profiles.cosine(ids, weights, norm)
        by_lang = dict(zip(self._profile_langs, similarity.tolist(), strict=True))
        best = max(by_lang, key=lambda lang: by_lang[lang])
        if best != hint and by_lang[best] > LANGUAGE_SWITCH_RATIO * by_lang[hint]:
            return best
        return hint


def _candidates(ranked: Iterable[tuple[str, float]], reference: float) -> tuple[str, ...]:
    picked = [topic for topic, score in ranked if score >= CANDIDATE_RATIO * reference]
    return tuple(picked[:MAX_CANDIDATES])


def _vocabulary(groups: Iterable[Iterable[str]]) -> frozenset[str]:
    return frozenset(w for group in groups for text in group for w in words(fold(text)))


def _documents(content: Content) -> Iterable[_Document]:
    for lang, pack in content.packs.items():
        for entry in pack.faq.entries:
            for question in entry.questions:
                yield _Document(entry.id, lang, question)
            for keyword in entry.keywords:
                yield _Document(entry.id, lang, keyword)
            yield _Document(entry.id, lang, entry.title)
