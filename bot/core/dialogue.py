"""A patient's conversation with the bot over time: commands, buttons, handoff to a person, stop and forget.

`Dialogue` takes what the patient did plus what is known about them (`PatientState`)
and returns a `Turn`: the replies to send and the effects to perform (store a language,
alert staff, relay to the staff chat, delete the patient's data...). It performs none of
them, so the same logic is tested without Telegram or a database.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from bot.core.conversation import Action, AlertStaff, Assistant, Button, KeepQuestion, Kind, Reply
from bot.core.invites import InviteCodec


@dataclass(frozen=True, slots=True)
class PatientState:
    lang: str
    stopped: bool = False
    in_handoff: bool = False


@dataclass(frozen=True, slots=True)
class SetLanguage:
    lang: str


@dataclass(frozen=True, slots=True)
class SetStopped:
    stopped: bool


@dataclass(frozen=True, slots=True)
class OpenHandoff:
    message: str | None  # the patient's words to pass on, if any yet


@dataclass(frozen=True, slots=True)
class RelayToStaff:
    message: str


@dataclass(frozen=True, slots=True)
class RecordFeedback:
    topic: str
    helpful: bool


@dataclass(frozen=True, slots=True)
class RecordEvent:
    kind: str
    topic: str | None = None


@dataclass(frozen=True, slots=True)
class Forget:
    pass


DialogueEffect = (
    AlertStaff
    | KeepQuestion
    | SetLanguage
    | SetStopped
    | OpenHandoff
    | RelayToStaff
    | RecordFeedback
    | RecordEvent
    | Forget
)


@dataclass(frozen=True)
class Turn:
    replies: tuple[Reply, ...] = ()
    effects: tuple[DialogueEffect, ...] = field(default_factory=tuple)


PATIENT_COMMANDS = ("start", "help", "topics", "language", "contact", "stop", "forget")


class Dialogue:
    """Patient-facing flow on top of the Assistant."""

    def __init__(self, assistant: Assistant, invites: InviteCodec | None = None) -> None:
        self.assistant = assistant
        self.invites = invites

    def _info(self, state: PatientState, key: str, buttons: tuple[tuple[Button, ...], ...] = (), **extra: str) -> Reply:
        return Reply(self.assistant.text(state.lang, key, **extra), Kind.INFO, state.lang, buttons)

    def _resume(self, state: PatientState) -> tuple[SetStopped, ...]:
        """Writing to the bot again undoes /stop."""
        return (SetStopped(False),) if state.stopped else ()

    # -- free text ----------------------------------------------------------------------------
    def message(self, state: PatientState, text: str) -> Turn:
        reply = self.assistant.answer(text, state.lang)
        effects: list[DialogueEffect] = [*self._resume(state)]
        if state.in_handoff:
            # The clinic team is answering: pass the words on, but danger signs still get the safety message.
            effects.append(RelayToStaff(text))
            if reply.kind is Kind.TRIAGE:
                return Turn((reply,), (*effects, *reply.effects, RecordEvent("triage")))
            return Turn((), tuple(effects))
        effects.extend(reply.effects)
        effects.append(RecordEvent(reply.kind.value, reply.topic))
        return Turn((reply,), tuple(effects))

    def non_text(self, state: PatientState) -> Turn:
        if state.in_handoff:
            return Turn((), (*self._resume(state), RelayToStaff("")))
        return Turn((self._info(state, "unsupported_message"),), self._resume(state))

    # -- commands -----------------------------------------------------------------------------
    def command(self, state: PatientState, name: str, argument: str = "") -> Turn:
        a = self.assistant
        resume = self._resume(state)
        if name == "start":
            replies: list[Reply] = []
            if argument and (self.invites is None or self.invites.decode(argument) is None):
                replies.append(self._info(state, "invite_invalid"))
            replies.append(self._info(state, "welcome", a.main_menu(state.lang)))
            return Turn(tuple(replies), resume)
        if name == "help":
            return Turn((self._info(state, "help"),), resume)
        if name == "topics":
            return Turn((a.menu(state.lang),), resume)
        if name == "language":
            return Turn((a.language_menu(state.lang),), resume)
        if name == "contact":
            return Turn((a.contact(state.lang),), resume)
        if name == "stop":
            return Turn((self._info(state, "stopped"),), (SetStopped(True),))
        if name == "forget":
            b = a.pack(state.lang).ui.buttons
            buttons = ((Button(b.forget_yes, Action.FORGET_YES), Button(b.cancel, Action.FORGET_NO)),)
            return Turn((self._info(state, "forget_confirm", buttons),), resume)
        return Turn((self._info(state, "help"),), resume)

    # -- buttons ------------------------------------------------------------------------------
    def press(self, state: PatientState, action: str, replied_to: str | None = None) -> Turn:
        """A button press; `replied_to` is the patient's message the pressed reply answered, if known."""
        a = self.assistant
        if action.startswith(Action.LANGUAGE) and action != Action.LANGUAGE_MENU:
            lang = a.lang(action.removeprefix(Action.LANGUAGE))
            name = a.pack(lang).ui.language_name
            new = replace(state, lang=lang)
            return Turn((self._info(new, "language_set", a.main_menu(lang), language=name),), (SetLanguage(lang),))
        if action.startswith(Action.FEEDBACK):
            helpful, _, topic = action.removeprefix(Action.FEEDBACK).partition(":")
            good = helpful == "1"
            effects: list[DialogueEffect] = [RecordFeedback(topic, good)]
            if good:
                return Turn((self._info(state, "feedback_thanks"),), tuple(effects))
            if replied_to:
                effects.append(KeepQuestion("unhelpful"))
            b = a.pack(state.lang).ui.buttons
            buttons = ((Button(b.talk_to_person, Action.HANDOFF),),)
            return Turn((self._info(state, "feedback_sorry", buttons),), tuple(effects))
        if action == Action.HANDOFF:
            if replied_to:
                return Turn((self._info(state, "handoff_started"),), (OpenHandoff(replied_to),))
            return Turn((self._info(state, "handoff_prompt"),), (OpenHandoff(None),))
        if action == Action.FORGET_YES:
            lang = state.lang
            done = Reply(a.text(lang, "forget_done"), Kind.INFO, lang)
            return Turn((done,), (Forget(),))
        if action == Action.FORGET_NO:
            return Turn((self._info(state, "forget_cancelled"),))
        reply = a.press(action, state.lang)
        if reply is None:
            return Turn((a.menu(state.lang),))
        effects = [RecordEvent("answer", reply.topic)] if reply.topic else []
        return Turn((reply,), tuple(effects))
