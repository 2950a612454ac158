"""The `aftercare` commands as a clinic uses them: ask, ask --batch --json, eval with limits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.cli import main

KEYS = {"lang", "triage", "faq_id", "score", "candidates", "answer"}


def test_ask_prints_the_answer(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ask", "posso truccarmi domani?", "--lang", "it"]) == 0
    out = capsys.readouterr().out
    assert "trucco" in out.lower() and "👍" in out


def test_batch_writes_one_json_object_per_line_in_order(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    batch = tmp_path / "in.jsonl"
    lines = [
        {"text": "sunscreen??"},
        {"text": "Puchną mi usta i język, ciężko mi się oddycha", "lang": "pl"},
        {"text": "what's the capital of Peru?", "lang": "en"},
        {"text": "hola!", "lang": "es"},
    ]
    batch.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n", encoding="utf-8")
    assert main(["ask", "--batch", str(batch), "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [set(r) for r in records] == [KEYS] * 4
    sunscreen, swelling, peru, hola = records
    assert sunscreen["faq_id"] == "sunscreen_sun" and sunscreen["triage"] is None and sunscreen["score"] > 0
    assert swelling["triage"] == "emergency" and swelling["lang"] == "pl" and swelling["faq_id"] is None
    assert peru["faq_id"] is None and peru["triage"] is None and "+39" in peru["answer"]
    assert hola["faq_id"] is None and hola["lang"] == "es"
    assert all(isinstance(r["candidates"], list) for r in records)


def test_eval_prints_a_table_and_enforces_limits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    labelled = tmp_path / "clinic.jsonl"
    rows = [
        {"text": "when can I wear foundation again?", "lang": "en", "expect": "makeup", "triage": None},
        {"text": "I have a fever of 39 since this morning", "lang": "en", "expect": None, "triage": "urgent"},
        {"text": "how much does a boat cost?", "lang": "en", "expect": None, "triage": None},
        {"text": "when can I wear foundation again?", "lang": "en", "expect": "sunscreen_sun", "triage": None},
    ]
    labelled.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    assert main(["eval", str(labelled)]) == 0
    out = capsys.readouterr().out
    assert "in-scope top-1" in out and "1/2  50.0%" in out and "expected sunscreen_sun" in out
    assert main(["eval", str(labelled), "--min-accuracy", "95"]) == 1
    assert "in-scope accuracy 50.0%" in capsys.readouterr().err
    assert main(["eval", str(labelled), "--min-recall", "100", "--max-false-positives", "0"]) == 0
