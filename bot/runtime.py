"""Loading config and content into a ready Assistant: the one start-up path for every command."""

from __future__ import annotations

import os
from pathlib import Path

from bot.config import Config, load_config
from bot.core.content import Content, load_content
from bot.core.conversation import Assistant
from bot.core.problems import InvalidContent, Problem, errors

CONFIG_ENV = "AFTERCARE_CONFIG"


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
    return config, Assistant(content, facts, config.default_language)
