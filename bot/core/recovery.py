"""Recovery plans for one patient: enrolment, consent, the dated reminders, check-in answers, the plan view.

Pure: the dialogue calls it with the patient's state and the time of the message; the schedule
is computed here (`plans.schedule`) and handed to the store as rows with deterministic keys
(`<enrolment>:<step>`), so enrolling twice, restarting or a second process never creates or sends
a second copy of a reminder.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from bot.core import callbacks as cb
from bot.core.conversation import Button, Keyboard
from bot.core.plans import Plans, QuietHours, ask_again_due, is_missed, schedule, step_message

AGAIN = "again"  # the suffix of a check-in's second asking


@dataclass(frozen=True, slots=True)
class Enrolment:
    """A treatment a patient gets reminders for (or was asked to consent to)."""

    id: str
    treatment: str
    treated_at: datetime
    zone: str
    consented: bool


@dataclass(frozen=True, slots=True)
class Upcoming:
    enrolment: str
    step: str
    due: datetime


@dataclass(frozen=True, slots=True)
class Reminder:
    """One reminder row: `key` is unique across the database."""

    key: str
    enrolment: str
    step: str
    due: datetime
    expires: datetime
    checkin: bool = False  # a question: it waits for an answer, and may be asked again


@dataclass(frozen=True)
class Schedule:
    """How reminders are timed for this clinic."""

    quiet: QuietHours
    default_late: timedelta


def enrolment_id(chat_id: int, treatment: str, treated_at: datetime) -> str:
    """The same patient, treatment and time always give the same id: re-enrolling never duplicates."""
    digest = hashlib.sha256(f"{chat_id}:{treatment}:{treated_at.timestamp():.0f}".encode()).hexdigest()
    return digest[:12]


def reminders(plans: Plans, enrolment: Enrolment, timing: Schedule, *, now: datetime) -> tuple[Reminder, ...]:
    """The enrolment's reminders still to come (late ones within their limit included, missed ones not)."""
    plan = plans.plan(enrolment.treatment)
    dated = schedule(
        plan,
        treated_at=enrolment.treated_at,
        zone=ZoneInfo(enrolment.zone),
        quiet=timing.quiet,
        default_late=timing.default_late,
        not_before=now,
    )
    found = []
    for item in dated:
        step = plan.step(item.step_id)
        if is_missed(item, now) or step is None:
            continue
        found.append(
            Reminder(
                f"{enrolment.id}:{item.step_id}", enrolment.id, item.step_id, item.due, item.expires, step.is_checkin
            )
        )
    return tuple(found)


def asked_again(
    plans: Plans, treatment: str, step: str, asked_at: datetime, zone: str, timing: Schedule
) -> datetime | None:
    """When an unanswered check-in is asked once more, or None if it is not."""
    found = plans.plan(treatment).step(step.removesuffix(f":{AGAIN}"))
    if found is None or step.endswith(f":{AGAIN}"):
        return None
    return ask_again_due(found, asked_at, zone=ZoneInfo(zone), quiet=timing.quiet)


def message(
    plans: Plans, enrolment_id_: str, treatment: str, step: str, lang: str, facts: Mapping[str, str]
) -> tuple[str, Keyboard] | None:
    """A reminder's text in the patient's language, with check-in buttons when the step asks something."""
    found = step_message(plans, treatment=treatment, step_id=step, lang=_lang(plans, lang), facts=facts)
    if found is None:
        return None
    buttons = tuple((Button(b.label, cb.CheckIn(enrolment_id_, step, b.option_id)),) for b in found.buttons)
    return found.text, buttons


def treatment_name(plans: Plans, treatment: str, lang: str) -> str:
    texts = plans.texts[_lang(plans, lang)].get(treatment)
    return texts.name if texts is not None else treatment


def upcoming_lines(
    plans: Plans, upcoming: Sequence[Upcoming], enrolments: Sequence[Enrolment], lang: str, facts: Mapping[str, str]
) -> list[tuple[str, datetime, str]]:
    """(treatment name, due in the patient's zone, first line of the text) per reminder still to come."""
    by_id = {e.id: e for e in enrolments}
    lines = []
    for item in sorted(upcoming, key=lambda u: u.due):
        enrolment = by_id.get(item.enrolment)
        if enrolment is None:
            continue
        found = message(plans, enrolment.id, enrolment.treatment, item.step.removesuffix(f":{AGAIN}"), lang, facts)
        if found is None:
            continue
        first = found[0].split("\n", 1)[0].strip()
        if len(first) > 90:
            first = first[:89].rstrip() + "…"
        lines.append(
            (treatment_name(plans, enrolment.treatment, lang), item.due.astimezone(ZoneInfo(enrolment.zone)), first)
        )
    return lines


def _lang(plans: Plans, lang: str) -> str:
    return lang if lang in plans.texts else next(iter(plans.texts))
