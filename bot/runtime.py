"""Loading config and content into a ready Assistant: the one start-up path for every command."""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import pickle
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import timedelta
from importlib.metadata import version
from pathlib import Path
from typing import BinaryIO

import numpy as np
from threadpoolctl import threadpool_limits

from bot import regexcache
from bot.config import Config, load_config
from bot.core.content import Content, load_content
from bot.core.conversation import Assistant
from bot.core.dialogue import Dialogue
from bot.core.invites import InviteCodec
from bot.core.matcher import Matcher, SemanticIndex, documents
from bot.core.plans import load_plans
from bot.core.problems import InvalidContent, Problem, errors
from bot.core.safety import classifier
from bot.core.safety.classifier import Model, Report
from bot.core.safety.training import training_set
from bot.core.semantic import UseEncoder
from bot.core.staff import StaffWriter

CONFIG_ENV = "AFTERCARE_CONFIG"
CACHE_ENV = "AFTERCARE_CACHE_DIR"
KEEP_VECTOR_FILES = 5  # several content folders (a clinic's, the tests') may share one cache
log = logging.getLogger(__name__)


def config_path(explicit: str | None) -> Path | None:
    """--config, else $AFTERCARE_CONFIG, else ./config.yaml if present, else the embedded defaults."""
    if explicit:
        return Path(explicit)
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    local = Path("config.yaml")
    return local if local.is_file() else None


def check_config(explicit_config: str | None) -> tuple[Config, Path | None]:
    """The config alone (no content); raises InvalidContent with its problems."""
    path = config_path(explicit_config)
    if path is not None and not path.is_file():
        raise InvalidContent([Problem(str(path), None, "config file not found")])
    return load_config(path), path


def check(explicit_config: str | None, *, examples: bool = True) -> tuple[Config | None, Content | None, list[Problem]]:
    """Everything `aftercare check` reports; never raises for bad input. `examples=False` skips running every
    safety rule over its own example messages: a curator's check, not something each start-up needs."""
    path = config_path(explicit_config)
    if path is not None and not path.is_file():
        return None, None, [Problem(str(path), None, "config file not found")]
    try:
        config = load_config(path)
    except InvalidContent as exc:
        return None, None, exc.problems
    content, problems = load_all_content(config, examples=examples)
    return config, content, problems


def load_all_content(config: Config, *, examples: bool = True) -> tuple[Content | None, list[Problem]]:
    """The FAQ, interface texts, safety content and recovery plans the config points to, with every problem.

    Loading and validating take about a second; the result is cached under a key made of the content's
    files, the settings it depends on and the code that reads it, so an edit to any of them loads afresh.
    """
    regexcache.preload(cache_dir())
    key = content_key(config, examples=examples)
    path = cache_dir() / f"content-{key}.pickle" if key else None
    cached = _read_cache(path) if path is not None else None
    if isinstance(cached, tuple) and len(cached) == 2 and isinstance(cached[1], list):
        return cached[0], cached[1]
    content, problems = _load_all_content(config, examples=examples)
    if path is not None and (content is not None or examples):  # (errors are named relative to this folder)
        _write_cache(path, lambda handle: pickle.dump((content, problems), handle, protocol=pickle.HIGHEST_PROTOCOL))
        _forget_old(path.parent, "content-*.pickle")
    return content, problems


def content_key(config: Config, *, examples: bool = False) -> str | None:
    """A digest of everything loading the content depends on (None when the folder cannot be read)."""
    digest = hashlib.sha256()
    settings = (
        code_digest(),
        # `aftercare check` names files relative to the current folder; a start-up prints no problems.
        str(Path.cwd()) if examples else "",
        str(config.content_dir.resolve()),
        repr(config.languages),
        config.default_language,
        repr(config.reminders.treatments),
        repr({lang: config.facts(lang) for lang in config.languages}),
        repr(examples),
    )
    for part in settings:
        digest.update(part.encode("utf-8") + b"\x1f")
    try:
        # (through symbolic links, as the loaders read them: a shared folder linked into the content counts)
        for folder, subfolders, files in os.walk(config.content_dir, followlinks=True):
            subfolders.sort()
            for name in sorted(files):
                file = Path(folder) / name
                digest.update(str(file.relative_to(config.content_dir)).encode("utf-8") + b"\x1f")
                digest.update(file.read_bytes() + b"\x1e")
    except OSError:
        return None
    return digest.hexdigest()[:24]


@functools.cache
def code_digest() -> str:
    """A digest of this package's code, the Python and the libraries whose objects a cache holds: a cache
    written by other code is never read back."""
    digest = hashlib.sha256(sys.version.encode("utf-8"))
    for library in ("pydantic", "pydantic-core", "PyYAML", "numpy"):
        digest.update(f"{library}={version(library)}".encode())
    package = Path(__file__).resolve().parent
    for file in sorted(package.rglob("*.py")):
        digest.update(file.read_bytes())
    return digest.hexdigest()[:24]


def _load_all_content(config: Config, *, examples: bool) -> tuple[Content | None, list[Problem]]:
    facts = {lang: config.facts(lang) for lang in config.languages}
    content, problems = load_content(config.content_dir, config.languages, facts, examples=examples)
    if content is not None and all(pack.ui.staff is None for pack in content.packs.values()):
        where = str(config.content_dir / config.default_language / "ui.yaml")
        problems.append(Problem(where, None, "no 'staff' texts in any language: the staff chat needs them"))
        content = None
    if content is not None:
        plans, plan_problems = load_plans(
            config.content_dir,
            config.languages,
            facts,
            treatments=config.reminders.treatments,
            content_facts=content.facts,
        )
        problems.extend(plan_problems)
        content = replace(content, plans=plans) if plans is not None else None
    return content, problems


def load_assistant(explicit_config: str | None) -> tuple[Config, Assistant]:
    """Config + validated content + Assistant; raises InvalidContent with every error found."""
    config, content, problems = check(explicit_config, examples=False)
    if config is None or content is None:
        raise InvalidContent(errors(problems) or problems)
    return config, _assistant(config, content)


def assistant_for(config: Config) -> Assistant:
    """The Assistant for an already loaded config; raises InvalidContent with every error found."""
    content, problems = load_all_content(config, examples=False)
    if content is None:
        raise InvalidContent(errors(problems) or problems)
    return _assistant(config, content)


def _assistant(config: Config, content: Content) -> Assistant:
    facts = {lang: config.facts(lang) for lang in config.languages}
    # Loading the sentence encoder takes most of start-up: do it on the other core meanwhile.
    with ThreadPoolExecutor(max_workers=1) as pool:
        encoder = pool.submit(load_encoder)
        assistant = Assistant(content, facts, config.default_language, matcher=matcher_for(config, content))
        assistant.triage.rules.prepare()
        regexcache.save(cache_dir())
        assistant.plans_enabled = content.plans is not None
        index = semantic_index(content, encoder.result())
        assistant.matcher.attach(index)
        model, _ = safety_model(content, index)
        assistant.triage.attach(model, index.encoder)
    # From here on the work is many small products from several threads (the bot's workers): BLAS threads
    # of their own would only contend with them for the cores (training above still used them all).
    threadpool_limits(limits=1, user_api="blas")
    return assistant


def matcher_for(config: Config, content: Content) -> Matcher:
    """The matcher's index (seconds of text processing), cached with the content it was built from."""
    key = content_key(config)
    path = cache_dir() / f"matcher-{key}.pickle" if key else None
    cached = _read_cache(path) if path is not None else None
    if isinstance(cached, Matcher) and cached.topics == sorted({d.topic for d in documents(content)}):
        return cached
    matcher = Matcher(content)
    if path is not None:
        _write_cache(path, lambda handle: pickle.dump(matcher, handle, protocol=pickle.HIGHEST_PROTOCOL))
        _forget_old(path.parent, "matcher-*.pickle")
    return matcher


def _read_cache(path: Path) -> object:
    """One of our own cache files (written by `_write_cache`), or None."""
    try:
        with path.open("rb") as handle:
            return pickle.load(handle)  # our own cache file, written by this program
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, TypeError):
        return None


def safety_model(content: Content, index: SemanticIndex) -> tuple[Model, Report]:
    """The triage classifier and its cross-validated figures, trained once per content and cached by its hash."""
    # The key is made of what the training set is built from, not of the set itself: building it runs every
    # rule over every FAQ question (seconds), which a start-up with a cached model need not do.
    settings = tuple(
        (name, getattr(classifier, name)) for name in dir(classifier) if name.isupper() and not name.startswith("_")
    )
    inputs = [UseEncoder.model_id(), repr(settings)]
    for lang, pack in content.packs.items():
        inputs += [lang, pack.triage.model_dump_json(), *pack.out_of_scope.questions]
        inputs += [*pack.faq.smalltalk.greeting, "\x1e", *pack.faq.smalltalk.thanks, "\x1e"]
        inputs += [f"{entry.id}\x1d{question}" for entry in pack.faq.entries for question in entry.questions]
    key = "\x1f".join(inputs)
    path = cache_dir() / f"safety-{hashlib.sha256(key.encode('utf-8')).hexdigest()[:24]}.pickle"
    try:
        with path.open("rb") as handle:
            cached = pickle.load(handle)  # our own cache file, written below by this program
        if isinstance(cached, tuple) and isinstance(cached[0], Model):
            return cached[0], cached[1]
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, IndexError):
        pass
    data = training_set(content)
    known = {d.text: i for i, d in enumerate(documents(content))}
    missing = sorted({t for t in data.texts if t not in known})
    encoded = dict(zip(missing, index.encoder.encode(missing), strict=True)) if missing else {}
    vectors = np.stack([index.vectors[known[t]] if t in known else encoded[t] for t in data.texts]).astype(np.float32)
    model, report = classifier.fit(vectors, data)
    _write_cache(path, lambda handle: pickle.dump((model, report), handle))
    _forget_old(path.parent, "safety-*.pickle")
    return model, report


def load_encoder() -> UseEncoder:
    """The sentence encoder, ready; its tokenizer comes from the cache when a previous start saved it."""
    path = cache_dir() / f"tokenizer-{UseEncoder.model_id()}.pickle"
    tokenizer = None
    try:
        with path.open("rb") as handle:
            tokenizer = pickle.load(handle)  # our own cache file, written below by this program
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError):
        pass
    encoder = UseEncoder(tokenizer)
    encoder.encode(["warm-up"])  # load the model now, not on the first patient's message
    if tokenizer is None:
        _write_cache(path, lambda handle: pickle.dump(encoder.tokenizer, handle))
    return encoder


def _write_cache(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write a cache file atomically; a read-only cache only costs time at the next start."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        with temporary.open("wb") as handle:
            write(handle)
        temporary.replace(path)
    except OSError:
        log.warning("could not write the cache in %s; start-up will be slower", path.parent)


def cache_dir() -> Path:
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "aftercare"


def semantic_index(content: Content, encoder: UseEncoder | None = None) -> SemanticIndex:
    """The sentence encoder and the vectors of every content document, cached on disk by content hash.

    Encoding a few thousand examples takes seconds; reading them back takes milliseconds.
    """
    encoder = encoder or load_encoder()
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
    _write_cache(path, lambda handle: np.save(handle, vectors))
    _forget_old(path.parent, "vectors-*.npy")
    return SemanticIndex(encoder, vectors)


def _forget_old(folder: Path, pattern: str, keep: int = KEEP_VECTOR_FILES) -> None:
    """Each content edit leaves a cache file behind; keep only the newest few."""
    try:
        files = sorted(folder.glob(pattern), key=lambda f: f.stat().st_mtime, reverse=True)
        for stale in files[keep:]:
            stale.unlink(missing_ok=True)
    except OSError:
        pass


def safety_figures(content: Content) -> Report:
    """The classifier's cross-validated figures for `aftercare check` (trains it if the cache has none)."""
    index = semantic_index(content, load_encoder())
    return safety_model(content, index)[1]


def build_dialogue(config: Config, assistant: Assistant, bot_username: str | None = None) -> Dialogue:
    """The dialogue with the clinic's staff texts, time zone, opening hours and invite secret."""
    staff_lang = assistant.staff_lang
    texts = assistant.pack(staff_lang).ui.staff
    assert texts is not None  # `check` refuses content without staff texts
    invites = InviteCodec(config.invite_secret.get_secret_value()) if config.invite_secret else None
    return Dialogue(
        assistant,
        staff=StaffWriter(texts, assistant.facts(staff_lang)),
        timezone=config.zone,
        hours=config.hours,
        invites=invites,
        plans=assistant.content.plans,
        timing=config.reminders.timing,
        bot_username=bot_username or config.telegram.bot_username,
        invite_valid_for=timedelta(days=config.reminders.invite_valid_days),
    )
