"""Recovery plans: content validation (every mistake named with file and line) and the schedule maths.

Time is a parameter everywhere: fixed, timezone-aware datetimes; nothing sleeps or reads the clock.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bot.core.content import load_content
from bot.core.plans import (
    NO_QUIET_HOURS,
    TREATMENTS,
    After,
    CheckinOption,
    OnDay,
    Plan,
    Plans,
    QuietHours,
    Scheduled,
    Step,
    ask_again_due,
    checkin_answer,
    format_duration,
    is_missed,
    leave_quiet_hours,
    load_plans,
    parse_clock,
    parse_duration,
    preview,
    schedule,
    step_message,
)
from bot.core.problems import Problem
from tests.conftest import TEST_CLINIC

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "faq"
FIXTURE = Path(__file__).parent / "fixtures" / "faq"
FIXTURE_TREATMENTS = ("meso_face", "microneedling")
SHIPPED_LANGUAGES = ("en", "it", "pl", "es")
FACTS = {lang: TEST_CLINIC for lang in SHIPPED_LANGUAGES}

ROME = ZoneInfo("Europe/Rome")
NEW_YORK = ZoneInfo("America/New_York")
TOKYO = ZoneInfo("Asia/Tokyo")
AUCKLAND = ZoneInfo("Pacific/Auckland")
SAO_PAULO = ZoneInfo("America/Sao_Paulo")
NIGHT = QuietHours(time(21), time(8))
LATE = timedelta(hours=3)


# --- Helpers ------------------------------------------------------------------------------------


@pytest.fixture
def content_dir(tmp_path: Path) -> Path:
    target = tmp_path / "faq"
    shutil.copytree(FIXTURE, target)
    return target


@pytest.fixture(scope="module")
def fixture_plans() -> Plans:
    plans, problems = load_plans(FIXTURE, ("en",), FACTS, treatments=FIXTURE_TREATMENTS)
    assert problems == []
    assert plans is not None
    return plans


def edit(path: Path, old: str, new: str, *, after: str = "") -> None:
    """Replace the first `old` that comes after `after`."""
    text = path.read_text(encoding="utf-8")
    start = text.index(after) if after else 0
    at = text.find(old, start)
    assert at >= 0, f"fixture no longer contains {old!r}"
    path.write_text(text[:at] + new + text[at + len(old) :], encoding="utf-8")


def line_of(path: Path, needle: str, *, after: str = "") -> int:
    """The 1-based line of the first `needle` that comes after `after`."""
    text = path.read_text(encoding="utf-8")
    start = text.index(after) if after else 0
    at = text.index(needle, start)
    return text.count("\n", 0, at) + 1


def problems_of(content_dir: Path, languages: tuple[str, ...] = ("en",)) -> list[str]:
    plans, problems = load_plans(content_dir, languages, FACTS, treatments=FIXTURE_TREATMENTS)
    if any(p.severity == "error" for p in problems):
        assert plans is None
    return [str(p) for p in problems]


def at(zone: ZoneInfo, year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=zone)


def plan_of(*steps: Step) -> Plan:
    return Plan("meso_face", steps)


def after(hours: float, step_id: str = "first", *, late: timedelta | None = None) -> Step:
    return Step(step_id, After(timedelta(hours=hours)), late)


def on(
    day: int,
    clock: str,
    step_id: str,
    *,
    late: timedelta | None = None,
    checkin: tuple[CheckinOption, ...] = (),
    ask_again: timedelta | None = None,
) -> Step:
    return Step(step_id, OnDay(day, parse_clock(clock)), late, checkin, ask_again)


CHECK = (CheckinOption("fine", False), CheckinOption("worse", True))


def dues(items: list[Scheduled], zone: ZoneInfo) -> dict[str, str]:
    return {item.step_id: item.due.astimezone(zone).isoformat() for item in items}


# --- Loading: shipped content and fixture ------------------------------------------------------


def load_shipped(languages: tuple[str, ...] = SHIPPED_LANGUAGES) -> tuple[Plans | None, list[Problem]]:
    """The shipped plans loaded as the bot loads them: with the facts of `faq/facts.yaml`."""
    content, problems = load_content(SHIPPED, languages, FACTS)
    assert content is not None, [str(p) for p in problems]
    return load_plans(SHIPPED, languages, FACTS, content_facts=content.facts)


def test_shipped_plans_load_with_zero_problems_in_every_language() -> None:
    plans, problems = load_shipped()
    assert [str(p) for p in problems] == []
    assert plans is not None
    assert set(plans.plans) == set(TREATMENTS)
    for lang in SHIPPED_LANGUAGES:
        assert set(plans.texts[lang]) == set(TREATMENTS)


def test_fixture_loads(fixture_plans: Plans) -> None:
    face = fixture_plans.plan("meso_face")
    assert [s.id for s in face.steps] == ["first_care", "evening", "morning", "checkin", "book_next"]
    assert face.steps[0].due == After(timedelta(hours=2))
    assert face.steps[1].due == OnDay(0, time(20, 0))
    assert face.steps[3].checkin == (CheckinOption("fine", False), CheckinOption("still_swollen", True))
    assert face.steps[3].ask_again == timedelta(hours=4)
    assert face.steps[4].late == timedelta(days=3)
    assert fixture_plans.plan("microneedling").steps[0].due == After(timedelta(minutes=90))


def test_the_fixture_alone_misses_the_other_treatments() -> None:
    _, problems = load_plans(FIXTURE, ("en",), FACTS)
    missing = sorted(p.message for p in problems)
    assert missing == sorted(
        f"missing plan: no steps for treatment '{t}'" for t in TREATMENTS if t not in FIXTURE_TREATMENTS
    )


# --- Shipped content: medically careful wording ------------------------------------------------


def shipped_texts() -> Plans:
    plans, _ = load_shipped(("en",))
    assert plans is not None
    return plans


def test_shipped_plans_reach_the_next_session_and_open_with_care() -> None:
    plans = shipped_texts()
    for treatment, plan in plans.plans.items():
        first, last = plan.steps[0], plan.steps[-1]
        assert isinstance(first.due, After), treatment
        assert timedelta(hours=1) <= first.due.delay <= timedelta(hours=2), treatment
        assert last.due.nominal >= timedelta(days=14), treatment
        texts = plans.texts["en"][treatment].steps
        assert "{emergency_number}" in texts[first.id].text, treatment
        assert "{clinic_phone}" in texts[first.id].text, treatment
        assert "{booking_url}" in texts[last.id].text, treatment
        assert any(s.is_checkin for s in plan.steps), treatment


def test_shipped_texts_are_careful() -> None:
    plans = shipped_texts()
    for treatment, plan in plans.plans.items():
        for step in plan.steps:
            texts = plans.texts["en"][treatment].steps[step.id]
            all_texts = [texts.text, *(o.reply for o in texts.options.values())]
            for text in all_texts:
                lower = text.lower()
                assert "harmless" not in lower.replace("usually harmless", ""), (treatment, step.id)
                assert "guarantee" not in lower and "will disappear" not in lower, (treatment, step.id)
                if "aspirin" in lower:
                    assert "never stop a medicine your doctor prescribed" in lower, (treatment, step.id)
            for option in step.checkin:
                reply = texts.options[option.id].reply
                if option.trouble:
                    assert "contact the clinic today ({clinic_phone})" in reply, (treatment, step.id, option.id)
                    assert "{emergency_number}" in reply, (treatment, step.id, option.id)


@pytest.mark.parametrize("zone", [ROME, NEW_YORK, TOKYO, AUCKLAND, SAO_PAULO], ids=str)
@pytest.mark.parametrize("hour", range(24))
def test_shipped_plans_schedule_sensibly_at_any_hour(zone: ZoneInfo, hour: int) -> None:
    plans = shipped_texts()
    treated_at = at(zone, 2025, 3, 29, hour, 15)  # the night before Europe's spring-forward
    for plan in plans.plans.values():
        items = schedule(plan, treated_at=treated_at, zone=zone, quiet=NIGHT, default_late=LATE)
        ids = [i.step_id for i in items]
        assert ids[0] == "first_care" and ids[-1] == "book_next"
        assert "day3_checkin" in ids
        assert [i.due for i in items] == sorted(i.due for i in items)
        assert all(i.due > treated_at for i in items)
        assert not any(NIGHT.contains(i.due.astimezone(zone).time()) for i in items)


# --- Validation: every problem named with file and line ----------------------------------------

Breakage = Callable[[Path], object]
PLANS = "plans.yaml"
TEXTS = "en/plans.yaml"

# (name, breakage, file, (needle, after) for the expected line or None, message fragment)
CASES: list[tuple[str, Breakage, str, tuple[str, str] | None, str]] = [
    (
        "yaml syntax",
        lambda d: edit(d / PLANS, "      late: 3h", "      late: [3h"),
        PLANS,
        None,
        "invalid YAML",
    ),
    (
        "unknown treatment",
        lambda d: edit(d / PLANS, "microneedling:", "botox:"),
        PLANS,
        ("botox:", ""),
        "unknown treatment 'botox'",
    ),
    (
        "unknown treatment in texts",
        lambda d: edit(d / TEXTS, "microneedling:", "botox:"),
        TEXTS,
        ("botox:", ""),
        "unknown treatment 'botox'",
    ),
    (
        "missing plan",
        lambda d: (d / PLANS).write_text(
            (d / PLANS).read_text(encoding="utf-8").split("microneedling:")[0], encoding="utf-8"
        ),
        PLANS,
        None,
        "missing plan: no steps for treatment 'microneedling'",
    ),
    (
        "both after and day/at",
        lambda d: edit(d / PLANS, "      after: 90m\n", '      after: 90m\n      day: 0\n      at: "10:00"\n'),
        PLANS,
        ("after: 90m", ""),
        "has both `after` and `day`/`at`",
    ),
    (
        "neither after nor day/at",
        lambda d: edit(d / PLANS, "      after: 90m\n", ""),
        PLANS,
        ("- id: first_care", "microneedling:"),
        "needs a due time",
    ),
    (
        "day without at",
        lambda d: edit(d / PLANS, '      at: "09:30"\n', ""),
        PLANS,
        ("- id: checkin", "microneedling:"),
        "needs `at` with its `day`",
    ),
    (
        "bad duration",
        lambda d: edit(d / PLANS, "after: 90m", "after: 90 minutes"),
        PLANS,
        ("after: 90 minutes", ""),
        "bad duration '90 minutes'",
    ),
    (
        "zero duration",
        lambda d: edit(d / PLANS, "late: 2h", "late: 0h"),
        PLANS,
        ("late: 0h", ""),
        "must be more than zero",
    ),
    (
        "bad lateness",
        lambda d: edit(d / PLANS, "ask_again: 4h", "ask_again: soon"),
        PLANS,
        ("ask_again: soon", ""),
        "bad duration 'soon'",
    ),
    (
        "bad time",
        lambda d: edit(d / PLANS, 'at: "09:30"', 'at: "25:30"'),
        PLANS,
        ('at: "25:30"', ""),
        "bad time '25:30'",
    ),
    (
        "bad day",
        lambda d: edit(d / PLANS, "day: 2\n", "day: two\n"),
        PLANS,
        ("day: two", ""),
        "'microneedling.steps.1.day'",
    ),
    (
        "negative day",
        lambda d: edit(d / PLANS, "day: 2\n", "day: -1\n"),
        PLANS,
        ("day: -1", ""),
        "must be 0 (the treatment day) or more",
    ),
    (
        "steps out of time order (day/at)",
        lambda d: edit(d / PLANS, 'day: 1\n      at: "09:00"', 'day: 0\n      at: "19:00"'),
        PLANS,
        ("- id: morning", ""),
        "step 'morning' (day 0 at 19:00) comes before the previous step 'evening' (day 0 at 20:00)",
    ),
    (
        "steps out of time order (after, then day/at)",
        lambda d: edit(d / PLANS, 'day: 0\n      at: "20:00"', 'day: 0\n      at: "01:00"'),
        PLANS,
        ("- id: evening", ""),
        "comes before the previous step 'first_care' (2h after the treatment)",
    ),
    (
        "duplicate step id",
        lambda d: edit(d / PLANS, "- id: checkin", "- id: first_care", after="microneedling:"),
        PLANS,
        ("id: first_care", "after: 90m"),
        "duplicate step id 'first_care'",
    ),
    (
        "bad step id",
        lambda d: edit(d / PLANS, "- id: morning", "- id: Morning Care"),
        PLANS,
        ("id: Morning Care", ""),
        "step id 'Morning Care' must be 1-40 characters: a-z, 0-9 and _",
    ),
    (
        "step id too long for button data",
        lambda d: edit(d / PLANS, "- id: morning", "- id: " + "m" * 41),
        PLANS,
        ("id: mmm", ""),
        "must be 1-40 characters",
    ),
    (
        "bad option id",
        lambda d: edit(d / PLANS, "{fine: ok, worse: trouble}", "{Fine!: ok, worse: trouble}"),
        PLANS,
        ("Fine!", ""),
        "option id 'Fine!' must be 1-40 characters",
    ),
    (
        "plan not opening with an after step",
        lambda d: edit(d / PLANS, "      after: 90m\n", '      day: 0\n      at: "08:00"\n'),
        PLANS,
        ("- id: first_care", "microneedling:"),
        "plan 'microneedling' must open with a step due a duration after the treatment",
    ),
    (
        "check-in with no options",
        lambda d: edit(d / PLANS, "checkin: {fine: ok, worse: trouble}", "checkin: {}"),
        PLANS,
        ("checkin: {}", ""),
        "check-in 'checkin' has no options",
    ),
    (
        "check-in option neither ok nor trouble",
        lambda d: edit(d / PLANS, "worse: trouble}", "worse: bad}"),
        PLANS,
        ("worse: bad", ""),
        "option 'worse' must be 'ok' or 'trouble', not 'bad'",
    ),
    (
        "ask_again on a plain step",
        lambda d: edit(d / PLANS, "      late: 2h\n", "      late: 2h\n      ask_again: 1h\n"),
        PLANS,
        ("ask_again: 1h", ""),
        "`ask_again` is only for steps with `checkin`",
    ),
    (
        "unknown key",
        lambda d: edit(d / PLANS, "      late: 2h\n", "      lateness: 2h\n"),
        PLANS,
        ("lateness: 2h", ""),
        "unknown key 'meso_face.steps.1.lateness'",
    ),
    (
        "plan not reaching 14 days",
        lambda d: edit(d / PLANS, "      day: 14\n", "      day: 13\n"),
        PLANS,
        ("steps:", "microneedling:"),
        "plan 'microneedling' ends 13.42 days after the treatment; it must reach at least 14 days",
    ),
    (
        "missing step text",
        lambda d: edit(d / TEXTS, "    morning: Sunscreen this morning.\n", ""),
        TEXTS,
        ("steps:", ""),
        "missing translation: no text for step 'morning'",
    ),
    (
        "missing treatment name",
        lambda d: edit(d / TEXTS, "  name: Microneedling\n", ""),
        TEXTS,
        ("microneedling:", ""),
        "missing translation: no 'microneedling.name'",
    ),
    (
        "missing option label",
        lambda d: edit(d / TEXTS, "fine: {label: Fine, reply: Good.}", "fine: {reply: Good.}"),
        TEXTS,
        ("fine: {reply", ""),
        "missing translation: no 'microneedling.steps.checkin.options.fine.label'",
    ),
    (
        "missing option",
        lambda d: edit(d / TEXTS, '        worse: {label: Worse, reply: "Call {clinic_phone} today."}\n', ""),
        TEXTS,
        ("checkin:", "microneedling:"),
        "missing translation: no label and reply for option 'worse' of 'checkin'",
    ),
    (
        "missing treatment texts",
        lambda d: (d / TEXTS).write_text(
            (d / TEXTS).read_text(encoding="utf-8").split("microneedling:")[0], encoding="utf-8"
        ),
        TEXTS,
        ("meso_face:", ""),
        "missing translation: no name and texts for treatment 'microneedling'",
    ),
    (
        "unknown step in texts",
        lambda d: edit(d / TEXTS, "    morning: Sunscreen", "    mornin: Sunscreen"),
        TEXTS,
        ("mornin:", ""),
        "unknown step 'mornin'",
    ),
    (
        "unknown option in texts",
        lambda d: edit(d / TEXTS, "        fine: {label: Fine", "        fin: {label: Fine"),
        TEXTS,
        ("fin: {label", ""),
        "unknown option 'fin'",
    ),
    (
        "options on a plain step",
        lambda d: edit(
            d / TEXTS,
            "    book_next: Book at {booking_url}.",
            "    book_next:\n      text: Book.\n      options:\n        yes: {label: Yes, reply: Ok.}",
        ),
        TEXTS,
        ("yes: {label", ""),
        "step 'book_next' is not a check-in: remove its `options`",
    ),
    (
        "unknown placeholder",
        lambda d: edit(d / TEXTS, "Evening care. {clinic_phone}", "Evening care. {clinic_fone}"),
        TEXTS,
        ("Evening care", ""),
        "unknown placeholder {clinic_fone} in text of step 'evening'",
    ),
    (
        "broken placeholder",
        lambda d: edit(d / TEXTS, "Evening care. {clinic_phone}", "Evening care. {clinic_phone"),
        TEXTS,
        ("Evening care", ""),
        "broken placeholder in text of step 'evening'",
    ),
    (
        "label too long",
        lambda d: edit(d / TEXTS, "label: Yes, all fine", "label: Yes, all fine, thank you so much for asking me"),
        TEXTS,
        ("label: Yes, all fine", ""),
        "label of option 'fine' is 46 characters; at most 40 fit a button",
    ),
    (
        "treatment name too long",
        lambda d: edit(d / TEXTS, "name: Microneedling", "name: Microneedling with Dermapen or a dermaroller"),
        TEXTS,
        ("name: Microneedling", ""),
        "name of treatment 'microneedling' is 44 characters",
    ),
    (
        "text too long",
        lambda d: edit(d / TEXTS, "morning: Sunscreen this morning.", "morning: " + "Sunscreen. " * 380),
        TEXTS,
        ("morning: Sunscreen", ""),
        "text of step 'morning' is 4179 characters; at most 4096 fit a Telegram message",
    ),
    (
        "text too long once the clinic facts are filled in",
        lambda d: edit(d / TEXTS, "morning: Sunscreen this morning.", "morning: " + "x" * 4090 + "{clinic_address}"),
        TEXTS,
        ("morning: xxx", ""),
        "text of step 'morning' is 4098 characters",
    ),
    (
        "empty reply",
        lambda d: edit(d / TEXTS, "reply: Good.", 'reply: ""'),
        TEXTS,
        ('reply: ""', ""),
        "reply to option 'fine' is empty",
    ),
]


@pytest.mark.parametrize(
    ("breakage", "file", "where", "fragment"), [case[1:] for case in CASES], ids=[case[0] for case in CASES]
)
def test_every_mistake_is_located(
    content_dir: Path, breakage: Breakage, file: str, where: tuple[str, str] | None, fragment: str
) -> None:
    breakage(content_dir)
    problems = problems_of(content_dir)
    path = content_dir / file
    prefix = f"{path}:" if where is None else f"{path}:{line_of(path, where[0], after=where[1])}: "
    assert any(p.startswith(prefix) and fragment in p for p in problems), (prefix, fragment, problems)


def test_yaml_syntax_error_names_its_line(content_dir: Path) -> None:
    edit(content_dir / PLANS, "      late: 3h", "      late: [3h")
    problems = problems_of(content_dir)
    assert any(re.match(rf"{re.escape(str(content_dir / PLANS))}:\d+: invalid YAML", p) for p in problems)


def test_every_problem_is_reported_not_just_the_first(content_dir: Path) -> None:
    edit(content_dir / PLANS, "after: 90m", "after: 90 minutes")
    edit(content_dir / PLANS, 'at: "20:00"', 'at: "8pm"')
    edit(content_dir / PLANS, "checkin: {fine: ok, worse: trouble}", "checkin: {}")
    edit(content_dir / TEXTS, "Evening care. {clinic_phone}", "Evening care. {phone}")
    edit(content_dir / TEXTS, "label: Yes, all fine", "label: " + "y" * 41)
    problems = "\n".join(problems_of(content_dir))
    for fragment in ("bad duration '90 minutes'", "bad time '8pm'", "has no options", "{phone}", "41 characters"):
        assert fragment in problems


def test_a_language_without_plans_is_reported(content_dir: Path) -> None:
    (content_dir / "it").mkdir()
    problems = problems_of(content_dir, ("en", "it"))
    assert f"{content_dir / 'it' / 'plans.yaml'}: file is missing" in problems


def test_a_check_in_without_trouble_option_is_a_warning(content_dir: Path) -> None:
    edit(content_dir / PLANS, "worse: trouble}", "worse: ok}")
    plans, problems = load_plans(content_dir, ("en",), FACTS, treatments=FIXTURE_TREATMENTS)
    assert plans is not None
    assert [p.severity for p in problems] == ["warning"]
    assert "no answer will alert the clinic" in problems[0].message


# --- Small values --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("30s", timedelta(seconds=30)), ("90m", timedelta(minutes=90)), ("2h", timedelta(hours=2)), ("1d", timedelta(1))],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected
    assert parse_duration(format_duration(expected)) == expected


@pytest.mark.parametrize("text", ["2", "h", "0h", "-1h", "2 hours", "1.5h", "2w", ""])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_parse_clock() -> None:
    assert parse_clock("09:00") == time(9)
    assert parse_clock("9:05") == time(9, 5)
    assert parse_clock("23:59") == time(23, 59)
    for bad in ("24:00", "12:60", "noon", "1200", "12:5"):
        with pytest.raises(ValueError):
            parse_clock(bad)


# --- Schedule: after and day/at, DST -------------------------------------------------------------


def test_after_steps_are_absolute_across_spring_forward() -> None:
    # 01:30 CET on the night Rome jumps 02:00 -> 03:00: two real hours later the clock shows 04:30.
    treated = at(ROME, 2025, 3, 30, 1, 30)
    [item] = schedule(plan_of(after(2)), treated_at=treated, zone=ROME, quiet=NO_QUIET_HOURS, default_late=LATE)
    assert item.due == treated.astimezone(UTC) + timedelta(hours=2)
    assert item.due - treated == timedelta(hours=2)  # (treated + 2h would be wall-clock arithmetic: 03:30)
    assert item.due.tzinfo is UTC
    assert item.due.astimezone(ROME).isoformat() == "2025-03-30T04:30:00+02:00"


def test_after_steps_are_absolute_across_fall_back() -> None:
    treated = at(NEW_YORK, 2025, 11, 2, 0, 30)
    [item] = schedule(plan_of(after(2)), treated_at=treated, zone=NEW_YORK, quiet=NO_QUIET_HOURS, default_late=LATE)
    assert item.due - treated == timedelta(hours=2)
    assert item.due.astimezone(NEW_YORK).isoformat() == "2025-11-02T01:30:00-05:00"  # the second 01:30


def test_day_steps_keep_the_wall_clock_across_dst() -> None:
    treated = at(ROME, 2025, 3, 28, 11, 0)  # +01:00
    plan = plan_of(after(1), on(3, "10:00", "checkin"))
    items = schedule(plan, treated_at=treated, zone=ROME, quiet=NO_QUIET_HOURS, default_late=LATE)
    assert dues(items, ROME)["checkin"] == "2025-03-31T10:00:00+02:00"
    assert items[1].due == datetime(2025, 3, 31, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("zone", "treated", "expected"),
    [
        # Spring gap: 02:30 does not exist; the clock shows 03:30 (shifted forward by the hour).
        (ROME, (2025, 3, 29, 10), "2025-03-30T03:30:00+02:00"),
        (NEW_YORK, (2025, 3, 8, 10), "2025-03-09T03:30:00-04:00"),
        # Autumn overlap: 02:30 / 01:30 happen twice; the first occurrence (summer time).
        (ROME, (2025, 10, 25, 10), "2025-10-26T02:30:00+02:00"),
        (NEW_YORK, (2025, 11, 1, 10), "2025-11-02T01:30:00-04:00"),
    ],
)
def test_dst_gap_and_overlap(zone: ZoneInfo, treated: tuple[int, int, int, int], expected: str) -> None:
    clock = "01:30" if zone is NEW_YORK and treated[1] == 11 else "02:30"
    plan = plan_of(after(1), on(1, clock, "night"))
    items = schedule(plan, treated_at=at(zone, *treated), zone=zone, quiet=NO_QUIET_HOURS, default_late=LATE)
    assert dues(items, zone)["night"] == expected


def test_gap_result_is_the_instant_after_the_jump() -> None:
    items = schedule(
        plan_of(after(1), on(1, "02:30", "night")),
        treated_at=at(ROME, 2025, 3, 29, 10),
        zone=ROME,
        quiet=NO_QUIET_HOURS,
        default_late=LATE,
    )
    assert items[1].due == datetime(2025, 3, 30, 1, 30, tzinfo=UTC)  # 02:30 CET read before the jump
    overlap = schedule(
        plan_of(after(1), on(1, "02:30", "night")),
        treated_at=at(ROME, 2025, 10, 25, 10),
        zone=ROME,
        quiet=NO_QUIET_HOURS,
        default_late=LATE,
    )
    assert overlap[1].due == datetime(2025, 10, 26, 0, 30, tzinfo=UTC)  # not 01:30 UTC, the second one


# --- Day offsets, zones east and west ------------------------------------------------------------


@pytest.mark.parametrize(
    ("treated", "day", "expected_date"),
    [
        ((2025, 12, 30), 3, "2026-01-02"),
        ((2025, 12, 31), 1, "2026-01-01"),
        ((2025, 1, 31), 1, "2025-02-01"),
        ((2024, 2, 28), 1, "2024-02-29"),
        ((2025, 2, 28), 1, "2025-03-01"),
        ((2025, 12, 15), 21, "2026-01-05"),
    ],
)
def test_day_offsets_across_month_and_year_ends(treated: tuple[int, int, int], day: int, expected_date: str) -> None:
    plan = plan_of(after(1), on(day, "10:00", "step"))
    items = schedule(plan, treated_at=at(ROME, *treated, 11), zone=ROME, quiet=NIGHT, default_late=LATE)
    assert items[1].due.astimezone(ROME).date().isoformat() == expected_date
    assert items[1].due.astimezone(ROME).time() == time(10)


@pytest.mark.parametrize(
    ("zone", "offset"),
    [(ROME, "+01:00"), (NEW_YORK, "-05:00"), (TOKYO, "+09:00"), (AUCKLAND, "+13:00"), (SAO_PAULO, "-03:00")],
    ids=str,
)
def test_zones_east_and_west_of_utc(zone: ZoneInfo, offset: str) -> None:
    plan = plan_of(after(2, "first_care"), on(0, "20:00", "evening"), on(3, "10:00", "checkin", checkin=CHECK))
    items = schedule(plan, treated_at=at(zone, 2025, 12, 30, 15), zone=zone, quiet=NIGHT, default_late=LATE)
    assert dues(items, zone) == {
        "first_care": f"2025-12-30T17:00:00{offset}",
        "evening": f"2025-12-30T20:00:00{offset}",
        "checkin": f"2026-01-02T10:00:00{offset}",
    }
    assert all(i.due.tzinfo is UTC for i in items)


@pytest.mark.parametrize(
    ("zone", "utc_treated", "local_day0"),
    [
        # The treatment time may arrive in UTC: day 0 is the patient's local date, not UTC's.
        (TOKYO, datetime(2025, 12, 30, 23, 30, tzinfo=UTC), "2025-12-31"),
        (AUCKLAND, datetime(2025, 12, 30, 12, 0, tzinfo=UTC), "2025-12-31"),
        (NEW_YORK, datetime(2026, 1, 1, 3, 0, tzinfo=UTC), "2025-12-31"),
        (SAO_PAULO, datetime(2026, 1, 1, 2, 0, tzinfo=UTC), "2025-12-31"),
    ],
    ids=str,
)
def test_day_zero_is_the_local_treatment_date(zone: ZoneInfo, utc_treated: datetime, local_day0: str) -> None:
    plan = plan_of(after(1), on(3, "10:00", "checkin", checkin=CHECK))
    items = schedule(plan, treated_at=utc_treated, zone=zone, quiet=NO_QUIET_HOURS, default_late=LATE)
    expected = datetime.fromisoformat(local_day0).date() + timedelta(days=3)
    assert items[1].due.astimezone(zone).date() == expected


def test_auckland_dst_starts_in_september() -> None:
    # New Zealand springs forward 02:00 -> 03:00 on the last Sunday of September.
    plan = plan_of(after(1), on(1, "02:30", "night"))
    items = schedule(
        plan, treated_at=at(AUCKLAND, 2025, 9, 27, 10), zone=AUCKLAND, quiet=NO_QUIET_HOURS, default_late=LATE
    )
    assert dues(items, AUCKLAND)["night"] == "2025-09-28T03:30:00+13:00"


# --- Quiet hours -------------------------------------------------------------------------------


def test_quiet_hours_contains() -> None:
    assert NIGHT.contains(time(21)) and NIGHT.contains(time(23, 59)) and NIGHT.contains(time(0))
    assert NIGHT.contains(time(7, 59, 59))
    assert not NIGHT.contains(time(8)) and not NIGHT.contains(time(20, 59, 59))
    lunch = QuietHours(time(13), time(15))
    assert lunch.contains(time(13)) and lunch.contains(time(14, 59)) and not lunch.contains(time(15))
    assert not NO_QUIET_HOURS.enabled
    assert not any(NO_QUIET_HOURS.contains(time(h)) for h in range(24))


@pytest.mark.parametrize(
    ("treated", "expected"),
    [
        ((2025, 6, 10, 18, 59), "2025-06-10T20:59:00+02:00"),  # just before quiet hours: sent
        ((2025, 6, 10, 19, 0), "2025-06-11T08:00:00+02:00"),  # exactly at the start: next morning
        ((2025, 6, 10, 21, 30), "2025-06-11T08:00:00+02:00"),  # evening part of the wrap: next morning
        ((2025, 6, 11, 0, 30), "2025-06-11T08:00:00+02:00"),  # after midnight: that same morning
        ((2025, 6, 11, 5, 59), "2025-06-11T08:00:00+02:00"),
        ((2025, 6, 11, 6, 0), "2025-06-11T08:00:00+02:00"),  # exactly at the end: not moved
        ((2025, 6, 11, 6, 1), "2025-06-11T08:01:00+02:00"),
        ((2025, 12, 31, 22, 0), "2026-01-01T08:00:00+01:00"),  # across the year end
    ],
)
def test_quiet_hours_wrap_midnight(treated: tuple[int, ...], expected: str) -> None:
    [item] = schedule(plan_of(after(2)), treated_at=at(ROME, *treated), zone=ROME, quiet=NIGHT, default_late=LATE)
    assert item.due.astimezone(ROME).isoformat() == expected


def test_quiet_hours_within_a_day() -> None:
    lunch = QuietHours(time(13), time(15))
    assert leave_quiet_hours(at(TOKYO, 2025, 6, 10, 14), TOKYO, lunch) == at(TOKYO, 2025, 6, 10, 15)
    assert leave_quiet_hours(at(TOKYO, 2025, 6, 10, 15), TOKYO, lunch) == at(TOKYO, 2025, 6, 10, 15)
    assert leave_quiet_hours(at(TOKYO, 2025, 6, 10, 12, 59), TOKYO, lunch) == at(TOKYO, 2025, 6, 10, 12, 59)


def test_quiet_hours_disabled() -> None:
    [item] = schedule(
        plan_of(after(2)), treated_at=at(ROME, 2025, 6, 10, 22), zone=ROME, quiet=NO_QUIET_HOURS, default_late=LATE
    )
    assert item.due.astimezone(ROME).isoformat() == "2025-06-11T00:00:00+02:00"


def test_quiet_hours_are_local_to_the_patient() -> None:
    # 22:00 in Rome is 05:00 in Tokyo: quiet in both, each moved to its own 08:00.
    due = datetime(2025, 6, 10, 20, 0, tzinfo=UTC)
    assert leave_quiet_hours(due, ROME, NIGHT).astimezone(ROME).isoformat() == "2025-06-11T08:00:00+02:00"
    assert leave_quiet_hours(due, TOKYO, NIGHT).astimezone(TOKYO).isoformat() == "2025-06-11T08:00:00+09:00"
    # 20:00 UTC is 16:00 in New York: not quiet.
    assert leave_quiet_hours(due, NEW_YORK, NIGHT) == due


def test_quiet_hours_ending_in_a_dst_gap() -> None:
    odd = QuietHours(time(1), time(2, 30))  # 02:30 does not exist on the spring-forward night
    due = at(ROME, 2025, 3, 30, 1, 15)
    assert leave_quiet_hours(due, ROME, odd).astimezone(ROME).isoformat() == "2025-03-30T03:30:00+02:00"


# --- Steps that would come out of order ----------------------------------------------------------

FACE = plan_of(
    after(2, "first_care"),
    on(0, "20:00", "evening"),
    on(1, "09:00", "morning"),
    on(3, "10:00", "checkin", checkin=CHECK),
    on(21, "11:00", "book_next"),
)


@pytest.mark.parametrize(
    ("hour", "minute", "steps"),
    [
        (11, 0, ["first_care", "evening", "morning", "checkin", "book_next"]),
        (17, 0, ["first_care", "evening", "morning", "checkin", "book_next"]),  # first 19:00, evening 20:00
        (18, 30, ["first_care", "morning", "checkin", "book_next"]),  # first at 20:30 covers the evening
        (19, 0, ["first_care", "morning", "checkin", "book_next"]),  # first moved to 08:00 by quiet hours
        (21, 0, ["first_care", "morning", "checkin", "book_next"]),  # treated after the evening time
    ],
)
def test_a_passed_evening_step_is_dropped(hour: int, minute: int, steps: list[str]) -> None:
    items = schedule(FACE, treated_at=at(ROME, 2025, 6, 10, hour, minute), zone=ROME, quiet=NIGHT, default_late=LATE)
    assert [i.step_id for i in items] == steps
    assert [i.due for i in items] == sorted(i.due for i in items)


def test_late_treatment_first_message_next_morning_before_the_morning_step() -> None:
    items = schedule(FACE, treated_at=at(ROME, 2025, 6, 10, 21), zone=ROME, quiet=NIGHT, default_late=LATE)
    assert dues(items, ROME)["first_care"] == "2025-06-11T08:00:00+02:00"
    assert dues(items, ROME)["morning"] == "2025-06-11T09:00:00+02:00"


def test_steps_due_at_the_same_instant_are_both_kept_in_order() -> None:
    plan = plan_of(after(2, "first_care"), on(1, "08:00", "morning"))
    items = schedule(plan, treated_at=at(ROME, 2025, 6, 10, 20), zone=ROME, quiet=NIGHT, default_late=LATE)
    assert [(i.step_id, i.due.astimezone(ROME).isoformat()) for i in items] == [
        ("first_care", "2025-06-11T08:00:00+02:00"),
        ("morning", "2025-06-11T08:00:00+02:00"),
    ]


def test_a_check_in_is_never_dropped_but_follows_the_previous_step() -> None:
    plan = plan_of(
        after(48, "first_care"),
        on(2, "09:00", "checkin", checkin=CHECK),
        on(2, "12:00", "tip"),
        on(14, "10:00", "book_next"),
    )
    items = schedule(plan, treated_at=at(ROME, 2025, 6, 10, 15), zone=ROME, quiet=NIGHT, default_late=LATE)
    assert dues(items, ROME) == {
        "first_care": "2025-06-12T15:00:00+02:00",
        "checkin": "2025-06-12T15:01:00+02:00",
        "book_next": "2025-06-24T10:00:00+02:00",
    }  # the plain "tip" at 12:00 had passed: dropped


def test_a_moved_check_in_still_respects_quiet_hours() -> None:
    plan = plan_of(after(48, "first_care"), on(2, "09:00", "checkin", checkin=CHECK))
    treated = at(ROME, 2025, 6, 10, 20, 59, 30)
    items = schedule(plan, treated_at=treated, zone=ROME, quiet=NIGHT, default_late=LATE)
    assert dues(items, ROME)["checkin"] == "2025-06-13T08:00:00+02:00"


def test_the_last_step_is_never_dropped() -> None:
    plan = plan_of(after(2, "first_care"), on(0, "10:00", "book_next"))
    items = schedule(plan, treated_at=at(ROME, 2025, 6, 10, 12), zone=ROME, quiet=NIGHT, default_late=LATE)
    assert dues(items, ROME) == {"first_care": "2025-06-10T14:00:00+02:00", "book_next": "2025-06-10T14:01:00+02:00"}


def test_a_first_step_before_the_treatment_is_kept() -> None:
    # Content validation requires an `after` first step; schedule() still never drops it.
    plan = plan_of(on(0, "08:00", "first_care"), on(3, "10:00", "checkin", checkin=CHECK))
    items = schedule(plan, treated_at=at(ROME, 2025, 6, 10, 12), zone=ROME, quiet=NIGHT, default_late=LATE)
    assert dues(items, ROME)["first_care"] == "2025-06-10T12:01:00+02:00"


# --- Lateness and enrolment after the treatment --------------------------------------------------


def test_expiry_uses_the_step_limit_or_the_default() -> None:
    plan = plan_of(after(2, "first_care", late=timedelta(hours=1)), on(1, "09:00", "morning"))
    first, morning = schedule(plan, treated_at=at(ROME, 2025, 6, 10, 10), zone=ROME, quiet=NIGHT, default_late=LATE)
    assert first.expires - first.due == timedelta(hours=1)
    assert morning.expires - morning.due == LATE


def test_is_missed_only_after_expiry() -> None:
    [item] = schedule(
        plan_of(after(2)), treated_at=at(ROME, 2025, 6, 10, 10), zone=ROME, quiet=NIGHT, default_late=LATE
    )
    assert not is_missed(item, item.due - timedelta(minutes=5))  # early: not missed (just not due)
    assert not is_missed(item, item.due + timedelta(hours=2, minutes=59))  # late delivery, still within limit
    assert not is_missed(item, item.expires)
    assert is_missed(item, item.expires + timedelta(seconds=1))
    assert is_missed(item, item.expires.astimezone(TOKYO) + timedelta(seconds=1))  # any zone compares alike


def test_enrolled_the_day_after_keeps_only_steps_still_within_their_limit() -> None:
    plan = plan_of(
        after(2, "first_care", late=timedelta(hours=3)),
        on(0, "20:00", "evening", late=timedelta(hours=2)),
        on(1, "09:00", "morning"),  # default: 3h, until 12:00
        on(3, "10:00", "checkin", checkin=CHECK),
    )
    treated = at(ROME, 2025, 6, 10, 10)
    enrolled = at(ROME, 2025, 6, 11, 10)
    items = schedule(plan, treated_at=treated, zone=ROME, quiet=NIGHT, default_late=LATE, not_before=enrolled)
    assert dues(items, ROME) == {
        "morning": "2025-06-11T09:00:00+02:00",  # an hour late, still useful: kept, sent at once
        "checkin": "2025-06-13T10:00:00+02:00",
    }
    assert not is_missed(items[0], enrolled)


def test_not_before_at_exactly_the_expiry_keeps_the_step() -> None:
    treated = at(ROME, 2025, 6, 10, 10)
    [full] = schedule(plan_of(after(2)), treated_at=treated, zone=ROME, quiet=NIGHT, default_late=LATE)
    kept = schedule(
        plan_of(after(2)), treated_at=treated, zone=ROME, quiet=NIGHT, default_late=LATE, not_before=full.expires
    )
    gone = schedule(
        plan_of(after(2)),
        treated_at=treated,
        zone=ROME,
        quiet=NIGHT,
        default_late=LATE,
        not_before=full.expires + timedelta(seconds=1),
    )
    assert kept == [full] and gone == []


def test_not_before_does_not_change_which_steps_are_dropped() -> None:
    treated = at(ROME, 2025, 6, 10, 21)
    full = schedule(FACE, treated_at=treated, zone=ROME, quiet=NIGHT, default_late=LATE)
    same = schedule(FACE, treated_at=treated, zone=ROME, quiet=NIGHT, default_late=LATE, not_before=treated)
    assert same == full


def test_times_must_be_aware() -> None:
    naive = datetime(2025, 6, 10, 10)
    with pytest.raises(ValueError, match="treated_at"):
        schedule(FACE, treated_at=naive, zone=ROME, quiet=NIGHT, default_late=LATE)
    with pytest.raises(ValueError, match="not_before"):
        schedule(FACE, treated_at=at(ROME, 2025, 6, 10), zone=ROME, quiet=NIGHT, default_late=LATE, not_before=naive)
    [item, *_] = schedule(FACE, treated_at=at(ROME, 2025, 6, 10), zone=ROME, quiet=NIGHT, default_late=LATE)
    with pytest.raises(ValueError, match="now"):
        is_missed(item, naive)


def test_ask_again() -> None:
    checkin = on(3, "10:00", "checkin", checkin=CHECK, ask_again=timedelta(hours=4))
    asked = at(ROME, 2025, 6, 13, 10)
    assert ask_again_due(checkin, asked, zone=ROME, quiet=NIGHT) == at(ROME, 2025, 6, 13, 14)
    evening = at(ROME, 2025, 6, 13, 18)
    assert ask_again_due(checkin, evening, zone=ROME, quiet=NIGHT) == at(ROME, 2025, 6, 14, 8)
    assert ask_again_due(on(1, "09:00", "morning"), asked, zone=ROME, quiet=NIGHT) is None


# --- Texts: preview, messages, check-in answers ---------------------------------------------------


def test_preview(fixture_plans: Plans) -> None:
    items = preview(
        fixture_plans,
        treatment="meso_face",
        treated_at=at(ROME, 2025, 12, 30, 11),
        zone=ROME,
        lang="en",
        facts=FACTS["en"],
        quiet=NIGHT,
        default_late=LATE,
    )
    printed = json.loads(json.dumps([{"step": i.step, "due": i.due.isoformat(), "text": i.text} for i in items]))
    assert printed == [
        {
            "step": "first_care",
            "due": "2025-12-30T13:00:00+01:00",
            "text": "Cold compress, no make-up today. Questions: +1 555. Emergency: 112.",
        },
        {"step": "evening", "due": "2025-12-30T20:00:00+01:00", "text": "Evening care. +1 555"},
        {"step": "morning", "due": "2025-12-31T09:00:00+01:00", "text": "Sunscreen this morning."},
        {"step": "checkin", "due": "2026-01-02T10:00:00+01:00", "text": "Swelling and redness gone?"},
        {
            "step": "book_next",
            "due": "2026-01-20T11:00:00+01:00",
            "text": "Time to book your next session at https://x.example.",
        },
    ]
    assert all(i.due.tzinfo is ROME for i in items)


def test_preview_keeps_an_unconfigured_fact_visible(fixture_plans: Plans) -> None:
    items = preview(
        fixture_plans,
        treatment="microneedling",
        treated_at=at(TOKYO, 2025, 6, 10, 11),
        zone=TOKYO,
        lang="en",
        facts={},
        quiet=NIGHT,
        default_late=LATE,
    )
    assert items[-1].text == "Book at {booking_url}."
    assert items[0].due.isoformat() == "2025-06-10T12:30:00+09:00"


def test_step_message_has_the_check_in_buttons(fixture_plans: Plans) -> None:
    message = step_message(fixture_plans, treatment="meso_face", step_id="checkin", lang="en", facts=FACTS["en"])
    assert message is not None
    assert message.text == "Swelling and redness gone?"
    assert [(b.option_id, b.label) for b in message.buttons] == [
        ("fine", "Yes, all fine"),
        ("still_swollen", "No, still swollen"),
    ]
    plain = step_message(fixture_plans, treatment="meso_face", step_id="morning", lang="en", facts=FACTS["en"])
    assert plain is not None and plain.buttons == ()
    assert step_message(fixture_plans, treatment="meso_face", step_id="gone", lang="en", facts=FACTS["en"]) is None


def test_checkin_answer(fixture_plans: Plans) -> None:
    def answer(step_id: str, option_id: str) -> tuple[bool, str] | None:
        found = checkin_answer(
            fixture_plans, treatment="meso_face", step_id=step_id, option_id=option_id, lang="en", facts=FACTS["en"]
        )
        return (found.trouble, found.reply) if found else None

    assert answer("checkin", "fine") == (False, "Great to hear!")
    assert answer("checkin", "still_swollen") == (True, "Please contact the clinic today (+1 555).")
    assert answer("checkin", "maybe") is None  # a button from content since changed
    assert answer("morning", "fine") is None  # not a check-in
    assert answer("gone", "fine") is None
