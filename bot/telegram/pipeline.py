"""One update's way through the bot: translate, load the patient, ask the dialogue, commit the turn.

The turn — state changes, queued messages and "this update is handled" — is committed in one
transaction, so an update is answered exactly once even if the process dies at any point: before
the commit it is handled again from the inbox, after it the outbox holds its messages.

When the database cannot be written, the patient's safety message and the staff alert do not wait
for it: they are sent at once from memory (`Degraded`), and the update is handled again when the
database is back, without sending them a second time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from telegram import Update

from bot.core import callbacks as cb
from bot.core.dialogue import Dialogue
from bot.core.events import Channel, Forget, Inbound, PatientState, Priority, SetStopped, ShowStats, Turn
from bot.core.safety.triage import Outcome as TriageOutcome
from bot.delivery.outgoing import ALERT, NOTICE, SAFETY, text_messages, turn_messages
from bot.store.repository import Outgoing, Store
from bot.telegram.translate import Blocked, Bot, Migrated, translate

log = logging.getLogger(__name__)
STAFF_CHAT_SETTING = "staff_chat_id"


@dataclass
class StaffDesk:
    """Where the staff chat is (it may migrate to a supergroup) and who counts as staff."""

    configured: int | None
    users: frozenset[int]
    current: int | None = None

    @property
    def chat_id(self) -> int | None:
        return self.current if self.current is not None else self.configured


@dataclass(frozen=True)
class Result:
    """What handling an update produced; `committed` is False when the database refused the turn."""

    turn: Turn
    outgoing: list[Outgoing]
    committed: bool
    error: str = ""
    chat_id: int = 0
    migrated: tuple[int, int] | None = None


@dataclass
class Pipeline:
    dialogue: Dialogue
    store: Store
    staff: StaffDesk
    bot: Bot
    handoff_idle: timedelta
    clock: Callable[[], datetime]
    # Updates whose safety messages went out from memory while the database was unavailable.
    sent_directly: dict[int, set[str]] = field(default_factory=dict)

    def handle(self, update: Update, *, update_row: int | None, update_id: int) -> Result:
        """Handle one update synchronously (in a worker thread): never raises for a database failure."""
        now = self.clock()
        event = translate(update, bot=self.bot, staff_chat=self.staff.chat_id, staff_users=self.staff.users, at=now)
        if isinstance(event, Migrated):
            return self._commit(Turn(), [], chat_id=event.old, update_row=update_row, at=now, migrated=event)
        if isinstance(event, Blocked):
            # The patient blocked the bot: stopped at once, no message is queued for them any more.
            return self._commit(
                Turn(effects=(SetStopped(event.blocked),)),
                [],
                chat_id=event.chat_id,
                update_row=update_row,
                at=now,
                register=False,
            )
        if event is None:
            return self._commit(Turn(), [], chat_id=0, update_row=update_row, at=now)
        inbound = event
        if inbound.channel is Channel.GROUP and inbound.mentioned and self.staff.chat_id is None:
            # How a clinic finds its staff group's id: add the bot, mention it once, read the log (ids only).
            log.info(
                "mentioned in group chat %d; set telegram.staff_chat_id to it to make it the staff group",
                inbound.chat_id,
            )
        degraded = ""
        try:
            patient, linked = self._states(inbound, now)
        except Exception as exc:  # the database is locked or gone: still answer, from what the update says
            degraded = _db_error(exc)
            patient = PatientState(inbound.chat_id, self.dialogue.assistant.lang(inbound.sender.language_code))
            linked = None
        turn = self.dialogue.handle(
            inbound,
            patient if inbound.channel is Channel.PRIVATE else None,
            linked,
            invite_owner=self.store.invite_owner,
        )
        outgoing = self._outgoing(turn, inbound, update_id, now)
        if degraded:
            return Result(turn, outgoing, False, degraded, inbound.chat_id)
        lang = patient.lang if patient is not None else ""
        return self._commit(
            turn,
            outgoing,
            chat_id=inbound.chat_id,
            update_row=update_row,
            at=now,
            lang=lang,
            register=inbound.channel is Channel.PRIVATE,
        )

    def screen(self, update: Update) -> list[Outgoing] | None:
        """The messages an update would send, computed from memory alone (no database): for the safety net."""
        now = self.clock()
        event = translate(update, bot=self.bot, staff_chat=self.staff.chat_id, staff_users=self.staff.users, at=now)
        if not isinstance(event, Inbound) or event.channel is Channel.STAFF or not event.text.strip():
            return None
        assistant = self.dialogue.assistant
        patient = PatientState(event.chat_id, assistant.lang(event.sender.language_code))
        # Most messages are calm: triage alone says so, without the matching a whole turn would do.
        if assistant.assess(event.text, patient.lang)[0].outcome is TriageOutcome.CLEAR:
            return None
        turn = self.dialogue.handle(event, patient if event.channel is Channel.PRIVATE else None, None)
        if turn.priority is not Priority.SAFETY:
            return None
        return self._outgoing(turn, event, update.update_id, now, keep=True)

    def _states(self, inbound: Inbound, now: datetime) -> tuple[PatientState | None, PatientState | None]:
        lang = self.dialogue.assistant.lang(inbound.sender.language_code)
        patient = None
        if inbound.channel is Channel.PRIVATE:
            patient = self.store.patient_state(inbound.chat_id, lang=lang, now=now, idle=self.handoff_idle)
        linked_id: int | None = None
        if inbound.channel is Channel.STAFF:
            if isinstance(inbound.callback, cb.CloseHandoff):
                linked_id = inbound.callback.patient
            elif inbound.reply_to is not None and inbound.reply_to.from_bot:
                linked_id = self.store.patient_for_staff_message(inbound.chat_id, inbound.reply_to.message_id)
        linked = None
        if linked_id is not None:
            linked = self.store.patient_state(
                linked_id, lang=self.dialogue.assistant.default_lang, now=now, idle=self.handoff_idle
            )
        return patient, linked

    def _outgoing(
        self, turn: Turn, inbound: Inbound, update_id: int, now: datetime, *, keep: bool = False
    ) -> list[Outgoing]:
        texts = self.dialogue.staff.texts
        rows = turn_messages(
            turn,
            origin=f"u{update_id}",
            chat_id=inbound.chat_id,
            staff_chat=self.staff.chat_id,
            at=now,
            reply_to=inbound.message_id,
            patient=inbound.chat_id if inbound.channel is Channel.PRIVATE else None,
            close_label=texts.close_button,
        )
        for effect in turn.effects:
            if isinstance(effect, ShowStats) and not keep:
                figures = self.store.stats(effect.since)
                rows += text_messages(
                    f"u{update_id}:stats",
                    inbound.chat_id,
                    self.dialogue.staff.stats(figures),
                    priority=int(Priority.REPLY),
                    kind=NOTICE,
                    at=now,
                    reply_to=inbound.message_id,
                )
        if any(isinstance(e, Forget) for e in turn.effects):
            for row in rows:  # "everything was deleted" must not itself stay behind once delivered
                row.payload["erase"] = True
        # Messages already sent from memory while the database was down are not queued again.
        skip = set() if keep else self.sent_directly.pop(update_id, set())
        return [row for row in rows if row.key not in skip]

    def _commit(
        self,
        turn: Turn,
        outgoing: list[Outgoing],
        *,
        chat_id: int,
        update_row: int | None,
        at: datetime,
        lang: str = "",
        register: bool = True,
        migrated: Migrated | None = None,
    ) -> Result:
        try:
            if migrated is not None and migrated.old == self.staff.chat_id:
                self.store.set_setting(STAFF_CHAT_SETTING, str(migrated.new))
            self.store.commit_turn(
                chat_id=chat_id,
                lang=lang or self.dialogue.assistant.default_lang,
                effects=turn.effects,
                outgoing=outgoing,
                at=at,
                update_row=update_row,
                register=register and chat_id > 0,
            )
        except Exception as exc:
            return Result(turn, outgoing, False, _db_error(exc), chat_id)
        moved = (migrated.old, migrated.new) if migrated is not None else None
        return Result(turn, outgoing, True, "", chat_id, moved)

    @staticmethod
    def urgent_part(result: Result) -> list[Outgoing]:
        """The messages that must not wait for the database: safety replies and staff alerts."""
        return [row for row in result.outgoing if row.kind in {SAFETY, ALERT}]


def _db_error(exc: BaseException) -> str:
    """A database error without its SQL or bound values (they may hold a patient's words)."""
    original: Any = getattr(exc, "orig", None)
    return f"{type(exc).__name__}: {str(original or exc).splitlines()[0][:160]}"
