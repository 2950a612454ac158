"""`aftercare check` on broken content: every kind of mistake a curator can make is named with file and line."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from bot.cli import main
from bot.core.content import load_content
from tests.conftest import TEST_CLINIC

FIXTURE = Path(__file__).parent / "fixtures" / "faq"
FACTS = {"en": TEST_CLINIC}


@pytest.fixture
def content_dir(tmp_path: Path) -> Path:
    target = tmp_path / "faq"
    shutil.copytree(FIXTURE, target)
    return target


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"fixture no longer contains {old!r}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def problems_of(content_dir: Path, languages: tuple[str, ...] = ("en",)) -> list[str]:
    _, problems = load_content(content_dir, languages, FACTS)
    return [str(p) for p in problems]


def test_fixture_is_valid(content_dir: Path) -> None:
    content, problems = load_content(content_dir, ("en",), FACTS)
    assert content is not None
    assert [p for p in problems if p.severity == "error"] == []


Breakage = Callable[[Path], object]

CASES: list[tuple[str, Breakage, str, str]] = [
    (
        "yaml syntax",
        lambda d: edit(d / "en/faq.yaml", "    title: Bruises", "    title: [Bruises"),
        "en/faq.yaml:",
        "invalid YAML",
    ),
    (
        "unknown key",
        lambda d: edit(d / "en/faq.yaml", "    title: Bruises", "    title: Bruises\n    colour: blue"),
        "en/faq.yaml@colour: blue",
        "unknown key 'entries.0.colour'",
    ),
    (
        "missing answer",
        lambda d: edit(
            d / "en/faq.yaml",
            "    answer: Small bruises are common and fade within a week. Call {clinic_phone} if one grows.\n",
            "",
        ),
        "en/faq.yaml:",
        "missing key 'entries.0.answer'",
    ),
    (
        "empty answer",
        lambda d: edit(
            d / "en/faq.yaml",
            "answer: Small bruises are common and fade within a week. Call {clinic_phone} if one grows.",
            'answer: ""',
        ),
        'en/faq.yaml@answer: ""',
        "must not be empty",
    ),
    (
        "questions not a list",
        lambda d: edit(
            d / "en/faq.yaml",
            "    questions:\n      - how long do bruises last\n",
            "    questions: {a: b}\n      - how long do bruises last\n",
        ),
        "en/faq.yaml:",
        "invalid YAML",
    ),
    (
        "questions wrong type",
        lambda d: edit(
            d / "en/faq.yaml",
            "    keywords: [bruise, bruised, haematoma]",
            "    keywords: {bruise: 1}",
        ),
        "en/faq.yaml@keywords: {bruise: 1}",
        "keywords",
    ),
    (
        "empty question",
        lambda d: edit(d / "en/faq.yaml", "      - how long do bruises last", '      - ""'),
        "en/faq.yaml:",
        "empty item",
    ),
    (
        "duplicate id",
        lambda d: edit(d / "en/faq.yaml", "  - id: booking_contact", "  - id: bruising"),
        "en/faq.yaml@  - id: bruising\n    title: Booking",
        "duplicate entry id 'bruising'",
    ),
    (
        "duplicate example question",
        lambda d: edit(d / "en/faq.yaml", "      - when are you open", "      - How long do bruises LAST"),
        "en/faq.yaml@How long do bruises LAST",
        "duplicate example question",
    ),
    (
        "unknown topic id",
        lambda d: edit(d / "en/faq.yaml", "  - id: booking_contact", "  - id: booking_contacts"),
        "en/faq.yaml@booking_contacts",
        "not a topic in topics.yaml",
    ),
    (
        "missing translation of a topic",
        lambda d: edit(d / "topics.yaml", "  bruising:", "  makeup: {category: healing}\n  bruising:"),
        "en/faq.yaml:",
        "missing translation: no entry for topic 'makeup'",
    ),
    (
        "unknown placeholder",
        lambda d: edit(d / "en/faq.yaml", "Call {clinic_phone} if", "Call {clinic_fone} if"),
        "en/faq.yaml@clinic_fone",
        "unknown placeholder {clinic_fone}",
    ),
    (
        "broken placeholder",
        lambda d: edit(d / "en/faq.yaml", "Call {clinic_phone} if", "Call {clinic_phone if"),
        "en/faq.yaml@{clinic_phone if",
        "broken placeholder",
    ),
    (
        "text longer than Telegram allows",
        lambda d: edit(d / "en/faq.yaml", "fade within a week.", "fade within a week. " + "Really, truly. " * 300),
        "en/faq.yaml@Really, truly",
        "Telegram allows 4096",
    ),
    (
        "title too long for a button",
        lambda d: edit(d / "en/faq.yaml", "title: Bruises", "title: " + "Bruises and haematomas " * 3),
        "en/faq.yaml@title: Bruises and",
        "fit a button",
    ),
    (
        "triage phrase that cannot compile",
        lambda d: edit(d / "en/triage.yaml", 'phrases: ["pus"]', 'phrases: ["{pus"]'),
        "en/triage.yaml@{pus",
        "unclosed",
    ),
    (
        "triage regex phrase matching everything",
        lambda d: edit(d / "en/triage.yaml", 'phrases: ["pus"]', "phrases: ['re:.*']"),
        "en/triage.yaml@re:.*",
        "matches an empty message",
    ),
    (
        "triage rule that misses its own example",
        lambda d: edit(d / "en/triage.yaml", 'match: ["there is pus"]', 'match: ["there is pus", "it oozes"]'),
        "en/triage.yaml@it oozes",
        "does not catch its example 'it oozes'",
    ),
    (
        "triage rule naming an unknown guard",
        lambda d: edit(d / "en/triage.yaml", '      phrases: ["pus"]', '      phrases: ["pus"]\n      unless: [nope]'),
        "en/triage.yaml@unless: [nope]",
        "unknown guard 'nope'",
    ),
    (
        "duplicate triage example",
        lambda d: edit(
            d / "en/triage.yaml",
            'crisis: ["I have saved up my sleeping pills"',
            'crisis: ["I have saved up my sleeping pills", "this itching is killing me"',
        ),
        "en/triage.yaml@none: [",
        "duplicate example 'this itching is killing me'",
    ),
    (
        "a typed-in number that is a fact",
        lambda d: edit(d / "en/faq.yaml", "fade within a week", "fade within 5-10 days"),
        "en/faq.yaml@fade within 5-10 days",
        "is the fact {bruise_days}",
    ),
    (
        "missing interface text",
        lambda d: edit(d / "en/ui.yaml", "fallback: ", "fallbakc: "),
        "en/ui.yaml:",
        "missing key 'fallback'",
    ),
    (
        "missing category label",
        lambda d: edit(d / "en/ui.yaml", '  clinic: "🏥 Clinic"\n', ""),
        "en/ui.yaml:",
        "no label for category 'clinic'",
    ),
    (
        "unknown category in topics",
        lambda d: edit(d / "topics.yaml", "bruising: {category: healing", "bruising: {category: heal"),
        "topics.yaml@category: heal,",
        "unknown category 'heal'",
    ),
    (
        "unknown related topic",
        lambda d: edit(d / "topics.yaml", "related: [booking_contact]", "related: [bookings]"),
        "topics.yaml@[bookings]",
        "unknown related topic 'bookings'",
    ),
    (
        "duplicate yaml key",
        lambda d: edit(d / "en/faq.yaml", "    title: Bruises", "    title: Bruises\n    title: Bruising"),
        "en/faq.yaml@title: Bruising",
        "duplicate key 'title'",
    ),
    (
        "file missing",
        lambda d: (d / "en/triage.yaml").unlink(),
        "en/triage.yaml",
        "file is missing",
    ),
    (
        "file empty",
        lambda d: (d / "en/ui.yaml").write_text("# nothing yet\n", encoding="utf-8"),
        "en/ui.yaml",
        "file is empty",
    ),
    (
        "not utf-8",
        lambda d: (d / "en/faq.yaml").write_bytes("title: caf\u00e9".encode("latin-1")),
        "en/faq.yaml",
        "not valid UTF-8",
    ),
    (
        "control character",
        lambda d: edit(d / "en/faq.yaml", "    title: Bruises", "    title: Bru\bises"),
        "en/faq.yaml@title: Bru",
        "is not allowed",
    ),
    (
        "no entries",
        lambda d: (d / "en/faq.yaml").write_text("stopwords: []\nentries: []\n", encoding="utf-8"),
        "en/faq.yaml@entries: []",
        "'entries' must not be empty",
    ),
]


@pytest.mark.parametrize(("name", "breakage", "where", "message"), CASES, ids=[c[0] for c in CASES])
def test_broken_content_is_reported_with_file_and_line(
    content_dir: Path, name: str, breakage: Breakage, where: str, message: str
) -> None:
    breakage(content_dir)
    content, problems = load_content(content_dir, ("en",), FACTS)
    errors = [str(p) for p in problems if p.severity == "error"]
    assert content is None, f"{name}: content with errors must not load"
    file, _, anchor = where.partition("@")
    if anchor:  # the problem must name the line where the mistake is
        file = f"{file}:{line_of(content_dir / file, anchor)}:"
    assert any(file in e and message in e for e in errors), f"{name}: expected {file} … {message} in {errors}"


def line_of(path: Path, anchor: str) -> int:
    text = path.read_text(encoding="utf-8")
    return text[: text.index(anchor)].count("\n") + 1


def test_missing_language_folder_is_reported(content_dir: Path) -> None:
    messages = problems_of(content_dir, ("en", "pl"))
    assert any("language 'pl' is configured but has no content folder" in m for m in messages)


def test_every_problem_is_reported_at_once(content_dir: Path) -> None:
    edit(content_dir / "en/faq.yaml", "Call {clinic_phone} if", "Call {clinic_fone} if")
    edit(content_dir / "en/ui.yaml", "fallback: ", "fallbakc: ")
    edit(content_dir / "topics.yaml", "related: [booking_contact]", "related: [bookings]")
    messages = problems_of(content_dir)
    assert sum("clinic_fone" in m for m in messages) == 1
    assert any("missing key 'fallback'" in m for m in messages)
    assert any("unknown related topic" in m for m in messages)


def test_few_example_questions_is_only_a_warning(content_dir: Path) -> None:
    edit(content_dir / "en/faq.yaml", "      - when are you open\n", "")
    content, problems = load_content(content_dir, ("en",), FACTS)
    assert content is not None
    assert any(p.severity == "warning" and "example questions" in str(p) for p in problems)


def test_no_in_content_is_a_word_not_false(content_dir: Path) -> None:
    content, _ = load_content(content_dir, ("en",), FACTS)
    assert content is not None
    assert content.packs["en"].triage.guards["negated"].phrases[0] == "no"


def test_a_fact_placeholder_fills_every_text(content_dir: Path) -> None:
    edit(content_dir / "en/faq.yaml", "fade within a week", "fade within {bruise_days}")
    content, problems = load_content(content_dir, ("en",), FACTS)
    assert content is not None, problems
    from bot.core.conversation import Assistant

    reply = Assistant(content, FACTS, "en").topic_reply("bruising", "en")
    assert "fade within 5-10 days" in reply.text


def test_check_command_exit_status(content_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        f"content_dir: {content_dir}\nlanguages: [en]\nreminders:\n  treatments: [meso_face, microneedling]\n",
        encoding="utf-8",
    )
    assert main(["--config", str(config), "check"]) == 0
    assert "OK: 1 languages" in capsys.readouterr().out

    edit(content_dir / "en/faq.yaml", "Call {clinic_phone} if", "Call {clinic_fone} if")
    assert main(["--config", str(config), "check"]) == 1
    out = capsys.readouterr().out
    assert f"faq.yaml:{line_of(content_dir / 'en/faq.yaml', 'clinic_fone')}: unknown placeholder {{clinic_fone}}" in out

    # Warnings alone still pass.
    edit(content_dir / "en/faq.yaml", "{clinic_fone}", "{clinic_phone}")
    edit(content_dir / "en/faq.yaml", "      - when are you open\n", "")
    assert main(["--config", str(config), "check"]) == 0
    assert "warning" in capsys.readouterr().out


def test_bot_refuses_to_start_on_invalid_content(
    content_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        f"content_dir: {content_dir}\nlanguages: [en]\nreminders:\n  treatments: [meso_face, microneedling]\n",
        encoding="utf-8",
    )
    edit(content_dir / "en/faq.yaml", "Call {clinic_phone} if", "Call {clinic_fone} if")
    assert main(["--config", str(config), "ask", "bruise?"]) == 1
    assert "unknown placeholder {clinic_fone}" in capsys.readouterr().err
