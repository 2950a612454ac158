"""Recovery plans: the reminders each treatment's patients get, and the maths that dates them.

`faq/plans.yaml` (language-independent) lists each treatment's steps in order, each due either a
duration after the treatment (`after: "2h"`) or at a local time on a day counted from the treatment
day (`day: 1` + `at: "09:00"`, day 0 = the treatment day). `faq/<lang>/plans.yaml` holds the texts.
Everything here is pure: the treatment time, "now" and the patient's time zone are parameters.

Schedule policies:

- `after` steps are due at the treatment time plus the duration: an absolute instant, so a DST
  change in between does not move them.
- `day`/`at` steps are due at that wall-clock time in the patient's zone on the local date of the
  treatment plus N days (month and year ends are ordinary calendar arithmetic).
  - DST gap (the time does not exist, e.g. 02:30 on the spring-forward night): the instant the
    clock shows after the jump, i.e. shifted forward by the gap (02:30 -> 03:30).
  - DST overlap (the time happens twice, e.g. 02:30 on the fall-back night): the first occurrence.
  Both are zoneinfo's reading of a wall time with `fold=0` (PEP 495).
- Quiet hours (local, may wrap midnight; start == end means none): a step due at or after `start`
  and before `end` is moved to `end`, that morning or the next one. A step due exactly at `start`
  is moved; one due exactly at `end` is not.
- Steps keep the plan's order. A step that would now come before the previous one, e.g. "day 0 at
  20:00" for a treatment at 21:00, or after the first message was moved out of the night:
  - a plain care message is dropped: its moment has passed, and the earlier message covers it;
  - a check-in, and the plan's last step (the next-session reminder), are never dropped: they are
    moved to one minute after the previous step (quiet hours then apply again).
  The first step is due a duration after the treatment (content validation requires it), so it is
  never dropped. Two steps due at the same instant are both kept, in plan order.
- Lateness: a step expires at due + its `late` limit (else the caller's default, from config);
  `is_missed(step, now)` is `now > expires`, and a missed step is skipped rather than sent stale.
- `not_before` (e.g. a patient enrolled the day after the treatment): the schedule is computed as
  for an enrolment at the treatment, then the steps already missed at `not_before` are left out.
  A step due earlier but still within its lateness limit keeps its due time: it is sent at once.
- A check-in with `ask_again` that got no answer is asked once more that long after it was sent
  (`ask_again_due`; quiet hours apply).
- Content order is checked with each step's nominal offset: `after` = the duration, `day`/`at` =
  N days + the time of day (as if treated at midnight); a step may not come before the previous one,
  and the last step must reach 14 days (the next session is weeks later).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Final, TypeVar
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from bot.core.content import BUTTON_LIMIT, CLINIC_PLACEHOLDERS, TELEGRAM_MESSAGE_LIMIT, placeholders
from bot.core.facts import Fact, check_numbers
from bot.core.problems import Problem
from bot.core.yamlsource import Loc, YamlDocument, load_yaml

# The treatments the bot knows, in menu order; every plan and text is keyed by one of these.
TREATMENTS: Final = ("microneedling", "meso_face", "meso_scalp", "meso_body", "prp", "meso_needle_free")
MIN_REACH: Final = timedelta(days=14)
# A kept step that would have come before the previous one follows it by this much.
FOLLOW_GAP: Final = timedelta(minutes=1)
PLANS_FILE: Final = "plans.yaml"

_ID = re.compile(r"[a-z0-9_]{1,40}")  # ids travel in button data (64 bytes in all)
_DURATION = re.compile(r"(\d+)\s*([smhd])")
_CLOCK = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)")
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_VERDICTS: Final = {"ok": False, "trouble": True}
_MISSING_TEXT: Final = "missing translation: no"


# --- Values -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class After:
    """Due this long after the treatment."""

    delay: timedelta

    @property
    def nominal(self) -> timedelta:
        return self.delay

    def __str__(self) -> str:
        return f"{format_duration(self.delay)} after the treatment"


@dataclass(frozen=True, slots=True)
class OnDay:
    """Due at local time `at` on the treatment day + `day`."""

    day: int
    at: time

    @property
    def nominal(self) -> timedelta:
        return timedelta(days=self.day, hours=self.at.hour, minutes=self.at.minute)

    def __str__(self) -> str:
        return f"day {self.day} at {self.at:%H:%M}"


Due = After | OnDay


@dataclass(frozen=True, slots=True)
class CheckinOption:
    id: str
    trouble: bool


@dataclass(frozen=True, slots=True)
class Step:
    id: str
    due: Due
    late: timedelta | None = None  # None: the caller's default
    checkin: tuple[CheckinOption, ...] = ()  # empty: a plain message
    ask_again: timedelta | None = None

    @property
    def is_checkin(self) -> bool:
        return bool(self.checkin)

    def option(self, option_id: str) -> CheckinOption | None:
        return next((o for o in self.checkin if o.id == option_id), None)


@dataclass(frozen=True, slots=True)
class Plan:
    treatment: str
    steps: tuple[Step, ...]

    def step(self, step_id: str) -> Step | None:
        return next((s for s in self.steps if s.id == step_id), None)


@dataclass(frozen=True, slots=True)
class OptionTexts:
    label: str
    reply: str


@dataclass(frozen=True, slots=True)
class StepTexts:
    text: str
    options: Mapping[str, OptionTexts]


@dataclass(frozen=True, slots=True)
class PlanTexts:
    name: str
    steps: Mapping[str, StepTexts]


@dataclass(frozen=True)
class Plans:
    plans: Mapping[str, Plan]
    texts: Mapping[str, Mapping[str, PlanTexts]]  # language -> treatment -> texts

    @property
    def languages(self) -> tuple[str, ...]:
        return tuple(self.texts)

    def plan(self, treatment: str) -> Plan:
        return self.plans[treatment]


@dataclass(frozen=True, slots=True)
class QuietHours:
    """Local times when no reminder is sent; may wrap midnight (21:00-08:00); start == end: none."""

    start: time
    end: time

    @property
    def enabled(self) -> bool:
        return self.start != self.end

    def contains(self, moment: time) -> bool:
        if not self.enabled:
            return False
        if self.start < self.end:
            return self.start <= moment < self.end
        return moment >= self.start or moment < self.end


NO_QUIET_HOURS: Final = QuietHours(time(0), time(0))


@dataclass(frozen=True, slots=True)
class Scheduled:
    step_id: str
    due: datetime  # aware, UTC
    expires: datetime  # due + lateness limit


@dataclass(frozen=True, slots=True)
class CheckinButton:
    option_id: str
    label: str


@dataclass(frozen=True, slots=True)
class StepMessage:
    text: str
    buttons: tuple[CheckinButton, ...]  # the check-in options; empty for a plain message


@dataclass(frozen=True, slots=True)
class PreviewItem:
    step: str
    due: datetime  # aware, in the patient's zone
    text: str


@dataclass(frozen=True, slots=True)
class CheckinAnswer:
    trouble: bool
    reply: str


# --- Parsing small values -----------------------------------------------------------------------


def parse_duration(text: str) -> timedelta:
    """`"90m"`, `"2h"`, `"1d"` (units s, m, h, d) -> a positive timedelta; raises ValueError."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(f'bad duration \'{text}\': write a number and a unit s, m, h or d, e.g. "2h" or "90m"')
    seconds = int(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"bad duration '{text}': it must be more than zero")
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    """The shortest exact spelling of a duration in the content's units: 90 minutes -> "90m"."""
    seconds = int(delta.total_seconds())
    for unit in ("d", "h", "m"):
        if seconds % _UNITS[unit] == 0:
            return f"{seconds // _UNITS[unit]}{unit}"
    return f"{seconds}s"


def parse_clock(text: str) -> time:
    """`"HH:MM"` (24-hour) -> a naive time; raises ValueError."""
    match = _CLOCK.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"bad time '{text}': write HH:MM in 24-hour time, e.g. \"09:00\"")
    return time(int(match.group(1)), int(match.group(2)))


# --- Loading and validation ---------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class _PlanFile(_Strict):
    steps: tuple[Any, ...]  # each step is validated on its own, so one broken step hides nothing


class _StepFile(_Strict):
    id: str
    after: str | None = None
    day: int | None = None
    at: str | None = None
    late: str | None = None
    checkin: dict[str, str] | None = None
    ask_again: str | None = None

    @field_validator("checkin", mode="before")
    @classmethod
    def _empty_is_no_options(cls, value: Any) -> Any:
        return {} if value in ("", []) else value


class _OptionFile(_Strict):
    label: str
    reply: str


class _StepTextsFile(_Strict):
    text: str
    options: dict[str, _OptionFile] = {}


class _TreatmentTextsFile(_Strict):
    name: str
    steps: dict[str, Any]  # a text, or for a check-in a _StepTextsFile: validated one by one


Model = TypeVar("Model", bound=BaseModel)


def load_plans(
    content_dir: Path,
    languages: tuple[str, ...],
    facts: Mapping[str, Mapping[str, str]] | None = None,
    *,
    treatments: Collection[str] = TREATMENTS,
    content_facts: Mapping[str, Fact] | None = None,
) -> tuple[Plans | None, list[Problem]]:
    """Load and validate the plans and their texts; returns them (None if there are errors) and every problem.

    `treatments` must each have a plan (all of TREATMENTS unless told otherwise); `facts` are the
    clinic placeholders' values per language, to check the length of texts as patients see them;
    `content_facts` are the facts of `facts.yaml`, usable as placeholders and checked against typed numbers.
    """
    known = _Facts(content_facts or {})
    problems: list[Problem] = []
    doc = load_yaml(content_dir / PLANS_FILE, _rel(content_dir / PLANS_FILE), strings_only=True)
    plans, declared = _load_steps(doc, treatments, problems)
    texts: dict[str, dict[str, PlanTexts]] = {}
    for lang in languages:
        path = content_dir / lang / PLANS_FILE
        lang_doc = load_yaml(path, _rel(path), strings_only=True)
        shown = dict(facts.get(lang, {})) if facts else None
        if shown is not None:
            shown = {n: f.text.get(lang, f.value) for n, f in known.facts.items()} | shown
        texts[lang] = _load_texts(lang_doc, plans, declared, shown, problems, _Checker(known, lang))
    if plans is None or any(p.severity == "error" for p in problems):
        return None, problems
    return Plans(plans, texts), problems


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _validate(
    doc: YamlDocument, loc: Loc, model: type[Model], data: Any, problems: list[Problem], missing: str = "missing key"
) -> Model | None:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            where: Loc = (*loc, *err["loc"])
            problems.append(doc.problem(where, _describe(where, err["type"], err["msg"], missing)))
        return None


def _describe(loc: Loc, kind: str, msg: str, missing: str) -> str:
    name = ".".join(str(part) for part in loc)
    if kind == "extra_forbidden":
        return f"unknown key '{name}'"
    if kind == "missing":
        return f"{missing} '{name}'"
    if kind in {"model_type", "dict_type"}:
        return f"'{name}' must be a mapping of keys and values"
    return f"'{name}': {msg}"


def _mapping(doc: YamlDocument, what: str, problems: list[Problem]) -> dict[str, Any] | None:
    problems.extend(doc.problems)
    if any(p.severity == "error" for p in doc.problems):
        return None
    if doc.data is None:
        problems.append(Problem(doc.path, None, "file is empty"))
        return None
    if not isinstance(doc.data, dict):
        problems.append(doc.problem((), f"the file must map each treatment id to its {what}"))
        return None
    return doc.data


def _unknown_treatment(treatment: str) -> str:
    return f"unknown treatment '{treatment}' (known: {', '.join(TREATMENTS)})"


def _load_steps(
    doc: YamlDocument, required: Collection[str], problems: list[Problem]
) -> tuple[dict[str, Plan] | None, frozenset[str]]:
    """The plans that loaded, and the known treatments plans.yaml has a plan for (loaded or not)."""
    data = _mapping(doc, "plan", problems)
    if data is None:
        return None, frozenset()
    plans: dict[str, Plan] = {}
    for treatment, raw in data.items():
        if treatment not in TREATMENTS:
            problems.append(doc.problem((treatment,), _unknown_treatment(treatment)))
            continue
        plan_file = _validate(doc, (treatment,), _PlanFile, raw, problems)
        if plan_file is None:
            continue
        if not plan_file.steps:
            problems.append(doc.problem((treatment, "steps"), f"plan '{treatment}' has no steps"))
            continue
        steps = []
        for index, raw_step in enumerate(plan_file.steps):
            loc: Loc = (treatment, "steps", index)
            step_file = _validate(doc, loc, _StepFile, raw_step, problems)
            step = _build_step(doc, loc, step_file, problems) if step_file is not None else None
            steps.append((index, step))
        problems.extend(_check_plan(doc, treatment, steps))
        if all(step is not None for _, step in steps):
            plans[treatment] = Plan(treatment, tuple(step for _, step in steps if step is not None))
    for treatment in required:
        if treatment not in TREATMENTS:
            problems.append(Problem(doc.path, None, f"a plan is required for {_unknown_treatment(treatment)}"))
        elif treatment not in data:
            problems.append(Problem(doc.path, None, f"missing plan: no steps for treatment '{treatment}'"))
    return plans, frozenset(t for t in data if t in TREATMENTS)


def _build_step(doc: YamlDocument, loc: Loc, raw: _StepFile, problems: list[Problem]) -> Step | None:
    before = len(problems)

    def bad(key: str, message: str, severity: str = "error") -> None:
        problems.append(doc.problem((*loc, key), message, severity))

    def duration(key: str, text: str | None) -> timedelta | None:
        if text is None:
            return None
        try:
            return parse_duration(text)
        except ValueError as exc:
            bad(key, f"'{key}' of step '{raw.id}': {exc}")
            return None

    if not _ID.fullmatch(raw.id):
        bad("id", f"step id '{raw.id}' must be 1-40 characters: a-z, 0-9 and _")
    due: Due | None = None
    has_day = raw.day is not None or raw.at is not None
    if raw.after is not None and has_day:
        bad("after", f"step '{raw.id}' has both `after` and `day`/`at`: give one due time")
    elif raw.after is not None:
        delay = duration("after", raw.after)
        due = After(delay) if delay is not None else None
    elif raw.day is None or raw.at is None:
        if not has_day:
            missing = 'a due time: `after: "2h"`, or `day: 1` with `at: "09:00"`'
        else:
            missing = "`at` with its `day`" if raw.at is None else "`day` with its `at`"
        problems.append(doc.problem(loc, f"step '{raw.id}' needs {missing}"))
    else:
        if raw.day < 0:
            bad("day", f"'day' of step '{raw.id}' must be 0 (the treatment day) or more")
        try:
            at = parse_clock(raw.at)
        except ValueError as exc:
            bad("at", f"'at' of step '{raw.id}': {exc}")
        else:
            due = OnDay(raw.day, at)
    late = duration("late", raw.late)
    ask_again = duration("ask_again", raw.ask_again)
    options: list[CheckinOption] = []
    if raw.checkin is not None:
        if not raw.checkin:
            bad("checkin", f"check-in '{raw.id}' has no options")
        for option_id, verdict in raw.checkin.items():
            if not _ID.fullmatch(option_id):
                bad("checkin", f"option id '{option_id}' must be 1-40 characters: a-z, 0-9 and _")
            if verdict not in _VERDICTS:
                problems.append(
                    doc.problem(
                        (*loc, "checkin", option_id), f"option '{option_id}' must be 'ok' or 'trouble', not '{verdict}'"
                    )
                )
            else:
                options.append(CheckinOption(option_id, _VERDICTS[verdict]))
        if options and len(options) == len(raw.checkin) and not any(o.trouble for o in options):
            bad("checkin", f"check-in '{raw.id}' has no 'trouble' option: no answer will alert the clinic", "warning")
    if raw.ask_again is not None and raw.checkin is None:
        bad("ask_again", f"step '{raw.id}' is not a check-in: `ask_again` is only for steps with `checkin`")
    if due is None or any(p.severity == "error" for p in problems[before:]):
        return None
    return Step(raw.id, due, late, tuple(options), ask_again)


def _check_plan(doc: YamlDocument, treatment: str, steps: list[tuple[int, Step | None]]) -> Iterator[Problem]:
    seen: dict[str, int] = {}
    previous: Step | None = None
    for index, step in steps:
        if step is None:
            previous = None  # its due time is unknown: compare the next step with nothing
            continue
        loc: Loc = (treatment, "steps", index)
        if step.id in seen:
            yield doc.problem((*loc, "id"), f"duplicate step id '{step.id}' (also step #{seen[step.id] + 1})")
        seen.setdefault(step.id, index)
        if index == 0 and not isinstance(step.due, After):
            yield doc.problem(
                loc,
                f"plan '{treatment}' must open with a step due a duration after the treatment "
                f'(e.g. `after: "2h"`), not {step.due}',
            )
        if previous is not None and step.due.nominal < previous.due.nominal:
            yield doc.problem(
                loc,
                f"step '{step.id}' ({step.due}) comes before the previous step '{previous.id}' ({previous.due}): "
                "steps must be in time order",
            )
        previous = step
    known = [step for _, step in steps if step is not None]
    if len(known) == len(steps) and known:
        reach = max(step.due.nominal for step in known)
        if reach < MIN_REACH:
            yield doc.problem(
                (treatment, "steps"),
                f"plan '{treatment}' ends {_days(reach)} after the treatment; it must reach at least "
                f"{MIN_REACH.days} days (to the next session)",
            )


def _days(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 86400:.4g} days"


def _load_texts(
    doc: YamlDocument,
    plans: Mapping[str, Plan] | None,
    declared: frozenset[str],
    facts: Mapping[str, str] | None,
    problems: list[Problem],
    checker: _Checker,
) -> dict[str, PlanTexts]:
    data = _mapping(doc, "names and texts", problems)
    if data is None:
        return {}
    texts: dict[str, PlanTexts] = {}
    for treatment, raw in data.items():
        if treatment not in TREATMENTS:
            problems.append(doc.problem((treatment,), _unknown_treatment(treatment)))
            continue
        parsed = _validate(doc, (treatment,), _TreatmentTextsFile, raw, problems, _MISSING_TEXT)
        if parsed is None:
            continue
        plan = plans.get(treatment) if plans is not None else None
        if plans is not None and plan is None and treatment not in declared:
            problems.append(
                doc.problem((treatment,), f"treatment '{treatment}' has no plan in {PLANS_FILE}: unused", "warning")
            )
        texts[treatment] = _plan_texts(doc, treatment, parsed, plan, facts, problems, checker)
    for treatment in sorted(declared, key=TREATMENTS.index):
        if treatment not in data:
            problems.append(doc.problem((), f"missing translation: no name and texts for treatment '{treatment}'"))
    return texts


def _plan_texts(
    doc: YamlDocument,
    treatment: str,
    parsed: _TreatmentTextsFile,
    plan: Plan | None,
    facts: Mapping[str, str] | None,
    problems: list[Problem],
    checker: _Checker,
) -> PlanTexts:
    name_loc: Loc = (treatment, "name")
    problems.extend(
        _check_text(checker, doc, name_loc, parsed.name, facts, BUTTON_LIMIT, f"name of treatment '{treatment}'")
    )
    steps: dict[str, StepTexts] = {}
    given: set[str] = set()
    for step_id, raw in parsed.steps.items():
        loc: Loc = (treatment, "steps", step_id)
        step = plan.step(step_id) if plan is not None else None
        if plan is not None and step is None:
            problems.append(doc.problem(loc, f"unknown step '{step_id}' (not in {PLANS_FILE} for '{treatment}')"))
        given.add(step_id)
        entry = (
            _StepTextsFile(text=raw)
            if isinstance(raw, str)
            else _validate(doc, loc, _StepTextsFile, raw, problems, _MISSING_TEXT)
        )
        if entry is None:
            continue
        problems.extend(
            _check_text(
                checker,
                doc,
                loc if isinstance(raw, str) else (*loc, "text"),
                entry.text,
                facts,
                TELEGRAM_MESSAGE_LIMIT,
                f"text of step '{step_id}'",
            )
        )
        options: dict[str, OptionTexts] = {}
        for option_id, option in entry.options.items():
            option_loc: Loc = (*loc, "options", option_id)
            if step is not None and not step.is_checkin:
                problems.append(doc.problem(option_loc, f"step '{step_id}' is not a check-in: remove its `options`"))
            elif step is not None and step.option(option_id) is None:
                problems.append(
                    doc.problem(option_loc, f"unknown option '{option_id}' (not in the check-in '{step_id}')")
                )
            problems.extend(
                _check_text(
                    checker,
                    doc,
                    (*option_loc, "label"),
                    option.label,
                    facts,
                    BUTTON_LIMIT,
                    f"label of option '{option_id}'",
                )
            )
            problems.extend(
                _check_text(
                    checker,
                    doc,
                    (*option_loc, "reply"),
                    option.reply,
                    facts,
                    TELEGRAM_MESSAGE_LIMIT,
                    f"reply to option '{option_id}'",
                )
            )
            options[option_id] = OptionTexts(option.label, option.reply)
        if step is not None:
            for wanted in step.checkin:
                if wanted.id not in options:
                    problems.append(
                        doc.problem(
                            loc, f"missing translation: no label and reply for option '{wanted.id}' of '{step_id}'"
                        )
                    )
        steps[step_id] = StepTexts(entry.text, options)
    if plan is not None:
        for step in plan.steps:
            if step.id not in given:
                problems.append(doc.problem((treatment, "steps"), f"missing translation: no text for step '{step.id}'"))
    return PlanTexts(parsed.name, steps)


@dataclass(frozen=True)
class _Facts:
    facts: Mapping[str, Fact]


@dataclass(frozen=True)
class _Checker:
    """What a text may name and which numbers it must not type, in one language."""

    known: _Facts
    lang: str

    @property
    def names(self) -> frozenset[str]:
        return CLINIC_PLACEHOLDERS | frozenset(self.known.facts)

    def numbers(self, text: str) -> Iterator[str]:
        return check_numbers(text, self.lang, self.known.facts)


def _check_text(
    checker: _Checker, doc: YamlDocument, loc: Loc, text: str, facts: Mapping[str, str] | None, limit: int, what: str
) -> Iterator[Problem]:
    if not text.strip():
        yield doc.problem(loc, f"{what} is empty")
        return
    try:
        names = placeholders(text)
    except ValueError as exc:
        yield doc.problem(loc, f"broken placeholder in {what}: {exc} (write {{{{ or }}}} for a literal brace)")
        return
    unknown = [name for name in names if name not in checker.names]
    if unknown:
        yield doc.problem(loc, f"unknown placeholder {{{unknown[0]}}} in {what}")
        return
    for message in checker.numbers(text):
        yield doc.problem(loc, message)
    shown = text.format_map(dict.fromkeys(checker.names, "") | dict(facts)) if facts is not None else text
    if len(shown) > limit:
        unit = "fit a button" if limit == BUTTON_LIMIT else "fit a Telegram message"
        yield doc.problem(loc, f"{what} is {len(shown)} characters; at most {limit} {unit}")


# --- Schedule maths -----------------------------------------------------------------------------


def schedule(
    plan: Plan,
    *,
    treated_at: datetime,
    zone: ZoneInfo,
    quiet: QuietHours,
    default_late: timedelta,
    not_before: datetime | None = None,
) -> list[Scheduled]:
    """The plan's steps dated for one treatment, in time order (policies in the module docstring)."""
    _require_aware(treated_at, "treated_at")
    if not_before is not None:
        _require_aware(not_before, "not_before")
    if default_late <= timedelta(0):
        raise ValueError("default_late must be positive")
    treated_at = treated_at.astimezone(UTC)
    treatment_day = treated_at.astimezone(zone).date()
    items: list[Scheduled] = []
    last = len(plan.steps) - 1
    for index, step in enumerate(plan.steps):
        if isinstance(step.due, After):
            due = treated_at + step.due.delay
        else:
            due = wall_time(treatment_day + timedelta(days=step.due.day), step.due.at, zone)
        due = leave_quiet_hours(due, zone, quiet)
        previous = items[-1].due if items else treated_at
        if due < previous:
            if not (step.is_checkin or index in (0, last)):
                continue
            due = leave_quiet_hours(previous + FOLLOW_GAP, zone, quiet)
        items.append(Scheduled(step.id, due, due + (step.late or default_late)))
    if not_before is not None:
        items = [item for item in items if not is_missed(item, not_before)]
    return items


def is_missed(scheduled: Scheduled, now: datetime) -> bool:
    """True once the step is past its lateness limit: better skipped than sent stale."""
    _require_aware(now, "now")
    return now > scheduled.expires


def ask_again_due(step: Step, asked_at: datetime, *, zone: ZoneInfo, quiet: QuietHours) -> datetime | None:
    """When an unanswered check-in is asked once more (UTC), or None if the step is not asked again."""
    _require_aware(asked_at, "asked_at")
    if step.ask_again is None:
        return None
    return leave_quiet_hours(asked_at.astimezone(UTC) + step.ask_again, zone, quiet)


def wall_time(day: date, at: time, zone: ZoneInfo) -> datetime:
    """The UTC instant a clock in `zone` shows `at` on `day`: after a DST gap's jump, first of an overlap."""
    # fold=0 reads a time in a gap with the offset from before the jump (02:30 -> 03:30 the new time)
    # and a repeated time as its first occurrence (PEP 495).
    return datetime.combine(day, at, tzinfo=zone).replace(fold=0).astimezone(UTC)


def leave_quiet_hours(due: datetime, zone: ZoneInfo, quiet: QuietHours) -> datetime:
    """`due` (aware) if outside quiet hours, else the end of that quiet period (UTC)."""
    local = due.astimezone(zone)
    if not quiet.contains(local.time()):
        return due.astimezone(UTC)
    end_day = local.date()
    if quiet.start > quiet.end and local.time() >= quiet.start:
        end_day += timedelta(days=1)  # evening part of a period that wraps midnight
    moved = wall_time(end_day, quiet.end, zone)
    if moved < due:  # `due` was the second occurrence of an overlap hour: use the second `end`
        moved = datetime.combine(end_day, quiet.end, tzinfo=zone).replace(fold=1).astimezone(UTC)
    return moved


def _require_aware(moment: datetime, name: str) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")


# --- Texts --------------------------------------------------------------------------------------


def step_message(
    plans: Plans, *, treatment: str, step_id: str, lang: str, facts: Mapping[str, str]
) -> StepMessage | None:
    """A step's text and check-in buttons in a language, placeholders filled; None for an unknown step."""
    step = plans.plan(treatment).step(step_id)
    texts = plans.texts[lang][treatment].steps.get(step_id)
    if step is None or texts is None:
        return None
    buttons = tuple(CheckinButton(o.id, _fill(texts.options[o.id].label, facts)) for o in step.checkin)
    return StepMessage(_fill(texts.text, facts), buttons)


def checkin_answer(
    plans: Plans, *, treatment: str, step_id: str, option_id: str, lang: str, facts: Mapping[str, str]
) -> CheckinAnswer | None:
    """Whether a check-in answer signals trouble, and the reply; None for an unknown step or option."""
    step = plans.plan(treatment).step(step_id)
    option = step.option(option_id) if step is not None else None
    texts = plans.texts[lang][treatment].steps.get(step_id)
    if option is None or texts is None or option_id not in texts.options:
        return None
    return CheckinAnswer(option.trouble, _fill(texts.options[option_id].reply, facts))


def preview(
    plans: Plans,
    *,
    treatment: str,
    treated_at: datetime,
    zone: ZoneInfo,
    lang: str,
    facts: Mapping[str, str],
    quiet: QuietHours,
    default_late: timedelta,
) -> list[PreviewItem]:
    """What a patient would get after this treatment: each step's due time in their zone and its text."""
    items = []
    for scheduled in schedule(
        plans.plan(treatment), treated_at=treated_at, zone=zone, quiet=quiet, default_late=default_late
    ):
        message = step_message(plans, treatment=treatment, step_id=scheduled.step_id, lang=lang, facts=facts)
        if message is not None:
            items.append(PreviewItem(scheduled.step_id, scheduled.due.astimezone(zone), message.text))
    return items


class _KeepUnknown(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"  # a fact the clinic has not configured stays visible, not blank


def _fill(text: str, facts: Mapping[str, str]) -> str:
    return text.format_map(_KeepUnknown(facts)).strip()
