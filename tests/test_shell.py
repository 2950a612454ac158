"""`aftercare shell`: a patient's chat in the terminal, through the same dialogue core as Telegram."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from io import StringIO

import pytest

from bot.config import Config
from bot.core.content import Text
from bot.core.conversation import Assistant
from bot.runtime import build_dialogue
from bot.shell import Shell, run_shell

# A Tuesday, 11:00 in Rome: the clinic is open, so replies do not depend on when the tests run.
OPEN = datetime(2026, 3, 3, 10, 0, tzinfo=UTC)
STAFF_LINE = "  → to the clinic team: "
BRUISES = "Small bruises are common and fade within a week."
BUTTON = re.compile(r"^  \[(\d+)\] (.+)$", re.MULTILINE)


class Chat:
    """A shell, what it printed, and the patient's side of the conversation."""

    def __init__(self, config: Config, assistant: Assistant) -> None:
        self.assistant = assistant
        self.out = StringIO()
        self.shell = Shell(build_dialogue(config, assistant), "en", self.out, clock=lambda: OPEN)

    def say(self, *lines: str) -> str:
        """Type each line; what the shell printed in answer."""
        self.out.seek(0)
        self.out.truncate()
        for line in lines:
            assert self.shell.handle(line + "\n"), f"the shell ended at {line!r}"
        return self.out.getvalue()

    def press(self, label: str, printed: str) -> str:
        """Type the number shown next to the button `label` in `printed`."""
        numbers = {text.strip(): number for number, text in BUTTON.findall(printed)}
        assert label in numbers, f"no button {label!r} in:\n{printed}"
        return self.say(numbers[label])

    def text(self, key: Text, **extra: str) -> str:
        return self.assistant.text("en", key, **extra).strip()


@pytest.fixture
def chat(fixture_assistant: tuple[Config, Assistant]) -> Chat:
    return Chat(*fixture_assistant)


def staff_lines(printed: str) -> list[str]:
    return [line for line in printed.splitlines() if line.startswith(STAFF_LINE)]


def test_an_answer_comes_with_numbered_buttons(chat: Chat) -> None:
    printed = chat.say("how long do bruises last")
    assert BRUISES in printed
    buttons = BUTTON.findall(printed)
    assert [int(number) for number, _ in buttons] == list(range(1, len(buttons) + 1))
    assert "Booking" in [label for _, label in buttons]  # the related topic
    assert staff_lines(printed) == []


def test_typing_a_number_presses_that_button(chat: Chat) -> None:
    printed = chat.press("Booking", chat.say("how long do bruises last"))
    assert "Book at https://clinic.example/book" in printed
    assert BRUISES not in printed


def test_a_number_without_buttons_to_press_is_a_message(chat: Chat) -> None:
    chat.say("how long do bruises last")
    printed = chat.say("9")  # only three buttons: "9" is read as the patient's message
    assert "Book at" not in printed and "feedback" not in printed
    assert chat.shell.state.recent[-1].text == "9"


def test_a_danger_sign_prints_the_safety_message_and_a_readable_staff_alert(chat: Chat) -> None:
    printed = chat.say("I can't breathe")
    assert chat.text(Text.SAFETY_EMERGENCY) in printed
    [alert] = staff_lines(printed)
    assert "EMERGENCY" in alert
    assert "I can't breathe" in alert
    for python in ("ToStaff(", "AlertStaff(", "Priority.", "Effect"):
        assert python not in printed


def test_stop_is_a_command_not_a_question(chat: Chat) -> None:
    printed = chat.say("/stop")
    assert chat.text(Text.STOPPED) in printed
    assert chat.text(Text.FALLBACK) not in printed
    assert "kept for the curators" not in printed
    assert BRUISES in chat.say("how long do bruises last")  # writing again starts again


def test_forget_asks_first_and_its_button_deletes(chat: Chat) -> None:
    chat.say("how long do bruises last")
    asked = chat.say("/forget")
    assert chat.text(Text.FORGET_CONFIRM) in asked
    assert chat.text(Text.FALLBACK) not in asked
    assert "deleted)" not in asked  # nothing is deleted before the patient confirms

    done = chat.press("Yes, delete everything", asked)
    assert chat.text(Text.FORGET_DONE) in done
    assert "  (everything stored about you was deleted)" in done.splitlines()
    assert chat.shell.state.recent == ()


def test_forget_can_be_cancelled(chat: Chat) -> None:
    chat.say("how long do bruises last")
    printed = chat.press("Cancel", chat.say("/forget"))
    assert chat.text(Text.FORGET_CANCELLED) in printed
    assert "deleted)" not in printed
    assert chat.shell.state.recent != ()


def test_ask_the_clinic_passes_on_the_question_it_answers(chat: Chat) -> None:
    question = "what is the price of botox"
    fallback = chat.say(question)
    assert chat.text(Text.FALLBACK) in fallback
    [handoff] = staff_lines(chat.press("💬 Ask the clinic", fallback))
    assert question in handoff


def test_a_forgotten_message_is_not_passed_on_by_a_later_button(chat: Chat) -> None:
    chat.say("how long do bruises last")
    chat.press("Yes, delete everything", chat.say("/forget"))
    # "Talk to a person" under /contact answers no message: the patient is asked to write one.
    printed = chat.press("💬 Talk to a person", chat.say("/contact"))
    assert chat.text(Text.HANDOFF_PROMPT) in printed
    assert not any("bruises" in line for line in staff_lines(printed))


def test_an_unknown_language_names_the_supported_ones(chat: Chat) -> None:
    printed = chat.say("/lang xx")
    assert chat.text(Text.LANGUAGE_UNKNOWN, languages=chat.assistant.language_names()) in printed
    assert "English" in printed
    assert chat.text(Text.FALLBACK) not in printed
    assert chat.shell.state.lang == "en"


def test_yes_to_a_confirmation_question_escalates(chat: Chat) -> None:
    asked = chat.say("my lips are a bit swollen")
    assert chat.text(Text.CONFIRM_DANGER) in asked
    assert staff_lines(asked) == []  # not sure yet: nobody is alarmed

    printed = chat.say("yes")
    assert chat.text(Text.SAFETY_EMERGENCY) in printed
    [alert] = staff_lines(printed)
    assert "EMERGENCY" in alert and "confirmed" in alert
    assert "my lips are a bit swollen" in alert


def test_no_to_a_confirmation_question_alarms_nobody(chat: Chat) -> None:
    chat.say("my lips are a bit swollen")
    printed = chat.say("no")
    assert chat.text(Text.SAFETY_EMERGENCY) not in printed
    assert staff_lines(printed) == []


@pytest.mark.parametrize("command", ["/quit", "/exit", "  /quit  "])
def test_quit_ends_the_chat(chat: Chat, command: str) -> None:
    assert chat.shell.handle(command + "\n") is False
    assert chat.out.getvalue() == ""


def test_run_shell_greets_answers_and_ends_at_end_of_input(fixture_assistant: tuple[Config, Assistant]) -> None:
    config, assistant = fixture_assistant
    out = StringIO()
    assert run_shell(config, assistant, "en", stdin=StringIO("how long do bruises last\n"), out=out) == 0
    printed = out.getvalue()
    assert assistant.text("en", Text.WELCOME).strip() in printed
    assert BRUISES in printed
    assert "you> " not in printed  # no prompt when the input is not a terminal


def test_run_shell_stops_reading_at_quit(fixture_assistant: tuple[Config, Assistant]) -> None:
    config, assistant = fixture_assistant
    out = StringIO()
    stdin = StringIO("/quit\nhow long do bruises last\n")
    assert run_shell(config, assistant, "en", stdin=stdin, out=out) == 0
    assert BRUISES not in out.getvalue()
