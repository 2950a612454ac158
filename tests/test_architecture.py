"""Keep the picture true: the core knows nothing of Telegram, SQL or the CLI."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parent.parent / "bot" / "core"
FORBIDDEN = ("telegram", "sqlalchemy", "apscheduler", "bot.store", "bot.telegram", "bot.cli", "bot.config")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_core_imports_nothing_from_the_edge() -> None:
    offenders = {
        f"{path.name}: {name}"
        for path in CORE.rglob("*.py")
        for name in imported_modules(path)
        if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)
    }
    assert offenders == set()
