"""The patient-facing flow without Telegram: commands, buttons, handoff, stop and forget as values."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from bot.config import load_config
from bot.core.content import load_content
from bot.core.conversation import Action, AlertStaff, Assistant, Kind
from bot.core.dialogue import (
    Dialogue,
    Forget,
    OpenHandoff,
    PatientState,
    RecordFeedback,
    RelayToStaff,
    SetLanguage,
    SetStopped,
)
from bot.core.invites import Invite, InviteCodec
from bot.core.text import split_message

FIXTURE = Path(__file__).parent / "fixtures" / "faq"


@pytest.fixture(scope="module")
def dialogue() -> Dialogue:
    config = load_config(None, environ={})
    facts = {"en": config.facts("en")}
    content, problems = load_content(FIXTURE, ("en",), facts)
    assert content is not None, problems
    return Dialogue(Assistant(content, facts, "en"), InviteCodec("secret"))


EN = PatientState("en")


def test_answer_comes_with_feedback_and_related_buttons(dialogue: Dialogue) -> None:
    turn = dialogue.message(EN, "how long will my bruise last?")
    (reply,) = turn.replies
    assert reply.kind is Kind.ANSWER and reply.topic == "bruising"
    actions = [b.action for row in reply.buttons for b in row]
    assert f"{Action.FEEDBACK}1:bruising" in actions and f"{Action.TOPIC}booking_contact" in actions
    assert all(len(a.encode()) <= 64 for a in actions)


def test_danger_sign_alerts_staff_even_during_a_handoff(dialogue: Dialogue) -> None:
    turn = dialogue.message(PatientState("en", in_handoff=True), "I can't breathe")
    assert turn.replies[0].kind is Kind.TRIAGE
    assert any(isinstance(e, AlertStaff) for e in turn.effects)
    assert RelayToStaff("I can't breathe") in turn.effects


def test_during_a_handoff_messages_go_to_staff_not_the_faq(dialogue: Dialogue) -> None:
    turn = dialogue.message(PatientState("en", in_handoff=True), "and the bruise?")
    assert turn.replies == ()
    assert turn.effects == (RelayToStaff("and the bruise?"),)


def test_stop_then_writing_again_resumes(dialogue: Dialogue) -> None:
    assert SetStopped(True) in dialogue.command(EN, "stop").effects
    stopped = PatientState("en", stopped=True)
    assert SetStopped(False) in dialogue.message(stopped, "hi").effects


def test_forget_asks_first_then_erases(dialogue: Dialogue) -> None:
    ask = dialogue.command(EN, "forget")
    actions = [b.action for row in ask.replies[0].buttons for b in row]
    assert actions == [Action.FORGET_YES, Action.FORGET_NO]
    assert ask.effects == ()
    assert Forget() in dialogue.press(EN, Action.FORGET_YES).effects
    assert dialogue.press(EN, Action.FORGET_NO).effects == ()


def test_language_choice_is_remembered_and_confirmed(dialogue: Dialogue) -> None:
    turn = dialogue.press(EN, Action.LANGUAGE + "en")
    assert SetLanguage("en") in turn.effects
    assert "English" in turn.replies[0].text


def test_feedback_and_handoff_buttons(dialogue: Dialogue) -> None:
    assert RecordFeedback("bruising", True) in dialogue.press(EN, f"{Action.FEEDBACK}1:bruising").effects
    thumbs_down = dialogue.press(EN, f"{Action.FEEDBACK}0:bruising", replied_to="bruise??")
    assert RecordFeedback("bruising", False) in thumbs_down.effects
    assert OpenHandoff("can I tan?") in dialogue.press(EN, Action.HANDOFF, replied_to="can I tan?").effects
    assert OpenHandoff(None) in dialogue.press(EN, Action.HANDOFF).effects


def test_forged_invite_gets_a_polite_message_and_the_welcome(dialogue: Dialogue) -> None:
    turn = dialogue.command(EN, "start", "mesotherapy-20261124-AAAAAAAAAAAAAAAA")
    assert turn.replies[0].text.startswith("This link")
    assert len(turn.replies) == 2


def test_invite_codec_round_trip_and_tampering() -> None:
    codec = InviteCodec("secret")
    payload = codec.encode(Invite("microneedling", date(2026, 11, 24)))
    assert len(payload) <= 64
    assert codec.decode(payload) == Invite("microneedling", date(2026, 11, 24))
    assert codec.decode(payload.replace("20261124", "20261125")) is None
    assert InviteCodec("other").decode(payload) is None
    assert codec.decode("x" * 500) is None


def test_long_answers_split_at_paragraphs() -> None:
    text = "\n\n".join(f"Paragraph {i}. " + "word " * 300 for i in range(10))
    parts = split_message(text, 4096)
    assert all(len(p) <= 4096 for p in parts) and len(parts) > 1
    assert all(p.startswith("Paragraph") for p in parts)
    assert "\n\n".join(parts) == text
