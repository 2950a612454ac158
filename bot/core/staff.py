"""What the clinic's staff chat is told: alerts, handoffs, relays, delivery failures and statistics."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime

from bot.core.content import StaffTexts, fill
from bot.core.safety.model import Level

# A patient's message quoted in the staff chat is cut here; the part that raised an alert is always quoted.
QUOTE_LIMIT = 1500


@dataclass(frozen=True, slots=True)
class StaffFigures:
    patients: int
    answered: int
    fallbacks: int
    helpful: int
    unhelpful: int
    escalations: int
    failed: int = 0


class StaffWriter:
    """Formats staff-chat texts in the staff's language with the clinic's facts."""

    def __init__(self, texts: StaffTexts, facts: Mapping[str, str]) -> None:
        self.texts = texts
        self.facts = dict(facts)

    def _fill(self, template: str, **values: str) -> str:
        return fill(template, self.facts | values)

    def alert(
        self,
        level: Level,
        patient: str,
        language: str,
        at: datetime,
        message: str,
        *,
        possible: bool = False,
        confirmed: bool = False,
        trigger: str = "",
    ) -> str:
        """A danger alert; `trigger` is the part that raised it, quoted even when the message is long."""
        label = self.texts.level_possible_crisis if possible else getattr(self.texts, f"level_{level.value}")
        template = self.texts.alert_confirmed if confirmed else self.texts.alert
        return self._fill(
            template,
            level=label,
            patient=patient,
            language=language,
            time=f"{at:%Y-%m-%d %H:%M %Z}",
            message=quote(message, trigger),
        )

    def handoff(self, patient: str, language: str, message: str) -> str:
        return self._fill(self.texts.handoff, patient=patient, language=language, message=quote(message))

    def relay(self, patient: str, message: str) -> str:
        return self._fill(self.texts.relay, patient=patient, message=quote(message))

    def closed(self, patient: str) -> str:
        return self._fill(self.texts.closed, patient=patient)

    def not_delivered(self, reason: str) -> str:
        return self._fill(self.texts.not_delivered_reason, reason=reason)

    def delivery_failed(self, patient: str, reason: str, context: str) -> str:
        return self._fill(self.texts.delivery_failed, patient=patient, reason=reason, context=quote(context))

    def checkin(
        self, patient: str, language: str, at: datetime, *, treatment: str, day: int, step: str, answer: str
    ) -> str:
        """A check-in answer that signals trouble, with the plan's context."""
        return self._fill(
            self.texts.checkin_alert,
            patient=patient,
            language=language,
            time=f"{at:%Y-%m-%d %H:%M %Z}",
            treatment=treatment,
            day=str(day),
            step=step,
            answer=answer,
        )

    def invite(self, treatment: str, when: str, link: str, expires: str) -> str:
        return self._fill(self.texts.invite_reply, treatment=treatment, when=when, link=link, expires=expires)

    def usage(self, treatments: str) -> str:
        return self._fill(self.texts.invite_usage, treatment=treatments)

    def stats(self, figures: StaffFigures) -> str:
        values = {f.name: str(getattr(figures, f.name)) for f in fields(figures)}
        return self._fill(self.texts.stats, **values)


def quote(message: str, trigger: str = "", limit: int = QUOTE_LIMIT) -> str:
    """The message for the staff chat; a long one is cut, but never the part that raised the alert."""
    if len(message) <= limit:
        return message
    if trigger and trigger in message and message.index(trigger) + len(trigger) > limit - 40:
        head = message[: limit // 2].rstrip()
        return f"{head} … {trigger.strip()} …"
    return message[:limit].rstrip() + "…"
