"""What the semantic classifier learns from: the curated examples, and every FAQ and out-of-scope question as calm."""

from __future__ import annotations

import numpy as np

from bot.core.content import Content
from bot.core.safety.classifier import LABELS, TrainingSet
from bot.core.safety.rules import RuleSet


def training_set(content: Content) -> TrainingSet:
    """Curated examples per level and hard negatives (grouped by paraphrase), plus the content's questions.

    FAQ example questions, out-of-scope questions and small talk are ordinary calm messages: they teach the
    classifier what everyday talk looks like, and the false-alarm figures count them apart.
    """
    texts: list[str] = []
    labels: list[int] = []
    groups: list[int] = []
    langs: list[str] = []
    hard: list[bool] = []
    group = 0
    topic_group: dict[str, int] = {}
    reported = {question for _, _, question, _ in danger_questions(content)}
    for lang, pack in content.packs.items():
        for label_index, label in enumerate(LABELS):
            for paraphrases in pack.triage.examples.groups(label):
                group += 1
                for text in paraphrases:
                    texts.append(text)
                    labels.append(label_index)
                    groups.append(group)
                    langs.append(lang)
                    hard.append(True)
        smalltalk = pack.faq.smalltalk
        everyday = [
            *(q for entry in pack.faq.entries for q in entry.questions),
            *pack.out_of_scope.questions,
            *smalltalk.greeting,
            *smalltalk.thanks,
        ]
        # One group per FAQ topic: cross-validation must not let a topic's paraphrases vouch for each other, or
        # everyday questions look far calmer than a patient's own words (thresholds would ask too often).
        for entry in pack.faq.entries:
            if entry.id not in topic_group:  # the same topic in every language: translations are paraphrases too
                group += 1
                topic_group[entry.id] = group
        topic_of = {q: entry.id for entry in pack.faq.entries for q in entry.questions}
        for text in everyday:
            if text in reported:
                continue  # a question that reports danger is not a calm example, whatever topic it sits under
            if text in topic_of:
                groups.append(topic_group[topic_of[text]])
            else:
                group += 1
                groups.append(group)
            texts.append(text)
            labels.append(0)
            langs.append(lang)
            hard.append(False)
    return TrainingSet(
        tuple(texts),
        np.array(labels, dtype=np.int64),
        np.array(groups, dtype=np.int64),
        tuple(langs),
        np.array(hard, dtype=np.bool_),
    )


def danger_questions(content: Content) -> list[tuple[str, str, str, str]]:
    """FAQ example questions the rules read as a certain danger sign: (lang, topic, question, level).

    Such a question never reaches its FAQ answer (triage runs first), and it must not teach the
    classifier that danger sounds calm; `aftercare check` lists them for curators.
    """
    rules = RuleSet({lang: pack.triage for lang, pack in content.packs.items()})
    found = []
    for lang, pack in content.packs.items():
        for entry in pack.faq.entries:
            for question in entry.questions:
                hit = next((h for h in rules.hits(question, lang) if h.effect is None), None)
                if hit is not None:
                    found.append((lang, entry.id, question, hit.level.value))
    return found
