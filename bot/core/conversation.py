"""What the bot says to a message: triage first, then the FAQ; and the menus, topics and safety texts.

The Assistant decides the words and the buttons; the dialogue (`dialogue.py`) decides what
happens around them (staff alerts, handoffs, stored state). It sends and stores nothing, so the
terminal shell, `aftercare ask` and the Telegram bot all answer through it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from bot.core import callbacks as cb
from bot.core.content import Content, LanguagePack, Text, fill
from bot.core.facts import values as fact_values
from bot.core.matcher import Matcher, MatchResult, Outcome, SemanticIndex
from bot.core.safety.model import Level
from bot.core.safety.triage import CLEAR, Assessment, Triage
from bot.core.safety.triage import Outcome as TriageOutcome

# Matching looks at the beginning of very long messages; triage reads all of it.
MATCH_CHARS = 600
LONG_MESSAGE = 2000
TOPICS_PER_PAGE = 6


class Kind(StrEnum):
    ANSWER = "answer"
    UNSURE = "unsure"  # "did you mean ...?"
    FALLBACK = "fallback"
    SAFETY = "safety"  # a danger sign: the safety message
    CONFIRM = "confirm"  # maybe a danger sign: a confirmation question
    GREETING = "greeting"
    THANKS = "thanks"
    EMPTY = "empty"
    MENU = "menu"
    INFO = "info"


@dataclass(frozen=True, slots=True)
class Button:
    label: str
    callback: cb.Callback


Keyboard = tuple[tuple[Button, ...], ...]


@dataclass(frozen=True)
class Reply:
    text: str
    kind: Kind
    lang: str
    buttons: Keyboard = ()
    topic: str | None = None
    score: float = 0.0
    candidates: tuple[str, ...] = ()
    assessment: Assessment | None = None  # set on SAFETY and CONFIRM replies

    @property
    def level(self) -> Level | None:
        return self.assessment.level if self.assessment else None


_SAFETY_TEXT = {
    Level.EMERGENCY: Text.SAFETY_EMERGENCY,
    Level.URGENT: Text.SAFETY_URGENT,
    Level.CRISIS: Text.SAFETY_CRISIS,
}


class Assistant:
    """One brain for every front end: built once from validated content and clinic facts."""

    def __init__(
        self,
        content: Content,
        facts: Mapping[str, Mapping[str, str]],
        default_lang: str,
        semantic: SemanticIndex | None = None,
        *,
        matcher: Matcher | None = None,
    ) -> None:
        """`matcher`: one already built from this content (start-up reads it from a cache)."""
        self.content = content
        self.default_lang = default_lang
        self._facts = {
            lang: fact_values(content.facts, lang, default_lang) | dict(facts.get(lang, {})) for lang in content.packs
        }
        self.triage = Triage({lang: pack.triage for lang, pack in content.packs.items()})
        self.plans_enabled = False  # set when recovery plans are loaded: the menu offers "My reminders"
        self.matcher = matcher or Matcher(content)
        if semantic is not None:
            self.matcher.attach(semantic)

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

    def supports(self, candidate: str) -> bool:
        return candidate.split("-")[0].lower() in self.content.packs

    def pack(self, lang: str) -> LanguagePack:
        return self.content.packs[self.lang(lang)]

    def facts(self, lang: str) -> dict[str, str]:
        return dict(self._facts[self.lang(lang)])

    def text(self, lang: str, key: Text, **extra: str) -> str:
        pack = self.pack(lang)
        template: str = getattr(pack.ui, key.value)
        return fill(template, self._facts[pack.lang] | extra)

    def info(self, lang: str, key: Text, buttons: Keyboard = (), **extra: str) -> Reply:
        return Reply(self.text(lang, key, **extra), Kind.INFO, self.lang(lang), buttons)

    def title(self, lang: str, topic: str) -> str:
        entry = self.pack(lang).entry(topic)
        return entry.title if entry else topic

    def main_menu(self, lang: str) -> Keyboard:
        b = self.pack(lang).ui.buttons
        first: tuple[Button, ...] = (Button(b.topics, cb.Menu()),)
        if self.plans_enabled:
            first += (Button(b.my_plan, cb.PlanView()),)
        return (first, (Button(b.contact, cb.Contact()), Button(b.language, cb.LanguageMenu())))

    def language_names(self) -> str:
        return ", ".join(f"{p.ui.language_name} ({code})" for code, p in self.content.packs.items())

    # -- messages ------------------------------------------------------------------------------
    def answer(self, message: str, lang_hint: str, *, recent: Sequence[str] = (), clinic_open: bool = True) -> Reply:
        """Triage first, then the FAQ; the reply says what happened so the dialogue can act on it."""
        lang = self.lang(lang_hint)
        text = message.strip()
        if not text:
            return Reply(self.text(lang, Text.EMPTY_MESSAGE), Kind.EMPTY, lang)
        assessment, written_in = self.assess(text, lang, recent)
        if assessment.outcome is TriageOutcome.CERTAIN and assessment.level is not None:
            return self.safety(assessment, written_in, clinic_open=clinic_open)
        if assessment.outcome is TriageOutcome.UNSURE and assessment.level is not None:
            return self.confirmation(assessment, written_in)
        return self.faq(text, lang, written_in, clinic_open=clinic_open)

    def assess(self, message: str, lang_hint: str, recent: Sequence[str] = ()) -> tuple[Assessment, str]:
        """Triage of a message, and the language it is written in (the safety screen needs only this)."""
        text = message.strip()
        written_in = self.matcher.language_of(text[:MATCH_CHARS], self.lang(lang_hint))
        assessment = self.triage.assess(text, written_in, recent)
        if assessment.source == "semantic" and self.matcher.smalltalk(text) is not None:
            assessment = CLEAR  # "thanks so much 💕" only resembles a farewell: no rule saw a danger sign
        return assessment, written_in

    def faq(self, message: str, lang_hint: str, written_in: str | None = None, *, clinic_open: bool = True) -> Reply:
        """The FAQ path alone: an answer, "did you mean", small talk or the honest fallback."""
        text = message.strip()
        lang = self.lang(lang_hint)
        match = self.matcher.match(text[:MATCH_CHARS], lang, written_in)
        reply = self._reply_for(match, clinic_open)
        if len(text) > LONG_MESSAGE and reply.kind in {Kind.ANSWER, Kind.UNSURE, Kind.FALLBACK}:
            reply = replace(reply, text=self.text(reply.lang, Text.MESSAGE_TOO_LONG) + "\n\n" + reply.text)
        return reply

    def safety(self, assessment: Assessment, lang: str, *, clinic_open: bool = True) -> Reply:
        """The safety message of a level, with "Talk to a person"."""
        level = assessment.level or Level.URGENT
        key = Text.SAFETY_URGENT_CLOSED if level is Level.URGENT and not clinic_open else _SAFETY_TEXT[level]
        text = self.text(lang, key)
        if assessment.possible_crisis:  # words that may be self-harm beside the sign: the crisis line too
            text += "\n\n" + self.text(lang, Text.SAFETY_CRISIS)
        buttons = ((Button(self.pack(lang).ui.buttons.talk_to_person, cb.Handoff()),),)
        return Reply(text, Kind.SAFETY, self.lang(lang), buttons, assessment=assessment)

    def confirmation(self, assessment: Assessment, lang: str) -> Reply:
        """The short question triage asks when it is not sure: always with the emergency number or crisis line."""
        b = self.pack(lang).ui.buttons
        if assessment.level is Level.CRISIS:
            key = Text.CONFIRM_CRISIS
            buttons = ((Button(b.crisis_not_safe, cb.Confirm(True)), Button(b.crisis_safe, cb.Confirm(False))),)
        else:
            key = Text.CONFIRM_DANGER
            buttons = ((Button(b.confirm_yes, cb.Confirm(True)), Button(b.confirm_no, cb.Confirm(False))),)
        return Reply(self.text(lang, key), Kind.CONFIRM, self.lang(lang), buttons, assessment=assessment)

    def _reply_for(self, match: MatchResult, clinic_open: bool) -> Reply:
        lang = match.lang
        b = self.pack(lang).ui.buttons
        if match.outcome is Outcome.GREETING:
            return Reply(self.text(lang, Text.GREETING_REPLY), Kind.GREETING, lang, self.main_menu(lang))
        if match.outcome is Outcome.THANKS:
            return Reply(self.text(lang, Text.THANKS_REPLY), Kind.THANKS, lang)
        if match.outcome is Outcome.ANSWER and match.topic is not None:
            reply = self.topic_reply(match.topic, lang)
            return replace(reply, score=match.score, candidates=match.candidates)
        if match.outcome is Outcome.UNSURE:
            rows = tuple((Button(self.title(lang, t), cb.Topic(t)),) for t in match.candidates)
            rows += ((Button(b.ask_clinic, cb.Handoff()),),)
            return Reply(
                self.text(lang, Text.DID_YOU_MEAN), Kind.UNSURE, lang, rows, None, match.score, match.candidates
            )
        rows = ((Button(b.ask_clinic, cb.Handoff()),), (Button(b.topics, cb.Menu()),))
        if match.about:  # say what the question seemed to be about: "no checked answer about botox"
            key = Text.FALLBACK_ABOUT if clinic_open else Text.FALLBACK_ABOUT_CLOSED
            text = self.text(lang, key, about=match.about)
        else:
            text = self.text(lang, Text.FALLBACK if clinic_open else Text.FALLBACK_CLOSED)
        return Reply(text, Kind.FALLBACK, lang, rows, None, match.score, match.candidates)

    def topic_reply(self, topic: str, lang: str) -> Reply:
        """A topic's answer with feedback and related-topic buttons (also what a topic button shows)."""
        pack = self.pack(lang)
        entry = pack.entry(topic)
        if entry is None:
            return self.menu(lang)
        b = pack.ui.buttons
        rows: list[tuple[Button, ...]] = [
            (Button(b.helpful_yes, cb.Feedback(topic, True)), Button(b.helpful_no, cb.Feedback(topic, False)))
        ]
        meta = self.content.topics.topics.get(topic)
        for related in meta.related if meta else ():
            rows.append((Button(self.title(lang, related), cb.Topic(related)),))
        return Reply(fill(entry.answer, self._facts[pack.lang]), Kind.ANSWER, pack.lang, tuple(rows), topic)

    # -- menus ---------------------------------------------------------------------------------
    def menu(self, lang: str) -> Reply:
        pack = self.pack(lang)
        rows = tuple((Button(pack.ui.categories[c], cb.Category(c)),) for c in self.content.topics.categories)
        return Reply(self.text(lang, Text.TOPICS_TITLE), Kind.MENU, pack.lang, rows)

    def category(self, category: str, page: int, lang: str) -> Reply:
        pack = self.pack(lang)
        topics = [t for t, meta in self.content.topics.topics.items() if meta.category == category]
        if not topics:
            return self.menu(lang)
        pages = max(1, -(-len(topics) // TOPICS_PER_PAGE))
        page = min(max(page, 0), pages - 1)
        shown = topics[page * TOPICS_PER_PAGE : (page + 1) * TOPICS_PER_PAGE]
        rows: list[tuple[Button, ...]] = [(Button(self.title(lang, t), cb.Topic(t)),) for t in shown]
        nav: list[Button] = [Button(pack.ui.buttons.back, cb.Menu())]
        if page + 1 < pages:
            nav.append(Button(pack.ui.buttons.more, cb.Category(category, page + 1)))
        rows.append(tuple(nav))
        return Reply(pack.ui.categories.get(category, category), Kind.MENU, pack.lang, tuple(rows))

    def language_menu(self, lang: str) -> Reply:
        rows = tuple((Button(p.ui.language_name, cb.SetLanguage(code)),) for code, p in self.content.packs.items())
        return Reply(self.text(lang, Text.LANGUAGE_PROMPT), Kind.MENU, self.lang(lang), rows)

    def contact(self, lang: str) -> Reply:
        b = self.pack(lang).ui.buttons
        return Reply(
            self.text(lang, Text.CONTACT), Kind.INFO, self.lang(lang), ((Button(b.talk_to_person, cb.Handoff()),),)
        )

    def navigate(self, callback: cb.Callback, lang: str) -> Reply | None:
        """The reply to a navigation button; None for buttons the dialogue handles (feedback, handoff, ...)."""
        match callback:
            case cb.Menu():
                return self.menu(lang)
            case cb.Contact():
                return self.contact(lang)
            case cb.LanguageMenu():
                return self.language_menu(lang)
            case cb.Topic(topic=topic):
                return self.topic_reply(topic, lang)
            case cb.Category(category=category, page=page):
                return self.category(category, page, lang)
        return None
