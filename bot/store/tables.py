"""The tables: typed SQLAlchemy models. Patients are known by chat id only — no names, usernames or phones."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit identity.
RowId = BigInteger().with_variant(Integer(), "sqlite")

TEXT_LIMIT = 1000


def as_utc(value: datetime) -> datetime:
    """Refuses naive times: a wall-clock time without a zone cannot be compared across processes."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"naive datetime {value.isoformat()}: pass a timezone-aware UTC time")
    return value.astimezone(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware in and out: SQLite keeps no offset, so values are stored as UTC and read back as UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class SchemaVersionRow(Base):
    __tablename__ = "schema_version"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    description: Mapped[str] = mapped_column(String(100))
    applied_at: Mapped[datetime] = mapped_column(UtcDateTime(), server_default=func.now())


class PatientRow(Base):
    __tablename__ = "patients"

    chat_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    lang: Mapped[str] = mapped_column(String(16))
    stopped: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)


# The tables below refer to a patient by chat id without a foreign key: statistics may be recorded
# before the patient row exists, and `Store.forget_patient` deletes from each of them explicitly.


class EventRow(Base):
    __tablename__ = "events"

    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    chat_id: Mapped[int] = mapped_column(BigInteger, index=True)
    kind: Mapped[str] = mapped_column(String(32))
    topic: Mapped[str | None] = mapped_column(String(100))
    at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)


class FeedbackRow(Base):
    __tablename__ = "feedback"
    # One vote per answer message: a second press changes the vote instead of adding one.
    __table_args__ = (UniqueConstraint("chat_id", "message_id"),)

    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    chat_id: Mapped[int] = mapped_column(BigInteger)
    message_id: Mapped[int] = mapped_column(BigInteger)
    topic: Mapped[str] = mapped_column(String(100))
    lang: Mapped[str] = mapped_column(String(16))
    helpful: Mapped[bool] = mapped_column(Boolean)
    at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)


class KeptQuestionRow(Base):
    __tablename__ = "kept_questions"

    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    chat_id: Mapped[int] = mapped_column(BigInteger, index=True)
    text: Mapped[str] = mapped_column(Text)
    lang: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)


class EscalationRow(Base):
    __tablename__ = "escalations"

    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    chat_id: Mapped[int] = mapped_column(BigInteger, index=True)
    level: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)


class HandoffRow(Base):
    __tablename__ = "handoffs"
    # At most one open handoff per patient, enforced by the database so concurrent processes cannot open two.
    __table_args__ = (
        Index(
            "uq_handoffs_open_chat_id",
            "chat_id",
            unique=True,
            sqlite_where=text("closed_at IS NULL"),
            postgresql_where=text("closed_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    chat_id: Mapped[int] = mapped_column(BigInteger, index=True)
    opened_at: Mapped[datetime] = mapped_column(UtcDateTime())
    last_activity_at: Mapped[datetime] = mapped_column(UtcDateTime())
    closed_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), index=True)


class StaffMessageRow(Base):
    """The bot's post in a staff chat relaying a patient's message, so a staff reply to it finds the patient."""

    __tablename__ = "staff_messages"

    staff_chat_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    staff_message_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    chat_id: Mapped[int] = mapped_column(BigInteger, index=True)
    linked_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), index=True)


class ClaimedUpdateRow(Base):
    __tablename__ = "claimed_updates"

    update_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    claimed_at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)


class SettingRow(Base):
    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class InboxRow(Base):
    """A Telegram update, stored before Telegram is told it arrived; handled once, in its chat's order."""

    __tablename__ = "inbox"
    __table_args__ = (Index("ix_inbox_state_chat", "done", "chat_id", "id"),)

    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    update_id: Mapped[int] = mapped_column(BigInteger, unique=True)
    chat_id: Mapped[int] = mapped_column(BigInteger, index=True)  # 0 for updates without a chat
    payload: Mapped[str | None] = mapped_column(Text)  # the update's JSON; emptied once handled (privacy)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime())
    done: Mapped[bool] = mapped_column(Boolean, default=False)
    done_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    not_before: Mapped[datetime | None] = mapped_column(UtcDateTime())
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime())
    error: Mapped[str | None] = mapped_column(String(200))


class OutboxRow(Base):
    """Something the bot must send: a reply, a safety message, a staff alert, a relay, a reminder.

    The key makes it idempotent (a re-handled update or a second process cannot queue it twice);
    the priority puts safety messages and staff alerts first; one sender drains it.
    """

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_pending", "state", "chat_id", "priority", "id"),  # what a chat has waiting
        Index("ix_outbox_next", "state", "priority", "id"),  # the queue in sending order: a claim stops early
    )

    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(160), unique=True)
    chat_id: Mapped[int] = mapped_column(BigInteger, index=True)
    priority: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(20))
    payload: Mapped[str] = mapped_column(Text)  # method and parameters, JSON
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    not_before: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)
    state: Mapped[str] = mapped_column(String(12), default="pending")  # pending | sent | failed | stopped
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    uncertain: Mapped[bool] = mapped_column(Boolean, default=False)  # a send timed out after the request left
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), index=True)
    message_id: Mapped[int | None] = mapped_column(BigInteger)
    error: Mapped[str | None] = mapped_column(String(200))
    patient: Mapped[int | None] = mapped_column(BigInteger, index=True)  # the patient it is to or about


class SendScopeRow(Base):
    """Telegram's flood limits per chat (and for the whole bot, chat 0), shared by every process."""

    __tablename__ = "send_scopes"

    chat_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    next_free: Mapped[float] = mapped_column(Float, default=0.0)  # epoch seconds: the next message may go then
    hold_until: Mapped[float] = mapped_column(Float, default=0.0)  # a 429's retry_after, epoch seconds


class RecentMessageRow(Base):
    """A patient's last few messages, which triage reads together with the next one; erased by /forget."""

    __tablename__ = "recent_messages"

    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    chat_id: Mapped[int] = mapped_column(BigInteger, index=True)
    text: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UtcDateTime(), index=True)


class PendingQuestionRow(Base):
    """A confirmation question waiting for the patient's answer ("Is this happening right now?")."""

    __tablename__ = "pending_questions"

    chat_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    level: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UtcDateTime())


class EnrolmentRow(Base):
    """A treatment a patient gets recovery reminders for; consent is stored with its time."""

    __tablename__ = "enrolments"

    id: Mapped[str] = mapped_column(String(24), primary_key=True)
    chat_id: Mapped[int] = mapped_column(BigInteger, index=True)
    treatment: Mapped[str] = mapped_column(String(40))
    treated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    zone: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(16))  # invite | menu
    ref: Mapped[str] = mapped_column(String(16), default="")  # the clinic's reference from the invite
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    consent_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    declined_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class ReminderRow(Base):
    """One reminder of one enrolment; its key (`<enrolment>:<step>`) can exist once, so nothing is sent twice."""

    __tablename__ = "reminders"
    __table_args__ = (Index("ix_reminders_due", "state", "due_at"),)

    key: Mapped[str] = mapped_column(String(80), primary_key=True)
    enrolment_id: Mapped[str] = mapped_column(String(24), index=True)
    chat_id: Mapped[int] = mapped_column(BigInteger, index=True)
    step: Mapped[str] = mapped_column(String(60))
    checkin: Mapped[bool] = mapped_column(Boolean, default=False)
    due_at: Mapped[datetime] = mapped_column(UtcDateTime())
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime())
    state: Mapped[str] = mapped_column(String(12), default="scheduled")  # scheduled | queued | missed | cancelled
    queued_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    answered_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class InviteRow(Base):
    """An invite link redeemed: it belongs to the first Telegram user who opened it."""

    __tablename__ = "invites"

    nonce: Mapped[str] = mapped_column(String(16), primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger)
    chat_id: Mapped[int] = mapped_column(BigInteger, index=True)
    redeemed_at: Mapped[datetime] = mapped_column(UtcDateTime())


class PatientZoneRow(Base):
    """A patient's own time zone for reminders (otherwise the clinic's)."""

    __tablename__ = "patient_zones"

    chat_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    zone: Mapped[str] = mapped_column(String(64))


# Every table holding a patient's chat id, children first; `forget_patient` and `count_rows_for` walk it.
PATIENT_TABLES: tuple[Table, ...] = tuple(
    Base.metadata.tables[row.__tablename__]
    for row in (
        StaffMessageRow,
        HandoffRow,
        EscalationRow,
        KeptQuestionRow,
        FeedbackRow,
        EventRow,
        RecentMessageRow,
        PendingQuestionRow,
        InboxRow,
        ReminderRow,
        EnrolmentRow,
        InviteRow,
        PatientZoneRow,
        SendScopeRow,
        PatientRow,
    )
)
