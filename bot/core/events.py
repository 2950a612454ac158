"""The vocabulary of the one brain: what comes in (`Inbound`), what is known (`PatientState`), what comes
out (`Turn`: replies plus effects). Plain frozen values, shared by the dialogue, the store and every edge.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import IntEnum, StrEnum

from bot.core import callbacks as cb
from bot.core.conversation import Kind, Reply
from bot.core.recovery import Enrolment, Reminder, Upcoming
from bot.core.safety.model import Level


class Channel(StrEnum):
    PRIVATE = "private"
    GROUP = "group"  # a group that is not the staff chat
    STAFF = "staff"


class Priority(IntEnum):
    """Order of delivery: a safety message or staff alert never waits behind a reply or a reminder."""

    SAFETY = 0
    ALERT = 1
    REPLY = 2
    BULK = 3


@dataclass(frozen=True, slots=True)
class Sender:
    user_id: int | None
    label: str = "?"  # name and username, for the staff chat only: never stored, never logged
    language_code: str | None = None
    is_staff: bool = False  # one of the configured staff user ids


@dataclass(frozen=True, slots=True)
class ReplyTo:
    message_id: int
    text: str | None = None
    from_bot: bool = False


@dataclass(frozen=True, slots=True)
class Inbound:
    """One thing that happened in a chat: a message, a command, a button press, an edit."""

    channel: Channel
    chat_id: int
    sender: Sender
    at: datetime
    text: str = ""  # the message text or a media caption
    command: str | None = None
    argument: str = ""
    pressed: bool = False  # a button press (`callback` is None when its data was not understood)
    callback: cb.Callback | None = None
    media: bool = False  # a sticker, photo, voice... (with `text` = its caption, if any)
    edited: bool = False
    mentioned: bool = False  # in a group: the bot was addressed
    reply_to: ReplyTo | None = None
    message_id: int | None = None


@dataclass(frozen=True, slots=True)
class Recent:
    text: str
    at: datetime


@dataclass(frozen=True, slots=True)
class Pending:
    """A confirmation question waiting for its answer: what the patient wrote and the level it might be."""

    level: Level
    text: str
    at: datetime


@dataclass(frozen=True, slots=True)
class PatientState:
    chat_id: int
    lang: str
    known: bool = False  # the patient has a row in the store
    stopped: bool = False
    in_handoff: bool = False
    recent: tuple[Recent, ...] = ()
    pending: Pending | None = None
    zone: str | None = None  # the patient's own time zone, if they set one (else the clinic's)
    enrolments: tuple[Enrolment, ...] = ()
    upcoming: tuple[Upcoming, ...] = ()  # reminders still to come, soonest first
    open_checkin: OpenCheckIn | None = None  # the last check-in question, while it waits for an answer


@dataclass(frozen=True, slots=True)
class OpenCheckIn:
    enrolment: str
    step: str
    asked_at: datetime


# -- effects -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SetLanguage:
    lang: str


@dataclass(frozen=True, slots=True)
class SetStopped:
    stopped: bool


@dataclass(frozen=True, slots=True)
class OpenHandoff:
    patient: int


@dataclass(frozen=True, slots=True)
class CloseHandoff:
    patient: int


@dataclass(frozen=True, slots=True)
class Remember:
    """Keep the message among the patient's recent ones (for triage's context; erased by /forget)."""

    text: str


@dataclass(frozen=True, slots=True)
class SetPending:
    pending: Pending | None


@dataclass(frozen=True, slots=True)
class RecordFeedback:
    topic: str
    helpful: bool


@dataclass(frozen=True, slots=True)
class RecordEvent:
    kind: str
    topic: str | None = None


@dataclass(frozen=True, slots=True)
class KeepQuestion:
    """A question the content could not answer well, kept (without the patient's name) for curators."""

    text: str
    lang: str
    reason: str  # "fallback" | "unsure" | "unhelpful"


@dataclass(frozen=True, slots=True)
class RecordEscalation:
    level: Level
    kind: str = "alert"  # "alert" | "possible" | "confirmed"


@dataclass(frozen=True, slots=True)
class Forget:
    pass


@dataclass(frozen=True, slots=True)
class ToStaff:
    """A post in the staff chat; `patient` links it, so a staff reply to it reaches that patient."""

    text: str
    priority: Priority = Priority.ALERT
    patient: int | None = None
    close_button: bool = False
    copy_message: int | None = None  # also copy this message of the patient's chat (a photo, a voice note)
    qr: str | None = None  # send as a QR code of this link, with the text as its caption


@dataclass(frozen=True, slots=True)
class ToPatient:
    """A message to a patient from the staff (a relayed reply, "conversation closed")."""

    patient: int
    text: str
    copy_from: tuple[int, int] | None = None  # (chat, message) to copy instead of text: a staff photo
    # Where to report delivery: the staff chat and the staff message that asked for it.
    ack_chat: int | None = None
    ack_message: int | None = None


@dataclass(frozen=True, slots=True)
class CreateEnrolment:
    """A treatment to remind about, waiting for the patient's consent; `invite` binds the invite to them."""

    enrolment: Enrolment
    source: str  # "invite" | "menu"
    ref: str = ""
    invite: str | None = None  # the invite's nonce
    user_id: int | None = None


@dataclass(frozen=True, slots=True)
class GiveConsent:
    """The patient agreed to reminders (stored with its time): the reminders are scheduled."""

    enrolment: str
    reminders: tuple[Reminder, ...]


@dataclass(frozen=True, slots=True)
class DeclineConsent:
    enrolment: str


@dataclass(frozen=True, slots=True)
class Reschedule:
    """The patient's time zone changed: the enrolment's reminders still to come are dated again."""

    enrolment: str
    zone: str
    reminders: tuple[Reminder, ...]


@dataclass(frozen=True, slots=True)
class SetZone:
    zone: str


@dataclass(frozen=True, slots=True)
class AnswerCheckIn:
    """A check-in was answered (an option, or free text): it is not asked again."""

    enrolment: str
    step: str
    option: str | None


@dataclass(frozen=True, slots=True)
class ShowStats:
    """Post the statistics of the last days (the store counts them) as a reply in this chat."""

    since: datetime


Effect = (
    SetLanguage
    | SetStopped
    | OpenHandoff
    | CloseHandoff
    | Remember
    | SetPending
    | RecordFeedback
    | RecordEvent
    | KeepQuestion
    | RecordEscalation
    | Forget
    | ToStaff
    | ToPatient
    | ShowStats
    | CreateEnrolment
    | GiveConsent
    | DeclineConsent
    | Reschedule
    | SetZone
    | AnswerCheckIn
)


@dataclass(frozen=True)
class Turn:
    replies: tuple[Reply, ...] = ()
    effects: tuple[Effect, ...] = field(default_factory=tuple)
    quote: bool = False  # the first reply answers the inbound message (Telegram's reply)

    @property
    def priority(self) -> Priority:
        kinds = {reply.kind for reply in self.replies}
        return Priority.SAFETY if kinds & {Kind.SAFETY, Kind.CONFIRM} else Priority.REPLY

    def then(self, *effects: Effect) -> Turn:
        return replace(self, effects=(*self.effects, *effects))


NOTHING = Turn()
