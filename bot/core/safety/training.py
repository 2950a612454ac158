"""What the semantic classifier learns from: the curated examples, and every FAQ and out-of-scope question as calm."""

from __future__ import annotations

import numpy as np

from bot.core.content import Content
from bot.core.safety.classifier import LABELS, TrainingSet


def training_set(content: Content) -> TrainingSet:
    """Curated examples per level and hard negatives (grouped by paraphrase), plus the content's questions.

    FAQ example questions and out-of-scope questions are ordinary calm messages: they teach the
    classifier what everyday talk looks like, and the false-alarm figures count them apart.
    """
    texts: list[str] = []
    labels: list[int] = []
    groups: list[int] = []
    langs: list[str] = []
    hard: list[bool] = []
    group = 0
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
        everyday = [q for entry in pack.faq.entries for q in entry.questions] + list(pack.out_of_scope.questions)
        for text in everyday:
            group += 1
            texts.append(text)
            labels.append(0)
            groups.append(group)
            langs.append(lang)
            hard.append(False)
    return TrainingSet(
        tuple(texts),
        np.array(labels, dtype=np.int64),
        np.array(groups, dtype=np.int64),
        tuple(langs),
        np.array(hard, dtype=np.bool_),
    )
