"""Typed configuration, loaded and validated once.

Every setting has an embedded default, so `aftercare shell` runs with no file at all.
Values may reference environment variables as `${NAME}` (or `${NAME:-default}`), and a
few well-known variables override the file outright. The bot token is a `SecretStr`:
it never appears in a repr, a log line or an error message.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from bot.core.hours import WEEKDAYS, OpeningHours, opening_hours, parse_spans
from bot.core.plans import NO_QUIET_HOURS, TREATMENTS, QuietHours, parse_clock, parse_duration
from bot.core.problems import InvalidContent, Problem
from bot.core.recovery import Schedule
from bot.core.yamlsource import load_yaml

PACKAGE = Path(__file__).resolve().parent
# In a checkout the content is `faq/` beside the package; installed, it is the package's `content`.
DEFAULT_CONTENT_DIR = (
    PACKAGE.parent / "faq" if (PACKAGE.parent / "faq" / "topics.yaml").is_file() else PACKAGE / "content"
)
EXAMPLE_CONFIG = PACKAGE / "config.example.yaml"
TELEGRAM_API_URL = "https://api.telegram.org/bot"

# Environment variables that override the file (documented in config.example.yaml).
ENV_OVERRIDES: dict[str, tuple[str, ...]] = {
    "TELEGRAM_BOT_TOKEN": ("telegram", "token"),
    "AFTERCARE_TELEGRAM_API_URL": ("telegram", "api_url"),
    "AFTERCARE_DATABASE_URL": ("database_url",),
    "AFTERCARE_STAFF_CHAT_ID": ("telegram", "staff_chat_id"),
    "AFTERCARE_INVITE_SECRET": ("invite_secret",),
    "AFTERCARE_WEBHOOK_SECRET": ("telegram", "webhook", "secret_token"),
}

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

LocalisedText = str | dict[str, str]

# Per country: the emergency number and a crisis line that answers in that country, in every language.
COUNTRY_LINES: dict[str, tuple[str, str]] = {
    "IT": ("112", "Telefono Amico Italia 02 2327 2327"),
    "PL": ("112", "116 123 (Telefon zaufania dla dorosłych)"),
    "ES": ("112", "024 (Línea 024)"),
    "GB": ("999", "Samaritans 116 123"),
    "IE": ("112", "Samaritans 116 123"),
    "DE": ("112", "TelefonSeelsorge 0800 111 0 111"),
    "FR": ("112", "3114"),
    "US": ("911", "988 Suicide & Crisis Lifeline (call or text 988)"),
    "MX": ("911", "Línea de la Vida 800 911 2000"),
    "AR": ("911", "135 (Centro de Asistencia al Suicida)"),
}
# An unset `${VAR}` expands to "": a blank secret is no secret.
OptionalSecret = Annotated[SecretStr | None, BeforeValidator(lambda v: None if v in ("", None) else v)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClinicConfig(_Strict):
    """Facts inserted into content by placeholders. Each may be one text or one per language."""

    name: LocalisedText = "Demo Aesthetic Clinic"
    phone: LocalisedText = "+39 02 0000 0000"
    email: LocalisedText = "care@clinic.example"
    address: LocalisedText = "Via Esempio 1, Milano"
    opening_hours: LocalisedText = {
        "en": "Mon-Fri 9:00-19:00, Sat 9:00-13:00",
        "it": "lun-ven 9:00-19:00, sab 9:00-13:00",
        "pl": "pon.-pt. 9:00-19:00, sob. 9:00-13:00",
        "es": "lun-vie 9:00-19:00, sáb 9:00-13:00",
    }
    booking_url: LocalisedText = "https://clinic.example/book"
    price_list_url: LocalisedText = "https://clinic.example/prices"
    minimum_age: str = "18"  # the youngest age the clinic treats
    # Who to call when the clinic is closed: an on-call doctor or out-of-hours service. Empty = the emergency number.
    out_of_hours: LocalisedText = ""
    # Structured hours in the clinic's time zone: when the clinic is closed the bot says so and gives the
    # out-of-hours route instead of promising a call-back. Days not listed are closed.
    hours: dict[str, str] = {
        "mon": "09:00-19:00",
        "tue": "09:00-19:00",
        "wed": "09:00-19:00",
        "thu": "09:00-19:00",
        "fri": "09:00-19:00",
        "sat": "09:00-13:00",
    }
    closed_on: tuple[date, ...] = ()  # holidays
    # The clinic's country (ISO code) sets the default emergency number and crisis line: a patient of a Milan
    # clinic writing in English needs the Italian line, not the UK's.
    country: str = "IT"
    emergency_number: LocalisedText | None = None
    crisis_line: LocalisedText | None = None

    @field_validator("hours")
    @classmethod
    def _valid_hours(cls, value: dict[str, str]) -> dict[str, str]:
        for day, spans in value.items():
            if day not in WEEKDAYS:
                raise ValueError(f"unknown weekday '{day}' (use {', '.join(WEEKDAYS)})")
            parse_spans(spans)
        return value

    @field_validator("country")
    @classmethod
    def _known_country(cls, value: str) -> str:
        code = value.upper()
        if code not in COUNTRY_LINES:
            raise ValueError(
                f"no built-in emergency number and crisis line for country '{value}' "
                f"(known: {', '.join(sorted(COUNTRY_LINES))}); set emergency_number and crisis_line"
            )
        return code

    def facts(self, lang: str, default_lang: str) -> dict[str, str]:
        """The placeholder values for one language."""
        fields = {
            "clinic_name": self.name,
            "clinic_phone": self.phone,
            "clinic_email": self.email,
            "clinic_address": self.address,
            "opening_hours": self.opening_hours,
            "booking_url": self.booking_url,
            "emergency_number": self.emergency(),
            "crisis_line": self.crisis(),
            "price_list_url": self.price_list_url,
            "minimum_age": self.minimum_age,
            "out_of_hours": self.out_of_hours or self.emergency(),
        }
        return {key: _localised(value, lang, default_lang) for key, value in fields.items()}

    def emergency(self) -> LocalisedText:
        return self.emergency_number if self.emergency_number is not None else COUNTRY_LINES[self.country][0]

    def crisis(self) -> LocalisedText:
        return self.crisis_line if self.crisis_line is not None else COUNTRY_LINES[self.country][1]


def _localised(value: LocalisedText, lang: str, default_lang: str) -> str:
    if isinstance(value, str):
        return value
    return value.get(lang) or value.get(default_lang) or next(iter(value.values()), "")


class WebhookConfig(_Strict):
    url: str | None = None  # public HTTPS URL Telegram posts to; unset = long polling
    listen: str = "127.0.0.1"  # behind a reverse proxy that terminates HTTPS; 0.0.0.0 only on purpose
    port: int = 8443
    path: str = "telegram"
    secret_token: OptionalSecret = None


class TelegramConfig(_Strict):
    token: OptionalSecret = None
    api_url: str = TELEGRAM_API_URL
    staff_chat_id: int | None = None
    staff_user_ids: tuple[int, ...] = ()
    handoff_idle_minutes: int = Field(default=24 * 60, ge=1)
    poll_timeout: int = Field(default=30, ge=0)
    # The whole bot's send rate, shared by every process (Telegram allows about 30 a second); 0 = no pacing.
    max_messages_per_second: float = Field(default=29, ge=0)
    webhook: WebhookConfig = WebhookConfig()
    # The bot's @username, for invite links (t.me/<username>?start=...); `run` learns it from Telegram.
    bot_username: str | None = None


class RemindersConfig(_Strict):
    """When recovery reminders may go out, and for how long a late one is still worth sending."""

    # The treatments the clinic gives and enrols patients for: each needs a plan in plans.yaml.
    treatments: tuple[str, ...] = TREATMENTS
    quiet_hours: str = "21:00-08:00"  # local time of the patient; "" = none
    default_late: str = "6h"  # a step's own `late:` in plans.yaml wins
    invite_valid_days: int = Field(default=14, ge=1, le=365)

    @field_validator("quiet_hours")
    @classmethod
    def _valid_quiet(cls, value: str) -> str:
        if value.strip():
            start, _, end = value.partition("-")
            parse_clock(start)
            parse_clock(end)
        return value

    @field_validator("treatments")
    @classmethod
    def _known_treatments(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [t for t in value if t not in TREATMENTS]
        if unknown:
            raise ValueError(f"unknown treatment '{unknown[0]}' (known: {', '.join(TREATMENTS)})")
        return value

    @field_validator("default_late")
    @classmethod
    def _valid_late(cls, value: str) -> str:
        parse_duration(value)
        return value

    @property
    def timing(self) -> Schedule:
        quiet = NO_QUIET_HOURS
        if self.quiet_hours.strip():
            start, _, end = self.quiet_hours.partition("-")
            quiet = QuietHours(parse_clock(start), parse_clock(end))
        return Schedule(quiet, parse_duration(self.default_late))


class Config(_Strict):
    clinic: ClinicConfig = ClinicConfig()
    languages: tuple[str, ...] = ("en", "it", "pl", "es")
    default_language: str = "en"
    timezone: str = "Europe/Rome"
    content_dir: Path = DEFAULT_CONTENT_DIR
    database_url: str = "sqlite:///aftercare.db"
    invite_secret: OptionalSecret = None
    retention_days: int = Field(default=180, ge=1)
    telegram: TelegramConfig = TelegramConfig()
    reminders: RemindersConfig = RemindersConfig()

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone '{value}'") from exc
        return value

    @model_validator(mode="after")
    def _default_language_is_offered(self) -> Config:
        if not self.languages:
            raise ValueError("at least one language is needed")
        if self.default_language not in self.languages:
            raise ValueError(
                f"default_language '{self.default_language}' is not one of languages {list(self.languages)}"
            )
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def hours(self) -> OpeningHours:
        return opening_hours(self.zone, self.clinic.hours, self.clinic.closed_on)

    def facts(self, lang: str) -> dict[str, str]:
        return self.clinic.facts(lang, self.default_language)


def demo_config_text() -> str:
    """The annotated example config (`config.example.yaml`), for `aftercare init`: content in ./faq."""
    text = EXAMPLE_CONFIG.read_text(encoding="utf-8")
    return re.sub(r"(?m)^content_dir: .*$", "content_dir: faq", text)


def load_config(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read the config file (optional), expand `${VARS}`, apply env overrides; raises InvalidContent."""
    env = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    display = str(path) if path else "<defaults>"
    doc = None
    if path is not None:
        doc = load_yaml(path, display)
        if doc.problems:
            raise InvalidContent(doc.problems)
        if doc.data is not None and not isinstance(doc.data, dict):
            raise InvalidContent([Problem(display, 1, "config must be a mapping of settings")])
        data = _expand(doc.data or {}, env)
        if "content_dir" in data and not Path(str(data["content_dir"])).is_absolute():
            data["content_dir"] = str((path.parent / str(data["content_dir"])).resolve())
    for variable, target in ENV_OVERRIDES.items():
        if env.get(variable):
            _set_path(data, target, env[variable])
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(str(part) for part in err["loc"])
            line = doc.line_of(loc) if doc else None
            where = ".".join(loc) or "config"
            message = f"unknown setting '{where}'" if err["type"] == "extra_forbidden" else f"'{where}': {err['msg']}"
            # Never echo an input value: it might be the token.
            problems.append(Problem(display, line, message))
        raise InvalidContent(problems) from None


def _expand(value: Any, env: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return _ENV_REF.sub(lambda m: env.get(m.group(1), m.group(2) or ""), value)
    if isinstance(value, dict):
        return {key: _expand(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [_expand(item, env) for item in value]
    return value


def _set_path(data: dict[str, Any], path: tuple[str, ...], value: str) -> None:
    node = data
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[path[-1]] = value
