"""The repository: every read and write the bot makes, each method one short transaction.

Several bot processes may share the database, so anything that must happen once (a new patient, an
open handoff, a claimed update, a vote) is a single atomic statement backed by a database constraint,
never a check followed by an insert.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, CursorResult, Engine, case, delete, func, insert, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import InstrumentedAttribute, sessionmaker

from bot.core.staff import StaffFigures
from bot.store.schema import create_store_engine, migrate
from bot.store.tables import (
    PATIENT_TABLES,
    TEXT_LIMIT,
    ClaimedUpdateRow,
    EscalationRow,
    EventRow,
    FeedbackRow,
    HandoffRow,
    KeptQuestionRow,
    PatientRow,
    SettingRow,
    StaffMessageRow,
    UtcDateTime,
    as_utc,
)

FALLBACK_KINDS = ("fallback", "unsure")


@dataclass(frozen=True, slots=True)
class Patient:
    chat_id: int
    lang: str
    stopped: bool
    created_at: datetime
    last_seen_at: datetime


@dataclass(frozen=True, slots=True)
class KeptQuestion:
    """A question for curators; deliberately without the chat id, so a report cannot identify the patient."""

    text: str
    lang: str
    reason: str
    at: datetime


@dataclass(frozen=True, slots=True)
class Handoff:
    chat_id: int
    opened_at: datetime
    last_activity_at: datetime


# The figures of /stats are the core's value type; the store only counts them.
Stats = StaffFigures


Insert = postgresql.Insert | sqlite.Insert


def _rowcount(result: Any) -> int:
    return cast(CursorResult[Any], result).rowcount


def _later(column: InstrumentedAttribute[datetime], at: datetime) -> ColumnElement[datetime]:
    """The later of the stored time and `at`: processes racing on one row must not move time backwards."""
    value = literal(at, UtcDateTime())
    return case((value > column, value), else_=column)


_PATIENT_COLUMNS = (
    PatientRow.chat_id,
    PatientRow.lang,
    PatientRow.stopped,
    PatientRow.created_at,
    PatientRow.last_seen_at,
)
_HANDOFF_COLUMNS = (HandoffRow.chat_id, HandoffRow.opened_at, HandoffRow.last_activity_at)


class Store:
    """The bot's persistent state; thread-safe, and safe to share with other processes through the database."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._dialect = engine.dialect.name

    def close(self) -> None:
        """Closes pooled connections; the store must not be used afterwards."""
        self._engine.dispose()

    def _insert(self, table: Any) -> Insert:
        # Upserts (ON CONFLICT) are dialect-specific statements; both dialects spell them the same way.
        return postgresql.insert(table) if self._dialect == "postgresql" else sqlite.insert(table)

    # Patients

    def get_patient(self, chat_id: int) -> Patient | None:
        """The patient's row, or None for a chat the bot has not seen (or that was forgotten)."""
        with self._sessions.begin() as session:
            row = session.execute(select(*_PATIENT_COLUMNS).where(PatientRow.chat_id == chat_id)).one_or_none()
        return None if row is None else Patient(*row)

    def touch_patient(self, chat_id: int, *, lang: str, at: datetime) -> Patient:
        """Registers a new patient with `lang`, or only notes that a known one was seen at `at`."""
        at = as_utc(at)
        statement = self._insert(PatientRow).values(
            chat_id=chat_id, lang=lang, stopped=False, created_at=at, last_seen_at=at
        )
        statement = statement.on_conflict_do_update(
            index_elements=[PatientRow.chat_id], set_={"last_seen_at": _later(PatientRow.last_seen_at, at)}
        )
        with self._sessions.begin() as session:
            row = session.execute(statement.returning(*_PATIENT_COLUMNS)).one()
        return Patient(*row)

    def set_language(self, chat_id: int, lang: str, at: datetime) -> None:
        """Sets the patient's language, registering the patient if new."""
        at = as_utc(at)
        statement = self._insert(PatientRow).values(
            chat_id=chat_id, lang=lang, stopped=False, created_at=at, last_seen_at=at
        )
        statement = statement.on_conflict_do_update(
            index_elements=[PatientRow.chat_id],
            set_={"lang": statement.excluded.lang, "last_seen_at": _later(PatientRow.last_seen_at, at)},
        )
        with self._sessions.begin() as session:
            session.execute(statement)

    def set_stopped(self, chat_id: int, stopped: bool, at: datetime) -> bool:
        """Pauses or resumes messages to a known patient; False if the patient is unknown."""
        at = as_utc(at)
        statement = (
            update(PatientRow)
            .where(PatientRow.chat_id == chat_id)
            .values(stopped=stopped, last_seen_at=_later(PatientRow.last_seen_at, at))
        )
        with self._sessions.begin() as session:
            return _rowcount(session.execute(statement)) > 0

    def forget_patient(self, chat_id: int) -> int:
        """Deletes every row that refers to the patient, all or nothing; returns how many rows went."""
        with self._sessions.begin() as session:
            return sum(
                _rowcount(session.execute(delete(table).where(table.c.chat_id == chat_id))) for table in PATIENT_TABLES
            )

    def count_rows_for(self, chat_id: int) -> int:
        """Rows in all tables that refer to the patient: zero after `forget_patient`."""
        with self._sessions.begin() as session:
            return sum(
                session.scalar(select(func.count()).select_from(table).where(table.c.chat_id == chat_id)) or 0
                for table in PATIENT_TABLES
            )

    # Statistics, feedback and questions for curators

    def record_event(self, chat_id: int, kind: str, at: datetime, topic: str | None = None) -> None:
        """Counts one reply of a kind ("answer", "fallback", "unsure", "triage", "greeting", ...) for `stats`."""
        with self._sessions.begin() as session:
            session.add(EventRow(chat_id=chat_id, kind=kind, topic=topic, at=as_utc(at)))

    def record_feedback(
        self, chat_id: int, topic: str, lang: str, helpful: bool, at: datetime, *, message_id: int
    ) -> None:
        """Records a vote on the answer in `message_id`; pressing again changes that vote, never adds one."""
        at = as_utc(at)
        statement = self._insert(FeedbackRow).values(
            chat_id=chat_id, message_id=message_id, topic=topic, lang=lang, helpful=helpful, at=at
        )
        statement = statement.on_conflict_do_update(
            index_elements=[FeedbackRow.chat_id, FeedbackRow.message_id],
            set_={
                "topic": statement.excluded.topic,
                "lang": statement.excluded.lang,
                "helpful": statement.excluded.helpful,
                "at": statement.excluded.at,
            },
        )
        with self._sessions.begin() as session:
            session.execute(statement)

    def keep_question(self, chat_id: int, text: str, lang: str, reason: str, at: datetime) -> None:
        """Keeps a question the content answered badly ("fallback", "unsure", "unhelpful") for curators."""
        with self._sessions.begin() as session:
            session.add(
                KeptQuestionRow(chat_id=chat_id, text=text[:TEXT_LIMIT], lang=lang, reason=reason, at=as_utc(at))
            )

    def kept_questions(self, since: datetime) -> list[KeptQuestion]:
        """Questions kept at or after `since`, oldest first."""
        statement = (
            select(KeptQuestionRow.text, KeptQuestionRow.lang, KeptQuestionRow.reason, KeptQuestionRow.at)
            .where(KeptQuestionRow.at >= as_utc(since))
            .order_by(KeptQuestionRow.at, KeptQuestionRow.id)
        )
        with self._sessions.begin() as session:
            return [KeptQuestion(row.text, row.lang, row.reason, row.at) for row in session.execute(statement)]

    def record_escalation(self, chat_id: int, level: str, at: datetime) -> None:
        """Counts a triage alert sent to staff."""
        with self._sessions.begin() as session:
            session.add(EscalationRow(chat_id=chat_id, level=str(level), at=as_utc(at)))

    def stats(self, since: datetime) -> Stats:
        """Figures for the period from `since` until now."""
        since = as_utc(since)

        def count(*where: ColumnElement[bool], table: Any) -> Any:
            return select(func.count()).select_from(table).where(*where).scalar_subquery()

        statement = select(
            count(PatientRow.last_seen_at >= since, table=PatientRow),
            count(EventRow.kind == "answer", EventRow.at >= since, table=EventRow),
            count(EventRow.kind.in_(FALLBACK_KINDS), EventRow.at >= since, table=EventRow),
            count(FeedbackRow.helpful.is_(True), FeedbackRow.at >= since, table=FeedbackRow),
            count(FeedbackRow.helpful.is_(False), FeedbackRow.at >= since, table=FeedbackRow),
            count(EscalationRow.at >= since, table=EscalationRow),
        )
        with self._sessions.begin() as session:
            row = session.execute(statement).one()
        return Stats(*(int(value) for value in row))

    def purge(self, before: datetime) -> int:
        """Retention: deletes what is older than `before`; returns how many rows went."""
        # Patients themselves stay until /forget; an open handoff stays until it is closed.
        before = as_utc(before)
        statements = (
            delete(EventRow).where(EventRow.at < before),
            delete(FeedbackRow).where(FeedbackRow.at < before),
            delete(KeptQuestionRow).where(KeptQuestionRow.at < before),
            delete(EscalationRow).where(EscalationRow.at < before),
            delete(HandoffRow).where(HandoffRow.closed_at < before),
            delete(StaffMessageRow).where(StaffMessageRow.linked_at < before),
            delete(ClaimedUpdateRow).where(ClaimedUpdateRow.claimed_at < before),
        )
        with self._sessions.begin() as session:
            return sum(_rowcount(session.execute(statement)) for statement in statements)

    # Handoff to a person

    def open_handoff(self, chat_id: int, at: datetime) -> Handoff:
        """Opens a handoff, or returns the open one (as active at `at`) if there is one already."""
        at = as_utc(at)
        statement = self._insert(HandoffRow).values(chat_id=chat_id, opened_at=at, last_activity_at=at)
        # The conflict target is the partial unique index on open handoffs.
        statement = statement.on_conflict_do_update(
            index_elements=[HandoffRow.chat_id],
            index_where=HandoffRow.closed_at.is_(None),
            set_={"last_activity_at": _later(HandoffRow.last_activity_at, at)},
        )
        with self._sessions.begin() as session:
            row = session.execute(statement.returning(*_HANDOFF_COLUMNS)).one()
        return Handoff(*row)

    def active_handoff(self, chat_id: int, now: datetime, idle: timedelta) -> Handoff | None:
        """The open handoff if its last activity is within `idle` of `now`; an idle one is closed here."""
        now = as_utc(now)
        open_ = (HandoffRow.chat_id == chat_id, HandoffRow.closed_at.is_(None))
        with self._sessions.begin() as session:
            session.execute(
                update(HandoffRow).where(*open_, HandoffRow.last_activity_at < now - idle).values(closed_at=now)
            )
            row = session.execute(select(*_HANDOFF_COLUMNS).where(*open_)).one_or_none()
        return None if row is None else Handoff(*row)

    def touch_handoff(self, chat_id: int, at: datetime) -> bool:
        """Notes activity in the open handoff; False if there is none."""
        at = as_utc(at)
        statement = (
            update(HandoffRow)
            .where(HandoffRow.chat_id == chat_id, HandoffRow.closed_at.is_(None))
            .values(last_activity_at=_later(HandoffRow.last_activity_at, at))
        )
        with self._sessions.begin() as session:
            return _rowcount(session.execute(statement)) > 0

    def close_handoff(self, chat_id: int, at: datetime) -> bool:
        """Closes the open handoff; False if there was none (another process may have closed it)."""
        statement = (
            update(HandoffRow)
            .where(HandoffRow.chat_id == chat_id, HandoffRow.closed_at.is_(None))
            .values(closed_at=as_utc(at))
        )
        with self._sessions.begin() as session:
            return _rowcount(session.execute(statement)) > 0

    def link_staff_message(
        self, staff_chat_id: int, staff_message_id: int, chat_id: int, at: datetime | None = None
    ) -> None:
        """Remembers which patient a post in the staff chat relays; links with `at` are subject to `purge`."""
        statement = self._insert(StaffMessageRow).values(
            staff_chat_id=staff_chat_id,
            staff_message_id=staff_message_id,
            chat_id=chat_id,
            linked_at=None if at is None else as_utc(at),
        )
        statement = statement.on_conflict_do_update(
            index_elements=[StaffMessageRow.staff_chat_id, StaffMessageRow.staff_message_id],
            set_={"chat_id": statement.excluded.chat_id, "linked_at": statement.excluded.linked_at},
        )
        with self._sessions.begin() as session:
            session.execute(statement)

    def patient_for_staff_message(self, staff_chat_id: int, staff_message_id: int) -> int | None:
        """The patient a staff reply is meant for, or None if the post relayed no patient."""
        statement = select(StaffMessageRow.chat_id).where(
            StaffMessageRow.staff_chat_id == staff_chat_id, StaffMessageRow.staff_message_id == staff_message_id
        )
        with self._sessions.begin() as session:
            return session.scalar(statement)

    # Update de-duplication and settings

    def claim_update(self, update_id: int, at: datetime) -> bool:
        """True only for the first claim of an update, whichever process or thread makes it."""
        try:
            with self._sessions.begin() as session:
                session.execute(insert(ClaimedUpdateRow).values(update_id=update_id, claimed_at=as_utc(at)))
        except IntegrityError:
            return False
        return True

    def get_setting(self, key: str) -> str | None:
        """A stored setting (such as the staff group's current chat id), or None."""
        with self._sessions.begin() as session:
            return session.scalar(select(SettingRow.value).where(SettingRow.key == key))

    def set_setting(self, key: str, value: str) -> None:
        """Stores a setting, replacing any previous value."""
        statement = self._insert(SettingRow).values(key=key, value=value)
        statement = statement.on_conflict_do_update(
            index_elements=[SettingRow.key], set_={"value": statement.excluded.value}
        )
        with self._sessions.begin() as session:
            session.execute(statement)


def open_store(url: str) -> Store:
    """Connects to the database at `url` and brings its schema up to date."""
    engine = create_store_engine(url)
    try:
        migrate(engine)
    except BaseException:
        engine.dispose()
        raise
    return Store(engine)
