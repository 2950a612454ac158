"""The clinic's opening hours as data, so the bot knows when nobody will answer the phone.

Hours are per weekday in the clinic's time zone, one or more "HH:MM-HH:MM" ranges a day, and
dates the clinic is closed (holidays). Whether the clinic is open is a pure function of the time
passed in, never of the machine's clock.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time
from zoneinfo import ZoneInfo

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_RANGE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


@dataclass(frozen=True, slots=True)
class Span:
    start: time
    end: time

    def holds(self, moment: time) -> bool:
        return self.start <= moment < self.end


@dataclass(frozen=True)
class OpeningHours:
    zone: ZoneInfo
    week: Mapping[int, tuple[Span, ...]]  # weekday (0 = Monday) -> spans
    closed_on: frozenset[date] = frozenset()

    def is_open(self, at: datetime) -> bool:
        """True when `at` (timezone-aware) falls inside the clinic's hours, in the clinic's time zone."""
        local = at.astimezone(self.zone)
        if local.date() in self.closed_on:
            return False
        return any(span.holds(local.time()) for span in self.week.get(local.weekday(), ()))


ALWAYS_OPEN = OpeningHours(ZoneInfo("UTC"), {day: (Span(time(0, 0), time.max),) for day in range(7)})


def parse_spans(value: str) -> tuple[Span, ...]:
    """ "09:00-13:00, 14:00-19:00" -> spans; "closed" or "" -> none. Raises ValueError with the reason."""
    text = value.strip().lower()
    if text in {"", "closed", "-"}:
        return ()
    spans: list[Span] = []
    for part in text.split(","):
        found = _RANGE.match(part)
        if found is None:
            raise ValueError(f"'{part.strip()}' is not a time range like 09:00-19:00")
        h1, m1, h2, m2 = (int(g) for g in found.groups())
        if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59 or (h2 == 24 and m2):
            raise ValueError(f"'{part.strip()}' is not a valid time range")
        start = time(h1, m1)
        end = time.max if h2 == 24 else time(h2, m2)
        if end <= start:
            raise ValueError(f"'{part.strip()}' ends before it starts")
        spans.append(Span(start, end))
    return tuple(spans)


def opening_hours(zone: ZoneInfo, week: Mapping[str, str], closed_on: Iterable[date] = ()) -> OpeningHours:
    """Build the hours from config values (weekday names as in WEEKDAYS); missing days are closed."""
    parsed = {WEEKDAYS.index(day): parse_spans(spans) for day, spans in week.items()}
    return OpeningHours(zone, parsed, frozenset(closed_on))
