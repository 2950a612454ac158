"""What the clinic's staff chat is told: alerts, handoffs, relays and statistics, as text from content."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from bot.core.content import StaffTexts, fill
from bot.core.triage import Level

# A patient's message quoted in the staff chat is cut here; the full text is in the patient's chat.
QUOTE_LIMIT = 3000


@dataclass(frozen=True, slots=True)
class StaffFigures:
    patients: int
    answered: int
    fallbacks: int
    helpful: int
    unhelpful: int
    escalations: int


class StaffWriter:
    """Formats staff-chat texts in the staff's language with the clinic's facts."""

    def __init__(self, texts: StaffTexts, facts: Mapping[str, str]) -> None:
        self.texts = texts
        self.facts = dict(facts)

    def _fill(self, template: str, **values: str) -> str:
        return fill(template, self.facts | values)

    def alert(self, level: Level, patient: str, language: str, at: datetime, message: str) -> str:
        label = getattr(self.texts, f"level_{level.value}")
        return self._fill(
            self.texts.alert,
            level=label,
            patient=patient,
            language=language,
            time=f"{at:%Y-%m-%d %H:%M %Z}",
            message=_quote(message),
        )

    def handoff(self, patient: str, language: str, message: str) -> str:
        return self._fill(self.texts.handoff, patient=patient, language=language, message=_quote(message))

    def relay(self, patient: str, message: str) -> str:
        return self._fill(self.texts.relay, patient=patient, message=_quote(message))

    def closed(self, patient: str) -> str:
        return self._fill(self.texts.closed, patient=patient)

    def stats(self, figures: StaffFigures) -> str:
        values = {name: str(getattr(figures, name)) for name in figures.__slots__}
        return self._fill(self.texts.stats, **values)


def _quote(message: str) -> str:
    return message if len(message) <= QUOTE_LIMIT else message[:QUOTE_LIMIT] + "…"
