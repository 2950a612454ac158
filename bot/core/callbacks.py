"""Button payloads: one typed codec, the only place callback data is written and read.

Telegram gives a button at most 64 bytes of callback data and returns it untouched when the
button is pressed, so anyone can forge a press. Every payload is therefore a small frozen value
with a short code, encoded compactly and decoded strictly: malformed or unknown data decodes to
None and is answered like an old button, never trusted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

MAX_BYTES = 64
_ID = re.compile(r"^[a-z0-9_]{1,40}$")
_LANG = re.compile(r"^[a-z]{2,3}$")
_INT = re.compile(r"^-?\d{1,19}$")
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,40}$")


@dataclass(frozen=True, slots=True)
class Menu:
    pass


@dataclass(frozen=True, slots=True)
class Category:
    category: str
    page: int = 0


@dataclass(frozen=True, slots=True)
class Topic:
    topic: str


@dataclass(frozen=True, slots=True)
class Feedback:
    topic: str
    helpful: bool


@dataclass(frozen=True, slots=True)
class Contact:
    pass


@dataclass(frozen=True, slots=True)
class LanguageMenu:
    pass


@dataclass(frozen=True, slots=True)
class SetLanguage:
    lang: str


@dataclass(frozen=True, slots=True)
class Handoff:
    """ "Talk to a person" / "Ask the clinic": the patient's question goes to the staff chat."""


@dataclass(frozen=True, slots=True)
class Forget:
    confirmed: bool


@dataclass(frozen=True, slots=True)
class Confirm:
    """The answer to "Is this happening to you right now?" (or, for crisis, "Are you safe right now?")."""

    danger: bool  # True: yes, it is happening / I'm not safe


@dataclass(frozen=True, slots=True)
class CloseHandoff:
    """Staff button under a relayed message: close the conversation with this patient."""

    patient: int


@dataclass(frozen=True, slots=True)
class Consent:
    """The patient agrees (or not) to reminders for the enrolment the invite started."""

    enrolment: str
    agreed: bool


@dataclass(frozen=True, slots=True)
class CheckIn:
    """An answer to a check-in question of a recovery plan."""

    enrolment: str
    step: str
    option: str


@dataclass(frozen=True, slots=True)
class EnrolMenu:
    """Enrolling from the menu: pick a treatment (None: show the list), then its day."""

    treatment: str | None = None
    days_ago: int | None = None


@dataclass(frozen=True, slots=True)
class PlanView:
    pass


Callback = (
    Menu
    | Category
    | Topic
    | Feedback
    | Contact
    | LanguageMenu
    | SetLanguage
    | Handoff
    | Forget
    | Confirm
    | CloseHandoff
    | Consent
    | CheckIn
    | EnrolMenu
    | PlanView
)


class CallbackTooLong(ValueError):
    pass


def encode(callback: Callback) -> str:
    """The callback data of a button; raises CallbackTooLong past Telegram's 64 bytes."""
    data = _encode(callback)
    if len(data.encode("utf-8")) > MAX_BYTES:
        raise CallbackTooLong(f"callback data is {len(data.encode('utf-8'))} bytes: {data[:20]}…")
    return data


def _flag(value: bool) -> Literal["1", "0"]:
    return "1" if value else "0"


def _encode(callback: Callback) -> str:
    match callback:
        case Menu():
            return "m"
        case Category(category=category, page=page):
            return f"c:{category}:{page}"
        case Topic(topic=topic):
            return f"t:{topic}"
        case Feedback(topic=topic, helpful=helpful):
            return f"f:{_flag(helpful)}:{topic}"
        case Contact():
            return "ct"
        case LanguageMenu():
            return "lm"
        case SetLanguage(lang=lang):
            return f"l:{lang}"
        case Handoff():
            return "h"
        case Forget(confirmed=confirmed):
            return f"x:{_flag(confirmed)}"
        case Confirm(danger=danger):
            return f"y:{_flag(danger)}"
        case CloseHandoff(patient=patient):
            return f"z:{patient}"
        case Consent(enrolment=enrolment, agreed=agreed):
            return f"k:{_flag(agreed)}:{enrolment}"
        case CheckIn(enrolment=enrolment, step=step, option=option):
            return f"q:{enrolment}:{step}:{option}"
        case EnrolMenu(treatment=treatment, days_ago=days_ago):
            return "e" + (f":{treatment}" if treatment else "") + (f":{days_ago}" if days_ago is not None else "")
        case PlanView():
            return "p"


def decode(data: str | None) -> Callback | None:
    """The callback a payload stands for; None for anything malformed, unknown or too long."""
    if not data or len(data.encode("utf-8")) > MAX_BYTES:
        return None
    code, _, rest = data.partition(":")
    parts = rest.split(":") if rest else []
    simple: dict[str, Callback] = {"m": Menu(), "ct": Contact(), "lm": LanguageMenu(), "h": Handoff(), "p": PlanView()}
    if code in simple and not parts:
        return simple[code]
    try:
        return _decode(code, parts)
    except (ValueError, IndexError):
        return None


def _decode(code: str, parts: list[str]) -> Callback | None:
    match code, parts:
        case "c", [category, page] if _ID.match(category) and page.isdigit():
            return Category(category, int(page))
        case "t", [topic] if _ID.match(topic):
            return Topic(topic)
        case "f", [helpful, topic] if helpful in {"0", "1"} and _ID.match(topic):
            return Feedback(topic, helpful == "1")
        case "l", [lang] if _LANG.match(lang):
            return SetLanguage(lang)
        case "x", [confirmed] if confirmed in {"0", "1"}:
            return Forget(confirmed == "1")
        case "y", [danger] if danger in {"0", "1"}:
            return Confirm(danger == "1")
        case "z", [patient] if _INT.match(patient):
            return CloseHandoff(int(patient))
        case "k", [agreed, enrolment] if agreed in {"0", "1"} and _TOKEN.match(enrolment):
            return Consent(enrolment, agreed == "1")
        case "q", [enrolment, step, option] if _TOKEN.match(enrolment) and _ID.match(step) and _ID.match(option):
            return CheckIn(enrolment, step, option)
        case "e", []:
            return EnrolMenu()
        case "e", [treatment] if _ID.match(treatment):
            return EnrolMenu(treatment)
        case "e", [treatment, days] if _ID.match(treatment) and days.isdigit():
            return EnrolMenu(treatment, int(days))
    return None
