"""The safety rules' compiled regexes, kept between starts.

The curated rules compile to a few hundred large regular expressions, and Python's `re` parses and
compiles them in Python: about two seconds of every start-up. What `re` produces is a list of
opcodes handed to its C engine (`_sre.compile`), so this module stores those opcodes in the cache
folder and hands them back at the next start. The file is keyed by the exact Python build and the
engine's version; the engine validates every opcode list it is given; anything unexpected (another
Python, a damaged file) falls back to compiling from the source. Nothing a patient wrote is stored:
only the rules' own patterns.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import pickle
import re
import sys
import unicodedata
from array import array
from pathlib import Path
from typing import Any

from bot.core import text
from bot.core.safety import phrases

log = logging.getLogger(__name__)

_compiler: Any = importlib.import_module("re._compiler")
_parser: Any = importlib.import_module("re._parser")
ENGINE = f"{sys.version}|{_compiler.MAGIC}|{_compiler._sre.CODESIZE}"
_Entry = tuple[int, bytes, int, dict[str, int], tuple[str | None, ...]]


def path_in(folder: Path) -> Path:
    return folder / f"regex-{hashlib.sha256(ENGINE.encode('utf-8')).hexdigest()[:16]}.pickle"


_held: dict[Path, dict[str, _Entry]] = {}  # per cache folder: what this process read from it


_sources_held: dict[Path, int] = {}  # ... and how many phrase sources


def _phrase_compiler() -> str:
    """The phrase compiler's own code, the folding it applies and the Unicode tables under both: a phrase's
    regex source is only reused from the same compiler."""
    digest = hashlib.sha256(unicodedata.unidata_version.encode("utf-8"))
    for module in (phrases, text):
        digest.update(Path(module.__file__ or "").read_bytes())
    return digest.hexdigest()[:16]


def preload(folder: Path) -> int:
    """Give `phrases.compiled` every pattern the cache holds (once per process); how many it held."""
    if folder in _held:
        return len(_held[folder])
    _held[folder] = {}
    try:
        with path_in(folder).open("rb") as handle:
            stored = pickle.load(handle)  # our own cache file, written by `save` below
        if not isinstance(stored, dict) or stored.get("engine") != ENGINE:
            return 0
        entries: dict[str, _Entry] = stored["patterns"]
        phrases.remember({source: pattern_of(source, entry) for source, entry in entries.items()})
        if stored.get("compiler") == _phrase_compiler():
            phrases.remember_sources(stored["sources"])
            _sources_held[folder] = len(stored["sources"])
        _held[folder] = entries
        return len(entries)
    except (OSError, pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, RuntimeError):
        return 0


def save(folder: Path) -> None:
    """Write every pattern compiled so far, if there are more than the cache held."""
    patterns = phrases.compiled_patterns()
    held = _held.setdefault(folder, {})
    sources = phrases.phrase_sources()
    if all(source in held for source in patterns) and len(sources) <= _sources_held.get(folder, 0):
        return
    try:
        entries = {source: held.get(source) or entry_of(source) for source in patterns}
    except Exception:  # a Python whose `re` internals differ: start-up is only slower
        log.info("regex cache: this Python's re module is not supported; patterns are compiled at each start")
        return
    _held[folder] = entries
    _sources_held[folder] = len(sources)
    target = path_in(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f"{target.name}.{os.getpid()}.tmp")  # processes starting together
        with temporary.open("wb") as handle:
            stored = {"engine": ENGINE, "patterns": entries, "compiler": _phrase_compiler(), "sources": sources}
            pickle.dump(stored, handle, protocol=pickle.HIGHEST_PROTOCOL)
        temporary.replace(target)
    except OSError:
        log.warning("could not write the regex cache in %s; start-up will be slower", folder)


def entry_of(source: str) -> _Entry:
    """What `re.compile(source)` hands the engine (the steps of `re._compiler.compile`, without flags)."""
    parsed = _parser.parse(source, 0)
    code = _compiler._code(parsed, 0)
    groupindex = dict(parsed.state.groupdict)
    indexgroup: list[str | None] = [None] * parsed.state.groups
    for name, index in groupindex.items():
        indexgroup[index] = name
    opcodes = array("I", code).tobytes()
    return parsed.state.flags, opcodes, parsed.state.groups - 1, groupindex, tuple(indexgroup)


def pattern_of(source: str, entry: _Entry) -> re.Pattern[str]:
    flags, opcodes, groups, groupindex, indexgroup = entry
    code = array("I")
    code.frombytes(opcodes)
    pattern: re.Pattern[str] = _compiler._sre.compile(source, flags, code.tolist(), groups, groupindex, indexgroup)
    return pattern
