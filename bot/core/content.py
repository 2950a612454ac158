"""Curated content: typed models of `faq/`, loaded once and validated with every problem located.

Content is written by clinic staff, so validation is the user interface here: every
problem is collected (not just the first) and reported as `file:line: message`.
"""

from __future__ import annotations

import string
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bot.core.facts import Fact, FactsFile, check_fact_texts, check_numbers
from bot.core.problems import Problem
from bot.core.safety.model import MIN_EXAMPLES, PRECEDENCE, TriageFile
from bot.core.safety.rules import check_rules
from bot.core.text import fold
from bot.core.yamlsource import Loc, YamlDocument, load_yaml

if TYPE_CHECKING:
    from bot.core.plans import Plans

TELEGRAM_MESSAGE_LIMIT = 4096
TITLE_LIMIT = 40
BUTTON_LIMIT = 40
MIN_QUESTIONS = 3
LONG_ANSWER = 1500

CLINIC_PLACEHOLDERS = frozenset(
    {
        "clinic_name",
        "clinic_phone",
        "clinic_email",
        "clinic_address",
        "opening_hours",
        "booking_url",
        "emergency_number",
        "crisis_line",
        "price_list_url",
        "minimum_age",
        "out_of_hours",
    }
)
# Interface texts that take a value besides the clinic facts.
EXTRA_PLACEHOLDERS: dict[str, frozenset[str]] = {
    "language_set": frozenset({"language"}),
    "language_unknown": frozenset({"languages"}),
    "fallback_about": frozenset({"about"}),
    "fallback_about_closed": frozenset({"about"}),
    "enrol_consent": frozenset({"treatment", "date"}),
    "enrol_pick_day": frozenset({"treatment"}),
    "plan_item": frozenset({"when", "treatment", "text"}),
    "timezone_set": frozenset({"zone"}),
    "timezone_unknown": frozenset({"zone"}),
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class TopicMeta(_Strict):
    category: str
    related: tuple[str, ...] = ()


class TopicsFile(_Strict):
    categories: tuple[str, ...]
    topics: dict[str, TopicMeta]


class FaqEntry(_Strict):
    id: str = Field(min_length=1)
    title: str = Field(min_length=1)
    questions: tuple[str, ...] = Field(min_length=1)
    keywords: tuple[str, ...] = ()
    answer: str = Field(min_length=1)

    @field_validator("questions", "keywords")
    @classmethod
    def _no_empty_items(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(not str(item).strip() for item in value):
            raise ValueError("contains an empty item")
        return tuple(str(item).strip() for item in value)


class Smalltalk(_Strict):
    greeting: tuple[str, ...] = ()
    thanks: tuple[str, ...] = ()


class FaqFile(_Strict):
    stopwords: tuple[str, ...] = ()
    smalltalk: Smalltalk = Smalltalk()
    entries: tuple[FaqEntry, ...] = Field(min_length=1)


class OutOfScopeFile(_Strict):
    """Questions patients ask that the FAQ must not answer (prices, other treatments, unrelated health)."""

    questions: tuple[str, ...] = ()
    # A message naming one of `other_treatments` and none of `covered_treatments` gets the fallback.
    other_treatments: tuple[str, ...] = ()
    covered_treatments: tuple[str, ...] = ()


class Buttons(_Strict):
    topics: str
    language: str
    contact: str
    talk_to_person: str
    ask_clinic: str
    helpful_yes: str
    helpful_no: str
    more: str
    back: str
    forget_yes: str
    cancel: str
    confirm_yes: str
    confirm_no: str
    crisis_not_safe: str
    crisis_safe: str
    consent_yes: str
    consent_no: str
    my_plan: str
    enrol: str
    today: str
    yesterday: str
    days_ago: str


class Commands(_Strict):
    start: str
    topics: str
    language: str
    contact: str
    help: str
    stop: str
    forget: str
    plan: str
    timezone: str


class Dates(_Strict):
    """How due times read in this language: "today 20:00", "tomorrow 09:00", "Thu 04/12 10:00"."""

    today: str
    tomorrow: str
    weekdays: tuple[str, ...] = Field(min_length=7, max_length=7)


class Answers(_Strict):
    """Words that answer a yes/no question in this language ("yes", "yeah", "no, just asking")."""

    yes: tuple[str, ...] = Field(min_length=1)
    no: tuple[str, ...] = Field(min_length=1)


class StaffTexts(_Strict):
    """Texts for the clinic's staff chat; needed in the staff's language only."""

    level_emergency: str
    level_urgent: str
    level_crisis: str
    level_possible_crisis: str
    alert: str
    alert_confirmed: str
    handoff: str
    relay: str
    close_button: str
    closed: str
    delivered: str
    not_delivered: str
    not_linked: str
    not_delivered_reason: str
    delivery_failed: str
    checkin_alert: str
    invite_reply: str
    invite_usage: str
    stats: str


STAFF_PLACEHOLDERS = frozenset(
    {"level", "patient", "language", "time", "message", "reason", "context"}
    | {"treatment", "day", "step", "answer", "link", "expires", "when"}
    | {"patients", "answered", "fallbacks", "helpful", "unhelpful", "escalations", "failed"}
)


class UiTexts(_Strict):
    language_name: str
    welcome: str
    help: str
    fallback: str
    fallback_closed: str
    fallback_about: str
    fallback_about_closed: str
    greeting_reply: str
    thanks_reply: str
    did_you_mean: str
    safety_emergency: str
    safety_urgent: str
    safety_urgent_closed: str
    safety_crisis: str
    confirm_danger: str
    confirm_crisis: str
    crisis_safe_reply: str
    contact: str
    feedback_thanks: str
    feedback_sorry: str
    topics_title: str
    language_prompt: str
    language_set: str
    language_unknown: str
    handoff_prompt: str
    handoff_started: str
    handoff_started_closed: str
    handoff_already_open: str
    handoff_closed: str
    staff_reply_prefix: str
    stopped: str
    forget_confirm: str
    forget_done: str
    forget_cancelled: str
    unsupported_message: str
    message_too_long: str
    empty_message: str
    invite_invalid: str
    not_allowed: str
    error_generic: str
    old_button: str
    invite_expired: str
    invite_used: str
    enrol_consent: str
    enrol_declined: str
    enrol_pick_treatment: str
    enrol_pick_day: str
    plan_title: str
    plan_item: str
    plan_nothing_left: str
    plan_footer: str
    checkin_closed: str
    timezone_set: str
    timezone_unknown: str
    dates: Dates
    buttons: Buttons
    answers: Answers
    categories: dict[str, str]
    commands: Commands
    staff: StaffTexts | None = None

    def texts(self) -> Iterator[tuple[str, str]]:
        """Every plain text with its key, for placeholder and length checks."""
        for name, value in self:
            if isinstance(value, str) and name != "language_name":
                yield name, value


class Text(StrEnum):
    """Typed keys of the interface texts (`UiTexts`), so a misspelt key is a type error, not a crash."""

    WELCOME = "welcome"
    HELP = "help"
    FALLBACK = "fallback"
    FALLBACK_CLOSED = "fallback_closed"
    FALLBACK_ABOUT = "fallback_about"
    FALLBACK_ABOUT_CLOSED = "fallback_about_closed"
    GREETING_REPLY = "greeting_reply"
    THANKS_REPLY = "thanks_reply"
    DID_YOU_MEAN = "did_you_mean"
    SAFETY_EMERGENCY = "safety_emergency"
    SAFETY_URGENT = "safety_urgent"
    SAFETY_URGENT_CLOSED = "safety_urgent_closed"
    SAFETY_CRISIS = "safety_crisis"
    CONFIRM_DANGER = "confirm_danger"
    CONFIRM_CRISIS = "confirm_crisis"
    CRISIS_SAFE_REPLY = "crisis_safe_reply"
    CONTACT = "contact"
    FEEDBACK_THANKS = "feedback_thanks"
    FEEDBACK_SORRY = "feedback_sorry"
    TOPICS_TITLE = "topics_title"
    LANGUAGE_PROMPT = "language_prompt"
    LANGUAGE_SET = "language_set"
    LANGUAGE_UNKNOWN = "language_unknown"
    HANDOFF_PROMPT = "handoff_prompt"
    HANDOFF_STARTED = "handoff_started"
    HANDOFF_STARTED_CLOSED = "handoff_started_closed"
    HANDOFF_ALREADY_OPEN = "handoff_already_open"
    HANDOFF_CLOSED = "handoff_closed"
    STAFF_REPLY_PREFIX = "staff_reply_prefix"
    STOPPED = "stopped"
    FORGET_CONFIRM = "forget_confirm"
    FORGET_DONE = "forget_done"
    FORGET_CANCELLED = "forget_cancelled"
    UNSUPPORTED_MESSAGE = "unsupported_message"
    MESSAGE_TOO_LONG = "message_too_long"
    EMPTY_MESSAGE = "empty_message"
    INVITE_INVALID = "invite_invalid"
    NOT_ALLOWED = "not_allowed"
    ERROR_GENERIC = "error_generic"
    OLD_BUTTON = "old_button"
    INVITE_EXPIRED = "invite_expired"
    INVITE_USED = "invite_used"
    ENROL_CONSENT = "enrol_consent"
    ENROL_DECLINED = "enrol_declined"
    ENROL_PICK_TREATMENT = "enrol_pick_treatment"
    ENROL_PICK_DAY = "enrol_pick_day"
    PLAN_TITLE = "plan_title"
    PLAN_NOTHING_LEFT = "plan_nothing_left"
    PLAN_FOOTER = "plan_footer"
    CHECKIN_CLOSED = "checkin_closed"
    TIMEZONE_SET = "timezone_set"
    TIMEZONE_UNKNOWN = "timezone_unknown"


@dataclass(frozen=True)
class LanguagePack:
    lang: str
    faq: FaqFile
    ui: UiTexts
    triage: TriageFile
    out_of_scope: OutOfScopeFile = field(default_factory=OutOfScopeFile)

    def entry(self, topic_id: str) -> FaqEntry | None:
        return next((e for e in self.faq.entries if e.id == topic_id), None)


@dataclass(frozen=True)
class Content:
    topics: TopicsFile
    packs: Mapping[str, LanguagePack]
    facts: Mapping[str, Fact] = field(default_factory=dict)
    plans: Plans | None = None  # the recovery plans, loaded alongside (bot.core.plans)

    @property
    def languages(self) -> tuple[str, ...]:
        return tuple(self.packs)


Model = TypeVar("Model", bound=BaseModel)


def load_content(
    content_dir: Path,
    languages: tuple[str, ...],
    facts: Mapping[str, Mapping[str, str]] | None = None,
    *,
    examples: bool = True,
) -> tuple[Content | None, list[Problem]]:
    """Load and validate `faq/`; returns the content (None if there are errors) and every problem found.

    `facts` are the clinic placeholders' values per language, used to check the length of texts as the
    patient sees them.
    """
    problems: list[Problem] = []

    def rel(path: Path) -> str:
        try:
            return str(path.relative_to(Path.cwd()))
        except ValueError:
            return str(path)

    if not content_dir.is_dir():
        return None, [Problem(rel(content_dir), None, "content folder not found")]

    topics_doc = load_yaml(content_dir / "topics.yaml", rel(content_dir / "topics.yaml"), strings_only=True)
    topics = _parse(topics_doc, TopicsFile, problems)
    if topics is not None:
        problems.extend(_check_topics(topics, topics_doc))

    facts_file = FactsFile()
    facts_path = content_dir / "facts.yaml"
    if facts_path.is_file():  # optional: content without single-sourced facts still loads
        facts_doc = load_yaml(facts_path, rel(facts_path), strings_only=True)
        facts_file = _parse(facts_doc, FactsFile, problems) or facts_file
        for name, fact in facts_file.facts.items():
            if name in CLINIC_PLACEHOLDERS:
                problems.append(facts_doc.problem(("facts", name), f"fact '{name}' has the name of a clinic fact"))
            for message in check_fact_texts(name, fact, languages):
                problems.append(facts_doc.problem(("facts", name), message))
    known = _Known(frozenset(facts_file.facts) | CLINIC_PLACEHOLDERS, facts_file.facts)

    packs: dict[str, LanguagePack] = {}
    triage_docs: dict[str, YamlDocument] = {}
    for lang in languages:
        folder = content_dir / lang
        if not folder.is_dir():
            problems.append(Problem(rel(folder), None, f"language '{lang}' is configured but has no content folder"))
            continue
        docs = {
            name: load_yaml(folder / f"{name}.yaml", rel(folder / f"{name}.yaml"), strings_only=True)
            for name in ("faq", "ui", "triage")
        }
        faq = _parse(docs["faq"], FaqFile, problems)
        ui = _parse(docs["ui"], UiTexts, problems)
        triage = _parse(docs["triage"], TriageFile, problems)
        out_of_scope = OutOfScopeFile()
        if (folder / "out_of_scope.yaml").is_file():  # optional
            oos_doc = load_yaml(folder / "out_of_scope.yaml", rel(folder / "out_of_scope.yaml"), strings_only=True)
            out_of_scope = _parse(oos_doc, OutOfScopeFile, problems) or out_of_scope
        if faq is not None:
            problems.extend(_check_faq(faq, docs["faq"], topics, known.shown(lang, facts), lang, known))
        if ui is not None:
            problems.extend(_check_ui(ui, docs["ui"], topics, known.shown(lang, facts), lang, known))
        if faq is not None and ui is not None and triage is not None:
            packs[lang] = LanguagePack(lang, faq, ui, triage, out_of_scope)
            triage_docs[lang] = docs["triage"]

    every_triage = {lang: pack.triage for lang, pack in packs.items()}
    for lang, pack in packs.items():
        problems.extend(_check_triage(pack.triage, triage_docs[lang], lang, every_triage, examples))

    has_errors = any(p.severity == "error" for p in problems)
    if has_errors or topics is None:
        return None, problems
    return Content(topics, packs, facts_file.facts), problems


@dataclass(frozen=True)
class _Known:
    """The placeholder names texts may use, and the facts whose numbers texts must not contradict."""

    names: frozenset[str]
    facts: Mapping[str, Fact]

    def shown(self, lang: str, clinic: Mapping[str, Mapping[str, str]] | None) -> dict[str, str] | None:
        """Every placeholder's value in `lang`, for checking texts at the length the patient sees them."""
        if clinic is None:
            return None
        return {name: fact.text.get(lang, fact.value) for name, fact in self.facts.items()} | dict(clinic.get(lang, {}))


def _parse(doc: YamlDocument, model: type[Model], problems: list[Problem]) -> Model | None:
    problems.extend(doc.problems)
    if any(p.severity == "error" for p in doc.problems):
        return None
    if doc.data is None:
        problems.append(Problem(doc.path, None, "file is empty"))
        return None
    try:
        return model.model_validate(doc.data)
    except ValidationError as exc:
        for err in exc.errors():
            loc: Loc = tuple(err["loc"])
            problems.append(doc.problem(loc, _describe(err)))
        return None


def _describe(err: Any) -> str:
    loc = ".".join(str(part) for part in err["loc"])
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"unknown key '{loc}'"
    if kind == "missing":
        return f"missing key '{loc}'"
    if kind in {"string_too_short", "too_short"}:
        return f"'{loc}' must not be empty"
    return f"'{loc}': {err['msg']}" if loc else str(err["msg"])


def _check_topics(topics: TopicsFile, doc: YamlDocument) -> Iterator[Problem]:
    for topic_id, meta in topics.topics.items():
        if meta.category not in topics.categories:
            yield doc.problem(("topics", topic_id), f"topic '{topic_id}' has unknown category '{meta.category}'")
        for related in meta.related:
            if related not in topics.topics:
                yield doc.problem(("topics", topic_id), f"topic '{topic_id}' lists unknown related topic '{related}'")


def _check_faq(
    faq: FaqFile,
    doc: YamlDocument,
    topics: TopicsFile | None,
    facts: Mapping[str, str] | None,
    lang: str,
    known: _Known,
) -> Iterator[Problem]:
    seen_ids: dict[str, int] = {}
    seen_questions: dict[str, str] = {}
    for index, entry in enumerate(faq.entries):
        loc: Loc = ("entries", index)
        if entry.id in seen_ids:
            yield doc.problem((*loc, "id"), f"duplicate entry id '{entry.id}' (also entry #{seen_ids[entry.id] + 1})")
        seen_ids.setdefault(entry.id, index)
        if topics is not None and entry.id not in topics.topics:
            yield doc.problem((*loc, "id"), f"entry id '{entry.id}' is not a topic in topics.yaml")
        if len(entry.title) > TITLE_LIMIT:
            yield doc.problem(
                (*loc, "title"), f"title is {len(entry.title)} characters; at most {TITLE_LIMIT} fit a button"
            )
        if len(entry.questions) < MIN_QUESTIONS:
            yield doc.problem(
                (*loc, "questions"),
                f"entry '{entry.id}' has only {len(entry.questions)} example questions; "
                f"{MIN_QUESTIONS} or more match much better",
                "warning",
            )
        for q_index, question in enumerate(entry.questions):
            key = fold(question)
            if key in seen_questions:
                yield doc.problem(
                    (*loc, "questions", q_index),
                    f"duplicate example question '{question}' (also under '{seen_questions[key]}')",
                )
            seen_questions.setdefault(key, entry.id)
        yield from _check_text(doc, (*loc, "answer"), entry.answer, known.names, facts)
        yield from _check_numbers(doc, (*loc, "answer"), entry.answer, lang, known)
        if len(entry.answer) > LONG_ANSWER:
            yield doc.problem(
                (*loc, "answer"),
                f"answer is {len(entry.answer)} characters; patients read short answers on a phone",
                "warning",
            )
    if topics is not None:
        for topic_id in topics.topics:
            if topic_id not in seen_ids:
                yield doc.problem(("entries",), f"missing translation: no entry for topic '{topic_id}'")
    if not faq.smalltalk.greeting or not faq.smalltalk.thanks:
        yield doc.problem(("smalltalk",), "no greeting or thanks examples: greetings will get the fallback", "warning")


def _check_ui(
    ui: UiTexts,
    doc: YamlDocument,
    topics: TopicsFile | None,
    facts: Mapping[str, str] | None,
    lang: str,
    known: _Known,
) -> Iterator[Problem]:
    for key, text in ui.texts():
        allowed = known.names | EXTRA_PLACEHOLDERS.get(key, frozenset())
        yield from _check_text(doc, (key,), text, allowed, facts)
        yield from _check_numbers(doc, (key,), text, lang, known)
    if ui.staff is not None:
        for key, text in ui.staff:
            yield from _check_text(doc, ("staff", key), text, CLINIC_PLACEHOLDERS | STAFF_PLACEHOLDERS, None)
    for name, label in ui.buttons:
        if len(label) > BUTTON_LIMIT:
            yield doc.problem(("buttons", name), f"button label '{name}' is longer than {BUTTON_LIMIT} characters")
    for name, description in ui.commands:
        if not 3 <= len(description) <= 256:
            yield doc.problem(("commands", name), f"command description '{name}' must be 3-256 characters (Telegram)")
    if topics is not None:
        for category in topics.categories:
            if category not in ui.categories:
                yield doc.problem(("categories",), f"missing translation: no label for category '{category}'")
        for category in ui.categories:
            if category not in topics.categories:
                yield doc.problem(("categories", category), f"unknown category '{category}' (not in topics.yaml)")


def _check_triage(
    rules: TriageFile, doc: YamlDocument, lang: str, every: Mapping[str, TriageFile], examples: bool = True
) -> Iterator[Problem]:
    """Rules that compile, name known guards and pass their own examples; enough examples per level."""
    for found in check_rules(rules, lang, every, examples=examples):
        loc = tuple(str(part) if not isinstance(part, int) else part for part in found.loc)
        yield doc.problem(loc, found.message, found.severity)
    for level in PRECEDENCE:
        count = rules.examples.count(level.value)
        if count < MIN_EXAMPLES:
            yield doc.problem(
                ("examples", level.value),
                f"only {count} example messages for '{level.value}'; write at least {MIN_EXAMPLES}, varied",
                "warning",
            )
    seen: dict[str, str] = {}
    for label in ("emergency", "urgent", "crisis", "none"):
        for index, group in enumerate(rules.examples.groups(label)):
            for message in group:
                key = fold(message)
                if key in seen:
                    yield doc.problem(
                        ("examples", label, index), f"duplicate example '{message}' (also under '{seen[key]}')"
                    )
                seen.setdefault(key, label)


def placeholders(text: str) -> list[str]:
    """The `{names}` used in a text; raises ValueError on unbalanced braces."""
    names: list[str] = []
    for _, field_name, _, _ in string.Formatter().parse(text):
        if field_name is not None:
            names.append(field_name)
    return names


def _check_text(
    doc: YamlDocument, loc: Loc, text: str, allowed: frozenset[str], facts: Mapping[str, str] | None
) -> Iterator[Problem]:
    if not text.strip():
        yield doc.problem(loc, f"'{loc[-1]}' is empty")
        return
    try:
        names = placeholders(text)
    except ValueError as exc:
        yield doc.problem(loc, f"broken placeholder in '{loc[-1]}': {exc} (write {{{{ or }}}} for a literal brace)")
        return
    for name in names:
        if name not in allowed:
            yield doc.problem(loc, f"unknown placeholder {{{name}}} in '{loc[-1]}'")
            return
    if facts is not None:
        values = dict.fromkeys(allowed, "") | dict(facts)
        length = len(text.format_map(values))
        if length > TELEGRAM_MESSAGE_LIMIT:
            yield doc.problem(loc, f"'{loc[-1]}' is {length} characters; Telegram allows {TELEGRAM_MESSAGE_LIMIT}")


def _check_numbers(doc: YamlDocument, loc: Loc, text: str, lang: str, known: _Known) -> Iterator[Problem]:
    for message in check_numbers(text, lang, known.facts):
        yield doc.problem(loc, message)


def fill(text: str, values: Mapping[str, str]) -> str:
    """Insert placeholder values; content was validated, so every name is known."""
    return text.format_map(dict(values)).strip()
