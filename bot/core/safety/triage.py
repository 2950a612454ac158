"""Triage: does a message report danger, at which level, and how sure is the bot?

A cascade, because no single mechanism gets there:

1. **Rules** (`rules.py`): explicit red flags, judged clause by clause. A sign no guard cancels is
   certain; a sign under an "ask" guard ("my lips are a bit swollen") is worth a question.
2. **The semantic classifier** (`classifier.py`) scores the whole message and each of its
   sentences, so a danger sign buried in a friendly multi-question message, minimised or
   about someone else is still seen. Its cross-validated thresholds say certain or unsure.
3. **Context**: the patient's last few messages, read together with this one, so that "my lips
   started to swell an hour ago" followed by "it's getting worse really quickly" is an emergency.

The outcome is `certain` (the safety message and the staff alert), `unsure` (a confirmation
question; for crisis the staff are told at once) or `clear` (the FAQ). When it is unclear whether
a sign is an emergency or urgent, the stricter level is used.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Protocol

import numpy as np
import numpy.typing as npt

from bot.core.safety.classifier import Evidence, Model
from bot.core.safety.model import PRECEDENCE, Level, TriageFile
from bot.core.safety.rules import RuleHit, RuleSet, excerpt

# Sentences longer than this are scored in pieces; a whole message longer than this is scored by sentence only.
SEGMENT_CHARS = 400
MAX_SEGMENTS = 96  # a 10,000-character message is about this many sentences
MEMO_SIZE = 512  # recent assessments remembered (the screen and the turn triage each message)
_SENTENCES = re.compile(r"(?<=[.!?…;])\s+|\s*\n+\s*")


class SentenceEncoder(Protocol):
    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]: ...


class Outcome(StrEnum):
    CERTAIN = "certain"
    UNSURE = "unsure"
    CLEAR = "clear"


@dataclass(frozen=True, slots=True)
class Assessment:
    outcome: Outcome
    level: Level | None = None
    excerpt: str = ""  # the part of the message that raised it, for the staff alert
    source: str = ""  # "rule:<lang>:<id>", "semantic" or "context", for audits
    score: float = 0.0
    # Set only beside a sure sign of the body (never on a crisis assessment): the words that may be self-harm,
    # for the crisis line in the reply and the staff's "possible crisis" alert.
    possible_crisis: str = ""

    def __bool__(self) -> bool:
        return self.outcome is not Outcome.CLEAR


CLEAR = Assessment(Outcome.CLEAR)


class Triage:
    """The cascade over every language's rules and the trained classifier (optional: rules alone work)."""

    def __init__(
        self,
        files: Mapping[str, TriageFile],
        model: Model | None = None,
        encoder: SentenceEncoder | None = None,
    ) -> None:
        self.rules = RuleSet(files)
        self.model = model
        self.encoder = encoder
        self._memo: OrderedDict[bytes, Assessment] = OrderedDict()
        self._lock = threading.Lock()

    def attach(self, model: Model, encoder: SentenceEncoder) -> None:
        """Add the semantic layer once it is trained (start-up builds it alongside the matcher)."""
        self.model = model
        self.encoder = encoder
        with self._lock:
            self._memo.clear()

    def assess(self, text: str, lang: str | None = None, recent: Sequence[str] = ()) -> Assessment:
        """The level of danger `text` reports; `recent` are the patient's previous messages, oldest first."""
        found = self._remembered("alone", [text], lang, lambda: self._alone(text, lang))
        if found.outcome is Outcome.CERTAIN or not recent:
            return found
        # Read together with the last few messages, this one may complete a picture ("it's getting worse
        # quickly" after "my lips started to swell"); it counts only if it adds to what they said alone.
        messages = [*recent, text]
        together = self._remembered("together", messages, lang, lambda: self._combined(messages, lang))
        # (what this message and the ones before it said together is, at the next message, what they said before)
        before = self._remembered("together", list(recent), lang, lambda: self._combined(list(recent), lang))
        if _rank(together) <= max(_rank(before), _rank(found)):
            return found
        return Assessment(together.outcome, together.level, text[:300], "context", together.score)

    def _remembered(
        self, kind: str, texts: Sequence[str], lang: str | None, compute: Callable[[], Assessment]
    ) -> Assessment:
        """An assessment made a moment ago is not made again: the safety screen and the turn triage the same
        message, and a conversation window overlaps the next one. Bounded; keyed by a digest of the words."""
        key = hashlib.blake2b("\x1f".join([kind, lang or "", *texts]).encode("utf-8"), digest_size=16).digest()
        with self._lock:
            found = self._memo.get(key)
            if found is not None:
                self._memo.move_to_end(key)
        if found is None:
            found = compute()
            with self._lock:
                self._memo[key] = found
                while len(self._memo) > MEMO_SIZE:
                    self._memo.popitem(last=False)
        return found

    def _alone(self, text: str, lang: str | None) -> Assessment:
        """The message on its own: rules first, then the classifier."""
        hits = self.rules.hits(text, lang)
        certain = next((h for h in hits if h.effect is None), None)
        if certain is not None:
            # A sure urgent sign next to a possible emergency one ("so swollen I can't open my eye, and when I do
            # I see a little double"): the danger is certain, its level unclear, so the stricter level is used.
            stricter = next(
                (
                    h
                    for h in hits
                    if h.effect == "ask"
                    and h.level is not Level.CRISIS
                    and _rank_level(h.level) > _rank_level(certain.level)
                ),
                None,
            )
            found = stricter or certain
            assessment = self._from_rule(text, found, Outcome.CERTAIN)
            crisis = next((h for h in hits if h.level is Level.CRISIS and h.effect == "ask"), None)
            if crisis is not None and found.level is not Level.CRISIS:
                return replace(assessment, possible_crisis=excerpt(text, crisis.sign))
            return assessment
        segments, whole = _segments(text)
        return self._decide(text, hits, self._semantic(segments, whole))

    def _combined(self, messages: Sequence[str], lang: str | None) -> Assessment:
        joined = " \n".join(messages)
        hits = [h for h in self.rules.hits(joined, lang) if h.effect is None]
        if hits:
            return self._from_rule(joined, hits[0], Outcome.CERTAIN)
        return self._decide(joined, [], self._semantic([joined[-SEGMENT_CHARS * 2 :]], 0))

    # -- the steps -----------------------------------------------------------------------------
    def _from_rule(self, text: str, hit: RuleHit, outcome: Outcome) -> Assessment:
        return Assessment(outcome, hit.level, excerpt(text, hit.sign), f"rule:{hit.rule}", 1.0)

    def _semantic(self, segments: Sequence[str], whole: int | None = 0) -> dict[Level, Evidence] | None:
        if self.model is None or self.encoder is None or not segments:
            return None
        vectors = self.encoder.encode(list(segments))
        return self.model.evidence(vectors, list(segments), whole)

    def _decide(self, text: str, hits: Sequence[RuleHit], semantic: dict[Level, Evidence] | None) -> Assessment:
        asked = [h for h in hits if h.effect == "ask"]
        asked_levels = {h.level for h in asked}
        cancelled = {h.level for h in hits if h.effect == "cancel"}
        model = self.model
        if semantic is not None and model is not None:
            for level in PRECEDENCE:  # crisis first, then the stricter of emergency and urgent
                evidence = semantic[level]
                if not model.certain(level, evidence):
                    continue
                # A sign a guard explained ("no fever") leaves the classifier at most a question.
                explained = level is not Level.CRISIS and level in cancelled and level not in asked_levels
                outcome = Outcome.UNSURE if explained else Outcome.CERTAIN
                return Assessment(outcome, level, evidence.segment[:300], "semantic", evidence.margin)
            for level in PRECEDENCE:
                evidence = semantic[level]
                # A sign the rules saw and a guard explained does not make the classifier's doubt a question;
                # crisis is never explained away.
                if level is not Level.CRISIS and level in cancelled and level not in asked_levels:
                    continue
                if model.asks(level, evidence):
                    return Assessment(Outcome.UNSURE, level, evidence.segment[:300], "semantic", evidence.margin)
        if asked:
            return self._from_rule(text, asked[0], Outcome.UNSURE)
        return CLEAR


def _rank_level(level: Level) -> int:
    """Crisis 3, emergency 2, urgent 1: the stricter, the higher."""
    return len(PRECEDENCE) - PRECEDENCE.index(level)


def _rank(assessment: Assessment) -> tuple[int, int]:
    """Orders assessments: certain over unsure over clear, then by level (crisis, emergency, urgent)."""
    outcome = {Outcome.CLEAR: 0, Outcome.UNSURE: 1, Outcome.CERTAIN: 2}[assessment.outcome]
    level = 0 if assessment.level is None else _rank_level(assessment.level)
    return outcome, level


def _segments(text: str) -> tuple[list[str], int | None]:
    """The whole message (if not too long) and each of its sentences, long sentences in pieces; and the index
    of the whole message among them (None when only pieces are scored)."""
    stripped = text.strip()
    if not stripped:
        return [], None
    pieces: list[str] = []
    for sentence in _SENTENCES.split(stripped):
        sentence = sentence.strip()
        while len(sentence) > SEGMENT_CHARS:
            cut = sentence.rfind(" ", 0, SEGMENT_CHARS)
            cut = cut if cut > SEGMENT_CHARS // 2 else SEGMENT_CHARS
            pieces.append(sentence[:cut])
            sentence = sentence[cut:].strip()
        if sentence:
            pieces.append(sentence)
    whole: int | None = 0 if len(stripped) <= SEGMENT_CHARS * 2 else None
    segments = [stripped] if whole is not None else []
    if len(pieces) > 1 or whole is None:
        segments.extend(pieces)
    if len(segments) > MAX_SEGMENTS:  # keep the start and, above all, the end of a very long message
        segments = segments[: MAX_SEGMENTS // 2] + segments[-MAX_SEGMENTS // 2 :]
    return segments, whole
