"""Building and running the python-telegram-bot Application: one place registers handlers, in order."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from telegram import BotCommand, BotCommandScopeChat, Update
from telegram.ext import (
    AIORateLimiter,
    Application,
    CallbackQueryHandler,
    CommandHandler,
    MessageHandler,
    TypeHandler,
    filters,
)
from telegram.request import BaseRequest, HTTPXRequest

from bot.config import Config
from bot.core.conversation import Assistant
from bot.core.dialogue import PATIENT_COMMANDS, Dialogue
from bot.core.invites import InviteCodec
from bot.core.staff import StaffWriter
from bot.store import Store
from bot.telegram.handlers import Handlers, StaffDesk
from bot.telegram.ordering import PerChatUpdateProcessor

log = logging.getLogger(__name__)

STAFF_COMMANDS = ("stats", "close")
# Updates in flight at once (one chat's updates are still handled in order).
CONCURRENT_UPDATES = 32


def build_application(
    config: Config, assistant: Assistant, store: Store, *, request: BaseRequest | None = None
) -> Application:  # type: ignore[type-arg]
    """The bot as a PTB Application; the caller runs it (polling, webhook, or a test's own loop).

    `request` replaces the HTTP layer (tests pass one that answers as Telegram would, in process).
    """
    token = config.telegram.token
    if token is None:
        raise ValueError("no Telegram token: set TELEGRAM_BOT_TOKEN (or telegram.token in the config)")
    staff_lang = assistant.staff_lang
    staff_texts = assistant.pack(staff_lang).ui.staff
    assert staff_texts is not None  # checked when content is loaded
    invites = InviteCodec(config.invite_secret.get_secret_value()) if config.invite_secret else None
    handlers = Handlers(
        dialogue=Dialogue(assistant, invites),
        store=store,
        staff=StaffDesk(store, config.telegram.staff_chat_id, config.telegram.staff_user_ids),
        staff_writer=StaffWriter(staff_texts, config.facts(staff_lang)),
        staff_lang=staff_lang,
        handoff_idle=timedelta(minutes=config.telegram.handoff_idle_minutes),
        timezone=config.zone,
    )

    async def register_commands(app: Application) -> None:  # type: ignore[type-arg]
        await register_bot_commands(app, assistant, handlers.staff.chat_id)

    builder = (
        Application.builder()
        .token(token.get_secret_value())
        .base_url(config.telegram.api_url)
        .base_file_url(config.telegram.api_url.replace("/bot", "/file/bot"))
        .request(request or HTTPXRequest(connection_pool_size=32, read_timeout=15, connect_timeout=10))
        .get_updates_request(HTTPXRequest(read_timeout=config.telegram.poll_timeout + 10))
        .rate_limiter(AIORateLimiter(overall_max_rate=config.telegram.max_messages_per_second, max_retries=3))
        .concurrent_updates(PerChatUpdateProcessor(CONCURRENT_UPDATES))
        .post_init(register_commands)
        .post_shutdown(lambda _app: _close_store(store))
    )
    app = builder.build()

    async def purge_old_rows(_context: object) -> None:
        cutoff = datetime.now(UTC) - timedelta(days=config.retention_days)
        deleted = store.purge(cutoff)
        log.info("retention: deleted %d rows older than %d days", deleted, config.retention_days)

    if app.job_queue is not None:
        app.job_queue.run_repeating(purge_old_rows, interval=timedelta(days=1), first=timedelta(minutes=1))
    private = filters.ChatType.PRIVATE
    groups = filters.ChatType.GROUPS
    # Note: order matters. Group -1 runs first for every update and stops duplicates.
    app.add_handler(TypeHandler(Update, handlers.on_any_update), group=-1)
    app.add_handler(MessageHandler(filters.StatusUpdate.MIGRATE, handlers.on_migrate))
    app.add_handler(CommandHandler(list(STAFF_COMMANDS), handlers.on_staff_command))
    app.add_handler(CommandHandler(list(PATIENT_COMMANDS), handlers.on_command, filters=private))
    app.add_handler(CallbackQueryHandler(handlers.on_button))
    app.add_handler(MessageHandler(private & filters.COMMAND, handlers.on_command))  # unknown commands: help
    app.add_handler(MessageHandler(private & filters.TEXT, handlers.on_text))
    app.add_handler(MessageHandler(groups & ~filters.StatusUpdate.ALL, handlers.on_group_message))
    app.add_handler(MessageHandler(private & ~filters.StatusUpdate.ALL, handlers.on_non_text))
    app.add_error_handler(handlers.on_error)
    return app


async def _close_store(store: Store) -> None:
    store.close()


async def register_bot_commands(app: Application, assistant: Assistant, staff_chat_id: int | None) -> None:  # type: ignore[type-arg]
    """Command menus per language, so each patient sees descriptions in their own language."""
    for lang, pack in assistant.content.packs.items():
        commands = [BotCommand(name, getattr(pack.ui.commands, name)) for name in PATIENT_COMMANDS]
        await app.bot.set_my_commands(commands, language_code=lang)
        if lang == assistant.default_lang:
            await app.bot.set_my_commands(commands)
    if staff_chat_id is not None:
        staff = [BotCommand("stats", "Statistics of the last 7 days"), BotCommand("close", "Close (reply to a post)")]
        try:
            await app.bot.set_my_commands(staff, scope=BotCommandScopeChat(staff_chat_id))
        except Exception:  # the staff chat may not exist yet; patients are served anyway
            log.warning("could not set the staff chat's commands (is the bot a member of the staff chat?)")


def run(config: Config, assistant: Assistant, store: Store) -> None:
    """Long polling by default, a webhook when configured; SIGINT/SIGTERM stop it cleanly."""
    app = build_application(config, assistant, store)
    webhook = config.telegram.webhook
    if webhook.url:
        secret = webhook.secret_token.get_secret_value() if webhook.secret_token else None
        if secret is None:
            log.warning("webhook without secret_token: forged requests cannot be told apart")
        app.run_webhook(
            listen=webhook.listen,
            port=webhook.port,
            url_path=webhook.path,
            webhook_url=webhook.url,
            secret_token=secret,
            allowed_updates=Update.ALL_TYPES,
        )
    else:
        app.run_polling(timeout=config.telegram.poll_timeout, allowed_updates=Update.ALL_TYPES)
