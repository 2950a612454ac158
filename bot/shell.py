"""The terminal chat: a patient's conversation through the same dialogue core as the Telegram bot.

Lines become `Inbound`s, the dialogue's turn is printed — the replies with numbered buttons, and
what Telegram would do besides ("→ to the clinic team: 🚨 EMERGENCY …") as one readable line — and
the patient's state is kept in memory, so `/stop`, `/forget`, a confirmation question and "talk to
a person" behave as they do in Telegram.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import TextIO

from bot.config import Config
from bot.core.conversation import Assistant, Button, Reply
from bot.core.dialogue import RECENT_COUNT, Dialogue
from bot.core.events import (
    Channel,
    CloseHandoff,
    Effect,
    Forget,
    Inbound,
    KeepQuestion,
    OpenHandoff,
    PatientState,
    Recent,
    Remember,
    ReplyTo,
    Sender,
    SetLanguage,
    SetPending,
    SetStopped,
    ToPatient,
    ToStaff,
)
from bot.runtime import build_dialogue

CHAT_ID = 1  # the shell's one patient
HELP = "Type a question, a number to press a button, /help, /topics, /contact, /language XX, /stop, /forget or /quit."
Clock = Callable[[], datetime]


class Shell:
    """Reads lines, prints turns, keeps the patient's state like the store would."""

    def __init__(
        self, dialogue: Dialogue, lang: str, out: TextIO = sys.stdout, clock: Clock = lambda: datetime.now(UTC)
    ) -> None:
        self.dialogue = dialogue
        self.assistant: Assistant = dialogue.assistant
        self.out = out
        self.clock = clock
        self.state = PatientState(CHAT_ID, self.assistant.lang(lang))
        self.buttons: list[Button] = []
        # The patient's message the reply with these buttons quotes, as Telegram passes it with a press
        # ("Ask the clinic" forwards it); None when that reply quotes nothing (a command, a menu).
        self.quoted: str | None = None

    def start(self) -> None:
        self.play(self._inbound(command="start"))
        self.out.write(f"[{HELP}]\n")

    def handle(self, line: str) -> bool:
        """Handle one line of input; False when the user wants to leave."""
        line = line.strip()
        if line in {"/quit", "/exit"}:
            return False
        if line.isdigit() and 1 <= int(line) <= len(self.buttons):
            button = self.buttons[int(line) - 1]
            reply_to = ReplyTo(0, self.quoted) if self.quoted else None
            self.play(self._inbound(pressed=True, callback=button.callback, reply_to=reply_to))
            return True
        if line.startswith("/"):
            command, _, argument = line[1:].partition(" ")
            name = {"lang": "language"}.get(command.lower(), command.lower())
            self.play(self._inbound(command=name, argument=argument.strip()))
            return True
        self.play(self._inbound(text=line))
        return True

    def _inbound(self, **fields: object) -> Inbound:
        sender = Sender(CHAT_ID, "you (terminal)", self.state.lang)
        return Inbound(Channel.PRIVATE, CHAT_ID, sender, self.clock(), **fields)  # type: ignore[arg-type]

    def play(self, inbound: Inbound) -> None:
        turn = self.dialogue.handle(inbound, self.state)
        for index, reply in enumerate(turn.replies):
            # Like Telegram: only a turn's first reply quotes the message it answers.
            self.show(reply, quoted=inbound.text if turn.quote and index == 0 else None)
        for effect in turn.effects:
            self._perform(effect, inbound)
        self.out.flush()

    def _perform(self, effect: Effect, inbound: Inbound) -> None:
        s = self.state
        match effect:
            case SetLanguage(lang=lang):
                self.state = replace(s, lang=lang)
            case SetStopped(stopped=stopped):
                self.state = replace(s, stopped=stopped)
            case OpenHandoff():
                if not s.in_handoff:
                    self.state = replace(s, in_handoff=True)
                    self.out.write("  (in Telegram, your next messages go to the clinic team until they close it)\n")
            case CloseHandoff():
                self.state = replace(s, in_handoff=False)
            case Remember(text=text):
                self.state = replace(s, recent=(*s.recent, Recent(text, inbound.at))[-RECENT_COUNT:])
            case SetPending(pending=pending):
                self.state = replace(s, pending=pending)
            case Forget():
                self.state = PatientState(CHAT_ID, s.lang)
                self.out.write("  (everything stored about you was deleted)\n")
            case ToStaff(text=text):
                self.out.write(f"  → to the clinic team: {_one_line(text)}\n")
            case ToPatient(text=text):
                self.out.write(f"  → to the patient: {_one_line(text)}\n")
            case KeepQuestion(reason=reason):
                self.out.write(f"  (kept for the curators: {reason})\n")

    def show(self, reply: Reply, quoted: str | None = None) -> None:
        self.out.write("\n" + reply.text + "\n")
        self.buttons = [button for row in reply.buttons for button in row]
        self.quoted = quoted or None
        for number, button in enumerate(self.buttons, 1):
            self.out.write(f"  [{number}] {button.label}\n")


def _one_line(text: str, limit: int = 160) -> str:
    flat = " · ".join(part.strip() for part in text.splitlines() if part.strip())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def run_shell(
    config: Config, assistant: Assistant, lang: str, stdin: TextIO = sys.stdin, out: TextIO = sys.stdout
) -> int:
    shell = Shell(build_dialogue(config, assistant), lang, out)
    shell.start()
    interactive = stdin.isatty()
    while True:
        if interactive:
            out.write("\nyou> ")
            out.flush()
        line = stdin.readline()
        if not line:
            return 0
        if not shell.handle(line):
            return 0
