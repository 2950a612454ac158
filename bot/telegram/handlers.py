"""Telegram handlers: translate updates into Dialogue calls and Turns into Bot API calls.

No matching, triage or content decisions here: the core decides, this module only
reads the update, loads the patient's state, performs the effects and sends the replies.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, tzinfo

from telegram import (
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    ReplyParameters,
    Update,
    User,
)
from telegram.constants import ChatType
from telegram.error import BadRequest, ChatMigrated, Forbidden, TelegramError
from telegram.ext import ApplicationHandlerStop, ContextTypes

from bot.core.conversation import Action, AlertStaff, Button, KeepQuestion, Reply
from bot.core.dialogue import (
    Dialogue,
    DialogueEffect,
    Forget,
    OpenHandoff,
    PatientState,
    RecordEvent,
    RecordFeedback,
    RelayToStaff,
    SetLanguage,
    SetStopped,
    Turn,
)
from bot.core.staff import StaffWriter
from bot.core.text import split_message
from bot.store import Store

log = logging.getLogger(__name__)

STAFF_CHAT_SETTING = "staff_chat_id"
CLOSE_PREFIX = "z:"  # staff button: z:<patient chat id>
STATS_DAYS = 7

Context = ContextTypes.DEFAULT_TYPE
Clock = Callable[[], datetime]


def keyboard(buttons: tuple[tuple[Button, ...], ...]) -> InlineKeyboardMarkup | None:
    if not buttons:
        return None
    return InlineKeyboardMarkup(
        [[InlineKeyboardButton(b.label, callback_data=b.action) for b in row] for row in buttons]
    )


def patient_label(user: User | None) -> str:
    """Who wrote, for the staff chat only (never stored, never logged)."""
    if user is None:
        return "?"
    name = user.full_name or "?"
    return f"{name} (@{user.username})" if user.username else f"{name} (id {user.id})"


class StaffDesk:
    """The staff chat: where it is (it may migrate to a supergroup) and how to post to it."""

    def __init__(self, store: Store, configured_chat_id: int | None, staff_user_ids: tuple[int, ...]) -> None:
        self.store = store
        self.configured = configured_chat_id
        self.staff_user_ids = frozenset(staff_user_ids)

    @property
    def chat_id(self) -> int | None:
        migrated = self.store.get_setting(STAFF_CHAT_SETTING)
        return int(migrated) if migrated else self.configured

    def follow_migration(self, old: int, new: int) -> None:
        if old == self.chat_id:
            self.store.set_setting(STAFF_CHAT_SETTING, str(new))
            log.info("staff chat migrated to a supergroup; following the new chat id")

    def is_staff_chat(self, chat_id: int) -> bool:
        return self.chat_id is not None and chat_id == self.chat_id

    def is_staff(self, chat_id: int, user_id: int | None) -> bool:
        return self.is_staff_chat(chat_id) or (user_id is not None and user_id in self.staff_user_ids)

    async def post(self, context: Context, text: str, *, patient: int | None = None, close_label: str = "") -> None:
        """Post to the staff chat and remember which patient the post is about, so staff can reply to it."""
        chat_id = self.chat_id
        if chat_id is None:
            return
        markup = None
        if patient is not None and close_label:
            markup = InlineKeyboardMarkup(
                [[InlineKeyboardButton(close_label, callback_data=f"{CLOSE_PREFIX}{patient}")]]
            )
        for attempt in range(2):
            try:
                sent = None
                for part in split_message(text):
                    sent = await context.bot.send_message(chat_id, part, reply_markup=markup)
                if sent is not None and patient is not None:
                    self.store.link_staff_message(chat_id, sent.message_id, patient, at=datetime.now(UTC))
                return
            except ChatMigrated as exc:
                if attempt:
                    raise
                self.follow_migration(chat_id, exc.new_chat_id)
                chat_id = exc.new_chat_id

    async def copy(self, context: Context, message: Message, *, patient: int) -> None:
        chat_id = self.chat_id
        if chat_id is None:
            return
        copied = await context.bot.copy_message(chat_id, message.chat_id, message.message_id)
        self.store.link_staff_message(chat_id, copied.message_id, patient, at=datetime.now(UTC))


class Handlers:
    """Every Telegram callback of the bot, with its collaborators passed in."""

    def __init__(
        self,
        *,
        dialogue: Dialogue,
        store: Store,
        staff: StaffDesk,
        staff_writer: StaffWriter,
        staff_lang: str,
        handoff_idle: timedelta,
        timezone: tzinfo,
        clock: Clock = lambda: datetime.now(UTC),
    ) -> None:
        self.dialogue = dialogue
        self.assistant = dialogue.assistant
        self.store = store
        self.staff = staff
        self.writer = staff_writer
        self.staff_lang = staff_lang
        self.handoff_idle = handoff_idle
        self.timezone = timezone
        self.clock = clock
        self._groups_seen: set[int] = set()

    # -- plumbing ------------------------------------------------------------------------------
    async def on_any_update(self, update: Update, context: Context) -> None:
        """Runs first: an update delivered twice (webhook retries, several processes) is handled once."""
        if not self.store.claim_update(update.update_id, self.clock()):
            log.info("update %s already handled; skipped", update.update_id)
            raise ApplicationHandlerStop

    def _state(self, chat_id: int, user: User | None) -> PatientState:
        now = self.clock()
        patient = self.store.get_patient(chat_id)
        lang = patient.lang if patient else self.assistant.lang(user.language_code if user else None)
        in_handoff = patient is not None and self.store.active_handoff(chat_id, now, self.handoff_idle) is not None
        return PatientState(lang=lang, stopped=bool(patient and patient.stopped), in_handoff=in_handoff)

    async def _send(self, context: Context, chat_id: int, reply: Reply, reply_to: int | None = None) -> Message | None:
        parts = split_message(reply.text)
        sent = None
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            params = ReplyParameters(reply_to, allow_sending_without_reply=True) if reply_to and index == 0 else None
            sent = await context.bot.send_message(
                chat_id, part, reply_markup=keyboard(reply.buttons) if last else None, reply_parameters=params
            )
        return sent

    async def _play(
        self,
        context: Context,
        update: Update,
        chat_id: int,
        state: PatientState,
        turn: Turn,
        *,
        text: str = "",
        reply_to: int | None = None,
    ) -> None:
        """Perform a turn: effects that change state first, then replies, then the staff chat."""
        now = self.clock()
        if not any(isinstance(e, Forget) for e in turn.effects):
            lang = next((e.lang for e in turn.effects if isinstance(e, SetLanguage)), None)
            self.store.touch_patient(chat_id, lang=lang or state.lang, at=now)
        for effect in turn.effects:
            self._record(chat_id, effect, text, turn, update, now)
        for reply in turn.replies:
            await self._send(context, chat_id, reply, reply_to)
        for effect in turn.effects:
            await self._notify_staff(context, update, chat_id, effect, text, turn, state.lang, now)

    def _record(
        self, chat_id: int, effect: DialogueEffect, text: str, turn: Turn, update: Update, now: datetime
    ) -> None:
        lang = turn.replies[0].lang if turn.replies else self.staff_lang
        match effect:
            case SetLanguage(lang=new):
                self.store.set_language(chat_id, new, now)
            case SetStopped(stopped=stopped):
                self.store.set_stopped(chat_id, stopped, now)
            case RecordEvent(kind=kind, topic=topic):
                self.store.record_event(chat_id, kind, now, topic)
            case RecordFeedback(topic=topic, helpful=helpful):
                query = update.callback_query
                message_id = query.message.message_id if query and query.message else 0
                self.store.record_feedback(chat_id, topic, lang, helpful, now, message_id=message_id)
            case KeepQuestion(reason=reason) if text:
                self.store.keep_question(chat_id, text, lang, reason, now)
            case AlertStaff(level=level):
                self.store.record_escalation(chat_id, level.value, now)
            case OpenHandoff():
                self.store.open_handoff(chat_id, now)
            case RelayToStaff():
                self.store.touch_handoff(chat_id, now)
            case Forget():
                deleted = self.store.forget_patient(chat_id)
                log.info("patient data erased on request (%d rows)", deleted)

    async def _notify_staff(
        self,
        context: Context,
        update: Update,
        chat_id: int,
        effect: DialogueEffect,
        text: str,
        turn: Turn,
        patient_lang: str,
        now: datetime,
    ) -> None:
        who = patient_label(update.effective_user)
        lang = turn.replies[0].lang if turn.replies else patient_lang
        close = self.writer.texts.close_button
        try:
            match effect:
                case AlertStaff(level=level):
                    local = now.astimezone(self.timezone)
                    await self.staff.post(context, self.writer.alert(level, who, lang, local, text), patient=chat_id)
                case OpenHandoff(message=message) if message:
                    await self.staff.post(
                        context, self.writer.handoff(who, lang, message), patient=chat_id, close_label=close
                    )
                case RelayToStaff(message=message):
                    if message:
                        await self.staff.post(
                            context, self.writer.relay(who, message), patient=chat_id, close_label=close
                        )
                    elif update.effective_message is not None:
                        await self.staff.post(context, self.writer.relay(who, "📎"), patient=chat_id, close_label=close)
                        await self.staff.copy(context, update.effective_message, patient=chat_id)
        except TelegramError:
            log.exception("could not post to the staff chat")

    # -- patients ------------------------------------------------------------------------------
    async def on_command(self, update: Update, context: Context) -> None:
        message = update.effective_message
        if message is None or message.text is None or update.effective_chat is None:
            return
        if update.effective_chat.type != ChatType.PRIVATE:
            return  # commands in groups are handled by on_group_message / on_staff_message
        command, _, argument = message.text.partition(" ")
        name = command.lstrip("/").split("@")[0].lower()
        chat_id = update.effective_chat.id
        state = self._state(chat_id, update.effective_user)
        turn = self.dialogue.command(state, name, argument.strip())
        await self._play(context, update, chat_id, state, turn)

    async def on_text(self, update: Update, context: Context) -> None:
        message = update.effective_message
        if message is None or update.effective_chat is None:
            return
        chat_id = update.effective_chat.id
        text = message.text or ""
        state = self._state(chat_id, update.effective_user)
        turn = self.dialogue.message(state, text)
        await self._play(context, update, chat_id, state, turn, text=text, reply_to=message.message_id)

    async def on_non_text(self, update: Update, context: Context) -> None:
        if update.effective_chat is None:
            return
        chat_id = update.effective_chat.id
        state = self._state(chat_id, update.effective_user)
        await self._play(context, update, chat_id, state, self.dialogue.non_text(state))

    async def on_button(self, update: Update, context: Context) -> None:
        query = update.callback_query
        if query is None or query.data is None or update.effective_chat is None:
            return
        await _answer_quietly(query)
        chat_id = update.effective_chat.id
        if query.data.startswith(CLOSE_PREFIX):
            await self._close_from_staff(update, context, query)
            return
        if update.effective_chat.type != ChatType.PRIVATE:
            return
        replied_to = None
        if query.data in {Action.HANDOFF} or query.data.startswith(Action.FEEDBACK):
            original = query.message if isinstance(query.message, Message) else None
            if original is not None and original.reply_to_message is not None:
                replied_to = original.reply_to_message.text
        state = self._state(chat_id, update.effective_user)
        turn = self.dialogue.press(state, query.data, replied_to)
        await self._play(context, update, chat_id, state, turn, text=replied_to or "")

    # -- groups and the staff chat ---------------------------------------------------------------
    async def on_group_message(self, update: Update, context: Context) -> None:
        message = update.effective_message
        chat = update.effective_chat
        if message is None or chat is None:
            return
        if self.staff.is_staff_chat(chat.id):
            await self.on_staff_message(update, context)
            return
        if chat.id not in self._groups_seen:
            self._groups_seen.add(chat.id)
            log.info("message in group %s, which is not the staff chat", chat.id)
        text = message.text or ""
        username = context.bot.username
        addressed = f"@{username}".lower() in text.lower() or (
            message.reply_to_message is not None
            and message.reply_to_message.from_user is not None
            and message.reply_to_message.from_user.id == context.bot.id
        )
        if not addressed or not text:
            return  # in other groups the bot speaks only when spoken to
        question = text.replace(f"@{username}", "").strip()
        reply = self.assistant.answer(
            question, self.assistant.lang(update.effective_user.language_code if update.effective_user else None)
        )
        await self._send(context, chat.id, Reply(reply.text, reply.kind, reply.lang), message.message_id)

    async def on_staff_message(self, update: Update, context: Context) -> None:
        message = update.effective_message
        chat = update.effective_chat
        if message is None or chat is None:
            return
        text = message.text or ""
        if text.startswith("/"):
            await self.on_staff_command(update, context)
            return
        original = message.reply_to_message
        if original is None or original.from_user is None or original.from_user.id != context.bot.id:
            return  # staff talking among themselves
        patient = self.store.patient_for_staff_message(chat.id, original.message_id)
        if patient is None:
            await message.reply_text(self.writer.texts.not_linked)
            return
        lang = self._state(patient, None).lang
        now = self.clock()
        try:
            if text:
                prefix = self.assistant.text(lang, "staff_reply_prefix")
                await context.bot.send_message(patient, f"{prefix}\n\n{text}")
            else:
                await context.bot.copy_message(patient, chat.id, message.message_id)
        except (Forbidden, BadRequest):
            await message.reply_text(self.writer.texts.not_delivered)
            return
        self.store.open_handoff(patient, now)
        self.store.touch_handoff(patient, now)
        self.store.link_staff_message(chat.id, message.message_id, patient, at=now)
        await message.reply_text(self.writer.texts.delivered)

    async def on_staff_command(self, update: Update, context: Context) -> None:
        """Staff-only commands; anyone else is refused without learning anything."""
        message = update.effective_message
        chat = update.effective_chat
        if message is None or chat is None or message.text is None:
            return
        user_id = update.effective_user.id if update.effective_user else None
        name = message.text.partition(" ")[0].lstrip("/").split("@")[0].lower()
        if not self.staff.is_staff(chat.id, user_id):
            if chat.type == ChatType.PRIVATE:
                state = self._state(chat.id, update.effective_user)
                await message.reply_text(self.assistant.text(state.lang, "not_allowed"))
            return
        if name == "stats":
            since = self.clock() - timedelta(days=STATS_DAYS)
            await message.reply_text(self.writer.stats(self.store.stats(since)))
        elif name == "close" and message.reply_to_message is not None:
            patient = self.store.patient_for_staff_message(chat.id, message.reply_to_message.message_id)
            if patient is not None:
                await self._close(context, patient, message)

    async def _close_from_staff(self, update: Update, context: Context, query: CallbackQuery) -> None:
        chat = update.effective_chat
        user_id = update.effective_user.id if update.effective_user else None
        if chat is None or not self.staff.is_staff(chat.id, user_id) or query.data is None:
            return
        raw = query.data.removeprefix(CLOSE_PREFIX)
        if not raw.lstrip("-").isdigit():
            return
        message = query.message if isinstance(query.message, Message) else None
        await self._close(context, int(raw), message)

    async def _close(self, context: Context, patient: int, staff_message: Message | None) -> None:
        if self.store.close_handoff(patient, self.clock()):
            lang = self._state(patient, None).lang
            try:
                await context.bot.send_message(patient, self.assistant.text(lang, "handoff_closed"))
            except (Forbidden, BadRequest):
                pass
        if staff_message is not None:
            await staff_message.reply_text(self.writer.closed(str(patient)))

    async def on_migrate(self, update: Update, context: Context) -> None:
        message = update.effective_message
        if message is not None and message.migrate_to_chat_id:
            self.staff.follow_migration(message.chat_id, message.migrate_to_chat_id)

    # -- errors --------------------------------------------------------------------------------
    async def on_error(self, update: object, context: Context) -> None:
        error = context.error
        if isinstance(update, Update) and update.effective_chat is not None:
            chat_id = update.effective_chat.id
            if isinstance(error, Forbidden):
                # The patient blocked the bot: treat it as /stop.
                if self.store.get_patient(chat_id) is not None:
                    self.store.set_stopped(chat_id, True, self.clock())
                log.info("a patient has blocked the bot; marked as stopped")
                return
            log.error("error while handling update %s: %s", update.update_id, type(error).__name__, exc_info=error)
            if update.effective_chat.type == ChatType.PRIVATE:
                state = self._state(chat_id, update.effective_user)
                try:
                    await context.bot.send_message(chat_id, self.assistant.text(state.lang, "error_generic"))
                except TelegramError:
                    pass
            return
        log.error("error outside an update: %s", type(error).__name__, exc_info=error)


async def _answer_quietly(query: CallbackQuery) -> None:
    try:
        await query.answer()
    except TelegramError:
        pass  # an old button: the press is still handled
