"""Loading config and content into a ready Assistant: the one start-up path for every command."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np

from bot.config import Config, load_config
from bot.core.content import Content, load_content
from bot.core.conversation import Assistant
from bot.core.matcher import SemanticIndex, documents
from bot.core.problems import InvalidContent, Problem, errors

CONFIG_ENV = "AFTERCARE_CONFIG"
CACHE_ENV = "AFTERCARE_CACHE_DIR"
log = logging.getLogger(__name__)


def config_path(explicit: str | None) -> Path | None:
    """--config, else $AFTERCARE_CONFIG, else ./config.yaml if present, else the embedded defaults."""
    if explicit:
        return Path(explicit)
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    local = Path("config.yaml")
    return local if local.is_file() else None


def check(explicit_config: str | None) -> tuple[Config | None, Content | None, list[Problem]]:
    """Everything `aftercare check` reports; never raises for bad input."""
    path = config_path(explicit_config)
    if path is not None and not path.is_file():
        return None, None, [Problem(str(path), None, "config file not found")]
    try:
        config = load_config(path)
    except InvalidContent as exc:
        return None, None, exc.problems
    facts = {lang: config.facts(lang) for lang in config.languages}
    content, problems = load_content(config.content_dir, config.languages, facts)
    if content is not None and all(pack.ui.staff is None for pack in content.packs.values()):
        where = str(config.content_dir / config.default_language / "ui.yaml")
        problems.append(Problem(where, None, "no 'staff' texts in any language: the staff chat needs them"))
        content = None
    return config, content, problems


def load_assistant(explicit_config: str | None) -> tuple[Config, Assistant]:
    """Config + validated content + Assistant; raises InvalidContent with every error found."""
    config, content, problems = check(explicit_config)
    if config is None or content is None:
        raise InvalidContent(errors(problems) or problems)
    facts = {lang: config.facts(lang) for lang in config.languages}
    return config, Assistant(content, facts, config.default_language, semantic_index(content))


def cache_dir() -> Path:
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "aftercare"


def semantic_index(content: Content) -> SemanticIndex:
    """The sentence encoder and the vectors of every content document, cached on disk by content hash.

    Encoding a few thousand examples takes seconds; reading them back takes milliseconds.
    """
    from bot.core.semantic import UseEncoder

    encoder = UseEncoder()
    encoder.encode(["warm-up"])  # load the model now, not on the first patient's message
    texts = [d.text for d in documents(content)]
    digest = hashlib.sha256("\x1f".join([UseEncoder.model_id(), *texts]).encode("utf-8")).hexdigest()[:24]
    path = cache_dir() / f"vectors-{digest}.npy"
    try:
        vectors = np.load(path)
        if vectors.shape[0] == len(texts):
            return SemanticIndex(encoder, vectors)
    except (OSError, ValueError):
        pass
    vectors = encoder.encode(texts)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(temporary, vectors)
        temporary.replace(path)
    except OSError:
        log.warning("could not cache sentence vectors in %s; they will be computed at every start", path.parent)
    return SemanticIndex(encoder, vectors)
