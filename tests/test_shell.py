"""`aftercare shell`: the terminal chat staff use to try content, on the same core as Telegram."""

from __future__ import annotations

import io

from bot.config import Config
from bot.core.conversation import Assistant
from bot.shell import run_shell


def chat(assistant: Assistant, lines: list[str], lang: str = "en") -> str:
    out = io.StringIO()
    assert run_shell(assistant, lang, stdin=io.StringIO("\n".join(lines) + "\n"), out=out) == 0
    return out.getvalue()


def test_a_session_in_the_terminal(shipped: tuple[Config, Assistant]) -> None:
    assistant = shipped[1]
    output = chat(
        assistant,
        [
            "when can I wear make-up again?",
            "1",
            "/lang it",
            "crema solare??",
            "/topics",
            "1",
            "my lips are swelling and I can't breathe",
            "/quit",
            "never read",
        ],
    )
    assert assistant.text("en", "welcome").splitlines()[0] in output
    assert assistant.topic_reply("makeup", "en").text in output
    assert assistant.text("en", "feedback_thanks") in output  # button 1 under an answer is 👍
    assert assistant.topic_reply("sunscreen_sun", "it").text in output
    assert assistant.text("it", "topics_title") in output
    # Written in English while the chat is in Italian: answered in the language it was written in.
    assert assistant.text("en", "safety_emergency") in output and "AlertStaff" in output
    assert "never read" not in output


def test_odd_input_never_crashes(shipped: tuple[Config, Assistant]) -> None:
    output = chat(shipped[1], ["", "99", "/lang xx", "🙂" * 50, "x" * 10_000])
    assert "Traceback" not in output
