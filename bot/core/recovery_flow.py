"""The recovery part of the dialogue: invites, consent, enrolling from the menu, /plan, check-ins, time zones.

Called by `Dialogue` with the patient's state and the inbound event; returns `Turn`s like the rest
of the brain. Reminders themselves are dated here (`recovery.reminders`) and stored by the edge.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.core import callbacks as cb
from bot.core.content import Text
from bot.core.conversation import Assistant, Button, Keyboard, Kind, Reply
from bot.core.events import (
    AnswerCheckIn,
    CreateEnrolment,
    DeclineConsent,
    Effect,
    GiveConsent,
    Inbound,
    PatientState,
    Priority,
    RecordEscalation,
    RecordEvent,
    Reschedule,
    SetZone,
    ToStaff,
    Turn,
)
from bot.core.invites import Invite, InviteCodec, Refusal
from bot.core.plans import TREATMENTS, Plans, checkin_answer
from bot.core.recovery import (
    Enrolment,
    Schedule,
    Upcoming,
    enrolment_id,
    reminders,
    treatment_name,
    upcoming_lines,
)
from bot.core.safety.model import Level
from bot.core.staff import StaffWriter

ENROL_DAYS = 7  # enrolling from the menu: today and up to this many days back
MENU_TREATMENT_HOUR = time(12, 0)  # a treatment some days ago, time unknown: midday
CHECKIN_ANSWER_WINDOW = timedelta(hours=24)  # free text this soon after a check-in answers it
InviteOwner = Callable[[str], int | None]


@dataclass(frozen=True)
class Recovery:
    assistant: Assistant
    plans: Plans
    timing: Schedule
    staff: StaffWriter
    clinic_zone: tzinfo
    invites: InviteCodec | None = None

    # -- helpers -------------------------------------------------------------------------------
    def _zone(self, state: PatientState) -> str:
        return state.zone or str(self.clinic_zone)

    def _name(self, treatment: str, lang: str) -> str:
        return treatment_name(self.plans, treatment, lang)

    def _when(self, moment: datetime, zone: str, lang: str, now: datetime) -> str:
        """A due time as patients read it: "today 20:00", "tomorrow 09:00", "Thu 04/12 10:00"."""
        dates = self.assistant.pack(lang).ui.dates
        local = moment.astimezone(ZoneInfo(zone))
        today = now.astimezone(ZoneInfo(zone)).date()
        clock = f"{local:%H:%M}"
        if local.date() == today:
            return f"{dates.today} {clock}"
        if local.date() == today + timedelta(days=1):
            return f"{dates.tomorrow} {clock}"
        return f"{dates.weekdays[local.weekday()]} {local:%d/%m} {clock}"

    def _consent_turn(self, enrolment: Enrolment, state: PatientState, now: datetime) -> Reply:
        a = self.assistant
        b = a.pack(state.lang).ui.buttons
        buttons = (
            (Button(b.consent_yes, cb.Consent(enrolment.id, True)),),
            (Button(b.consent_no, cb.Consent(enrolment.id, False)),),
        )
        when = self._when(enrolment.treated_at, enrolment.zone, state.lang, now)
        return a.info(
            state.lang, Text.ENROL_CONSENT, buttons, treatment=self._name(enrolment.treatment, state.lang), date=when
        )

    # -- invites -------------------------------------------------------------------------------
    def start(self, inbound: Inbound, state: PatientState, owner: InviteOwner) -> Turn:
        """`/start PAYLOAD`: a clinic's invite link."""
        a = self.assistant
        lang = state.lang
        menu = a.main_menu(lang)
        if self.invites is None:
            return Turn((a.info(lang, Text.INVITE_INVALID), a.info(lang, Text.WELCOME, menu)))
        decoded = self.invites.decode(inbound.argument, inbound.at)
        if decoded is Refusal.EXPIRED:
            return Turn((a.info(lang, Text.INVITE_EXPIRED), a.info(lang, Text.WELCOME, menu)))
        if not isinstance(decoded, Invite):
            return Turn((a.info(lang, Text.INVITE_INVALID), a.info(lang, Text.WELCOME, menu)))
        holder = owner(decoded.nonce)
        if holder is not None and holder != inbound.sender.user_id:
            return Turn((a.info(lang, Text.INVITE_USED), a.info(lang, Text.WELCOME, menu)))
        enrolment = Enrolment(
            enrolment_id(state.chat_id, decoded.treatment, decoded.treated_at),
            decoded.treatment,
            decoded.treated_at,
            self._zone(state),
            consented=False,
        )
        known = next((e for e in state.enrolments if e.id == enrolment.id), None)
        if known is not None and known.consented:
            return self.plan(inbound, state)  # the same link opened again: nothing new, show the plan
        welcome = a.info(lang, Text.WELCOME)
        effect = CreateEnrolment(enrolment, "invite", decoded.ref, decoded.nonce, inbound.sender.user_id)
        return Turn((welcome, self._consent_turn(enrolment, state, inbound.at)), (effect,))

    # -- consent -------------------------------------------------------------------------------
    def consent(self, inbound: Inbound, state: PatientState, enrolment_ref: str, agreed: bool) -> Turn:
        a = self.assistant
        enrolment = next((e for e in state.enrolments if e.id == enrolment_ref), None)
        if enrolment is None:
            return Turn((a.info(state.lang, Text.OLD_BUTTON, a.main_menu(state.lang)),))
        if not agreed:
            return Turn((a.info(state.lang, Text.ENROL_DECLINED),), (DeclineConsent(enrolment.id),))
        if enrolment.consented:
            return self.plan(inbound, state)
        dated = reminders(self.plans, enrolment, self.timing, now=inbound.at)
        upcoming = tuple(Upcoming(enrolment.id, r.step, r.due) for r in dated)
        consented = Enrolment(enrolment.id, enrolment.treatment, enrolment.treated_at, enrolment.zone, True)
        shown = self._plan_reply(
            state,
            (*[e for e in state.enrolments if e.id != enrolment.id], consented),
            (*state.upcoming, *upcoming),
            inbound.at,
        )
        return Turn((shown,), (GiveConsent(enrolment.id, dated), RecordEvent("enrolled", enrolment.treatment)))

    # -- the plan ------------------------------------------------------------------------------
    def plan(self, inbound: Inbound, state: PatientState) -> Turn:
        """/plan: what is still to come, or a way to enrol."""
        consented = tuple(e for e in state.enrolments if e.consented)
        if not consented:
            return self.enrol_menu(state, cb.EnrolMenu(), inbound.at)
        return Turn((self._plan_reply(state, consented, state.upcoming, inbound.at),))

    def _plan_reply(
        self, state: PatientState, enrolments: tuple[Enrolment, ...], upcoming: tuple[Upcoming, ...], now: datetime
    ) -> Reply:
        a = self.assistant
        lang = state.lang
        facts = a.facts(lang)
        lines = upcoming_lines(self.plans, upcoming, enrolments, lang, facts)
        template = a.pack(lang).ui.plan_item
        zone = self._zone(state)
        items = [
            template.format(when=self._when(due, zone, lang, now), treatment=name, text=text)
            for name, due, text in lines
        ]
        body = "\n".join(items) if items else a.text(lang, Text.PLAN_NOTHING_LEFT)
        b = a.pack(lang).ui.buttons
        buttons = ((Button(b.enrol, cb.EnrolMenu()),), (Button(b.topics, cb.Menu()),))
        text = a.text(lang, Text.PLAN_TITLE) + "\n\n" + body + "\n\n" + a.text(lang, Text.PLAN_FOOTER)
        return Reply(text, Kind.INFO, lang, buttons)

    # -- enrolling from the menu ---------------------------------------------------------------
    def enrol_menu(self, state: PatientState, choice: cb.EnrolMenu, now: datetime) -> Turn:
        a = self.assistant
        lang = state.lang
        b = a.pack(lang).ui.buttons
        if choice.treatment is None or choice.treatment not in self.plans.plans:
            offered = [t for t in TREATMENTS if t in self.plans.plans]
            rows: Keyboard = tuple((Button(self._name(t, lang), cb.EnrolMenu(t)),) for t in offered)
            return Turn((a.info(lang, Text.ENROL_PICK_TREATMENT, rows),))
        if choice.days_ago is None or not 0 <= choice.days_ago <= ENROL_DAYS:
            labels = [b.today, b.yesterday] + [b.days_ago.format(days=d) for d in range(2, ENROL_DAYS + 1)]
            days = tuple((Button(label, cb.EnrolMenu(choice.treatment, d)),) for d, label in enumerate(labels))
            return Turn((a.info(lang, Text.ENROL_PICK_DAY, days, treatment=self._name(choice.treatment, lang)),))
        zone = self._zone(state)
        if choice.days_ago == 0:
            treated_at = now  # enrolling right after the treatment
        else:
            day = now.astimezone(ZoneInfo(zone)).date() - timedelta(days=choice.days_ago)
            treated_at = datetime.combine(day, MENU_TREATMENT_HOUR, tzinfo=ZoneInfo(zone))
        enrolment = Enrolment(
            enrolment_id(state.chat_id, choice.treatment, treated_at),
            choice.treatment,
            treated_at,
            zone,
            consented=False,
        )
        return Turn((self._consent_turn(enrolment, state, now),), (CreateEnrolment(enrolment, "menu"),))

    # -- check-ins -----------------------------------------------------------------------------
    def check_in(self, inbound: Inbound, state: PatientState, answer: cb.CheckIn, *, open_now: bool = True) -> Turn:
        """A check-in button: the option's reply; an answer that signals trouble alerts the staff too."""
        a = self.assistant
        lang = state.lang
        enrolment = next((e for e in state.enrolments if e.id == answer.enrolment), None)
        if enrolment is None:
            return Turn((a.info(lang, Text.OLD_BUTTON, a.main_menu(lang)),))
        found = checkin_answer(
            self.plans,
            treatment=enrolment.treatment,
            step_id=answer.step,
            option_id=answer.option,
            lang=lang if lang in self.plans.texts else next(iter(self.plans.texts)),
            facts=a.facts(lang),
        )
        if found is None:
            return Turn((a.info(lang, Text.OLD_BUTTON, a.main_menu(lang)),))
        effects: list[Effect] = [AnswerCheckIn(enrolment.id, answer.step, answer.option)]
        kind = Kind.SAFETY if found.trouble else Kind.INFO
        text = found.reply
        if found.trouble and not open_now:  # no promise of a call-back from a closed clinic
            text += "\n\n" + a.text(lang, Text.CHECKIN_CLOSED)
        buttons = ((Button(a.pack(lang).ui.buttons.talk_to_person, cb.Handoff()),),) if found.trouble else ()
        reply = Reply(text, kind, lang, buttons)
        if found.trouble:
            day = (
                inbound.at.astimezone(ZoneInfo(enrolment.zone)).date()
                - enrolment.treated_at.astimezone(ZoneInfo(enrolment.zone)).date()
            ).days
            label = self._option_label(enrolment, answer, lang)
            post = self.staff.checkin(
                inbound.sender.label,
                lang,
                inbound.at.astimezone(self.clinic_zone),
                treatment=self._name(enrolment.treatment, self.assistant.staff_lang),
                day=day,
                step=answer.step,
                answer=label,
            )
            effects += [ToStaff(post, Priority.ALERT, state.chat_id), RecordEscalation(Level.URGENT, "checkin")]
        effects.append(RecordEvent("checkin", f"{enrolment.treatment}:{answer.option}"))
        return Turn((reply,), tuple(effects))

    def _option_label(self, enrolment: Enrolment, answer: cb.CheckIn, lang: str) -> str:
        texts = self.plans.texts.get(lang) or next(iter(self.plans.texts.values()))
        step = texts[enrolment.treatment].steps.get(answer.step)
        option = step.options.get(answer.option) if step else None
        return option.label if option else answer.option

    def free_text_answers(self, state: PatientState, now: datetime) -> tuple[Effect, ...]:
        """Anything the patient writes soon after a check-in answers it: it is not asked again."""
        open_ = state.open_checkin
        if open_ is None or now - open_.asked_at > CHECKIN_ANSWER_WINDOW:
            return ()
        return (AnswerCheckIn(open_.enrolment, open_.step, None),)

    # -- invites from the staff chat -------------------------------------------------------------
    def staff_invite(self, inbound: Inbound, bot_username: str | None, valid_for: timedelta) -> Turn:
        """`/invite microneedling today 15:30` in the staff chat: the link and its QR code."""
        usage = self.staff.usage(", ".join(TREATMENTS))
        if self.invites is None or not bot_username:
            return Turn((Reply(usage, Kind.INFO, ""),))
        parsed = parse_invite_request(inbound.argument, inbound.at, self.clinic_zone)
        if parsed is None:
            return Turn((Reply(usage, Kind.INFO, ""),), quote=True)
        treatment, treated_at = parsed
        invite = self.invites.new(treatment, treated_at, valid_for=valid_for)
        link = invite_link(bot_username, self.invites.encode(invite))
        zone = ZoneInfo(str(self.clinic_zone))
        text = self.staff.invite(
            self._name(treatment, self.assistant.staff_lang),
            f"{treated_at.astimezone(zone):%Y-%m-%d %H:%M}",
            link,
            f"{invite.expires.astimezone(zone):%Y-%m-%d}",
        )
        return Turn(effects=(ToStaff(text, Priority.REPLY, qr=link),))

    # -- time zone -----------------------------------------------------------------------------
    def set_zone(self, inbound: Inbound, state: PatientState) -> Turn:
        a = self.assistant
        name = inbound.argument.strip()
        try:
            zone = ZoneInfo(name) if name and "/" in name else None
        except (ZoneInfoNotFoundError, ValueError):
            zone = None
        if zone is None:
            return Turn((a.info(state.lang, Text.TIMEZONE_UNKNOWN, zone=self._zone(state)),))
        effects: list[Effect] = [SetZone(name)]
        for enrolment in state.enrolments:
            if enrolment.consented:
                moved = Enrolment(enrolment.id, enrolment.treatment, enrolment.treated_at, name, True)
                effects.append(
                    Reschedule(enrolment.id, name, reminders(self.plans, moved, self.timing, now=inbound.at))
                )
        return Turn((a.info(state.lang, Text.TIMEZONE_SET, zone=name),), tuple(effects))


def invite_link(bot_username: str, payload: str) -> str:
    return f"https://t.me/{bot_username.lstrip('@')}?start={payload}"


def parse_invite_request(argument: str, now: datetime, zone: tzinfo) -> tuple[str, datetime] | None:
    """ "microneedling today 15:30" / "prp 2026-12-03 10:00" / "meso_face" -> (treatment, time), or None."""
    words = argument.split()
    if not words or words[0] not in TREATMENTS:
        return None
    treatment, rest = words[0], words[1:]
    local_now = now.astimezone(zone)
    day = local_now.date()
    clock = local_now.time().replace(second=0, microsecond=0)
    for word in rest:
        lowered = word.lower()
        if lowered in {"today", "oggi", "dzis", "dziś", "hoy"}:
            continue
        if lowered in {"yesterday", "ieri", "wczoraj", "ayer"}:
            day -= timedelta(days=1)
        elif ":" in word:
            hours, _, minutes = word.partition(":")
            if not (hours.isdigit() and minutes.isdigit() and int(hours) < 24 and int(minutes) < 60):
                return None
            clock = time(int(hours), int(minutes))
        else:
            try:
                day = datetime.strptime(word, "%Y-%m-%d").date()
            except ValueError:
                return None
    return treatment, datetime.combine(day, clock, tzinfo=zone)
