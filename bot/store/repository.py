"""The repository: every read and write the bot makes.

Several bot processes may share the database, so anything that must happen once (a new patient, an
open handoff, a stored update, a queued message) is a single atomic statement backed by a database
constraint, never a check followed by an insert. A patient's turn — the state the dialogue changed,
the messages it queued and the update it answered — is committed in one transaction (`commit_turn`),
so a crash leaves either all of it or none.

Every method is synchronous and short; the bot calls them from worker threads, never on its event loop.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Connection,
    CursorResult,
    Engine,
    Float,
    Integer,
    Table,
    and_,
    bindparam,
    case,
    delete,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import InstrumentedAttribute, Session, aliased, sessionmaker
from sqlalchemy.sql import Executable

from bot.core.events import (
    AnswerCheckIn,
    CloseHandoff,
    CreateEnrolment,
    DeclineConsent,
    Effect,
    Forget,
    GiveConsent,
    KeepQuestion,
    OpenCheckIn,
    OpenHandoff,
    PatientState,
    Pending,
    Recent,
    RecordEscalation,
    RecordEvent,
    RecordFeedback,
    Remember,
    Reschedule,
    SetLanguage,
    SetPending,
    SetStopped,
    SetZone,
)
from bot.core.recovery import AGAIN, Enrolment, Reminder, Upcoming
from bot.core.safety.model import Level
from bot.core.staff import StaffFigures
from bot.store.schema import READ_ONLY, create_store_engine, migrate
from bot.store.tables import (
    PATIENT_TABLES,
    TEXT_LIMIT,
    Base,
    ClaimedUpdateRow,
    EnrolmentRow,
    EscalationRow,
    EventRow,
    FeedbackRow,
    HandoffRow,
    InboxRow,
    InviteRow,
    KeptQuestionRow,
    OutboxRow,
    PatientRow,
    PatientZoneRow,
    PendingQuestionRow,
    RecentMessageRow,
    ReminderRow,
    SendScopeRow,
    SettingRow,
    StaffMessageRow,
    UtcDateTime,
    as_utc,
)

FALLBACK_KINDS = ("fallback", "unsure")
RECENT_KEPT = 3  # a patient's recent messages kept for triage's context
RECENT_MAX_AGE = timedelta(hours=1)
UPCOMING_SHOWN = 20  # reminders /plan lists
OPEN_CHECKIN = timedelta(hours=24)
BOT_SCOPE = 0  # the send scope of the whole bot
LEADER_LOCK = 0x61667470  # "aftp": any constant shared by every process of one bot


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


@dataclass(frozen=True, slots=True)
class StoredUpdate:
    """An update from the inbox, claimed by this process until `lease_until`."""

    id: int
    update_id: int
    chat_id: int
    payload: dict[str, Any]
    attempts: int


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message to queue: `key` makes it idempotent; `payload` is what the sender needs (method, text...)."""

    key: str
    chat_id: int
    priority: int
    kind: str
    payload: dict[str, Any]
    not_before: datetime
    patient: int | None = None


@dataclass(frozen=True, slots=True)
class Delivered:
    """A message Telegram accepted, to record: its Telegram id, the chat's next free slot (`pace`: chat,
    epoch), the staff-post link (`link`: staff chat, message, patient) and messages that follow from it."""

    row_id: int
    message_id: int | None
    pace: tuple[int, float] | None = None
    link: tuple[int, int, int] | None = None
    follow_up: Sequence[Outgoing] = ()
    erase: bool = False


@dataclass(frozen=True, slots=True)
class Queued:
    """A message claimed from the outbox for sending."""

    id: int
    key: str
    chat_id: int
    priority: int
    kind: str
    payload: dict[str, Any]
    attempts: int
    uncertain: bool
    patient: int | None
    created_at: datetime
    next_free: float  # the chat's pacing slot when it was claimed (epoch seconds; 0 = never paced)


@dataclass(frozen=True, slots=True)
class DueReminder:
    """A reminder whose time has come, with what is needed to write it."""

    key: str
    enrolment: str
    chat_id: int
    step: str
    treatment: str
    zone: str
    lang: str
    checkin: bool
    expires_at: datetime


class InviteTaken(Exception):
    """Another Telegram user redeemed this invite first (a race between two processes)."""


@dataclass(frozen=True, slots=True)
class OutboxFigures:
    pending: int
    failed: int
    oldest_pending: datetime | None


# The figures of /stats are the core's value type; the store only counts them.
Stats = StaffFigures
Insert = postgresql.Insert | sqlite.Insert


def _rowcount(result: Any) -> int:
    return cast(CursorResult[Any], result).rowcount


def _table(row: type[Base]) -> Table:
    """A mapped class's table, for plain statements (no ORM unit of work)."""
    return cast(Table, row.__table__)


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
        # Transactions that only read: on SQLite they do not queue for the write lock behind the turns.
        self._reads = sessionmaker(engine.execution_options(**{READ_ONLY: True}), expire_on_commit=False)
        self._dialect = engine.dialect.name
        self._leader: Connection | None = None

    @property
    def dialect(self) -> str:
        return self._dialect

    @property
    def engine(self) -> Engine:
        return self._engine

    def close(self) -> None:
        """Closes pooled connections; the store must not be used afterwards."""
        if self._leader is not None:
            self._leader.close()
            self._leader = None
        self._engine.dispose()

    def lead(self) -> bool:
        """True while this process is the one that talks to Telegram's getUpdates (one per bot).

        On PostgreSQL a session-level advisory lock held on a connection of its own: when the process
        dies, the server ends the session and another process takes over. SQLite has one process.
        """
        if self._dialect != "postgresql":
            return True
        try:
            if self._leader is None:
                self._leader = self._engine.connect()
            held = self._leader.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": LEADER_LOCK}).scalar()
            self._leader.commit()
            return bool(held)
        except Exception:
            if self._leader is not None:
                self._leader.invalidate()
                self._leader = None
            raise

    def _insert(self, table: Any) -> Insert:
        # Upserts (ON CONFLICT) are dialect-specific statements; both dialects spell them the same way.
        return postgresql.insert(table) if self._dialect == "postgresql" else sqlite.insert(table)

    def ping(self) -> None:
        """A write that touches nothing: raises when the database cannot be written (locked, read-only, full)."""
        with self._sessions.begin() as session:
            session.execute(update(SettingRow).where(SettingRow.key == "").values(value=""))

    # -- patients ------------------------------------------------------------------------------
    def get_patient(self, chat_id: int) -> Patient | None:
        """The patient's row, or None for a chat the bot has not seen (or that was forgotten)."""
        with self._sessions.begin() as session:
            row = session.execute(select(*_PATIENT_COLUMNS).where(PatientRow.chat_id == chat_id)).one_or_none()
        return None if row is None else Patient(*row)

    def touch_patient(self, chat_id: int, *, lang: str, at: datetime) -> Patient:
        """Registers a new patient with `lang`, or only notes that a known one was seen at `at`."""
        with self._sessions.begin() as session:
            return self._touch(session, chat_id, lang, at)

    def _touch(self, session: Session, chat_id: int, lang: str, at: datetime) -> Patient:
        at = as_utc(at)
        statement = self._insert(PatientRow).values(
            chat_id=chat_id, lang=lang, stopped=False, created_at=at, last_seen_at=at
        )
        statement = statement.on_conflict_do_update(
            index_elements=[PatientRow.chat_id], set_={"last_seen_at": _later(PatientRow.last_seen_at, at)}
        )
        return Patient(*session.execute(statement.returning(*_PATIENT_COLUMNS)).one())

    def set_language(self, chat_id: int, lang: str, at: datetime) -> None:
        """Sets the patient's language, registering the patient if new."""
        with self._sessions.begin() as session:
            self._set_language(session, chat_id, lang, at)

    def _set_language(self, session: Session, chat_id: int, lang: str, at: datetime) -> None:
        at = as_utc(at)
        statement = self._insert(PatientRow).values(
            chat_id=chat_id, lang=lang, stopped=False, created_at=at, last_seen_at=at
        )
        statement = statement.on_conflict_do_update(
            index_elements=[PatientRow.chat_id],
            set_={"lang": statement.excluded.lang, "last_seen_at": _later(PatientRow.last_seen_at, at)},
        )
        session.execute(statement)

    def set_stopped(self, chat_id: int, stopped: bool, at: datetime) -> bool:
        """Pauses or resumes messages to a known patient; False if the patient is unknown."""
        with self._sessions.begin() as session:
            return self._set_stopped(session, chat_id, stopped, at)

    @staticmethod
    def _set_stopped(session: Session, chat_id: int, stopped: bool, at: datetime) -> bool:
        statement = (
            update(PatientRow)
            .where(PatientRow.chat_id == chat_id)
            .values(stopped=stopped, last_seen_at=_later(PatientRow.last_seen_at, as_utc(at)))
        )
        return _rowcount(session.execute(statement)) > 0

    def forget_patient(self, chat_id: int) -> int:
        """Deletes every row that refers to the patient, all or nothing; returns how many rows went."""
        with self._sessions.begin() as session:
            return self._forget(session, chat_id)

    @staticmethod
    def _forget(session: Session, chat_id: int) -> int:
        deleted = sum(
            _rowcount(session.execute(delete(table).where(table.c.chat_id == chat_id))) for table in PATIENT_TABLES
        )
        # Messages to or about the patient, sent or not: their texts are the patient's data too.
        deleted += _rowcount(
            session.execute(delete(OutboxRow).where(or_(OutboxRow.chat_id == chat_id, OutboxRow.patient == chat_id)))
        )
        return deleted

    def count_rows_for(self, chat_id: int) -> int:
        """Rows in all tables that refer to the patient: zero after `forget_patient`."""
        with self._sessions.begin() as session:
            total = sum(
                session.scalar(select(func.count()).select_from(table).where(table.c.chat_id == chat_id)) or 0
                for table in PATIENT_TABLES
            )
            total += (
                session.scalar(
                    select(func.count())
                    .select_from(OutboxRow)
                    .where(or_(OutboxRow.chat_id == chat_id, OutboxRow.patient == chat_id))
                )
                or 0
            )
        return total

    def patient_state(self, chat_id: int, *, lang: str, now: datetime, idle: timedelta) -> PatientState:
        """What the dialogue needs to know about a patient chat; `lang` is used for a patient not seen yet.

        It only reads (every message asks for it, so it must not queue for the write lock); a handoff found
        idle for longer than `idle` is closed in a transaction of its own.
        """
        now = as_utc(now)
        q = self._state_statements
        chat = {"chat": chat_id}
        with self._reads.begin() as session:
            db = session.connection()  # plain statements: the ORM's execution layer would double their cost
            patient = db.execute(q["patient"], chat).one_or_none()
            handoff = db.execute(q["handoff"], chat).one_or_none()
            recent = db.execute(q["recent"], {"chat": chat_id, "since": now - RECENT_MAX_AGE}).all()
            pending = db.execute(q["pending"], chat).one_or_none()
            enrolments = db.execute(q["enrolments"], chat).all()
            upcoming = db.execute(q["upcoming"], chat).all()
            checkin = db.execute(q["checkin"], {"chat": chat_id, "since": now - OPEN_CHECKIN}).one_or_none()
            zone = db.scalar(q["zone"], chat)
        in_handoff = handoff is not None
        if handoff is not None and as_utc(handoff.last_activity_at) < now - idle:
            in_handoff = self.active_handoff(chat_id, now, idle) is not None  # closes it (unless active just now)
        known = patient is not None
        return PatientState(
            chat_id=chat_id,
            lang=patient.lang if patient is not None else lang,
            known=known,
            stopped=bool(patient.stopped) if patient is not None else False,
            in_handoff=in_handoff,
            recent=tuple(Recent(text, at) for text, at in recent),
            pending=Pending(Level(pending.level), pending.text, pending.at) if pending is not None else None,
            zone=zone,
            enrolments=tuple(
                Enrolment(e.id, e.treatment, e.treated_at, e.zone, e.consent_at is not None) for e in enrolments
            ),
            upcoming=tuple(Upcoming(u.enrolment_id, u.step, u.due_at) for u in upcoming),
            open_checkin=(
                OpenCheckIn(checkin.enrolment_id, checkin.step.removesuffix(f":{AGAIN}"), checkin.queued_at)
                if checkin is not None and checkin.queued_at is not None
                else None
            ),
        )

    @functools.cached_property
    def _state_statements(self) -> dict[str, Executable]:
        """`patient_state`'s statements, built once: building them cost more than running them."""
        chat: BindParameter[int] = bindparam("chat")
        since = bindparam("since", type_=UtcDateTime())
        return {
            "patient": select(*_PATIENT_COLUMNS).where(PatientRow.chat_id == chat),
            "handoff": select(*_HANDOFF_COLUMNS).where(HandoffRow.chat_id == chat, HandoffRow.closed_at.is_(None)),
            "recent": select(RecentMessageRow.text, RecentMessageRow.at)
            .where(RecentMessageRow.chat_id == chat, RecentMessageRow.at >= since)
            .order_by(RecentMessageRow.at, RecentMessageRow.id),
            "pending": select(PendingQuestionRow.level, PendingQuestionRow.text, PendingQuestionRow.at).where(
                PendingQuestionRow.chat_id == chat
            ),
            "enrolments": select(
                EnrolmentRow.id,
                EnrolmentRow.treatment,
                EnrolmentRow.treated_at,
                EnrolmentRow.zone,
                EnrolmentRow.consent_at,
            )
            .where(EnrolmentRow.chat_id == chat, EnrolmentRow.declined_at.is_(None))
            .order_by(EnrolmentRow.created_at),
            "upcoming": select(ReminderRow.enrolment_id, ReminderRow.step, ReminderRow.due_at)
            .where(ReminderRow.chat_id == chat, ReminderRow.state == "scheduled")
            .order_by(ReminderRow.due_at)
            .limit(UPCOMING_SHOWN),
            "checkin": select(ReminderRow.enrolment_id, ReminderRow.step, ReminderRow.queued_at)
            .where(
                ReminderRow.chat_id == chat,
                ReminderRow.checkin.is_(True),
                ReminderRow.state == "queued",
                ReminderRow.answered_at.is_(None),
                ReminderRow.queued_at >= since,
            )
            .order_by(ReminderRow.queued_at.desc())
            .limit(1),
            "zone": select(PatientZoneRow.zone).where(PatientZoneRow.chat_id == chat),
        }

    def invite_owner(self, nonce: str) -> int | None:
        """The Telegram user who redeemed an invite, or None if nobody has yet."""
        with self._sessions.begin() as session:
            return session.scalar(select(InviteRow.user_id).where(InviteRow.nonce == nonce))

    # -- a turn, in one transaction ------------------------------------------------------------
    def commit_turn(
        self,
        *,
        chat_id: int,
        lang: str,
        effects: Sequence[Effect],
        outgoing: Sequence[Outgoing],
        at: datetime,
        update_row: int | None = None,
        register: bool = True,
    ) -> int:
        """Apply a turn's effects, queue its messages and mark its update handled, all or nothing.

        Returns how many messages were newly queued (a re-handled update queues none twice).
        """
        at = as_utc(at)
        with self._sessions.begin() as session:
            forgotten = any(isinstance(e, Forget) for e in effects)
            turn = self._turn_statements
            if register and not forgotten and chat_id > 0:
                new_lang = next((e.lang for e in effects if isinstance(e, SetLanguage)), lang)
                session.execute(turn["touch"], {"chat": chat_id, "lang": new_lang, "at": at})
            for effect in effects:
                self._apply(session, chat_id, effect, at)
            if update_row is not None:
                session.execute(turn["finish"], {"row": update_row, "at": at})
            return self._enqueue(session, outgoing, at)

    @functools.cached_property
    def _turn_statements(self) -> dict[str, Executable]:
        """The statements of an ordinary turn, built once (building them cost more than running them); plain
        table statements, without the ORM's unit of work."""
        chat: BindParameter[int] = bindparam("chat")
        at = bindparam("at", type_=UtcDateTime())
        touch = self._insert(_table(PatientRow)).values(
            chat_id=chat, lang=bindparam("lang"), stopped=False, created_at=at, last_seen_at=at
        )
        seen = _table(PatientRow).c.last_seen_at
        touch = touch.on_conflict_do_update(
            index_elements=[PatientRow.chat_id], set_={"last_seen_at": case((at > seen, at), else_=seen)}
        )
        recent = _table(RecentMessageRow)
        keep = (
            select(recent.c.id)
            .where(recent.c.chat_id == chat)
            .order_by(recent.c.at.desc(), recent.c.id.desc())
            .limit(RECENT_KEPT)
        )
        return {
            "touch": touch,
            "finish": update(_table(InboxRow))
            .where(_table(InboxRow).c.id == bindparam("row"))
            .values(done=True, done_at=at, payload=None, lease_owner=None, lease_until=None),
            "event": insert(_table(EventRow)).values(
                chat_id=chat, kind=bindparam("kind"), topic=bindparam("topic"), at=at
            ),
            "kept": insert(_table(KeptQuestionRow)).values(
                chat_id=chat, text=bindparam("text"), lang=bindparam("lang"), reason=bindparam("reason"), at=at
            ),
            "escalation": insert(_table(EscalationRow)).values(chat_id=chat, level=bindparam("level"), at=at),
            "remember": insert(recent).values(chat_id=chat, text=bindparam("text"), at=at),
            "trim": delete(recent).where(recent.c.chat_id == chat, recent.c.id.not_in(keep.scalar_subquery())),
            "enqueue": self._insert(_table(OutboxRow))
            .on_conflict_do_nothing(index_elements=[OutboxRow.key])
            .returning(_table(OutboxRow).c.id),
        }

    def _apply(self, session: Session, chat_id: int, effect: Effect, at: datetime) -> None:
        match effect:
            case SetLanguage(lang=lang):
                self._set_language(session, chat_id, lang, at)
            case SetStopped(stopped=stopped):
                self._set_stopped(session, chat_id, stopped, at)
            case RecordEvent(kind=kind, topic=topic):
                session.execute(
                    self._turn_statements["event"], {"chat": chat_id, "kind": kind, "topic": topic, "at": at}
                )
            case RecordFeedback(topic=topic, helpful=helpful):
                self._feedback(session, chat_id, topic, helpful, at)
            case KeepQuestion(text=text, lang=lang, reason=reason):
                kept = {"chat": chat_id, "text": text[:TEXT_LIMIT], "lang": lang, "reason": reason, "at": at}
                session.execute(self._turn_statements["kept"], kept)
            case RecordEscalation(level=level, kind=kind):
                label = level.value if kind == "alert" else f"{level.value}:{kind}"
                session.execute(self._turn_statements["escalation"], {"chat": chat_id, "level": label, "at": at})
            case OpenHandoff(patient=patient):
                self._open_handoff(session, patient, at)
            case CloseHandoff(patient=patient):
                self._close_handoff(session, patient, at)
            case Remember(text=text):
                session.execute(
                    self._turn_statements["remember"], {"chat": chat_id, "text": text[:TEXT_LIMIT], "at": at}
                )
                session.execute(self._turn_statements["trim"], {"chat": chat_id})
            case SetPending(pending=pending):
                session.execute(delete(PendingQuestionRow).where(PendingQuestionRow.chat_id == chat_id))
                if pending is not None:
                    session.add(
                        PendingQuestionRow(
                            chat_id=chat_id,
                            level=pending.level.value,
                            text=pending.text[:TEXT_LIMIT],
                            at=as_utc(pending.at),
                        )
                    )
            case Forget():
                self._forget(session, chat_id)
            case CreateEnrolment():
                self._create_enrolment(session, chat_id, effect, at)
            case GiveConsent(enrolment=enrolment, reminders=dated):
                session.execute(update(EnrolmentRow).where(EnrolmentRow.id == enrolment).values(consent_at=at))
                self._schedule(session, chat_id, dated)
            case DeclineConsent(enrolment=enrolment):
                session.execute(update(EnrolmentRow).where(EnrolmentRow.id == enrolment).values(declined_at=at))
            case Reschedule(enrolment=enrolment, zone=zone, reminders=dated):
                session.execute(update(EnrolmentRow).where(EnrolmentRow.id == enrolment).values(zone=zone))
                session.execute(
                    delete(ReminderRow).where(ReminderRow.enrolment_id == enrolment, ReminderRow.state == "scheduled")
                )
                self._schedule(session, chat_id, dated)
            case SetZone(zone=zone):
                statement = self._insert(PatientZoneRow).values(chat_id=chat_id, zone=zone)
                session.execute(
                    statement.on_conflict_do_update(index_elements=[PatientZoneRow.chat_id], set_={"zone": zone})
                )
            case AnswerCheckIn(enrolment=enrolment, step=step):
                key = f"{enrolment}:{step}"
                session.execute(
                    update(ReminderRow)
                    .where(ReminderRow.key.in_([key, f"{key}:{AGAIN}"]), ReminderRow.answered_at.is_(None))
                    .values(answered_at=at)
                )
                session.execute(
                    update(ReminderRow)
                    .where(ReminderRow.key == f"{key}:{AGAIN}", ReminderRow.state == "scheduled")
                    .values(state="cancelled")
                )
            case _:
                pass  # messages to other chats are queued by the caller as `Outgoing`

    def _create_enrolment(self, session: Session, chat_id: int, effect: CreateEnrolment, at: datetime) -> None:
        e = effect.enrolment
        session.execute(
            self._insert(EnrolmentRow)
            .values(
                id=e.id,
                chat_id=chat_id,
                treatment=e.treatment,
                treated_at=as_utc(e.treated_at),
                zone=e.zone,
                source=effect.source,
                ref=effect.ref[:16],
                created_at=at,
            )
            .on_conflict_do_update(index_elements=[EnrolmentRow.id], set_={"declined_at": None})
        )
        if effect.invite is not None and effect.user_id is not None:
            session.execute(
                self._insert(InviteRow)
                .values(nonce=effect.invite, user_id=effect.user_id, chat_id=chat_id, redeemed_at=at)
                .on_conflict_do_nothing(index_elements=[InviteRow.nonce])
            )
            owner = session.scalar(select(InviteRow.user_id).where(InviteRow.nonce == effect.invite))
            if owner != effect.user_id:
                raise InviteTaken(effect.invite)

    def _schedule(self, session: Session, chat_id: int, dated: Sequence[Reminder]) -> None:
        """Reminder rows; a key that exists already (re-enrolment, a second process) is left as it is."""
        if not dated:
            return
        rows = [
            {
                "key": r.key,
                "enrolment_id": r.enrolment,
                "chat_id": chat_id,
                "step": r.step,
                "checkin": r.checkin,
                "due_at": as_utc(r.due),
                "expires_at": as_utc(r.expires),
                "state": "scheduled",
            }
            for r in dated
        ]
        session.execute(self._insert(ReminderRow).values(rows).on_conflict_do_nothing(index_elements=[ReminderRow.key]))

    # -- reminders -----------------------------------------------------------------------------
    def dispatch_reminders(
        self,
        now: datetime,
        limit: int,
        render: Callable[[DueReminder], tuple[list[Outgoing], Reminder | None] | None],
    ) -> tuple[int, int]:
        """Hands due reminders to the outbox, in one transaction: (queued, missed).

        A reminder later than its limit is marked missed and not sent; one of a stopped patient waits
        (it may still go out when they write again, if it is not too late by then). `render` writes the
        messages (and the check-in's second asking, if any): it is pure and quick.
        """
        now = as_utc(now)
        candidates = (
            select(
                ReminderRow.key,
                ReminderRow.enrolment_id,
                ReminderRow.chat_id,
                ReminderRow.step,
                EnrolmentRow.treatment,
                EnrolmentRow.zone,
                PatientRow.lang,
                ReminderRow.checkin,
                ReminderRow.expires_at,
            )
            .join(EnrolmentRow, EnrolmentRow.id == ReminderRow.enrolment_id)
            .join(PatientRow, PatientRow.chat_id == ReminderRow.chat_id)
            .where(
                ReminderRow.state == "scheduled",
                ReminderRow.due_at <= now,
                PatientRow.stopped.is_(False),
                EnrolmentRow.consent_at.is_not(None),
            )
            .order_by(ReminderRow.due_at)
            .limit(limit)
        )
        if self._dialect == "postgresql":
            candidates = candidates.with_for_update(of=ReminderRow, skip_locked=True)
        with self._sessions.begin() as session:
            missed: list[str] = []
            queued: list[str] = []
            messages: list[Outgoing] = []
            for row in session.execute(candidates).all():
                due = DueReminder(*row)
                rendered = None if now > as_utc(due.expires_at) else render(due)
                if rendered is None:
                    missed.append(due.key)
                    continue
                outgoing, again = rendered
                queued.append(due.key)
                messages.extend(outgoing)
                if again is not None:
                    self._schedule(session, due.chat_id, [again])
            for keys, values in ((missed, {"state": "missed"}), (queued, {"state": "queued", "queued_at": now})):
                for start in range(0, len(keys), 500):  # well under SQLite's limit of bound parameters
                    chunk = keys[start : start + 500]
                    session.execute(update(ReminderRow).where(ReminderRow.key.in_(chunk)).values(**values))
            for start in range(0, len(messages), 200):
                self._enqueue(session, messages[start : start + 200], now)
        return len(queued), len(missed)

    def next_reminder_due(self) -> datetime | None:
        with self._sessions.begin() as session:
            return session.scalar(select(func.min(ReminderRow.due_at)).where(ReminderRow.state == "scheduled"))

    def reminders_of(self, chat_id: int) -> list[tuple[str, str, datetime]]:
        """(key, state, due) of a patient's reminders, for audits and tests."""
        with self._sessions.begin() as session:
            return [
                (r.key, r.state, r.due_at)
                for r in session.execute(
                    select(ReminderRow.key, ReminderRow.state, ReminderRow.due_at)
                    .where(ReminderRow.chat_id == chat_id)
                    .order_by(ReminderRow.due_at, ReminderRow.key)
                )
            ]

    def _feedback(self, session: Session, chat_id: int, topic: str, helpful: bool, at: datetime) -> None:
        # One vote per answer and patient: pressing again changes the vote, never adds one.
        statement = self._insert(FeedbackRow).values(
            chat_id=chat_id, message_id=_topic_slot(topic), topic=topic, lang="", helpful=helpful, at=at
        )
        statement = statement.on_conflict_do_update(
            index_elements=[FeedbackRow.chat_id, FeedbackRow.message_id],
            set_={"helpful": statement.excluded.helpful, "at": statement.excluded.at},
        )
        session.execute(statement)

    # -- statistics and questions for curators ---------------------------------------------------
    def record_event(self, chat_id: int, kind: str, at: datetime, topic: str | None = None) -> None:
        with self._sessions.begin() as session:
            session.add(EventRow(chat_id=chat_id, kind=kind, topic=topic, at=as_utc(at)))

    def keep_question(self, chat_id: int, text: str, lang: str, reason: str, at: datetime) -> None:
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

    def escalations(self, chat_id: int) -> list[str]:
        """The escalation levels recorded for a patient, oldest first (for audits and tests)."""
        with self._sessions.begin() as session:
            return list(
                session.scalars(
                    select(EscalationRow.level).where(EscalationRow.chat_id == chat_id).order_by(EscalationRow.id)
                )
            )

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
            count(OutboxRow.state == "failed", OutboxRow.created_at >= since, table=OutboxRow),
        )
        with self._sessions.begin() as session:
            row = session.execute(statement).one()
        return Stats(*(int(value) for value in row))

    def purge(self, before: datetime, *, handled_before: datetime | None = None) -> int:
        """Retention: deletes what is older than `before`; returns how many rows went.

        Handled updates and sent messages are kept only briefly (`handled_before`): long enough to
        recognise a redelivered update, not to keep patients' words.
        """
        before = as_utc(before)
        handled = as_utc(handled_before) if handled_before is not None else before
        statements = (
            delete(EventRow).where(EventRow.at < before),
            delete(FeedbackRow).where(FeedbackRow.at < before),
            delete(KeptQuestionRow).where(KeptQuestionRow.at < before),
            delete(EscalationRow).where(EscalationRow.at < before),
            delete(HandoffRow).where(HandoffRow.closed_at < before),
            delete(StaffMessageRow).where(StaffMessageRow.linked_at < before),
            delete(ClaimedUpdateRow).where(ClaimedUpdateRow.claimed_at < before),
            delete(InboxRow).where(InboxRow.done.is_(True), InboxRow.done_at < handled),
            delete(OutboxRow).where(OutboxRow.state != "pending", OutboxRow.created_at < handled),
            delete(RecentMessageRow).where(RecentMessageRow.at < handled),
            # A confirmation question nobody answered for days is stale; pacing state long past only names a chat.
            delete(PendingQuestionRow).where(PendingQuestionRow.at < handled),
            delete(SendScopeRow).where(
                SendScopeRow.chat_id != 0,
                SendScopeRow.next_free < handled.timestamp(),
                SendScopeRow.hold_until < handled.timestamp(),
            ),
        )
        with self._sessions.begin() as session:
            return sum(_rowcount(session.execute(statement)) for statement in statements)

    # -- handoff to a person ---------------------------------------------------------------------
    def open_handoff(self, chat_id: int, at: datetime) -> Handoff:
        """Opens a handoff, or returns the open one (as active at `at`) if there is one already."""
        with self._sessions.begin() as session:
            return self._open_handoff(session, chat_id, at)

    def _open_handoff(self, session: Session, chat_id: int, at: datetime) -> Handoff:
        at = as_utc(at)
        statement = self._insert(HandoffRow).values(chat_id=chat_id, opened_at=at, last_activity_at=at)
        # The conflict target is the partial unique index on open handoffs.
        statement = statement.on_conflict_do_update(
            index_elements=[HandoffRow.chat_id],
            index_where=HandoffRow.closed_at.is_(None),
            set_={"last_activity_at": _later(HandoffRow.last_activity_at, at)},
        )
        return Handoff(*session.execute(statement.returning(*_HANDOFF_COLUMNS)).one())

    def active_handoff(self, chat_id: int, now: datetime, idle: timedelta) -> Handoff | None:
        """The open handoff if its last activity is within `idle` of `now`; an idle one is closed here."""
        with self._sessions.begin() as session:
            return self._active_handoff(session, chat_id, as_utc(now), idle)

    @staticmethod
    def _active_handoff(session: Session, chat_id: int, now: datetime, idle: timedelta) -> Handoff | None:
        open_ = (HandoffRow.chat_id == chat_id, HandoffRow.closed_at.is_(None))
        session.execute(
            update(HandoffRow).where(*open_, HandoffRow.last_activity_at < now - idle).values(closed_at=now)
        )
        row = session.execute(select(*_HANDOFF_COLUMNS).where(*open_)).one_or_none()
        return None if row is None else Handoff(*row)

    def touch_handoff(self, chat_id: int, at: datetime) -> bool:
        """Notes activity in the open handoff; False if there is none."""
        statement = (
            update(HandoffRow)
            .where(HandoffRow.chat_id == chat_id, HandoffRow.closed_at.is_(None))
            .values(last_activity_at=_later(HandoffRow.last_activity_at, as_utc(at)))
        )
        with self._sessions.begin() as session:
            return _rowcount(session.execute(statement)) > 0

    def close_handoff(self, chat_id: int, at: datetime) -> bool:
        """Closes the open handoff; False if there was none (another process may have closed it)."""
        with self._sessions.begin() as session:
            return self._close_handoff(session, chat_id, at)

    @staticmethod
    def _close_handoff(session: Session, chat_id: int, at: datetime) -> bool:
        statement = (
            update(HandoffRow)
            .where(HandoffRow.chat_id == chat_id, HandoffRow.closed_at.is_(None))
            .values(closed_at=as_utc(at))
        )
        return _rowcount(session.execute(statement)) > 0

    def link_staff_message(
        self, staff_chat_id: int, staff_message_id: int, chat_id: int, at: datetime | None = None
    ) -> None:
        """Remembers which patient a post in the staff chat is about, so a staff reply to it finds the patient."""
        with self._sessions.begin() as session:
            self._link(session, staff_chat_id, staff_message_id, chat_id, at)

    def _link(self, session: Session, staff_chat_id: int, message_id: int, chat_id: int, at: datetime | None) -> None:
        statement = self._insert(StaffMessageRow).values(
            staff_chat_id=staff_chat_id,
            staff_message_id=message_id,
            chat_id=chat_id,
            linked_at=None if at is None else as_utc(at),
        )
        statement = statement.on_conflict_do_update(
            index_elements=[StaffMessageRow.staff_chat_id, StaffMessageRow.staff_message_id],
            set_={"chat_id": statement.excluded.chat_id, "linked_at": statement.excluded.linked_at},
        )
        session.execute(statement)

    def patient_for_staff_message(self, staff_chat_id: int, staff_message_id: int) -> int | None:
        """The patient a staff reply is meant for, or None if the post is about no patient."""
        statement = select(StaffMessageRow.chat_id).where(
            StaffMessageRow.staff_chat_id == staff_chat_id, StaffMessageRow.staff_message_id == staff_message_id
        )
        with self._sessions.begin() as session:
            return session.scalar(statement)

    # -- settings ------------------------------------------------------------------------------
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

    # -- the inbox -----------------------------------------------------------------------------
    def store_updates(self, updates: Iterable[tuple[int, int, str]], at: datetime) -> int:
        """Stores (update_id, chat_id, JSON) rows, ignoring any already stored; returns how many were new."""
        rows = [
            {"update_id": u, "chat_id": c, "payload": p, "received_at": as_utc(at), "done": False, "attempts": 0}
            for u, c, p in updates
        ]
        if not rows:
            return 0
        statement = (
            self._insert(InboxRow)
            .values(rows)
            .on_conflict_do_nothing(index_elements=[InboxRow.update_id])
            .returning(InboxRow.id)
        )
        with self._sessions.begin() as session:
            return len(session.execute(statement).all())  # rowcount is not reliable for multi-row inserts

    def release_leases(self) -> int:
        """At start-up of the only process (SQLite): what a killed predecessor had claimed is free again."""
        with self._sessions.begin() as session:
            freed = _rowcount(
                session.execute(
                    update(InboxRow)
                    .where(InboxRow.done.is_(False), InboxRow.lease_until.is_not(None))
                    .values(lease_owner=None, lease_until=None)
                )
            )
            freed += _rowcount(
                session.execute(
                    update(OutboxRow)
                    .where(OutboxRow.state == "pending", OutboxRow.lease_until.is_not(None))
                    .values(lease_owner=None, lease_until=None)
                )
            )
        return freed

    def last_update_id(self) -> int | None:
        with self._sessions.begin() as session:
            return session.scalar(select(func.max(InboxRow.update_id)))

    def claim_updates(self, owner: str, now: datetime, lease: timedelta, limit: int) -> list[StoredUpdate]:
        """The oldest unhandled update of up to `limit` chats, leased to `owner`: one chat's updates in order,
        and never two of them at once, whichever process asks."""
        now = as_utc(now)
        other = aliased(InboxRow)
        earlier_open = exists().where(other.chat_id == InboxRow.chat_id, other.done.is_(False), other.id < InboxRow.id)
        candidates = (
            select(InboxRow.id)
            .where(
                InboxRow.done.is_(False),
                or_(InboxRow.lease_until.is_(None), InboxRow.lease_until < now),
                or_(InboxRow.not_before.is_(None), InboxRow.not_before <= now),
                ~earlier_open,
            )
            .order_by(InboxRow.id)
            .limit(limit)
        )
        if self._dialect == "postgresql":
            candidates = candidates.with_for_update(skip_locked=True)
        with self._sessions.begin() as session:
            ids = list(session.scalars(candidates))
            if not ids:
                return []
            session.execute(
                update(InboxRow)
                .where(InboxRow.id.in_(ids))
                .values(lease_owner=owner, lease_until=now + lease, attempts=InboxRow.attempts + 1)
            )
            rows = session.execute(
                select(InboxRow.id, InboxRow.update_id, InboxRow.chat_id, InboxRow.payload, InboxRow.attempts)
                .where(InboxRow.id.in_(ids))
                .order_by(InboxRow.id)
            ).all()
        return [StoredUpdate(r.id, r.update_id, r.chat_id, json.loads(r.payload or "{}"), r.attempts) for r in rows]

    def finish_update(self, row_id: int, at: datetime) -> None:
        """Marks an update handled that needed no turn (an update the bot ignores)."""
        with self._sessions.begin() as session:
            self._finish_update(session, row_id, as_utc(at))

    @staticmethod
    def _finish_update(session: Session, row_id: int, at: datetime) -> None:
        session.execute(
            update(InboxRow)
            .where(InboxRow.id == row_id)
            .values(done=True, done_at=at, payload=None, lease_owner=None, lease_until=None)
        )

    def retry_update(self, row_id: int, *, error: str, not_before: datetime) -> None:
        """Gives an update back for another attempt later (its handling failed on our side)."""
        with self._sessions.begin() as session:
            session.execute(
                update(InboxRow)
                .where(InboxRow.id == row_id)
                .values(lease_owner=None, lease_until=None, not_before=as_utc(not_before), error=error[:200])
            )

    def inbox_pending(self) -> int:
        with self._sessions.begin() as session:
            return session.scalar(select(func.count()).select_from(InboxRow).where(InboxRow.done.is_(False))) or 0

    # -- the outbox ----------------------------------------------------------------------------
    def enqueue(self, outgoing: Sequence[Outgoing], at: datetime) -> int:
        """Queues messages outside a turn (reminders, notices); returns how many were new."""
        with self._sessions.begin() as session:
            return self._enqueue(session, outgoing, as_utc(at))

    def _enqueue(self, session: Session, outgoing: Sequence[Outgoing], at: datetime) -> int:
        if not outgoing:
            return 0
        rows = [
            {
                "key": item.key,
                "chat_id": item.chat_id,
                "priority": item.priority,
                "kind": item.kind,
                "payload": json.dumps(item.payload, ensure_ascii=False),
                "created_at": at,
                "not_before": as_utc(item.not_before),
                "state": "pending",
                "attempts": 0,
                "uncertain": False,
                "patient": item.patient,
            }
            for item in outgoing
        ]
        return len(session.execute(self._turn_statements["enqueue"], rows).all())

    def claim_messages(self, owner: str, now: datetime, lease: timedelta, limit: int) -> list[Queued]:
        """The next message of up to `limit` chats, most urgent first, leased to `owner`.

        A chat's messages go one at a time in (priority, order); a chat held by a flood limit or a 429
        waits, and its hold never delays another chat.
        """
        now = as_utc(now)
        find, lease_them, read = self._claim_statements
        with self._sessions.begin() as session:
            ids = list(session.scalars(find, {"now": now, "epoch": now.timestamp(), "limit": limit}))
            if not ids:
                return []
            session.execute(lease_them, {"ids": ids, "owner": owner, "until": now + lease})
            rows = session.execute(read, {"ids": ids}).all()
        return [
            Queued(
                r.id,
                r.key,
                r.chat_id,
                r.priority,
                r.kind,
                json.loads(r.payload),
                r.attempts,
                r.uncertain,
                r.patient,
                r.created_at,
                float(r.next_free),
            )
            for r in rows
        ]

    @functools.cached_property
    def _claim_statements(self) -> tuple[Executable, Executable, Executable]:
        """The claim's three statements, built once: building them is most of a claim's cost."""
        now, epoch = bindparam("now", type_=UtcDateTime()), bindparam("epoch", type_=Float())
        ids: BindParameter[list[int]] = bindparam("ids", expanding=True)
        other = aliased(OutboxRow)
        ahead = exists().where(
            other.chat_id == OutboxRow.chat_id,
            other.state == "pending",
            or_(
                other.priority < OutboxRow.priority, and_(other.priority == OutboxRow.priority, other.id < OutboxRow.id)
            ),
        )
        busy = exists().where(other.chat_id == OutboxRow.chat_id, other.state == "pending", other.lease_until >= now)
        held = exists().where(
            SendScopeRow.chat_id == OutboxRow.chat_id,
            or_(SendScopeRow.hold_until > epoch, SendScopeRow.next_free > epoch),
        )
        find = (
            select(OutboxRow.id)
            .where(
                OutboxRow.state == "pending",
                OutboxRow.not_before <= now,
                or_(OutboxRow.lease_until.is_(None), OutboxRow.lease_until < now),
                ~ahead,
                ~busy,
                ~held,
            )
            .order_by(OutboxRow.priority, OutboxRow.id)
            .limit(bindparam("limit", type_=Integer()))
        )
        if self._dialect == "postgresql":
            find = find.with_for_update(of=OutboxRow, skip_locked=True)
        lease_them = (
            update(OutboxRow)
            .where(OutboxRow.id.in_(ids))
            .values(lease_owner=bindparam("owner"), lease_until=bindparam("until"), attempts=OutboxRow.attempts + 1)
        )
        pace = select(SendScopeRow.next_free).where(SendScopeRow.chat_id == OutboxRow.chat_id).scalar_subquery()
        read = (
            select(
                OutboxRow.id,
                OutboxRow.key,
                OutboxRow.chat_id,
                OutboxRow.priority,
                OutboxRow.kind,
                OutboxRow.payload,
                OutboxRow.attempts,
                OutboxRow.uncertain,
                OutboxRow.patient,
                OutboxRow.created_at,
                func.coalesce(pace, 0.0).label("next_free"),
            )
            .where(OutboxRow.id.in_(ids))
            .order_by(OutboxRow.priority, OutboxRow.id)
        )
        return find, lease_them, read

    def next_message_due(self, now: datetime) -> datetime | None:
        """When the earliest pending message may go (for sleeping until then)."""
        with self._sessions.begin() as session:
            return session.scalar(select(func.min(OutboxRow.not_before)).where(OutboxRow.state == "pending"))

    def message_sent(
        self,
        row_id: int,
        *,
        at: datetime,
        message_id: int | None,
        pace: tuple[int, float] | None = None,
        link: tuple[int, int, int] | None = None,
        follow_up: Sequence[Outgoing] = (),
        erase: bool = False,
    ) -> None:
        """Records one delivery (see `Delivered`)."""
        self.messages_sent([Delivered(row_id, message_id, pace, link, follow_up, erase)], at=at)

    def messages_sent(self, deliveries: Sequence[Delivered], *, at: datetime) -> None:
        """Records deliveries in one transaction: the sender commits together what finished together."""
        at = as_utc(at)
        with self._sessions.begin() as session:
            erased = [d.row_id for d in deliveries if d.erase]  # the reply to /forget: no trace left
            forgotten: set[int] = set()
            if erased:
                forgotten = set(session.scalars(select(OutboxRow.chat_id).where(OutboxRow.id.in_(erased)))) - {0}
                # Its pacing state too: the chat id is all it holds, and nothing is owed to that chat any more.
                session.execute(delete(SendScopeRow).where(SendScopeRow.chat_id.in_(forgotten)))
                session.execute(delete(OutboxRow).where(OutboxRow.id.in_(erased)))
            kept = [d for d in deliveries if not d.erase]
            sent, pace = self._sent_statements
            if kept:
                session.execute(sent, [{"row": d.row_id, "at": at, "message_id": d.message_id} for d in kept])
            paces = {d.pace[0]: d.pace[1] for d in deliveries if d.pace is not None and d.pace[0] not in forgotten}
            if paces:
                session.execute(pace, [{"chat": chat, "next_free": when} for chat, when in paces.items()])
            for d in deliveries:
                if d.link is not None:
                    self._link(session, d.link[0], d.link[1], d.link[2], at)
            self._enqueue(session, [item for d in deliveries for item in d.follow_up], at)

    @functools.cached_property
    def _sent_statements(self) -> tuple[Executable, Executable]:
        """Marking deliveries sent and pacing their chats, built once and run as executemany: a burst of
        reminders records hundreds a commit, and the ORM's bulk update cost more than the database."""
        outbox, scopes = _table(OutboxRow), _table(SendScopeRow)
        sent = (
            update(outbox)
            .where(outbox.c.id == bindparam("row"))
            .values(
                state="sent",
                sent_at=bindparam("at", type_=UtcDateTime()),
                message_id=bindparam("message_id"),
                lease_owner=None,
                lease_until=None,
                payload="{}",
            )
        )
        pace = self._insert(scopes).values(chat_id=bindparam("chat"), next_free=bindparam("next_free"), hold_until=0.0)
        pace = pace.on_conflict_do_update(
            index_elements=[scopes.c.chat_id], set_={"next_free": pace.excluded.next_free}
        )
        return sent, pace

    def message_retry(self, row_id: int, *, not_before: datetime, error: str, uncertain: bool = False) -> None:
        """Gives a message back to the queue for a later attempt."""
        values: dict[str, Any] = {
            "lease_owner": None,
            "lease_until": None,
            "not_before": as_utc(not_before),
            "error": error[:200],
        }
        if uncertain:
            values["uncertain"] = True
        with self._sessions.begin() as session:
            session.execute(update(OutboxRow).where(OutboxRow.id == row_id).values(**values))

    def message_failed(
        self, row_id: int, *, at: datetime, error: str, state: str = "failed", follow_up: Sequence[Outgoing] = ()
    ) -> None:
        """Ends a message that cannot be delivered (`state`: failed, or stopped for a blocked chat)."""
        with self._sessions.begin() as session:
            session.execute(
                update(OutboxRow)
                .where(OutboxRow.id == row_id)
                .values(state=state, error=error[:200], lease_owner=None, lease_until=None, payload="{}")
            )
            self._enqueue(session, follow_up, as_utc(at))

    def stop_chat(self, chat_id: int, *, at: datetime, error: str) -> int:
        """A chat Telegram refuses (blocked, kicked, not found): the patient is stopped and its queue ended."""
        with self._sessions.begin() as session:
            self._set_stopped(session, chat_id, True, as_utc(at))
            return _rowcount(
                session.execute(
                    update(OutboxRow)
                    .where(OutboxRow.chat_id == chat_id, OutboxRow.state == "pending")
                    .values(state="stopped", error=error[:200], lease_owner=None, lease_until=None, payload="{}")
                )
            )

    def hold_chat(self, chat_id: int, until: float) -> None:
        """A 429 for this chat: no message to it before `until` (epoch seconds); other chats go on."""
        with self._sessions.begin() as session:
            self._scope(session, chat_id)
            session.execute(
                update(SendScopeRow)
                .where(SendScopeRow.chat_id == chat_id)
                .values(hold_until=case((SendScopeRow.hold_until < until, until), else_=SendScopeRow.hold_until))
            )

    def reserve_sends(self, count: int, now: float, interval: float) -> float:
        """Reserves `count` consecutive slots of the bot-wide send rate shared by every process; returns when the
        first one starts (epoch seconds). Slots are `interval` apart."""
        with self._sessions.begin() as session:
            self._scope(session, BOT_SCOPE)
            start = case((SendScopeRow.next_free > now, SendScopeRow.next_free), else_=literal(now))
            statement = (
                update(SendScopeRow)
                .where(SendScopeRow.chat_id == BOT_SCOPE)
                .values(next_free=start + count * interval)
                .returning(SendScopeRow.next_free, SendScopeRow.hold_until)
            )
            end, hold = session.execute(statement).one()
        return max(float(end) - count * interval, float(hold))

    def hold_bot(self, until: float) -> None:
        """Telegram limited the whole bot: every send waits until `until` (epoch seconds)."""
        self.hold_chat(BOT_SCOPE, until)

    def _scope(self, session: Session, chat_id: int) -> None:
        session.execute(
            self._insert(SendScopeRow)
            .values(chat_id=chat_id, next_free=0.0, hold_until=0.0)
            .on_conflict_do_nothing(index_elements=[SendScopeRow.chat_id])
        )

    def _pace(self, session: Session, chat_id: int, next_free: float) -> None:
        """The chat's next message may not go before `next_free` (its share of Telegram's per-chat limit)."""
        self._scope(session, chat_id)
        session.execute(update(SendScopeRow).where(SendScopeRow.chat_id == chat_id).values(next_free=next_free))

    def move_chat(self, old: int, new: int) -> int:
        """A group became a supergroup: its queued messages go to the new chat id."""
        with self._sessions.begin() as session:
            return _rowcount(
                session.execute(
                    update(OutboxRow).where(OutboxRow.chat_id == old, OutboxRow.state == "pending").values(chat_id=new)
                )
            )

    def outbox_figures(self, since: datetime) -> OutboxFigures:
        with self._sessions.begin() as session:
            pending, oldest = session.execute(
                select(func.count(), func.min(OutboxRow.created_at)).where(OutboxRow.state == "pending")
            ).one()
            failed = session.scalar(
                select(func.count()).where(OutboxRow.state == "failed", OutboxRow.created_at >= as_utc(since))
            )
        return OutboxFigures(int(pending), int(failed or 0), oldest)

    def messages(self, chat_id: int | None = None, state: str | None = None) -> list[tuple[str, str, int]]:
        """(key, state, attempts) of queued messages, for audits and tests."""
        statement = select(OutboxRow.key, OutboxRow.state, OutboxRow.attempts).order_by(OutboxRow.id)
        if chat_id is not None:
            statement = statement.where(OutboxRow.chat_id == chat_id)
        if state is not None:
            statement = statement.where(OutboxRow.state == state)
        with self._sessions.begin() as session:
            return [(r.key, r.state, r.attempts) for r in session.execute(statement)]


def _topic_slot(topic: str) -> int:
    """A stable small number per topic: one vote per patient and topic."""
    value = 0
    for ch in topic:
        value = (value * 131 + ord(ch)) % 2_000_000_000
    return value


def open_store(url: str) -> Store:
    """Connects to the database at `url` and brings its schema up to date."""
    engine = create_store_engine(url)
    try:
        migrate(engine)
    except BaseException:
        engine.dispose()
        raise
    return Store(engine)
