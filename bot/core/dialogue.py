"""The one brain: everything anyone does with the bot goes in here, and replies plus effects come out.

Private chats, groups that mention the bot, the clinic's staff chat, button presses and the
terminal shell all build an `Inbound` and call `Dialogue.handle`. The result is a `Turn`: the
replies to the chat it came from, and the effects the edge must perform — state to store,
messages to other chats (staff alerts, relays to a patient), questions kept for curators. The
dialogue performs none of them and reads no clock: time comes in with the `Inbound`, state with
`PatientState`, so every flow is tested without Telegram or a database.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace
from datetime import timedelta, tzinfo

from bot.core import callbacks as cb
from bot.core.content import Text
from bot.core.conversation import Assistant, Button, Keyboard, Kind, Reply
from bot.core.events import (
    NOTHING,
    Channel,
    CloseHandoff,
    Effect,
    Forget,
    Inbound,
    KeepQuestion,
    OpenHandoff,
    PatientState,
    Pending,
    Priority,
    RecordEscalation,
    RecordEvent,
    RecordFeedback,
    Remember,
    SetLanguage,
    SetPending,
    SetStopped,
    ShowStats,
    ToPatient,
    ToStaff,
    Turn,
)
from bot.core.hours import ALWAYS_OPEN, OpeningHours
from bot.core.invites import InviteCodec
from bot.core.plans import NO_QUIET_HOURS, Plans
from bot.core.recovery import Schedule
from bot.core.recovery_flow import InviteOwner, Recovery
from bot.core.safety.model import Level
from bot.core.safety.triage import Assessment, Outcome
from bot.core.staff import StaffWriter
from bot.core.text import fold

# The patient's recent messages that triage reads together with a new one.
RECENT_WINDOW = timedelta(minutes=15)
RECENT_COUNT = 3
# A confirmation question is answered by the next button or yes/no within this time.
CONFIRM_WINDOW = timedelta(minutes=30)
STATS_DAYS = 7

PATIENT_COMMANDS = ("start", "help", "topics", "plan", "language", "contact", "timezone", "stop", "forget")
STAFF_COMMANDS = ("stats", "close", "invite")


class Dialogue:
    """Every flow of the bot, from an `Inbound` and the patient's state to a `Turn`."""

    def __init__(
        self,
        assistant: Assistant,
        *,
        staff: StaffWriter,
        timezone: tzinfo,
        hours: OpeningHours = ALWAYS_OPEN,
        invites: InviteCodec | None = None,
        plans: Plans | None = None,
        timing: Schedule | None = None,
        bot_username: str | None = None,
        invite_valid_for: timedelta = timedelta(days=14),
    ) -> None:
        self.assistant = assistant
        self.staff = staff
        self.timezone = timezone
        self.hours = hours
        self.invites = invites
        self.bot_username = bot_username
        self.invite_valid_for = invite_valid_for
        self.recovery = (
            Recovery(assistant, plans, timing or Schedule(NO_QUIET_HOURS, timedelta(hours=6)), staff, timezone, invites)
            if plans is not None
            else None
        )
        self._yes = _words(p.ui.answers.yes for p in assistant.content.packs.values())
        self._no = _words(p.ui.answers.no for p in assistant.content.packs.values())

    # -- the way in ----------------------------------------------------------------------------
    def handle(
        self,
        inbound: Inbound,
        patient: PatientState | None = None,
        linked: PatientState | None = None,
        *,
        invite_owner: InviteOwner = lambda _nonce: None,
    ) -> Turn:
        """`patient`: the private chat's patient; `linked`: the patient a staff reply or button is about;
        `invite_owner`: who already redeemed an invite (by its nonce), if anyone."""
        if inbound.channel is Channel.STAFF:
            return self._staff(inbound, linked)
        if inbound.channel is Channel.GROUP:
            return self._group(inbound)
        if patient is None:
            raise ValueError("a private chat needs the patient's state")
        if inbound.pressed:
            return self._press(inbound, patient, linked)
        if inbound.command is not None:
            return self._command(inbound, patient, invite_owner)
        if inbound.media and not inbound.text.strip():
            return self._media(inbound, patient)
        return self._message(inbound, patient)

    # -- private chats: messages -----------------------------------------------------------------
    def _message(self, inbound: Inbound, state: PatientState) -> Turn:
        text = inbound.text
        resume = self._resume(state)
        if state.pending is not None and inbound.at - state.pending.at <= CONFIRM_WINDOW:
            answer = self._yes_or_no(text)
            if answer is not None:
                # A typed "yes"/"no" to "Are you safe right now?" is ambiguous across languages ("yes, I'm safe" or
                # "yes, it's bad"): for a possible crisis only the "I'm safe" button stands down.
                danger = True if state.pending.level is Level.CRISIS else answer
                return self._confirmed(inbound, state, danger).then(*resume)
        recent = [r.text for r in state.recent if inbound.at - r.at <= RECENT_WINDOW][-RECENT_COUNT:]
        open_now = self.hours.is_open(inbound.at)
        reply = self.assistant.answer(text, state.lang, recent=recent, clinic_open=open_now)
        effects: list[Effect] = [*resume, Remember(text)]
        if self.recovery is not None:
            effects.extend(self.recovery.free_text_answers(state, inbound.at))
        if state.in_handoff:
            # The clinic team is answering: pass the words on; danger signs still get the safety message.
            effects.append(ToStaff(self.staff.relay(inbound.sender.label, text), Priority.REPLY, state.chat_id, True))
            if reply.kind not in {Kind.SAFETY, Kind.CONFIRM}:
                return Turn((), tuple(effects))
        effects.extend(self._consequences(inbound, state, reply, text))
        return Turn((reply,), tuple(effects), quote=True)

    def _consequences(self, inbound: Inbound, state: PatientState, reply: Reply, text: str) -> list[Effect]:
        """What a reply means besides its words: alerts, a pending question, statistics, kept questions."""
        effects: list[Effect] = [RecordEvent(reply.kind.value, reply.topic)]
        assessment = reply.assessment
        if reply.kind is Kind.SAFETY and assessment is not None and assessment.level is not None:
            effects += self._alert(inbound, reply.lang, text, assessment)
            effects += self._possible_crisis(inbound, reply.lang, text, assessment)
            effects.append(SetPending(None))
        elif reply.kind is Kind.CONFIRM and assessment is not None and assessment.level is not None:
            effects.append(SetPending(Pending(assessment.level, text, inbound.at)))
            if assessment.level is Level.CRISIS:  # a missed crisis costs more than a false alarm
                effects += self._alert(inbound, reply.lang, text, assessment, possible=True)
        elif reply.kind is Kind.FALLBACK:
            effects.append(KeepQuestion(text, reply.lang, "fallback"))
        elif reply.kind is Kind.UNSURE:
            effects.append(KeepQuestion(text, reply.lang, "unsure"))
        return effects

    def _alert(
        self,
        inbound: Inbound,
        lang: str,
        text: str,
        assessment: Assessment,
        *,
        possible: bool = False,
        confirmed: bool = False,
    ) -> list[Effect]:
        level = assessment.level or Level.EMERGENCY
        local = inbound.at.astimezone(self.timezone)
        post = self.staff.alert(
            level,
            inbound.sender.label,
            lang,
            local,
            text,
            possible=possible,
            confirmed=confirmed,
            trigger=assessment.excerpt,
        )
        patient = inbound.chat_id if inbound.channel is Channel.PRIVATE else None
        kind = "possible" if possible else "confirmed" if confirmed else "alert"
        return [ToStaff(post, Priority.ALERT, patient), RecordEscalation(level, kind)]

    def _possible_crisis(self, inbound: Inbound, lang: str, text: str, assessment: Assessment) -> list[Effect]:
        """Words that may be self-harm beside a sure sign of the body: the staff hear of both, in two alerts."""
        if not assessment.possible_crisis:
            return []
        crisis = Assessment(Outcome.UNSURE, Level.CRISIS, assessment.possible_crisis, assessment.source)
        return self._alert(inbound, lang, text, crisis, possible=True)

    def _confirmed(self, inbound: Inbound, state: PatientState, danger: bool) -> Turn:
        """The answer to a confirmation question: yes escalates as a certain sign; no gets the FAQ answer."""
        pending = state.pending
        open_now = self.hours.is_open(inbound.at)
        if pending is None:
            if not danger:
                return Turn((self.assistant.info(state.lang, Text.OLD_BUTTON, self.assistant.main_menu(state.lang)),))
            # "Yes, it is happening" to a question we no longer hold: treat it as the stricter danger.
            pending = Pending(Level.EMERGENCY, inbound.text or "", inbound.at)
        assessment = Assessment(Outcome.CERTAIN, pending.level, pending.text[:300], "confirmed")
        if danger:
            reply = self.assistant.safety(assessment, state.lang, clinic_open=open_now)
            alert = self._alert(
                replace(inbound, text=pending.text), reply.lang, pending.text, assessment, confirmed=True
            )
            return Turn((reply,), (SetPending(None), *alert, RecordEvent(Kind.SAFETY.value)))
        if pending.level is Level.CRISIS:
            reply = self.assistant.info(state.lang, Text.CRISIS_SAFE_REPLY)
            return Turn((reply,), (SetPending(None), RecordEvent(Kind.INFO.value)))
        reply = self.assistant.faq(pending.text, state.lang, clinic_open=open_now)
        effects: list[Effect] = [SetPending(None), RecordEvent(reply.kind.value, reply.topic)]
        if reply.kind is Kind.FALLBACK:
            effects.append(KeepQuestion(pending.text, reply.lang, "fallback"))
        return Turn((reply,), tuple(effects))

    def _media(self, inbound: Inbound, state: PatientState) -> Turn:
        resume = self._resume(state)
        if state.in_handoff:
            post = ToStaff(
                self.staff.relay(inbound.sender.label, "📎"), Priority.REPLY, state.chat_id, True, inbound.message_id
            )
            return Turn((), (*resume, post))
        return Turn((self.assistant.info(state.lang, Text.UNSUPPORTED_MESSAGE),), resume)

    # -- private chats: commands -----------------------------------------------------------------
    def _command(self, inbound: Inbound, state: PatientState, invite_owner: InviteOwner) -> Turn:
        name = inbound.command or ""
        a = self.assistant
        lang = state.lang
        if name in STAFF_COMMANDS:
            if inbound.sender.is_staff and name == "stats":
                return Turn(effects=(ShowStats(inbound.at - timedelta(days=STATS_DAYS)),))
            return Turn((a.info(lang, Text.NOT_ALLOWED),))
        if name not in {"start", "language", "timezone"} and inbound.argument.strip():
            # "/help my throat is closing": the words after a command are read like any message first.
            reply = a.answer(inbound.argument, lang, clinic_open=self.hours.is_open(inbound.at))
            if reply.kind in {Kind.SAFETY, Kind.CONFIRM}:
                text = inbound.argument
                return Turn((reply,), (Remember(text), *self._consequences(inbound, state, reply, text)), quote=True)
        resume = self._resume(state)
        if name == "start":
            if inbound.argument and self.recovery is not None:
                return self.recovery.start(inbound, state, invite_owner).then(*resume)
            replies: list[Reply] = []
            if inbound.argument:
                replies.append(a.info(lang, Text.INVITE_INVALID))
            replies.append(a.info(lang, Text.WELCOME, a.main_menu(lang)))
            return Turn(tuple(replies), resume)
        if name == "plan" and self.recovery is not None:
            return self.recovery.plan(inbound, state).then(*resume)
        if name == "timezone" and self.recovery is not None:
            return self.recovery.set_zone(inbound, state).then(*resume)
        if name == "help":
            return Turn((a.info(lang, Text.HELP),), resume)
        if name == "topics":
            return Turn((a.menu(lang),), resume)
        if name == "language":
            return self._language_command(inbound.argument.strip(), state).then(*resume)
        if name == "contact":
            return Turn((a.contact(lang),), resume)
        if name == "stop":
            return Turn((a.info(lang, Text.STOPPED),), (SetStopped(True),))
        if name == "forget":
            b = a.pack(lang).ui.buttons
            buttons = ((Button(b.forget_yes, cb.Forget(True)), Button(b.cancel, cb.Forget(False))),)
            return Turn((a.info(lang, Text.FORGET_CONFIRM, buttons),), resume)
        return Turn((a.info(lang, Text.HELP),), resume)

    def _language_command(self, code: str, state: PatientState) -> Turn:
        a = self.assistant
        if not code:
            return Turn((a.language_menu(state.lang),))
        if not a.supports(code):
            reply = a.info(
                state.lang, Text.LANGUAGE_UNKNOWN, a.language_menu(state.lang).buttons, languages=a.language_names()
            )
            return Turn((reply,))
        return self._set_language(a.lang(code))

    def _set_language(self, lang: str) -> Turn:
        a = self.assistant
        name = a.pack(lang).ui.language_name
        return Turn((a.info(lang, Text.LANGUAGE_SET, a.main_menu(lang), language=name),), (SetLanguage(lang),))

    # -- private chats: buttons ------------------------------------------------------------------
    def _press(self, inbound: Inbound, state: PatientState, linked: PatientState | None) -> Turn:
        a = self.assistant
        lang = state.lang
        callback = inbound.callback
        if inbound.sender.user_id is not None and inbound.sender.user_id != inbound.chat_id:
            return NOTHING  # in a private chat only its owner can press; anything else is forged
        match callback:
            case None:
                return Turn((a.info(lang, Text.OLD_BUTTON, a.main_menu(lang)),))
            case cb.SetLanguage(lang=code):
                return self._set_language(a.lang(code))
            case cb.Feedback(topic=topic, helpful=helpful):
                if helpful:
                    return Turn((a.info(lang, Text.FEEDBACK_THANKS),), (RecordFeedback(topic, True),))
                effects: list[Effect] = [RecordFeedback(topic, False)]
                question = inbound.reply_to.text if inbound.reply_to else None
                if question:
                    effects.append(KeepQuestion(question, lang, "unhelpful"))
                buttons = ((Button(a.pack(lang).ui.buttons.talk_to_person, cb.Handoff()),),)
                return Turn((a.info(lang, Text.FEEDBACK_SORRY, buttons),), tuple(effects))
            case cb.Handoff():
                return self._handoff(inbound, state)
            case cb.Forget(confirmed=True):
                return Turn((a.info(lang, Text.FORGET_DONE),), (Forget(),))
            case cb.Forget(confirmed=False):
                return Turn((a.info(lang, Text.FORGET_CANCELLED),))
            case cb.Confirm(danger=danger):
                pending = state.pending
                if pending is not None and inbound.at - pending.at > CONFIRM_WINDOW and not danger:
                    pending = None
                return self._confirmed(inbound, replace(state, pending=pending), danger)
            case cb.CloseHandoff():
                return NOTHING  # a staff button pressed outside the staff chat
            case cb.Consent(enrolment=enrolment, agreed=agreed) if self.recovery is not None:
                return self.recovery.consent(inbound, state, enrolment, agreed)
            case cb.CheckIn() if self.recovery is not None:
                return self.recovery.check_in(inbound, state, callback, open_now=self.hours.is_open(inbound.at))
            case cb.EnrolMenu() if self.recovery is not None:
                return self.recovery.enrol_menu(state, callback, inbound.at)
            case cb.PlanView() if self.recovery is not None:
                return self.recovery.plan(inbound, state)
        reply = a.navigate(callback, lang)
        if reply is None:
            return Turn((a.info(lang, Text.OLD_BUTTON, a.main_menu(lang)),))
        return Turn((reply,), (RecordEvent("answer", reply.topic),) if reply.topic else ())

    def _handoff(self, inbound: Inbound, state: PatientState) -> Turn:
        """ "Talk to a person": one conversation however many times it is pressed."""
        a = self.assistant
        if state.in_handoff:
            return Turn((a.info(state.lang, Text.HANDOFF_ALREADY_OPEN),))
        question = inbound.reply_to.text if inbound.reply_to else None
        if not question:
            return Turn((a.info(state.lang, Text.HANDOFF_PROMPT),), (OpenHandoff(state.chat_id),))
        key = Text.HANDOFF_STARTED if self.hours.is_open(inbound.at) else Text.HANDOFF_STARTED_CLOSED
        post = ToStaff(
            self.staff.handoff(inbound.sender.label, state.lang, question), Priority.ALERT, state.chat_id, True
        )
        return Turn((a.info(state.lang, key),), (OpenHandoff(state.chat_id), post))

    # -- groups and the staff chat ---------------------------------------------------------------
    def _group(self, inbound: Inbound) -> Turn:
        """In groups the bot speaks only when addressed; danger signs there alert the staff too."""
        if not inbound.mentioned or not inbound.text.strip():
            return NOTHING
        a = self.assistant
        lang = a.lang(inbound.sender.language_code)
        reply = a.answer(inbound.text, lang, clinic_open=self.hours.is_open(inbound.at))
        assessment = reply.assessment
        effects: list[Effect] = [RecordEvent(reply.kind.value, reply.topic)]
        if reply.kind is Kind.SAFETY and assessment is not None:
            effects += self._alert(inbound, reply.lang, inbound.text, assessment)
            effects += self._possible_crisis(inbound, reply.lang, inbound.text, assessment)
        elif reply.kind is Kind.CONFIRM and assessment is not None:
            # A group cannot hold the question open for one person: ask in words, and tell staff about a crisis.
            reply = replace(reply, buttons=())
            if assessment.level is Level.CRISIS:
                effects += self._alert(inbound, reply.lang, inbound.text, assessment, possible=True)
        # Buttons in a group would act for whoever presses them: answers there carry none.
        return Turn((replace(reply, buttons=()),), tuple(effects), quote=True)

    def _staff(self, inbound: Inbound, linked: PatientState | None) -> Turn:
        writer = self.staff
        if inbound.pressed:
            if isinstance(inbound.callback, cb.CloseHandoff):
                return self._close(inbound, inbound.callback.patient, linked)
            return NOTHING
        if inbound.command is not None:
            if inbound.command == "stats":
                return Turn(effects=(ShowStats(inbound.at - timedelta(days=STATS_DAYS)),))
            if inbound.command == "invite" and self.recovery is not None:
                return self.recovery.staff_invite(inbound, self.bot_username, self.invite_valid_for)
            if inbound.command == "close":
                if linked is None:
                    return Turn((_staff_reply(writer.texts.not_linked),), quote=True)
                return self._close(inbound, linked.chat_id, linked)
            return NOTHING
        reply_to = inbound.reply_to
        if reply_to is None or not reply_to.from_bot:
            return NOTHING  # staff talking among themselves
        if linked is None:
            return Turn((_staff_reply(writer.texts.not_linked),), quote=True)
        if not inbound.text.strip() and not inbound.media:
            return NOTHING
        prefix = self.assistant.text(linked.lang, Text.STAFF_REPLY_PREFIX)
        relay = ToPatient(
            linked.chat_id,
            f"{prefix}\n\n{inbound.text}" if not inbound.media else "",
            copy_from=(inbound.chat_id, inbound.message_id or 0) if inbound.media else None,
            ack_chat=inbound.chat_id,
            ack_message=inbound.message_id,
        )
        return Turn((), (OpenHandoff(linked.chat_id), relay))

    def _close(self, inbound: Inbound, patient: int, linked: PatientState | None) -> Turn:
        lang = linked.lang if linked is not None else self.assistant.default_lang
        closed = ToPatient(patient, self.assistant.text(lang, Text.HANDOFF_CLOSED))
        effects: list[Effect] = [CloseHandoff(patient)]
        if linked is None or linked.in_handoff:
            effects.append(closed)
        return Turn((_staff_reply(self.staff.closed(str(patient))),), tuple(effects), quote=True)

    # -- helpers -------------------------------------------------------------------------------
    def _resume(self, state: PatientState) -> tuple[Effect, ...]:
        """Writing to the bot again undoes /stop."""
        return (SetStopped(False),) if state.stopped else ()

    def _yes_or_no(self, text: str) -> bool | None:
        words = re.findall(r"[a-z0-9]+", fold(text))
        if not words or len(words) > 4:
            return None
        phrase = " ".join(words)
        if phrase in self._yes:
            return True
        if phrase in self._no:
            return False
        return None


def _staff_reply(text: str) -> Reply:
    return Reply(text, Kind.INFO, "")


def _words(groups: Iterable[Iterable[str]]) -> frozenset[str]:
    return frozenset(" ".join(re.findall(r"[a-z0-9]+", fold(phrase))) for group in groups for phrase in group)


def keyboard_rows(buttons: Keyboard) -> list[list[tuple[str, str]]]:
    """Buttons as (label, callback data) rows: what a front end draws."""
    return [[(b.label, cb.encode(b.callback)) for b in row] for row in buttons]
