"""`aftercare run`: the Telegram service, wired together and kept alive.

    Telegram ─getUpdates/webhook─▶ inbox (database) ─worker─▶ dialogue ─turn─▶ outbox (database) ─sender─▶ Telegram

* Updates are stored in the inbox **before** Telegram is told they arrived (the next getUpdates
  offset, or the webhook's 200), so `kill -9` loses none: unfinished ones are handled at start-up.
* A worker claims stored updates one chat at a time, in order, and commits each turn — its state
  changes, its messages and "handled" — in one transaction.
* The sender drains the outbox within Telegram's limits (`bot.delivery.sender`).
* **Safety net**: every update is triaged as it arrives; a danger sign whose safety message or staff
  alert is not delivered in time (the database is locked, say) is sent at once from memory.
* python-telegram-bot's `Application` dispatches the stored updates to the handler and runs the
  job queue; its own `Updater` is not used, because it confirms updates before they are handled.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, TypeVar

from telegram import BotCommand, BotCommandScopeChat, Update
from telegram.error import Conflict, InvalidToken, NetworkError, TelegramError, TimedOut
from telegram.ext import Application, ContextTypes, TypeHandler
from telegram.request import BaseRequest

from bot.config import Config
from bot.core import recovery
from bot.core.content import Text
from bot.core.conversation import Assistant
from bot.core.dialogue import PATIENT_COMMANDS, Dialogue
from bot.core.events import Priority
from bot.core.recovery import Reminder
from bot.delivery.outgoing import REMINDER, SAFETY, keyboard, text_messages
from bot.delivery.qr import qr_png
from bot.delivery.sender import UNPACED_IN_FLIGHT, Delivery, Fatal, Limits, Sender
from bot.logs import setup_logging
from bot.runtime import build_dialogue
from bot.store import Store, open_store
from bot.store.repository import DueReminder, Outgoing, StoredUpdate
from bot.telegram.http import AiohttpRequest
from bot.telegram.pipeline import STAFF_CHAT_SETTING, Pipeline, Result, StaffDesk
from bot.telegram.translate import Bot as BotIdentity
from bot.telegram.translate import chat_of

log = logging.getLogger(__name__)
T = TypeVar("T")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_TOKEN = 3
# A claim lapses after this: another process takes over the work of one that died (PostgreSQL).
INBOX_LEASE = timedelta(seconds=15)
WORKER_BATCH = 16
IDLE_WAIT = 0.25
SAFETY_DEADLINE = 1.0  # seconds from arrival: the patient's safety message must be out by then
ALERT_DEADLINE = 4.0  # ... and the staff alert
MEMORY_MODE_AFTER = 20.0  # seconds of an unwritable database before updates are answered from memory
HEALTH_EVERY = timedelta(minutes=1)
REMINDER_TICK = timedelta(seconds=5)  # the database is the schedule: this is how often it is read
REMINDER_BATCH = 500
SHUTDOWN_GRACE = 5.0  # seconds given to sends under way when the process is asked to stop
MAX_ATTEMPTS = 6  # an update whose handling keeps failing for a reason of ours is set aside

Context = ContextTypes.DEFAULT_TYPE


@dataclass
class _Slot:
    """Carries one stored update into the handler and its result back out (python-telegram-bot's handlers
    return nothing to the caller of `process_update`)."""

    stored: StoredUpdate | None
    update_id: int
    result: Result | None = None
    error: BaseException | None = None


_current: contextvars.ContextVar[_Slot] = contextvars.ContextVar("aftercare_update")


@dataclass
class Health:
    """What the health line reports: the database, Telegram, and what is waiting."""

    db_failing_since: float | None = None
    db_error: str = ""
    telegram_error: str = ""
    direct_sends: int = 0
    memory_answers: int = 0
    changed: bool = True

    def db_ok(self) -> None:
        if self.db_failing_since is not None:
            log.warning("health: the database is writable again after %.0f s", time.time() - self.db_failing_since)
            self.changed = True
        self.db_failing_since = None
        self.db_error = ""

    def db_failed(self, error: str) -> None:
        if self.db_failing_since is None:
            self.db_failing_since = time.time()
            log.error("health: the database cannot be written (%s): danger signs are answered from memory", error)
            self.changed = True
        self.db_error = error

    def db_down_for(self) -> float:
        return 0.0 if self.db_failing_since is None else time.time() - self.db_failing_since


@dataclass
class SafetyNet:
    """Sends a danger sign's safety message and staff alert from memory when the normal path is too slow."""

    service: Service
    seen: dict[int, float] = field(default_factory=dict)
    delivered: set[str] = field(default_factory=set)

    def observe(self, update: Update) -> None:
        if update.update_id in self.seen:
            return
        now = time.time()
        self.seen = {u: t for u, t in self.seen.items() if now - t < 600}
        self.seen[update.update_id] = now
        task = asyncio.create_task(self._watch(update, now))
        self.service.tasks.add(task)
        task.add_done_callback(self.service.tasks.discard)

    def on_delivery(self, delivery: Delivery) -> None:
        if delivery.ok:
            self.delivered.add(delivery.key)
            if len(self.delivered) > 10_000:
                self.delivered.clear()

    async def _watch(self, update: Update, arrived: float) -> None:
        service = self.service
        # Triage from memory alone (never the database): the part of the turn that cannot wait.
        result = await service.cpu(partial(service.pipeline.screen, update))
        if result is None:
            return
        urgent = [row for row in result if row.kind == SAFETY or row.priority <= Priority.ALERT]
        if not urgent:
            return
        for deadline, rows in (
            (SAFETY_DEADLINE, [r for r in urgent if r.kind == SAFETY]),
            (ALERT_DEADLINE, [r for r in urgent if r.kind != SAFETY]),
        ):
            await asyncio.sleep(max(0.0, arrived + deadline - time.time()))
            for row in rows:
                if row.key in self.delivered or row.key in service.sender.skip:
                    continue
                log.warning(
                    "safety net: a %s message was not delivered in %.0f s; sending it from memory", row.kind, deadline
                )
                service.health.direct_sends += 1
                service.sender.skip.add(row.key)  # the outbox copy, if any, is not sent again
                service.pipeline.sent_directly.setdefault(update.update_id, set()).add(row.key)
                await service.sender.send_direct(row.chat_id, row.payload)


class Service:
    def __init__(
        self,
        config: Config,
        assistant: Assistant,
        store: Store,
        *,
        request: BaseRequest | None = None,
        updates_request: BaseRequest | None = None,
    ) -> None:
        """`request` / `updates_request` replace the HTTP layer (tests answer Bot API calls in process)."""
        self.config = config
        self.assistant = assistant
        self.store = store
        self.dialogue: Dialogue = build_dialogue(config, assistant)
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self.stop = asyncio.Event()
        self.health = Health()
        self.tasks: set[asyncio.Task[Any]] = set()
        self._db = ThreadPoolExecutor(max_workers=4, thread_name_prefix="aftercare-db")
        self._cpu = ThreadPoolExecutor(max_workers=2, thread_name_prefix="aftercare-cpu")
        self._work = asyncio.Event()
        self.exit_code = EXIT_OK
        telegram = config.telegram
        token = telegram.token.get_secret_value() if telegram.token else ""
        request = request or AiohttpRequest(
            connection_pool_size=UNPACED_IN_FLIGHT + 2,
            read_timeout=10,
            write_timeout=10,
            connect_timeout=5,
            pool_timeout=10,
        )
        self.app: Application = (  # type: ignore[type-arg]
            Application.builder()
            .token(token)
            .base_url(telegram.api_url)
            .base_file_url(telegram.api_url.replace("/bot", "/file/bot"))
            .request(request)
            .get_updates_request(
                updates_request or AiohttpRequest(read_timeout=telegram.poll_timeout + 10, connect_timeout=5)
            )
            .updater(None)
            .build()
        )
        self.app.add_handler(TypeHandler(Update, self.on_update))
        self.app.add_error_handler(self.on_error)
        self.staff = StaffDesk(telegram.staff_chat_id, frozenset(telegram.staff_user_ids))
        self.net = SafetyNet(self)
        self.pipeline: Pipeline  # after initialize(): needs the bot's identity
        self.sender: Sender

    # -- plumbing ------------------------------------------------------------------------------
    async def db(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a database call in a worker thread: a locked database never blocks the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._db, partial(function, *args, **kwargs))

    async def cpu(self, function: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._cpu, function)

    def clock(self) -> datetime:
        return datetime.now(UTC)

    def spawn(self, coroutine: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coroutine)
        task.set_name(name)
        self.tasks.add(task)
        task.add_done_callback(self._ended)
        return task

    def _ended(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if isinstance(error, Fatal | InvalidToken):
            self.fail(EXIT_TOKEN, "Telegram rejected the bot token (revoked?); check TELEGRAM_BOT_TOKEN.")
        elif error is not None:
            log.error("%s stopped: %s", task.get_name(), type(error).__name__, exc_info=error)
            self.fail(EXIT_FAILED, f"{task.get_name()} stopped unexpectedly ({type(error).__name__})")

    def fail(self, code: int, message: str) -> None:
        if self.exit_code == EXIT_OK:
            self.exit_code = code
            print(f"aftercare run: {message}", file=sys.stderr)
        self.stop.set()

    # -- start and stop ------------------------------------------------------------------------
    async def _close_connections(self) -> None:
        """A start that failed at getMe leaves the HTTP sessions open (python-telegram-bot only closes what
        initialised completely): close them, so the one-line error is all that is printed."""
        for request in (self.app.bot.request, self.app.bot._request[0]):  # sending, then getUpdates
            await request.shutdown()

    async def run(self) -> int:
        try:
            await self.app.initialize()  # getMe: refuses a bad token, needs the network
        except InvalidToken:
            await self._close_connections()
            print("aftercare run: Telegram rejected the bot token; check TELEGRAM_BOT_TOKEN.", file=sys.stderr)
            return EXIT_TOKEN
        except (NetworkError, TimedOut) as exc:
            await self._close_connections()
            where = self.config.telegram.api_url.split("/bot")[0]
            print(
                f"aftercare run: cannot reach Telegram at {where} ({_reason(exc)}); check the network.", file=sys.stderr
            )
            return EXIT_FAILED
        me = self.app.bot
        identity = BotIdentity(me.id, me.username or "")
        self.dialogue = build_dialogue(self.config, self.assistant, identity.username)
        migrated = await self._staff_setting()
        self.staff.current = migrated
        self.pipeline = Pipeline(
            self.dialogue,
            self.store,
            self.staff,
            identity,
            timedelta(minutes=self.config.telegram.handoff_idle_minutes),
            self.clock,
        )
        self.sender = Sender(
            bot=me,
            store=self.store,
            db=self.db,
            staff_chat=lambda: self.staff.chat_id,
            on_staff_migrated=self._staff_migrated,
            writer=self.dialogue.staff,
            owner=self.owner,
            limits=_limits(self.config),
            clock=self.clock,
            on_delivery=self.net.on_delivery,
            qr_png=qr_png,
        )
        self._install_signals()
        if self.store.dialect == "sqlite":  # one process: a killed predecessor's claims are ours to redo now
            freed = await self.db(self.store.release_leases)
            if freed:
                log.warning("resuming %d update(s) or message(s) a previous run had not finished", freed)
        await self.app.start()
        self._schedule_jobs()
        self.spawn(self._register_commands(), "command registration")
        self.spawn(self.sender.run(self.stop), "sender")
        self.spawn(self._work_loop(), "worker")
        webhook = self.config.telegram.webhook
        if webhook.url:
            from bot.delivery.webhook import serve_webhook

            self.spawn(serve_webhook(self), "webhook")
        else:
            self.spawn(self._poll_loop(), "poller")
        log.info("aftercare is running as @%s (%s)", identity.username, "webhook" if webhook.url else "long polling")
        await self.stop.wait()
        await self._shutdown()
        return self.exit_code

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self.stop.set)
            except (NotImplementedError, RuntimeError):
                pass

    async def _shutdown(self) -> None:
        log.info("stopping")
        sender = getattr(self, "sender", None)
        if sender is not None:  # sends under way finish and are recorded before the HTTP and database close
            await sender.finish_in_flight(SHUTDOWN_GRACE)
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        try:
            if self.app.running:
                await self.app.stop()
            await self.app.shutdown()
        except Exception:
            log.warning("error while shutting down python-telegram-bot", exc_info=True)
        self._db.shutdown(wait=False, cancel_futures=True)
        self._cpu.shutdown(wait=False, cancel_futures=True)

    async def _staff_setting(self) -> int | None:
        try:
            value = await self.db(self.store.get_setting, STAFF_CHAT_SETTING)
        except Exception:
            return None
        return int(value) if value and value.lstrip("-").isdigit() else None

    async def _staff_migrated(self, old: int, new: int) -> None:
        if old == self.staff.chat_id:
            self.staff.current = new
            log.info("the staff chat became a supergroup; following its new id")
            await self.db(self.store.set_setting, STAFF_CHAT_SETTING, str(new))
            await self.db(self.store.move_chat, old, new)

    async def _register_commands(self) -> None:
        """Command menus per language, so each patient sees descriptions in their own language."""
        bot = self.app.bot
        try:
            for lang, pack in self.assistant.content.packs.items():
                commands = [BotCommand(name, getattr(pack.ui.commands, name)) for name in PATIENT_COMMANDS]
                await bot.set_my_commands(commands, language_code=lang)
                if lang == self.assistant.default_lang:
                    await bot.set_my_commands(commands)
            if self.staff.chat_id is not None:
                staff = [
                    BotCommand("stats", "Statistics of the last 7 days"),
                    BotCommand("close", "Close (reply to a post)"),
                ]
                await bot.set_my_commands(staff, scope=BotCommandScopeChat(self.staff.chat_id))
        except InvalidToken:
            raise
        except TelegramError as exc:  # the menu is a convenience: patients are served anyway
            log.warning("could not set the command menus (%s)", _reason(exc))

    def _schedule_jobs(self) -> None:
        jobs = self.app.job_queue
        if jobs is None:
            return
        jobs.run_repeating(self._retention, interval=timedelta(hours=6), first=timedelta(minutes=1))
        jobs.run_repeating(self._health_line, interval=HEALTH_EVERY, first=timedelta(seconds=5))
        if self.assistant.content.plans is not None:
            jobs.run_repeating(self._dispatch_reminders, interval=REMINDER_TICK, first=timedelta(seconds=1))

    async def _retention(self, _context: Context) -> None:
        now = self.clock()
        try:
            deleted = await self.db(
                self.store.purge,
                now - timedelta(days=self.config.retention_days),
                handled_before=now - timedelta(days=2),
            )
            log.info("retention: deleted %d old rows", deleted)
        except Exception as exc:
            log.warning("retention: %s", type(exc).__name__)

    async def _dispatch_reminders(self, _context: Context) -> None:
        """Hand the reminders that are due to the outbox (the database is the schedule: no job per reminder)."""
        total = 0
        try:
            while True:
                queued, missed = await self.db(
                    self.store.dispatch_reminders, self.clock(), REMINDER_BATCH, self._render_reminder
                )
                total += queued
                if missed:
                    log.info("reminders: %d missed their time (the bot was down longer than their limit)", missed)
                if queued + missed < REMINDER_BATCH:
                    break
        except Exception as exc:
            self.health.db_failed(_reason(exc))
            return
        if total:
            self.sender.wake()

    def _render_reminder(self, due: DueReminder) -> tuple[list[Outgoing], Reminder | None] | None:
        plans = self.assistant.content.plans
        if plans is None:
            return None
        lang = self.assistant.lang(due.lang)
        found = recovery.message(
            plans,
            due.enrolment,
            due.treatment,
            due.step.removesuffix(f":{recovery.AGAIN}"),
            lang,
            self.assistant.facts(lang),
        )
        if found is None:
            return None
        text, buttons = found
        rows = text_messages(
            f"rem:{due.key}",
            due.chat_id,
            text,
            priority=int(Priority.BULK),
            kind=REMINDER,
            at=self.clock(),
            buttons=keyboard(buttons),
            patient=due.chat_id,
        )
        again = None
        if due.checkin:
            when = recovery.asked_again(
                plans, due.treatment, due.step, self.clock(), due.zone, self.config.reminders.timing
            )
            if when is not None:
                again = Reminder(
                    f"{due.key}:{recovery.AGAIN}",
                    due.enrolment,
                    f"{due.step}:{recovery.AGAIN}",
                    when,
                    when + self.config.reminders.timing.default_late,
                    checkin=True,
                )
        return rows, again

    async def _health_line(self, _context: Context) -> None:
        health = self.health
        try:
            inbox = await self.db(self.store.inbox_pending)
            outbox = await self.db(self.store.outbox_figures, self.clock() - timedelta(days=7))
            queue = f"inbox {inbox} waiting, outbox {outbox.pending} waiting, {outbox.failed} failed in 7 days"
        except Exception as exc:
            queue = "queues unknown"
            health.db_failed(_reason(exc))
        db = "database ok" if health.db_failing_since is None else f"DATABASE UNAVAILABLE ({health.db_error})"
        telegram = "telegram ok" if not health.telegram_error else f"telegram: {health.telegram_error}"
        extra = f", {health.direct_sends} sent from memory" if health.direct_sends else ""
        log.info("health: %s; %s; %s%s", db, telegram, queue, extra)

    # -- receiving -----------------------------------------------------------------------------
    async def _poll_loop(self) -> None:
        bot = self.app.bot
        offset: int | None = None
        try:
            last = await self.db(self.store.last_update_id)
            offset = last + 1 if last is not None else None
        except Exception as exc:
            self.health.db_failed(_reason(exc))
        backoff = 1.0
        while not self.stop.is_set():
            try:
                if not await self.db(self.store.lead):
                    await asyncio.sleep(3)  # another process polls; this one works the queues
                    continue
            except Exception as exc:
                self.health.db_failed(_reason(exc))
            try:
                timeout = self.config.telegram.poll_timeout if self.health.db_failing_since is None else 1
                updates = await bot.get_updates(offset=offset, timeout=timeout, allowed_updates=Update.ALL_TYPES)
                self.health.telegram_error = ""
                backoff = 1.0
            except InvalidToken:
                raise
            except Conflict:
                self.health.telegram_error = "another getUpdates client is running"
                log.error("Telegram says another process polls with this token (409); waiting")
                await asyncio.sleep(5)
                continue
            except (NetworkError, TimedOut) as exc:
                self.health.telegram_error = _reason(exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30)
                continue
            if not updates:
                continue
            for update in updates:
                self.net.observe(update)
            if await self.receive(updates):
                offset = max(u.update_id for u in updates) + 1  # confirmed by the next getUpdates
            elif self.health.db_down_for() > MEMORY_MODE_AFTER:
                await self.answer_from_memory(updates)
                offset = max(u.update_id for u in updates) + 1
            else:
                await asyncio.sleep(1)  # Telegram keeps them until the offset moves on

    async def receive(self, updates: list[Update]) -> bool:
        """Store updates in the inbox; True when they are safely stored (then Telegram may forget them)."""
        rows = [(u.update_id, chat_of(u), json.dumps(u.to_dict(), ensure_ascii=False)) for u in updates]
        try:
            await self.db(self.store.store_updates, rows, self.clock())
        except Exception as exc:
            self.health.db_failed(_reason(exc))
            return False
        self.health.db_ok()
        self._work.set()
        return True

    async def answer_from_memory(self, updates: list[Update]) -> None:
        """The database has been unwritable for long: answer these updates without it, and say so in the log."""
        for update in updates:
            result = await self.cpu(partial(self.pipeline.handle, update, update_row=None, update_id=update.update_id))
            self.health.memory_answers += 1
            for row in result.outgoing:
                if row.key not in self.sender.skip:
                    self.sender.skip.add(row.key)
                    await self.sender.send_direct(row.chat_id, row.payload)
        log.warning("answered %d update(s) from memory while the database is unavailable", len(updates))

    # -- handling ------------------------------------------------------------------------------
    async def _work_loop(self) -> None:
        """Keep up to WORKER_BATCH updates in hand, claiming more as each one ends (a batch that waited for its
        slowest member held every update that arrived meanwhile)."""
        in_hand: dict[int, asyncio.Task[None]] = {}  # by inbox row: one whose lease lapses is not begun again
        while not self.stop.is_set():
            room = WORKER_BATCH - len(in_hand)
            if room <= 0:
                await asyncio.wait(set(in_hand.values()), return_when=asyncio.FIRST_COMPLETED)
                continue
            self._work.clear()  # before the look: updates stored during the claim must not wait for the tick
            try:
                claimed = await self.db(self.store.claim_updates, self.owner, self.clock(), INBOX_LEASE, room)
            except Exception as exc:
                self.health.db_failed(_reason(exc))
                await asyncio.sleep(1)
                continue
            fresh = [stored for stored in claimed if stored.id not in in_hand]
            for stored in fresh:
                task = asyncio.ensure_future(self._handle_then_look(stored))
                in_hand[stored.id] = task
                self.tasks.add(task)
                task.add_done_callback(partial(_forget_row, in_hand, stored.id))
                task.add_done_callback(self.tasks.discard)
            if fresh:
                continue
            try:
                await asyncio.wait_for(self._work.wait(), IDLE_WAIT)
            except TimeoutError:
                pass

    async def _handle_then_look(self, stored: StoredUpdate) -> None:
        try:
            await self._handle(stored)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the update stays in the inbox and is handled again; say so, loudly
            log.error("update %s: handling failed (%s); it will be retried", stored.update_id, type(exc).__name__)
        finally:
            self._work.set()  # the chat's next update, if any, can be claimed now

    async def _handle(self, stored: StoredUpdate) -> None:
        update = Update.de_json(stored.payload, self.app.bot)
        if update is None:
            await self.db(self.store.finish_update, stored.id, self.clock())
            return
        slot = _Slot(stored, stored.update_id)
        token = _current.set(slot)
        try:
            await self.app.process_update(update)
        finally:
            _current.reset(token)
        result = slot.result
        if result is not None and result.committed:
            self.health.db_ok()
            if result.migrated is not None:
                await self._staff_migrated(*result.migrated)
            if result.outgoing:
                self.sender.wake()
            return
        if result is not None:  # the database refused the turn: what cannot wait goes out now
            self.health.db_failed(result.error)
            await self._send_urgent(update.update_id, Pipeline.urgent_part(result))
        elif slot.error is not None:
            log.error(
                "update %s could not be handled: %s", stored.update_id, type(slot.error).__name__, exc_info=slot.error
            )
        if stored.attempts >= MAX_ATTEMPTS:
            log.error("update %s set aside after %d attempts", stored.update_id, stored.attempts)
            await self._quietly(self.store.finish_update, stored.id, self.clock())
            await self._apologise(update)
            return
        retry = self.clock() + timedelta(seconds=min(2**stored.attempts, 60))
        await self._quietly(
            self.store.retry_update, stored.id, error=result.error if result else "error", not_before=retry
        )

    async def _apologise(self, update: Update) -> None:
        """A patient whose message we could not handle hears so, rather than nothing."""
        chat = update.effective_chat
        if chat is None or chat.type != "private":
            return
        user = update.effective_user
        lang = self.assistant.lang(user.language_code if user else None)
        text = self.assistant.text(lang, Text.ERROR_GENERIC)
        await self.sender.send_direct(chat.id, {"method": "send", "text": text})

    async def _send_urgent(self, update_id: int, rows: list[Outgoing]) -> None:
        for row in rows:
            if row.key in self.sender.skip:
                continue
            self.sender.skip.add(row.key)
            self.pipeline.sent_directly.setdefault(update_id, set()).add(row.key)
            self.health.direct_sends += 1
            await self.sender.send_direct(row.chat_id, row.payload)

    async def _quietly(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        try:
            await self.db(function, *args, **kwargs)
        except Exception as exc:
            self.health.db_failed(_reason(exc))

    async def on_update(self, update: Update, _context: Context) -> None:
        """The one handler: every update goes through the pipeline (translate, dialogue, commit)."""
        slot = _current.get(None)
        if slot is None:  # an update that did not come from the inbox (nothing else feeds the Application)
            return
        row = slot.stored.id if slot.stored is not None else None
        slot.result = await self.db(self.pipeline.handle, update, update_row=row, update_id=slot.update_id)

    async def on_error(self, _update: object, context: Context) -> None:
        slot = _current.get(None)
        if slot is not None:
            slot.error = context.error
        else:
            log.error("error in a job: %s", type(context.error).__name__, exc_info=context.error)


def _forget_row(in_hand: dict[int, asyncio.Task[None]], row: int, _task: asyncio.Task[None]) -> None:
    in_hand.pop(row, None)


def _limits(config: Config) -> Limits:
    rate = config.telegram.max_messages_per_second
    return Limits(per_second=rate) if rate > 0 else Limits(per_second=0)


def _reason(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:160]


def preflight(config: Config) -> str | None:
    """Why the service cannot start with this config (before anything is loaded), or None."""
    telegram = config.telegram
    if telegram.token is None:
        return (
            "no Telegram token. Set TELEGRAM_BOT_TOKEN (from @BotFather), "
            "or try the bot without Telegram: aftercare shell"
        )
    if telegram.webhook.url and telegram.webhook.secret_token is None:
        return (
            "a webhook needs telegram.webhook.secret_token (or AFTERCARE_WEBHOOK_SECRET): "
            "without it anyone could send the bot forged updates."
        )
    return None


def run_service(config: Config, assistant: Assistant) -> int:
    """`aftercare run`: returns the process's exit code."""
    telegram = config.telegram
    refusal = preflight(config)
    if refusal is not None or telegram.token is None:
        print(f"aftercare run: {refusal}", file=sys.stderr)
        return EXIT_CONFIG
    secrets = [telegram.token.get_secret_value()]
    if telegram.webhook.secret_token:
        secrets.append(telegram.webhook.secret_token.get_secret_value())
    setup_logging(secrets)
    try:
        store = open_store(config.database_url)
    except Exception as exc:
        print(f"aftercare run: cannot open the database ({_reason(exc)}).", file=sys.stderr)
        return EXIT_FAILED

    async def main() -> int:
        return await Service(config, assistant, store).run()

    try:
        return asyncio.run(main())
    except KeyboardInterrupt:
        return EXIT_OK
    finally:
        store.close()
