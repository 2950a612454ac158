"""Telegram updates as the dialogue's `Inbound`: pure translation, no decisions, no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from telegram import Chat, Message, MessageEntity, Update, User
from telegram.constants import ChatMemberStatus, ChatType

from bot.core import callbacks as cb
from bot.core.events import Channel, Inbound, ReplyTo, Sender

_MEDIA = (
    "photo",
    "sticker",
    "voice",
    "video",
    "video_note",
    "document",
    "audio",
    "animation",
    "location",
    "contact",
    "venue",
    "poll",
    "dice",
)


@dataclass(frozen=True, slots=True)
class Bot:
    """Who the bot is, to recognise mentions and replies to its own messages."""

    id: int
    username: str


@dataclass(frozen=True, slots=True)
class Blocked:
    """The patient blocked the bot (or unblocked it): a `my_chat_member` update."""

    chat_id: int
    blocked: bool


@dataclass(frozen=True, slots=True)
class Migrated:
    """A group became a supergroup with a new chat id."""

    old: int
    new: int


def chat_of(update: Update) -> int:
    """The chat an update belongs to, for ordering (0 when it has none)."""
    chat = update.effective_chat
    return chat.id if chat is not None else 0


def sender_label(user: User | None) -> str:
    """Who wrote, for the staff chat only (never stored, never logged)."""
    if user is None:
        return "?"
    name = user.full_name or "?"
    return f"{name} (@{user.username})" if user.username else f"{name} (id {user.id})"


def translate(
    update: Update, *, bot: Bot, staff_chat: int | None, staff_users: frozenset[int], at: datetime
) -> Inbound | Blocked | Migrated | None:
    """The `Inbound` an update stands for, a block/migration event, or None for an update the bot ignores."""
    member = update.my_chat_member
    if member is not None and member.chat.type == ChatType.PRIVATE:
        status = member.new_chat_member.status
        return Blocked(member.chat.id, status in {ChatMemberStatus.BANNED, ChatMemberStatus.LEFT})
    query = update.callback_query
    if query is not None:
        message = query.message if isinstance(query.message, Message) else None
        if message is None:
            return None
        reply_to = _reply_to(message.reply_to_message, bot)
        return Inbound(
            channel=_channel(message.chat, staff_chat),
            chat_id=message.chat.id,
            sender=_sender(query.from_user, staff_users),
            at=at,
            pressed=True,
            callback=cb.decode(query.data),
            reply_to=reply_to,
            message_id=message.message_id,
        )
    message = update.message or update.edited_message
    if message is None:
        return None
    if message.migrate_to_chat_id:
        return Migrated(message.chat.id, message.migrate_to_chat_id)
    if message.chat.type == ChatType.CHANNEL or (message.from_user is not None and message.from_user.is_bot):
        return None
    channel = _channel(message.chat, staff_chat)
    text = message.text or message.caption or ""
    command, argument = _command(message, bot)
    if command == "":  # a command addressed to another bot
        return None
    mentioned = False
    if channel is Channel.GROUP:
        mention = f"@{bot.username}".lower()
        replying_to_bot = (
            message.reply_to_message is not None
            and message.reply_to_message.from_user is not None
            and message.reply_to_message.from_user.id == bot.id
        )
        mentioned = mention in text.lower() or replying_to_bot
        text = _without_mention(text, bot.username)
    return Inbound(
        channel=channel,
        chat_id=message.chat.id,
        sender=_sender(message.from_user, staff_users),
        at=at,
        text=text if command is None else "",
        command=command,
        argument=argument,
        media=any(getattr(message, kind, None) for kind in _MEDIA),
        edited=update.edited_message is not None,
        mentioned=mentioned,
        reply_to=_reply_to(message.reply_to_message, bot),
        message_id=message.message_id,
    )


def _channel(chat: Chat, staff_chat: int | None) -> Channel:
    if staff_chat is not None and chat.id == staff_chat:
        return Channel.STAFF
    return Channel.PRIVATE if chat.type == ChatType.PRIVATE else Channel.GROUP


def _sender(user: User | None, staff_users: frozenset[int]) -> Sender:
    if user is None:
        return Sender(None)
    return Sender(user.id, sender_label(user), user.language_code, user.id in staff_users)


def _reply_to(message: Message | None, bot: Bot) -> ReplyTo | None:
    if message is None:
        return None
    from_bot = message.from_user is not None and message.from_user.id == bot.id
    return ReplyTo(message.message_id, message.text or message.caption, from_bot)


def _command(message: Message, bot: Bot) -> tuple[str | None, str]:
    """("name", "argument") for "/name@bot argument"; ("", "") for another bot's command; (None, "") for text."""
    text = message.text or ""
    entities = message.entities or ()
    if not text.startswith("/") or not any(e.type == MessageEntity.BOT_COMMAND and e.offset == 0 for e in entities):
        return None, ""
    head, _, argument = text.partition(" ")
    name, _, addressed = head[1:].partition("@")
    if addressed and addressed.lower() != bot.username.lower():
        return "", ""
    return name.lower(), argument.strip()


def _without_mention(text: str, username: str) -> str:
    mention = f"@{username}"
    index = text.lower().find(mention.lower())
    if index < 0:
        return text
    return (text[:index] + text[index + len(mention) :]).strip()
