"""Start-up caches: what a start reads back from the cache folder behaves exactly as what it would build."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from bot import regexcache
from bot.config import Config
from bot.core.conversation import Assistant
from bot.core.safety.phrases import normalise
from bot.runtime import CACHE_ENV, load_all_content
from tests.conftest import fixture_config


def test_safety_patterns_read_back_from_the_cache_find_what_the_rules_find(shipped: tuple[Config, Assistant]) -> None:
    """Every rule of the shipped content, rebuilt from its stored opcodes, matches the same words in its own
    examples (and in messages it must ignore) as the regex compiled from its source."""
    _, assistant = shipped
    rules = assistant.triage.rules
    compared = 0
    for lang, file in assistant.content.packs.items():
        for _, _, rule in file.triage.every_rule():
            name = f"{lang}:{rule.id}"
            source = next(r.pattern.pattern for r in rules._rules[lang] if r.name == name)
            original = re.compile(source)
            cached = regexcache.pattern_of(source, regexcache.entry_of(source))
            for message in (*rule.match, *rule.ignore):
                text = normalise(message)
                assert [m.span() for m in cached.finditer(text)] == [m.span() for m in original.finditer(text)]
                compared += 1
    assert compared > 500


def test_a_content_edit_is_loaded_afresh_not_read_from_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The curator breaks a file after a start that cached the content: the next load reports the error."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    content_dir = tmp_path / "faq"
    shutil.copytree(fixture_config().content_dir, content_dir)
    config = fixture_config().model_copy(update={"content_dir": content_dir})
    first, problems = load_all_content(config, examples=False)
    assert first is not None and not [p for p in problems if p.severity == "error"]
    assert list((tmp_path / "cache").glob("content-*.pickle"))
    again, _ = load_all_content(config, examples=False)
    assert again is not None and again.packs["en"].faq.entries == first.packs["en"].faq.entries
    faq = content_dir / "en" / "faq.yaml"
    faq.write_text(faq.read_text(encoding="utf-8") + "\n  - id: [broken\n", encoding="utf-8")
    edited, problems = load_all_content(config, examples=False)
    assert edited is None
    assert any("faq.yaml" in p.file for p in problems)


def test_damaged_cache_files_are_rebuilt_not_trusted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A disk that truncated or garbled every cache file (a crash mid-write, a full disk): the next start builds
    afresh and answers as before, danger signs included."""
    from bot.runtime import assistant_for

    cache = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(cache))
    config = fixture_config()
    first = assistant_for(config)
    expected = first.answer("how long do bruises last?", "en")
    files = [f for f in cache.iterdir() if f.is_file()]
    assert {f.name.split("-")[0] for f in files} >= {"content", "matcher", "regex", "safety", "vectors"}
    for file in files:
        file.write_bytes(b"\x80\x04garbage")
    monkeypatch.setattr(regexcache, "_held", {})  # a new process: the regex cache is read again
    again = assistant_for(config)
    assert again.answer("how long do bruises last?", "en").text == expected.text
    assert again.assess("I can't breathe", "en")[0].level is not None
