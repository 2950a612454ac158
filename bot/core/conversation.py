"""The conversation core: a patient's message (or button press) in, a reply out.

It decides what to say and which side effects the edge must perform (alert staff,
record feedback, keep a question for curators); it sends nothing and stores nothing.
The terminal shell and the Telegram bot both talk to patients through this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from bot.core.content import Content, LanguagePack, fill
from bot.core.facts import values as fact_values
from bot.core.matcher import Matcher, MatchResult, Outcome, SemanticIndex
from bot.core.triage import Level, Triage

# Matching looks at the beginning of very long messages; triage reads all of it.
MATCH_CHARS = 600
LONG_MESSAGE = 2000
TOPICS_PER_PAGE = 6


class Kind(StrEnum):
    ANSWER = "answer"
    UNSURE = "unsure"
    FALLBACK = "fallback"
    TRIAGE = "triage"
    GREETING = "greeting"
    THANKS = "thanks"
    EMPTY = "empty"
    MENU = "menu"
    INFO = "info"


@dataclass(frozen=True, slots=True)
class Button:
    label: str
    action: str  # callback data, at most 64 bytes; see `Action`


class Action:
    """Callback data of buttons: short prefixes keep every payload inside Telegram's 64 bytes."""

    TOPIC = "t:"  # t:<topic id>
    CATEGORY = "c:"  # c:<category>:<page>
    MENU = "m"
    FEEDBACK = "f:"  # f:<1|0>:<topic id>
    HANDOFF = "h"
    LANGUAGE = "l:"  # l:<lang>
    LANGUAGE_MENU = "lm"
    CONTACT = "ct"
    FORGET_YES = "x:y"
    FORGET_NO = "x:n"


@dataclass(frozen=True, slots=True)
class AlertStaff:
    level: Level
    excerpt: str


@dataclass(frozen=True, slots=True)
class KeepQuestion:
    """A question the content could not answer well, kept (without the patient's name) for curators."""

    reason: str  # "fallback" | "unsure" | "unhelpful"


Effect = AlertStaff | KeepQuestion


@dataclass(frozen=True)
class Reply:
    text: str
    kind: Kind
    lang: str
    buttons: tuple[tuple[Button, ...], ...] = ()
    topic: str | None = None
    triage: Level | None = None
    score: float = 0.0
    candidates: tuple[str, ...] = ()
    effects: tuple[Effect, ...] = field(default_factory=tuple)


class Assistant:
    """One brain for every front end: built once from validated content and clinic facts."""

    def __init__(
        self,
        content: Content,
        facts: dict[str, dict[str, str]],
        default_lang: str,
        semantic: SemanticIndex | None = None,
    ) -> None:
        self.content = content
        self.default_lang = default_lang
        self._facts = {
            lang: fact_values(content.facts, lang, default_lang) | dict(facts.get(lang, {})) for lang in content.packs
        }
        self.triage = Triage({lang: pack.triage for lang, pack in content.packs.items()})
        self.matcher = Matcher(content, semantic)

    # -- helpers -------------------------------------------------------------------------------
    @property
    def staff_lang(self) -> str:
        """The language of the staff chat: the clinic's default, or the first language with staff texts."""
        if self.content.packs[self.default_lang].ui.staff is not None:
            return self.default_lang
        return next(lang for lang, pack in self.content.packs.items() if pack.ui.staff is not None)

    def lang(self, candidate: str | None) -> str:
        """A supported language for a Telegram language code such as 'pt-BR' or 'it'."""
        code = (candidate or "").split("-")[0].lower()
        return code if code in self.content.packs else self.default_lang

    def pack(self, lang: str) -> LanguagePack:
        return self.content.packs[self.lang(lang)]

    def text(self, lang: str, key: str, **extra: str) -> str:
        pack = self.pack(lang)
        return fill(getattr(pack.ui, key), self._facts[pack.lang] | extra)

    def title(self, lang: str, topic: str) -> str:
        entry = self.pack(lang).entry(topic)
        return entry.title if entry else topic

    def main_menu(self, lang: str) -> tuple[tuple[Button, ...], ...]:
        b = self.pack(lang).ui.buttons
        return (
            (Button(b.topics, Action.MENU),),
            (Button(b.contact, Action.CONTACT), Button(b.language, Action.LANGUAGE_MENU)),
        )

    # -- messages ------------------------------------------------------------------------------
    def answer(self, message: str, lang_hint: str) -> Reply:
        """Triage first, then the FAQ; the reply says what happened so the edge can act on it."""
        lang = self.lang(lang_hint)
        text = message.strip()
        if not text:
            return Reply(self.text(lang, "empty_message"), Kind.EMPTY, lang)
        written_in = self.matcher.language_of(text[:MATCH_CHARS], lang)
        verdict = self.triage.assess(text, written_in)
        if verdict.level is not None:
            return self._safety(verdict.level, verdict.excerpt, written_in)
        match = self.matcher.match(text[:MATCH_CHARS], lang, written_in)
        reply = self._reply_for(match)
        if len(text) > LONG_MESSAGE and reply.kind in {Kind.ANSWER, Kind.UNSURE, Kind.FALLBACK}:
            note = self.text(reply.lang, "message_too_long")
            reply = Reply(
                note + "\n\n" + reply.text,
                reply.kind,
                reply.lang,
                reply.buttons,
                reply.topic,
                None,
                reply.score,
                reply.candidates,
                reply.effects,
            )
        return reply

    def _safety(self, level: Level, excerpt: str, lang: str) -> Reply:
        key = {Level.EMERGENCY: "safety_emergency", Level.URGENT: "safety_urgent", Level.CRISIS: "safety_crisis"}
        buttons = ((Button(self.pack(lang).ui.buttons.talk_to_person, Action.HANDOFF),),)
        return Reply(
            self.text(lang, key[level]), Kind.TRIAGE, lang, buttons, triage=level, effects=(AlertStaff(level, excerpt),)
        )

    def _reply_for(self, match: MatchResult) -> Reply:
        lang = match.lang
        b = self.pack(lang).ui.buttons
        if match.outcome is Outcome.GREETING:
            return Reply(self.text(lang, "greeting_reply"), Kind.GREETING, lang, self.main_menu(lang))
        if match.outcome is Outcome.THANKS:
            return Reply(self.text(lang, "thanks_reply"), Kind.THANKS, lang)
        if match.outcome is Outcome.ANSWER and match.topic is not None:
            reply = self.topic_reply(match.topic, lang)
            return Reply(reply.text, Kind.ANSWER, lang, reply.buttons, match.topic, None, match.score, match.candidates)
        if match.outcome is Outcome.UNSURE:
            rows = tuple((Button(self.title(lang, t), Action.TOPIC + t),) for t in match.candidates)
            rows += ((Button(b.ask_clinic, Action.HANDOFF),),)
            return Reply(
                self.text(lang, "did_you_mean"),
                Kind.UNSURE,
                lang,
                rows,
                None,
                None,
                match.score,
                match.candidates,
                (KeepQuestion("unsure"),),
            )
        rows = ((Button(b.talk_to_person, Action.HANDOFF),), (Button(b.topics, Action.MENU),))
        return Reply(
            self.text(lang, "fallback"),
            Kind.FALLBACK,
            lang,
            rows,
            None,
            None,
            match.score,
            match.candidates,
            (KeepQuestion("fallback"),),
        )

    def topic_reply(self, topic: str, lang: str) -> Reply:
        """A topic's answer with feedback and related-topic buttons (also what a topic button shows)."""
        pack = self.pack(lang)
        entry = pack.entry(topic)
        if entry is None:
            return self.menu(lang)
        b = pack.ui.buttons
        rows: list[tuple[Button, ...]] = [
            (Button(b.helpful_yes, f"{Action.FEEDBACK}1:{topic}"), Button(b.helpful_no, f"{Action.FEEDBACK}0:{topic}"))
        ]
        meta = self.content.topics.topics.get(topic)
        for related in meta.related if meta else ():
            rows.append((Button(self.title(lang, related), Action.TOPIC + related),))
        return Reply(fill(entry.answer, self._facts[pack.lang]), Kind.ANSWER, pack.lang, tuple(rows), topic)

    # -- menus ---------------------------------------------------------------------------------
    def menu(self, lang: str) -> Reply:
        pack = self.pack(lang)
        rows = tuple(
            (Button(pack.ui.categories[c], f"{Action.CATEGORY}{c}:0"),) for c in self.content.topics.categories
        )
        return Reply(self.text(lang, "topics_title"), Kind.MENU, pack.lang, rows)

    def category(self, category: str, page: int, lang: str) -> Reply:
        pack = self.pack(lang)
        topics = [t for t, meta in self.content.topics.topics.items() if meta.category == category]
        if not topics:
            return self.menu(lang)
        pages = max(1, -(-len(topics) // TOPICS_PER_PAGE))
        page = min(max(page, 0), pages - 1)
        shown = topics[page * TOPICS_PER_PAGE : (page + 1) * TOPICS_PER_PAGE]
        rows: list[tuple[Button, ...]] = [(Button(self.title(lang, t), Action.TOPIC + t),) for t in shown]
        nav: list[Button] = [Button(pack.ui.buttons.back, Action.MENU)]
        if page + 1 < pages:
            nav.append(Button(pack.ui.buttons.more, f"{Action.CATEGORY}{category}:{page + 1}"))
        rows.append(tuple(nav))
        return Reply(pack.ui.categories.get(category, category), Kind.MENU, pack.lang, tuple(rows))

    def language_menu(self, lang: str) -> Reply:
        rows = tuple((Button(p.ui.language_name, Action.LANGUAGE + code),) for code, p in self.content.packs.items())
        return Reply(self.text(lang, "language_prompt"), Kind.MENU, self.lang(lang), rows)

    def contact(self, lang: str) -> Reply:
        b = self.pack(lang).ui.buttons
        return Reply(
            self.text(lang, "contact"), Kind.INFO, self.lang(lang), ((Button(b.talk_to_person, Action.HANDOFF),),)
        )

    def press(self, action: str, lang: str) -> Reply | None:
        """The reply to a navigation button; None for actions the edge handles (feedback, handoff, ...)."""
        if action == Action.MENU:
            return self.menu(lang)
        if action == Action.CONTACT:
            return self.contact(lang)
        if action == Action.LANGUAGE_MENU:
            return self.language_menu(lang)
        if action.startswith(Action.TOPIC):
            return self.topic_reply(action.removeprefix(Action.TOPIC), lang)
        if action.startswith(Action.CATEGORY):
            category, _, page = action.removeprefix(Action.CATEGORY).partition(":")
            return self.category(category, int(page) if page.isdigit() else 0, lang)
        return None
