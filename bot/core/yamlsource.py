"""YAML loading that remembers where every value came from, so problems can name a line."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bot.core.problems import Problem

Loc = tuple[str | int, ...]

# libyaml's parsers when PyYAML was built with them: same results, several times faster.
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_BaseLoader = getattr(yaml, "CBaseLoader", yaml.BaseLoader)


@dataclass
class YamlDocument:
    path: str
    data: Any = None
    lines: dict[Loc, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def line_of(self, loc: Loc) -> int | None:
        """The line of the deepest known part of `loc` (pydantic error locations may go deeper)."""
        for end in range(len(loc), -1, -1):
            line = self.lines.get(tuple(loc[:end]))
            if line is not None:
                return line
        return None

    def problem(self, loc: Loc, message: str, severity: str = "error") -> Problem:
        return Problem(self.path, self.line_of(loc), message, "warning" if severity == "warning" else "error")


def load_yaml(path: Path, display: str | None = None, *, strings_only: bool = False) -> YamlDocument:
    """Parse a YAML file; syntax errors, duplicate keys and bad encoding become problems, never exceptions.

    With `strings_only`, every scalar stays text: in content, `no` is the English word, not `False`.
    """
    doc = YamlDocument(display or str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        doc.problems.append(Problem(doc.path, None, "file is missing"))
        return doc
    except UnicodeDecodeError as exc:
        line = path.read_bytes().count(b"\n", 0, exc.start) + 1
        doc.problems.append(Problem(doc.path, line, f"file is not valid UTF-8 ({exc.reason})"))
        return doc
    try:
        node = yaml.compose(text, Loader=_SafeLoader)
        doc.data = yaml.load(text, Loader=_BaseLoader if strings_only else _SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        reason = exc.problem or exc.context or "invalid YAML"
        doc.problems.append(Problem(doc.path, mark.line + 1 if mark else None, f"invalid YAML: {reason}"))
        return doc
    except yaml.reader.ReaderError as exc:  # a control character: the reader knows only its offset
        line = text.count("\n", 0, exc.position) + 1
        doc.problems.append(Problem(doc.path, line, f"invalid YAML: character {exc.character!r} is not allowed"))
        return doc
    except yaml.YAMLError as exc:
        doc.problems.append(Problem(doc.path, None, f"invalid YAML: {exc}"))
        return doc
    if node is not None:
        _walk(node, (), doc)
    return doc


def _walk(node: yaml.Node, loc: Loc, doc: YamlDocument) -> None:
    doc.lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen:
                doc.problems.append(Problem(doc.path, line, f"duplicate key '{key}' (first at line {seen[key]})"))
            seen[key] = line
            doc.lines[(*loc, key)] = line
            _walk(value_node, (*loc, key), doc)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            doc.lines[(*loc, index)] = item.start_mark.line + 1
            _walk(item, (*loc, index), doc)
