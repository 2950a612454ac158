"""A dialogue turn as rows of the outbox: what to send, to which chat, how urgently, under which key.

Keys are deterministic (`<origin>:<n>`), so an update handled twice — after a crash, by a second
process — queues nothing twice. A text over Telegram's limit becomes several messages, split at
paragraphs, with the buttons on the last one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bot.core import callbacks as cb
from bot.core.conversation import Keyboard, Reply
from bot.core.events import Priority, ToPatient, ToStaff, Turn
from bot.core.text import split_message
from bot.store.repository import Outgoing

# Kinds of queued message: they decide the retry policy and what staff see when one fails.
SAFETY = "safety"
ALERT = "alert"
REPLY = "reply"
RELAY = "relay"
NOTICE = "notice"
REMINDER = "reminder"


def keyboard(buttons: Keyboard) -> list[list[list[str]]] | None:
    if not buttons:
        return None
    return [[[b.label, cb.encode(b.callback)] for b in row] for row in buttons]


def text_messages(
    key: str,
    chat_id: int,
    text: str,
    *,
    priority: int,
    kind: str,
    at: datetime,
    buttons: list[list[list[str]]] | None = None,
    reply_to: int | None = None,
    patient: int | None = None,
    extra: dict[str, Any] | None = None,
) -> list[Outgoing]:
    """One text, split to fit Telegram, as consecutive messages (buttons and `extra` on the last)."""
    parts = split_message(text)
    rows: list[Outgoing] = []
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        payload: dict[str, Any] = {"method": "send", "text": part}
        if reply_to is not None and index == 0:
            payload["reply_to"] = reply_to
        if last and buttons:
            payload["buttons"] = buttons
        if last and extra:
            payload.update(extra)
        suffix = "" if len(parts) == 1 else f".{index}"
        rows.append(Outgoing(f"{key}{suffix}", chat_id, priority, kind, payload, at, patient))
    return rows


def turn_messages(
    turn: Turn,
    *,
    origin: str,
    chat_id: int,
    staff_chat: int | None,
    at: datetime,
    reply_to: int | None = None,
    patient: int | None = None,
    close_label: str = "✅",
) -> list[Outgoing]:
    """Every message a turn sends: its replies to `chat_id`, then its posts to the staff chat and to patients."""
    rows: list[Outgoing] = []
    priority = int(turn.priority)
    for index, reply in enumerate(turn.replies):
        rows += reply_messages(
            f"{origin}:r{index}",
            chat_id,
            reply,
            priority=priority,
            at=at,
            reply_to=reply_to if turn.quote and index == 0 else None,
            patient=patient,
        )
    for index, effect in enumerate(turn.effects):
        key = f"{origin}:e{index}"
        if isinstance(effect, ToStaff) and staff_chat is not None:
            rows += staff_messages(key, staff_chat, effect, at=at, patient=effect.patient, close_label=close_label)
        elif isinstance(effect, ToPatient):
            rows += patient_messages(key, effect, at=at, staff_chat=staff_chat)
    return rows


def reply_messages(
    key: str,
    chat_id: int,
    reply: Reply,
    *,
    priority: int,
    at: datetime,
    reply_to: int | None = None,
    patient: int | None = None,
) -> list[Outgoing]:
    kind = SAFETY if priority == Priority.SAFETY else REPLY
    return text_messages(
        key,
        chat_id,
        reply.text,
        priority=priority,
        kind=kind,
        at=at,
        buttons=keyboard(reply.buttons),
        reply_to=reply_to,
        patient=patient,
    )


def staff_messages(
    key: str, staff_chat: int, post: ToStaff, *, at: datetime, patient: int | None, close_label: str = "✅"
) -> list[Outgoing]:
    """A post in the staff chat, linked to its patient so a staff reply finds them."""
    if post.qr is not None:
        payload = {"method": "photo", "qr": post.qr, "caption": post.text[:1024]}
        return [Outgoing(key, staff_chat, int(post.priority), NOTICE, payload, at, patient)]
    buttons = None
    if post.close_button and post.patient is not None:
        buttons = [[[close_label, cb.encode(cb.CloseHandoff(post.patient))]]]
    kind = ALERT if post.priority <= Priority.ALERT else RELAY
    rows = text_messages(
        key, staff_chat, post.text, priority=int(post.priority), kind=kind, at=at, buttons=buttons, patient=patient
    )
    if patient is not None:  # every part is linked: a staff reply to any of them reaches the patient
        for row in rows:
            row.payload["link"] = True
    if post.copy_message is not None and patient is not None:
        rows.append(
            Outgoing(
                f"{key}.copy",
                staff_chat,
                int(post.priority),
                RELAY,
                {"method": "copy", "from_chat": patient, "message_id": post.copy_message, "link": True},
                at,
                patient,
            )
        )
    return rows


def patient_messages(key: str, message: ToPatient, *, at: datetime, staff_chat: int | None) -> list[Outgoing]:
    """A staff reply (or notice) to a patient; its delivery is reported back to the staff message that sent it."""
    ack: dict[str, Any] = {}
    if message.ack_chat is not None and message.ack_message is not None:
        ack = {"ack": [message.ack_chat, message.ack_message]}
    if message.copy_from is not None:
        payload = {"method": "copy", "from_chat": message.copy_from[0], "message_id": message.copy_from[1], **ack}
        return [Outgoing(key, message.patient, int(Priority.REPLY), RELAY, payload, at, message.patient)]
    return text_messages(
        key,
        message.patient,
        message.text,
        priority=int(Priority.REPLY),
        kind=RELAY,
        at=at,
        patient=message.patient,
        extra=ack,
    )
