"""The one brain without Telegram or a database: inbound events and patient state in, replies and effects out."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from bot.config import Config
from bot.core import callbacks as cb
from bot.core.content import Text
from bot.core.conversation import Assistant, Kind
from bot.core.dialogue import Dialogue
from bot.core.events import (
    AnswerCheckIn,
    Channel,
    CreateEnrolment,
    Forget,
    GiveConsent,
    Inbound,
    KeepQuestion,
    OpenHandoff,
    PatientState,
    Pending,
    RecordEscalation,
    ReplyTo,
    Reschedule,
    Sender,
    SetLanguage,
    SetPending,
    SetStopped,
    ShowStats,
    ToPatient,
    ToStaff,
    Turn,
)
from bot.core.hours import opening_hours
from bot.core.invites import InviteCodec
from bot.core.recovery import Enrolment, enrolment_id
from bot.core.safety.model import Level
from bot.runtime import build_dialogue

PATIENT = 7001
STAFF_CHAT = -100555
# A Tuesday at 10:00 in Milan: the clinic is open.
OPEN = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
# A Sunday at 23:00 in Milan: closed.
CLOSED = datetime(2026, 12, 6, 22, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def dialogue(fixture_assistant: tuple[Config, Assistant]) -> Dialogue:
    config, assistant = fixture_assistant
    return build_dialogue(config, assistant, "clinic_bot")


def state(**changes: object) -> PatientState:
    return replace(PatientState(PATIENT, "en", known=True), **changes)  # type: ignore[arg-type]


def say(text: str, *, at: datetime = OPEN, chat: int = PATIENT, **fields: object) -> Inbound:
    sender = Sender(chat if chat > 0 else 1, "Anna (@anna)", "en")
    return Inbound(Channel.PRIVATE, chat, sender, at, text=text, message_id=10, **fields)  # type: ignore[arg-type]


def command(name: str, argument: str = "", *, at: datetime = OPEN) -> Inbound:
    return Inbound(Channel.PRIVATE, PATIENT, Sender(PATIENT, "Anna", "en"), at, command=name, argument=argument)


def press(
    callback: cb.Callback | None, *, at: datetime = OPEN, user: int = PATIENT, reply_to: str | None = None
) -> Inbound:
    return Inbound(
        Channel.PRIVATE,
        PATIENT,
        Sender(user, "Anna", "en"),
        at,
        pressed=True,
        callback=callback,
        reply_to=ReplyTo(9, reply_to, False) if reply_to else None,
    )


def staff_posts(turn: Turn) -> list[ToStaff]:
    return [e for e in turn.effects if isinstance(e, ToStaff)]


# -- answers and safety ---------------------------------------------------------------------------
def test_an_answer_comes_with_feedback_and_related_buttons_within_telegrams_limit(dialogue: Dialogue) -> None:
    turn = dialogue.handle(say("how long do bruises last?"), state())
    (reply,) = turn.replies
    assert reply.kind is Kind.ANSWER and reply.topic == "bruising"
    callbacks = [b.callback for row in reply.buttons for b in row]
    assert cb.Feedback("bruising", True) in callbacks and cb.Topic("booking_contact") in callbacks
    assert all(len(cb.encode(c).encode()) <= 64 for c in callbacks)


def test_a_danger_sign_gets_the_safety_message_and_an_alert_quoting_it(dialogue: Dialogue) -> None:
    turn = dialogue.handle(say("good morning! quick question about make-up, and also I can't breathe"), state())
    assert turn.replies[0].kind is Kind.SAFETY
    (alert,) = staff_posts(turn)
    assert "EMERGENCY" in alert.text and "I can't breathe" in alert.text and alert.patient == PATIENT
    assert RecordEscalation(Level.EMERGENCY, "alert") in turn.effects


def test_a_danger_sign_at_the_end_of_a_very_long_message_is_caught_and_quoted(dialogue: Dialogue) -> None:
    filler = "I had a lovely day and everything was fine with my skin. " * 150
    turn = dialogue.handle(say(filler + "Now my lips are swelling fast."), state())
    assert turn.replies[0].kind is Kind.SAFETY
    (alert,) = staff_posts(turn)
    assert "lips are swelling fast" in alert.text and len(alert.text) < 4096


def test_invisible_characters_do_not_hide_a_danger_sign(dialogue: Dialogue) -> None:
    turn = dialogue.handle(say("I can\u200b't bre\u200bathe"), state())
    assert turn.replies[0].kind is Kind.SAFETY


def test_words_after_a_command_are_read_for_danger_first(dialogue: Dialogue) -> None:
    turn = dialogue.handle(command("help", "I can't breathe"), state())
    assert turn.replies[0].kind is Kind.SAFETY and staff_posts(turn)


def test_a_photo_caption_goes_through_triage(dialogue: Dialogue) -> None:
    turn = dialogue.handle(say("I fainted after the meso", media=True), state())
    assert turn.replies[0].kind is Kind.SAFETY


def test_a_sticker_gets_a_polite_reply(dialogue: Dialogue) -> None:
    turn = dialogue.handle(say("", media=True), state())
    assert turn.replies[0].kind is Kind.INFO and "text" in turn.replies[0].text.lower()


# -- the confirmation step ------------------------------------------------------------------------
def test_an_unsure_sign_asks_with_the_emergency_number_and_yes_escalates(dialogue: Dialogue) -> None:
    first = dialogue.handle(say("my lips are a bit swollen"), state())
    (question,) = first.replies
    assert question.kind is Kind.CONFIRM and "112" in question.text
    assert not staff_posts(first)
    pending = next(e for e in first.effects if isinstance(e, SetPending)).pending
    assert pending is not None and pending.level is Level.EMERGENCY
    yes = dialogue.handle(press(cb.Confirm(True), at=OPEN + timedelta(minutes=1)), state(pending=pending))
    assert yes.replies[0].kind is Kind.SAFETY
    (alert,) = staff_posts(yes)
    assert "confirmed" in alert.text and "lips are a bit swollen" in alert.text


def test_no_just_asking_gets_the_faq_answer_without_an_alert(dialogue: Dialogue) -> None:
    pending = Pending(Level.EMERGENCY, "my lips are a bit swollen, how long do bruises last?", OPEN)
    turn = dialogue.handle(press(cb.Confirm(False)), state(pending=pending))
    assert turn.replies[0].kind in {Kind.ANSWER, Kind.FALLBACK, Kind.UNSURE}
    assert not staff_posts(turn) and SetPending(None) in turn.effects


def test_a_typed_yes_answers_the_question(dialogue: Dialogue) -> None:
    pending = Pending(Level.URGENT, "there might be a bit of pus", OPEN)
    turn = dialogue.handle(say("yes", at=OPEN + timedelta(minutes=2)), state(pending=pending))
    assert turn.replies[0].kind is Kind.SAFETY and staff_posts(turn)


def test_a_typed_answer_to_are_you_safe_gets_the_crisis_message_only_the_button_stands_down(
    dialogue: Dialogue,
) -> None:
    pending = Pending(Level.CRISIS, "I can't do this anymore", OPEN)
    for typed in ("yes", "no"):
        turn = dialogue.handle(say(typed, at=OPEN + timedelta(minutes=1)), state(pending=pending))
        assert turn.replies[0].kind is Kind.SAFETY and turn.replies[0].level is Level.CRISIS, typed
    safe = dialogue.handle(press(cb.Confirm(False), at=OPEN + timedelta(minutes=1)), state(pending=pending))
    assert safe.replies[0].kind is Kind.INFO and not staff_posts(safe)


def test_a_yes_to_a_question_we_no_longer_hold_is_still_a_danger(dialogue: Dialogue) -> None:
    turn = dialogue.handle(press(cb.Confirm(True)), state())
    assert turn.replies[0].kind is Kind.SAFETY and staff_posts(turn)


def test_a_possible_crisis_asks_if_the_patient_is_safe_and_tells_staff_at_once(dialogue: Dialogue) -> None:
    turn = dialogue.handle(say("everyone would be better off without me"), state())
    reply = turn.replies[0]
    assert reply.level is Level.CRISIS
    assert "Telefono Amico" in reply.text  # the clinic's country's crisis line, whatever the patient's language
    (alert,) = staff_posts(turn)
    assert "CRISIS" in alert.text


def test_self_harm_words_are_never_explained_away(dialogue: Dialogue) -> None:
    turn = dialogue.handle(say("just curious, I don't want to live anymore"), state())
    assert turn.replies[0].level is Level.CRISIS and staff_posts(turn)


def test_a_calm_marker_in_another_clause_does_not_cancel_a_danger_sign(dialogue: Dialogue) -> None:
    turn = dialogue.handle(say("just in case, but I can't breathe right now"), state())
    assert turn.replies[0].kind is Kind.SAFETY


def test_negated_and_hypothetical_signs_get_the_faq(dialogue: Dialogue) -> None:
    for text in ("no fever at all, how long do bruises last?", "if I get a fever what do I do"):
        turn = dialogue.handle(say(text), state())
        assert turn.replies[0].kind not in {Kind.SAFETY}, text
        assert not staff_posts(turn), text


# -- handoff, staff and groups -------------------------------------------------------------------
def test_talk_to_a_person_opens_one_conversation_however_often_it_is_pressed(dialogue: Dialogue) -> None:
    first = dialogue.handle(press(cb.Handoff(), reply_to="is botox ok?"), state())
    assert OpenHandoff(PATIENT) in first.effects and len(staff_posts(first)) == 1
    again = dialogue.handle(press(cb.Handoff(), reply_to="is botox ok?"), state(in_handoff=True))
    assert not staff_posts(again) and "open" in again.replies[0].text.lower()


def test_during_a_handoff_messages_go_to_staff_and_danger_still_gets_the_safety_message(dialogue: Dialogue) -> None:
    calm = dialogue.handle(say("and how about the bruise?"), state(in_handoff=True))
    assert calm.replies == () and staff_posts(calm)
    danger = dialogue.handle(say("I can't breathe"), state(in_handoff=True))
    assert danger.replies[0].kind is Kind.SAFETY and len(staff_posts(danger)) == 2  # relayed and alerted


def test_closed_clinic_texts_give_the_out_of_hours_route(dialogue: Dialogue) -> None:
    fallback = dialogue.handle(say("do you have parking spaces for bicycles", at=CLOSED), state())
    assert fallback.replies[0].kind is Kind.FALLBACK and "closed" in fallback.replies[0].text.lower()
    handoff = dialogue.handle(press(cb.Handoff(), at=CLOSED, reply_to="a question"), state())
    assert "closed" in handoff.replies[0].text.lower()
    urgent = dialogue.handle(say("I have a fever", at=CLOSED), state())
    assert "closed" in urgent.replies[0].text.lower()


def test_opening_hours_follow_the_clinics_zone() -> None:
    hours = opening_hours(ZoneInfo("Europe/Rome"), {"mon": "09:00-19:00", "sat": "09:00-13:00"})
    assert hours.is_open(datetime(2026, 11, 30, 8, 30, tzinfo=UTC))  # 09:30 in Rome
    assert not hours.is_open(datetime(2026, 11, 30, 18, 30, tzinfo=UTC))  # 19:30 in Rome
    assert not hours.is_open(datetime(2026, 12, 6, 10, 0, tzinfo=UTC))  # Sunday


def test_a_button_pressed_by_someone_else_is_ignored(dialogue: Dialogue) -> None:
    assert dialogue.handle(press(cb.Forget(True), user=999), state()) == Turn()


def test_an_unknown_button_gets_the_menu(dialogue: Dialogue) -> None:
    turn = dialogue.handle(press(None), state())
    assert "no longer active" in turn.replies[0].text


def test_staff_reply_is_relayed_with_a_delivery_report(dialogue: Dialogue) -> None:
    inbound = Inbound(
        Channel.STAFF,
        STAFF_CHAT,
        Sender(1, "Dr. B"),
        OPEN,
        text="Come at 3pm",
        message_id=55,
        reply_to=ReplyTo(44, "alert", True),
    )
    turn = dialogue.handle(inbound, None, state())
    (relay,) = [e for e in turn.effects if isinstance(e, ToPatient)]
    assert relay.patient == PATIENT and "3pm" in relay.text and relay.ack_message == 55


def test_staff_reply_to_a_post_about_nobody_says_so(dialogue: Dialogue) -> None:
    inbound = Inbound(
        Channel.STAFF,
        STAFF_CHAT,
        Sender(1, "Dr. B"),
        OPEN,
        text="hello?",
        message_id=56,
        reply_to=ReplyTo(45, "stats", True),
    )
    turn = dialogue.handle(inbound, None, None)
    assert "not linked" in turn.replies[0].text


def test_staff_talking_among_themselves_is_left_alone(dialogue: Dialogue) -> None:
    inbound = Inbound(Channel.STAFF, STAFF_CHAT, Sender(1, "Dr. B"), OPEN, text="coffee?", message_id=57)
    assert dialogue.handle(inbound) == Turn()


def test_stats_only_for_staff(dialogue: Dialogue) -> None:
    staff = Inbound(Channel.STAFF, STAFF_CHAT, Sender(1, "Dr. B"), OPEN, command="stats")
    assert any(isinstance(e, ShowStats) for e in dialogue.handle(staff).effects)
    patient = dialogue.handle(command("stats"), state())
    assert "isn't available" in patient.replies[0].text


def test_a_danger_sign_in_a_group_alerts_the_staff(dialogue: Dialogue) -> None:
    inbound = Inbound(Channel.GROUP, -200, Sender(8, "Mia", "en"), OPEN, text="I can't breathe", mentioned=True)
    turn = dialogue.handle(inbound)
    assert turn.replies[0].kind is Kind.SAFETY and staff_posts(turn) and turn.replies[0].buttons == ()
    quiet = Inbound(Channel.GROUP, -200, Sender(8, "Mia", "en"), OPEN, text="I can't breathe")
    assert dialogue.handle(quiet) == Turn()


# -- commands --------------------------------------------------------------------------------------
def test_an_unknown_language_names_the_supported_ones(dialogue: Dialogue) -> None:
    turn = dialogue.handle(command("language", "xx"), state())
    assert "English (en)" in turn.replies[0].text and not any(isinstance(e, SetLanguage) for e in turn.effects)
    assert SetLanguage("en") in dialogue.handle(command("language", "en"), state()).effects


def test_stop_then_writing_again_resumes(dialogue: Dialogue) -> None:
    assert SetStopped(True) in dialogue.handle(command("stop"), state()).effects
    assert SetStopped(False) in dialogue.handle(say("hi"), state(stopped=True)).effects


def test_forget_asks_first(dialogue: Dialogue) -> None:
    ask = dialogue.handle(command("forget"), state())
    assert Forget() not in ask.effects
    callbacks = [b.callback for row in ask.replies[0].buttons for b in row]
    assert cb.Forget(True) in callbacks
    assert Forget() in dialogue.handle(press(cb.Forget(True)), state()).effects


def test_fallback_keeps_the_question_for_curators(dialogue: Dialogue) -> None:
    turn = dialogue.handle(say("what is the capital of peru"), state())
    assert turn.replies[0].kind is Kind.FALLBACK
    assert any(isinstance(e, KeepQuestion) and e.reason == "fallback" for e in turn.effects)


# -- recovery reminders -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def codec() -> InviteCodec:
    return InviteCodec("test-secret")


def test_an_invite_asks_for_consent_and_consent_schedules_the_plan(dialogue: Dialogue, codec: InviteCodec) -> None:
    invite = codec.new("meso_face", OPEN, valid_for=timedelta(days=14))
    start = dialogue.handle(command("start", codec.encode(invite)), state(), invite_owner=lambda _n: None)
    create = next(e for e in start.effects if isinstance(e, CreateEnrolment))
    assert create.enrolment.treatment == "meso_face" and create.invite == invite.nonce and create.user_id == PATIENT
    consent_buttons = [b.callback for row in start.replies[-1].buttons for b in row]
    assert cb.Consent(create.enrolment.id, True) in consent_buttons
    enrolled = state(enrolments=(create.enrolment,))
    agreed = dialogue.handle(press(cb.Consent(create.enrolment.id, True)), enrolled)
    give = next(e for e in agreed.effects if isinstance(e, GiveConsent))
    steps = [r.step for r in give.reminders]
    assert steps[0] == "first_care" and len(steps) >= 4
    assert all(r.key.startswith(create.enrolment.id) for r in give.reminders)
    assert "reminders" in agreed.replies[0].text.lower()


def test_the_same_invite_twice_enrols_once(dialogue: Dialogue, codec: InviteCodec) -> None:
    invite = codec.new("meso_face", OPEN, valid_for=timedelta(days=14))
    first = dialogue.handle(command("start", codec.encode(invite)), state())
    enrolment = next(e for e in first.effects if isinstance(e, CreateEnrolment)).enrolment
    consented = replace(enrolment, consented=True)
    again = dialogue.handle(
        command("start", codec.encode(invite)), state(enrolments=(consented,)), invite_owner=lambda _n: PATIENT
    )
    assert not any(isinstance(e, CreateEnrolment | GiveConsent) for e in again.effects)


@pytest.mark.parametrize("kind", ["forged", "altered", "expired", "used"])
def test_a_bad_invite_gets_a_polite_message_and_enrols_no_one(
    dialogue: Dialogue, codec: InviteCodec, kind: str
) -> None:
    invite = codec.new("meso_face", OPEN - timedelta(days=30), valid_for=timedelta(days=14))
    payload = codec.encode(codec.new("meso_face", OPEN, valid_for=timedelta(days=14)))
    owner = None
    if kind == "forged":
        payload = InviteCodec("another-secret").encode(codec.new("meso_face", OPEN, valid_for=timedelta(days=1)))
    elif kind == "altered":
        payload = payload[:-1] + ("b" if payload[-1] != "b" else "c")
    elif kind == "expired":
        payload = codec.encode(invite)
    else:
        owner = 123456
    turn = dialogue.handle(command("start", payload), state(), invite_owner=lambda _n: owner)
    assert not any(isinstance(e, CreateEnrolment) for e in turn.effects)
    assert turn.replies[0].kind is Kind.INFO and len(turn.replies) == 2


def test_a_check_in_answer_that_signals_trouble_alerts_staff_with_the_plan(dialogue: Dialogue) -> None:
    enrolment = Enrolment(enrolment_id(PATIENT, "meso_face", OPEN), "meso_face", OPEN, "Europe/Rome", True)
    at = OPEN + timedelta(days=3, hours=1)
    fine = dialogue.handle(press(cb.CheckIn(enrolment.id, "checkin", "fine"), at=at), state(enrolments=(enrolment,)))
    assert not staff_posts(fine) and AnswerCheckIn(enrolment.id, "checkin", "fine") in fine.effects
    worse = dialogue.handle(
        press(cb.CheckIn(enrolment.id, "checkin", "still_swollen"), at=at), state(enrolments=(enrolment,))
    )
    (alert,) = staff_posts(worse)
    assert "day 3" in alert.text and "CHECK-IN" in alert.text
    assert worse.replies[0].kind is Kind.SAFETY
    assert "closed" not in worse.replies[0].text.lower()


def test_a_worrying_check_in_answer_at_night_gives_the_out_of_hours_route(dialogue: Dialogue) -> None:
    enrolment = Enrolment(enrolment_id(PATIENT, "meso_face", OPEN), "meso_face", OPEN, "Europe/Rome", True)
    night = dialogue.handle(
        press(cb.CheckIn(enrolment.id, "checkin", "still_swollen"), at=CLOSED), state(enrolments=(enrolment,))
    )
    assert "closed" in night.replies[0].text.lower() and staff_posts(night)


def test_enrolling_from_the_menu_asks_treatment_then_day_then_consent(dialogue: Dialogue) -> None:
    plan = dialogue.handle(command("plan"), state())
    treatments = [b.callback for row in plan.replies[0].buttons for b in row]
    assert cb.EnrolMenu("meso_face") in treatments
    day = dialogue.handle(press(cb.EnrolMenu("meso_face")), state())
    assert cb.EnrolMenu("meso_face", 1) in [b.callback for row in day.replies[0].buttons for b in row]
    chosen = dialogue.handle(press(cb.EnrolMenu("meso_face", 1)), state())
    create = next(e for e in chosen.effects if isinstance(e, CreateEnrolment))
    assert create.source == "menu" and create.enrolment.treated_at < OPEN


def test_a_new_time_zone_reschedules_the_plan(dialogue: Dialogue) -> None:
    enrolment = Enrolment(enrolment_id(PATIENT, "meso_face", OPEN), "meso_face", OPEN, "Europe/Rome", True)
    turn = dialogue.handle(command("timezone", "America/New_York"), state(enrolments=(enrolment,)))
    moved = next(e for e in turn.effects if isinstance(e, Reschedule))
    assert moved.zone == "America/New_York" and moved.reminders
    unknown = dialogue.handle(command("timezone", "Mars/Olympus"), state())
    assert not any(isinstance(e, Reschedule) for e in unknown.effects)


def test_staff_can_create_an_invite_with_a_qr_code(dialogue: Dialogue) -> None:
    inbound = Inbound(
        Channel.STAFF, STAFF_CHAT, Sender(1, "Dr. B"), OPEN, command="invite", argument="meso_face today 15:30"
    )
    (post,) = staff_posts(dialogue.handle(inbound))
    assert post.qr is not None and post.qr.startswith("https://t.me/clinic_bot?start=") and post.qr in post.text
    bad = Inbound(Channel.STAFF, STAFF_CHAT, Sender(1, "Dr. B"), OPEN, command="invite", argument="facelift")
    assert "/invite" in dialogue.handle(bad).replies[0].text


def test_a_sure_sign_beside_words_that_may_be_self_harm_gets_both_messages_and_both_alerts(dialogue: Dialogue) -> None:
    """One reply carries one level: the body's safety message, the crisis line with it, and the staff hear of a
    possible crisis too (a missed crisis costs more than a false alarm)."""
    message = "there is pus and a fever since yesterday. honestly I won't be around much longer"
    turn = dialogue.handle(say(message), state())
    (reply,) = turn.replies
    assistant = dialogue.assistant
    assert reply.kind is Kind.SAFETY and reply.level is Level.URGENT
    assert assistant.text("en", Text.SAFETY_URGENT) in reply.text
    assert assistant.text("en", Text.SAFETY_CRISIS) in reply.text
    urgent, crisis = staff_posts(turn)
    assert "URGENT" in urgent.text
    assert "won't be around much longer" in crisis.text
    assert RecordEscalation(Level.URGENT, "alert") in turn.effects
    assert RecordEscalation(Level.CRISIS, "possible") in turn.effects
    calm = dialogue.handle(say("there is pus and a fever since yesterday"), state())
    assert assistant.text("en", Text.SAFETY_CRISIS) not in calm.replies[0].text and len(staff_posts(calm)) == 1
