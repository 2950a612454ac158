"""The terminal chat: the same conversation core as the Telegram bot, for trying content locally."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TextIO

from bot.core.conversation import Action, Assistant, Button, Kind, Reply

HELP = """Commands: /topics  /contact  /lang XX  /help  /quit
Type a number to press the button with that number."""


class Shell:
    """Reads lines, prints replies and numbered buttons; what Telegram would do with effects is printed."""

    def __init__(self, assistant: Assistant, lang: str, out: TextIO = sys.stdout) -> None:
        self.assistant = assistant
        self.lang = assistant.lang(lang)
        self.out = out
        self.buttons: list[Button] = []

    def start(self) -> None:
        self.show(
            Reply(self.assistant.text(self.lang, "welcome"), Kind.INFO, self.lang, self.assistant.main_menu(self.lang))
        )
        self.out.write(f"[{HELP}]\n")

    def handle(self, line: str) -> bool:
        """Handle one line of input; False when the user wants to leave."""
        line = line.strip()
        if line in {"/quit", "/exit"}:
            return False
        if line.isdigit() and 1 <= int(line) <= len(self.buttons):
            self.press(self.buttons[int(line) - 1].action)
            return True
        command, _, argument = line.partition(" ")
        handlers: dict[str, Callable[[], None]] = {
            "/start": self.start,
            "/help": lambda: self.show(Reply(self.assistant.text(self.lang, "help"), Kind.INFO, self.lang)),
            "/topics": lambda: self.show(self.assistant.menu(self.lang)),
            "/contact": lambda: self.show(self.assistant.contact(self.lang)),
            "/lang": lambda: self.set_language(argument),
            "/language": lambda: self.set_language(argument),
        }
        if command in handlers:
            handlers[command]()
            return True
        self.show(self.assistant.answer(line, self.lang))
        return True

    def set_language(self, code: str) -> None:
        if not code:
            self.show(self.assistant.language_menu(self.lang))
            return
        self.lang = self.assistant.lang(code)
        name = self.assistant.pack(self.lang).ui.language_name
        self.show(Reply(self.assistant.text(self.lang, "language_set", language=name), Kind.INFO, self.lang))

    def press(self, action: str) -> None:
        if action.startswith(Action.LANGUAGE):
            self.set_language(action.removeprefix(Action.LANGUAGE))
            return
        reply = self.assistant.press(action, self.lang)
        if reply is not None:
            self.show(reply)
        elif action.startswith(Action.FEEDBACK):
            key = "feedback_thanks" if action.startswith(Action.FEEDBACK + "1") else "feedback_sorry"
            self.show(Reply(self.assistant.text(self.lang, key), Kind.INFO, self.lang))
        elif action == Action.HANDOFF:
            self.show(Reply(self.assistant.text(self.lang, "handoff_prompt"), Kind.INFO, self.lang))
            self.out.write("  (in Telegram, your next message would go to the clinic's staff chat)\n")

    def show(self, reply: Reply) -> None:
        self.out.write("\n" + reply.text + "\n")
        self.buttons = [button for row in reply.buttons for button in row]
        for number, button in enumerate(self.buttons, 1):
            self.out.write(f"  [{number}] {button.label}\n")
        for effect in reply.effects:
            self.out.write(f"  (staff/curators: {effect})\n")
        self.out.flush()


def run_shell(assistant: Assistant, lang: str, stdin: TextIO = sys.stdin, out: TextIO = sys.stdout) -> int:
    shell = Shell(assistant, lang, out)
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
