"""The sender: drains the outbox into Telegram, the only code that calls the Bot API's send methods.

It knows Telegram's rules and what each failure means:

* **Pacing**: about 30 messages a second for the whole bot (shared by every process through the
  database), one a second per private chat with short bursts, 20 a minute per group.
* **429** holds back only the chat it came for (the whole bot only when several chats are refused
  at once); other patients are answered meanwhile.
* **5xx and dropped connections** are retried with exponential backoff and jitter; a safety
  message or staff alert is retried sooner and for longer than a reminder.
* **403 and "chat not found"** stop that chat: the patient is marked stopped, its queue ended.
* **A timeout after the request left** may have delivered the message: it is sent again at most
  once, and the uncertainty is logged.
* After the retries a message ends as **failed**: counted in /stats and reported in the staff chat.
"""

from __future__ import annotations

import asyncio
import io
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, Message, ReplyParameters
from telegram.error import BadRequest, ChatMigrated, Forbidden, InvalidToken, NetworkError, RetryAfter, TimedOut

from bot.core.events import Priority
from bot.core.staff import StaffWriter
from bot.delivery.outgoing import ALERT, NOTICE, SAFETY, text_messages
from bot.store.repository import Delivered, Outgoing, Queued, Store
from bot.telegram.http import reached_telegram

log = logging.getLogger(__name__)
T = TypeVar("T")
Db = Callable[..., Awaitable[Any]]

LEASE = timedelta(seconds=45)  # longer than one send with its timeouts
LEASE_MARGIN = 20.0  # seconds: a claimed message not started by then goes back to the queue (a send takes up to ~17 s)
BATCH = 50
PACED_LOOKAHEAD = 0.3  # seconds of the paced rate claimed ahead
UNPACED_IN_FLIGHT = 16  # requests at once when unpaced: enough for a Bot API server on the same network
# Claimed ahead of them, so a claim's round trip to the database never leaves them idle; few enough that the last
# one claimed starts well within its lease even when every request ahead of it times out.
UNPACED_CLAIMED = UNPACED_IN_FLIGHT + 8
# Messages sent but not yet recorded (a group commit is running): past this many, claiming more waits.
UNRECORDED_LIMIT = 256
IDLE_WAIT = 0.25  # seconds between looks at the queue when nothing woke the sender
# Attempts before a message counts as failed, and the backoff cap (seconds), per kind.
ATTEMPTS = {SAFETY: 12, ALERT: 14, "reply": 8, "relay": 8, NOTICE: 8, "reminder": 8}
BACKOFF_CAP = {SAFETY: 20.0, ALERT: 60.0}
DEFAULT_BACKOFF_CAP = 300.0
FIRST_BACKOFF = {SAFETY: 0.3, ALERT: 0.5}
RECORD_ATTEMPTS = 8  # tries to record deliveries before giving up (the lease then lets them be sent again)
RATE_WINDOW = 1.0  # seconds: Telegram's bot-wide limit is a count per second
RATE_POLL = 0.005  # seconds between looks while every send that counts is still waiting for its answer
GLOBAL_HOLD_CHATS = 3  # this many chats refused with 429 within a second: Telegram is limiting the whole bot


@dataclass(frozen=True)
class Limits:
    """Telegram's flood limits as the sender keeps them (a little under, so it never earns a 429).

    `per_second` spaces the send schedule that every process shares through the database. Telegram
    counts what arrives in each second and refuses the 31st, and a busy event loop can wake several late
    sends at once: so no process lets more than the whole part of `per_second` reach Telegram in any one
    second either (see `Sender._within_rate`). The default, 29, is one under Telegram's count.
    """

    per_second: float = 29  # whole bot; 0 = no pacing (a self-hosted Bot API server)
    private_interval: float = 1.0
    private_burst: int = 3
    group_interval: float = 3.2  # about 19 a minute
    group_burst: int = 3

    def next_free(self, chat_id: int, previous: float, now: float) -> float:
        """When the chat may get its next message (GCRA: a burst, then one per interval)."""
        interval, burst = (
            (self.group_interval, self.group_burst) if chat_id < 0 else (self.private_interval, self.private_burst)
        )
        tolerance = interval * (burst - 1)
        theoretical = max(previous + tolerance, now) + interval
        return theoretical - tolerance


class Fatal(Exception):
    """Telegram refuses the token: the process must stop and say so (a supervisor restarts or alerts)."""


@dataclass
class _Refusals:
    """429s by chat in the last second, to tell a chat's limit from the whole bot's."""

    recent: dict[int, float] = field(default_factory=dict)

    def add(self, chat_id: int, now: float) -> bool:
        self.recent = {c: t for c, t in self.recent.items() if now - t < 1.0}
        self.recent[chat_id] = now
        return len(self.recent) >= GLOBAL_HOLD_CHATS


@dataclass(frozen=True, slots=True)
class Delivery:
    """What became of one message, for the safety net and the health line."""

    key: str
    kind: str
    chat_id: int
    ok: bool


class Sender:
    def __init__(
        self,
        *,
        bot: Bot,
        store: Store,
        db: Db,
        staff_chat: Callable[[], int | None],
        on_staff_migrated: Callable[[int, int], Awaitable[None]],
        writer: StaffWriter,
        owner: str,
        limits: Limits = Limits(),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_delivery: Callable[[Delivery], None] = lambda _d: None,
        qr_png: Callable[[str], bytes] | None = None,
    ) -> None:
        self.bot = bot
        self.store = store
        self.db = db
        self.staff_chat = staff_chat
        self.on_staff_migrated = on_staff_migrated
        self.writer = writer
        self.owner = owner
        self.limits = limits
        self.clock = clock
        self.on_delivery = on_delivery
        self.qr_png = qr_png
        self._wake = asyncio.Event()
        self._refusals = _Refusals()
        self._in_flight: set[asyncio.Task[None]] = set()
        # Claimed messages Telegram has not answered yet: what `room` counts. A message whose answer came
        # frees its place at once, while its delivery is still being recorded.
        self._unanswered = 0
        self._answered = asyncio.Event()
        self._requests = asyncio.Semaphore(UNPACED_IN_FLIGHT)
        # Sends on their way, and when the last second's answers came: what Telegram may count in its current
        # second (see `_within_rate`).
        self._sending = 0
        self._recent_answers: deque[float] = deque()
        # Deliveries waiting to be recorded, and the task recording them (see `_record`).
        self._unrecorded: list[tuple[Delivered, asyncio.Future[None]]] = []
        self._recorder: asyncio.Task[None] | None = None
        self.fatal: BaseException | None = None
        # Keys already sent from memory (the safety net): their outbox copies are recorded, not sent again.
        self.skip: set[str] = set()

    def wake(self) -> None:
        """New messages are queued: look now instead of at the next tick."""
        self._wake.set()

    # -- the loop ------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Keep a few messages in flight, claiming more as each one ends: an urgent message queued now is
        claimed within a fraction of a second, even behind ten thousand reminders."""
        while not stop.is_set() and self.fatal is None:
            room = self._room() - self._unanswered
            behind = len(self._unrecorded) >= UNRECORDED_LIMIT
            if behind or room <= 0 or (room < self._room() // 2 and self._unanswered):  # claim in batches
                self._answered.clear()
                try:
                    await asyncio.wait_for(self._answered.wait(), IDLE_WAIT)
                except TimeoutError:
                    pass
                continue
            self._wake.clear()  # before the look: a wake during the claim must not be lost
            try:
                claimed = await self.drain_once(room)
            except Exception:  # the database may be locked or gone: the loop must live on
                log.warning("sender: could not read the outbox; retrying", exc_info=True)
                claimed = 0
            if claimed:
                continue
            try:
                await asyncio.wait_for(self._wake.wait(), IDLE_WAIT)
            except TimeoutError:
                pass
        if self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)
        if self.fatal is not None:  # the token was refused: whoever runs the sender must stop, and say why
            raise self.fatal

    async def finish_in_flight(self, timeout: float) -> None:
        """Let the sends under way end and their deliveries be recorded (at shutdown), for at most `timeout`."""
        pending = {*self._in_flight, *([self._recorder] if self._recorder is not None else [])}
        if pending:
            await asyncio.wait(pending, timeout=timeout)

    def _room(self) -> int:
        """Messages in flight at once: about a quarter of a second of the paced rate, or many when unpaced."""
        if self.limits.per_second <= 0:
            return UNPACED_CLAIMED
        return max(2, int(self.limits.per_second * PACED_LOOKAHEAD))

    async def drain_once(self, limit: int = BATCH) -> int:
        """Claim up to `limit` messages and start sending them (paced, concurrently across chats)."""
        now = self.clock()
        batch: list[Queued] = await self.db(self.store.claim_messages, self.owner, now, LEASE, min(limit, BATCH))
        claimed = time.monotonic()
        if not batch:
            return 0
        slot = time.time()
        interval = 1.0 / self.limits.per_second if self.limits.per_second > 0 else 0.0
        if interval:
            slot = await self.db(self.store.reserve_sends, len(batch), time.time(), interval)
        for index, message in enumerate(batch):
            self._unanswered += 1
            task = asyncio.create_task(self._send_at(message, slot + index * interval, claimed))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
        return len(batch)

    async def _send_at(self, message: Queued, start_at: float, claimed_at: float) -> None:
        """Wait for the message's slot, a place under the per-second count and a free request, then send it.
        Whatever happens (an error, cancellation at shutdown), what it took is given back."""
        counted = requested = answered_once = False

        def answered() -> None:
            """Telegram answered (or the message will not be sent): its place is free for the next claim."""
            nonlocal answered_once
            if answered_once:
                return
            answered_once = True
            self._unanswered -= 1
            self._answered.set()
            if requested:
                self._requests.release()
            if counted:
                self._sending -= 1
                self._recent_answers.append(time.monotonic())

        try:
            delay = start_at - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            counted = await self._within_rate()
            await self._requests.acquire()
            requested = True
            if time.monotonic() - claimed_at > LEASE.total_seconds() - LEASE_MARGIN:
                # Waited so long that its lease may lapse while it is sent, and another claim would send it
                # again: it goes back to the queue, unsent, for the next claim.
                await self.db(self.store.message_retry, message.id, not_before=self.clock(), error="lease nearly over")
                return
            await self.deliver(message, answered=answered)
        except Fatal as exc:
            self.fatal = exc
        except Exception:
            log.exception("sender: unexpected error on message %s", message.id)
        finally:
            answered()

    @property
    def _per_second_count(self) -> int:
        """The most sends that may reach Telegram in any one second (0: not counted)."""
        return int(self.limits.per_second)

    async def _within_rate(self) -> bool:
        """Never more than `per_second` sends from this process in any one second as Telegram counts them: the
        slots are spaced, but a busy event loop wakes several late ones together, and a request reaches
        Telegram some time after it was started. A send counts from its start until a second after its
        answer came (it arrived before that), so the count holds whatever the delays on the way. True when the
        send is counted (the caller gives its place back when the answer comes)."""
        limit = self._per_second_count
        if limit <= 0:
            return False
        while True:
            now = time.monotonic()
            while self._recent_answers and now - self._recent_answers[0] >= RATE_WINDOW:
                self._recent_answers.popleft()
            if self._sending + len(self._recent_answers) < limit:
                self._sending += 1
                return True
            oldest = self._recent_answers[0] if self._recent_answers else now
            await asyncio.sleep(max(RATE_POLL, oldest + RATE_WINDOW - now))

    # -- one message ---------------------------------------------------------------------------
    async def deliver(self, message: Queued, answered: Callable[[], None] = lambda: None) -> None:
        """Send one claimed message and record what happened; `answered` is called as soon as Telegram has
        answered, before the outcome is recorded."""
        chat_id = message.chat_id
        if message.key in self.skip:
            await self.db(self.store.message_sent, message.id, at=self.clock(), message_id=None)
            return
        try:
            try:
                sent = await self._call(chat_id, message.payload)
            finally:
                answered()
        except ChatMigrated as exc:
            await self.on_staff_migrated(chat_id, exc.new_chat_id)
            await self._retry(message, "chat migrated to a supergroup", soon=True)
            return
        except RetryAfter as exc:
            retry_after = _seconds(exc.retry_after)
            now = time.time()
            if self._refusals.add(chat_id, now):
                log.warning("Telegram is limiting the whole bot: pausing all sends for %.0f s", retry_after)
                await self.db(self.store.hold_bot, now + retry_after)
            else:
                await self.db(self.store.hold_chat, chat_id, now + retry_after)
            await self._retry(message, f"429 retry after {retry_after:.0f}s", at=now + retry_after, counts=False)
            return
        except Forbidden as exc:
            await self._stop_chat(message, f"403: {exc.message}")
            return
        except BadRequest as exc:
            if "chat not found" in exc.message.lower() or "user not found" in exc.message.lower():
                await self._stop_chat(message, f"400: {exc.message}")
            else:
                await self._fail(message, f"400: {exc.message}")
            return
        except InvalidToken as exc:
            raise Fatal("Telegram rejected the bot token") from exc
        except TimedOut as exc:
            if _maybe_sent(exc) and message.uncertain:
                log.warning("sender: delivery of message %s uncertain twice; not sending it again", message.id)
                await self._fail(message, "delivery uncertain: timed out twice after the request was sent")
            elif _maybe_sent(exc):
                log.warning(
                    "sender: message %s timed out after it was sent; delivery uncertain, sending once more", message.id
                )
                await self._retry(message, "timed out after sending", uncertain=True, soon=True)
            else:
                await self._retry(message, "timed out before sending")
            return
        except NetworkError as exc:
            if _maybe_sent(exc):
                if message.uncertain:
                    await self._fail(message, f"delivery uncertain twice: {_short(exc)}")
                else:
                    log.warning("sender: connection lost after message %s was sent; delivery uncertain", message.id)
                    await self._retry(message, f"uncertain: {_short(exc)}", uncertain=True, soon=True)
            else:
                await self._retry(message, _short(exc))
            return
        await self._sent(message, sent)

    async def _call(self, chat_id: int, payload: dict[str, Any]) -> Message | None:
        method = payload.get("method", "send")
        if method == "copy":
            copied = await self.bot.copy_message(chat_id, payload["from_chat"], payload["message_id"])
            return Message(copied.message_id, datetime.now(UTC), chat=None)  # type: ignore[arg-type]
        if method == "photo" and self.qr_png is not None:
            image = io.BytesIO(self.qr_png(payload["qr"]))
            image.name = "invite.png"
            return await self.bot.send_photo(chat_id, image, caption=payload.get("caption"))
        reply_to = payload.get("reply_to")
        return await self.bot.send_message(
            chat_id,
            payload["text"],
            reply_markup=_markup(payload.get("buttons")),
            reply_parameters=ReplyParameters(reply_to, allow_sending_without_reply=True) if reply_to else None,
        )

    async def send_direct(self, chat_id: int, payload: dict[str, Any], *, attempts: int = 6) -> bool:
        """Send without the outbox (the database is unavailable): retried here, in memory; True if delivered."""
        for attempt in range(attempts):
            try:
                await self._call(chat_id, payload)
                return True
            except RetryAfter as exc:
                await asyncio.sleep(min(_seconds(exc.retry_after), 30))
            except (Forbidden, BadRequest):
                return False
            except InvalidToken as exc:
                raise Fatal("Telegram rejected the bot token") from exc
            except NetworkError:  # TimedOut included: a duplicate beats a missing safety message here
                await asyncio.sleep(min(0.3 * 2**attempt, 5) * random.uniform(0.8, 1.2))
        return False

    # -- outcomes ------------------------------------------------------------------------------
    async def _sent(self, message: Queued, sent: Message | None) -> None:
        pace = (message.chat_id, self.limits.next_free(message.chat_id, message.next_free, time.time()))
        link = None
        if message.payload.get("link") and message.patient is not None and sent is not None:
            link = (message.chat_id, sent.message_id, message.patient)
        follow = self._acknowledge(message, ok=True, reason="")
        await self._record(
            Delivered(
                message.id,
                sent.message_id if sent else None,
                pace=pace,
                link=link,
                follow_up=follow,
                erase=bool(message.payload.get("erase")),
            )
        )
        self.on_delivery(Delivery(message.key, message.kind, message.chat_id, True))

    async def _record(self, delivered: Delivered) -> None:
        """Record a delivery, committed together with those that finish while a commit is running (group
        commit): a lone reply is written at once, a burst costs one transaction per batch, not per message."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._unrecorded.append((delivered, done))
        if self._recorder is None or self._recorder.done():
            self._recorder = asyncio.create_task(self._record_pending())
        await done

    async def _record_pending(self) -> None:
        while self._unrecorded:
            batch, self._unrecorded = self._unrecorded, []
            error: BaseException | None = None
            for attempt in range(RECORD_ATTEMPTS):
                try:
                    await self.db(self.store.messages_sent, [d for d, _ in batch], at=self.clock())
                    error = None
                    break
                except Exception as exc:  # locked or gone: keep the deliveries and try again shortly
                    error = exc
                    log.warning("sender: could not record %d deliveries (%s); retrying", len(batch), type(exc).__name__)
                    await asyncio.sleep(min(0.1 * 2**attempt, 3.0))
            for _, done in batch:
                if done.done():
                    continue
                if error is not None:
                    done.set_exception(error)
                else:
                    done.set_result(None)

    async def _retry(
        self,
        message: Queued,
        error: str,
        *,
        at: float | None = None,
        soon: bool = False,
        uncertain: bool = False,
        counts: bool = True,
    ) -> None:
        attempts = message.attempts
        if counts and attempts >= ATTEMPTS.get(message.kind, 8):
            await self._fail(message, f"gave up after {attempts} attempts: {error}")
            return
        if at is None:
            first = FIRST_BACKOFF.get(message.kind, 1.0)
            cap = BACKOFF_CAP.get(message.kind, DEFAULT_BACKOFF_CAP)
            wait = 0.05 if soon else min(cap, first * 2 ** max(attempts - 1, 0)) * random.uniform(0.7, 1.3)
            at = time.time() + wait
        not_before = datetime.fromtimestamp(at, UTC)
        if message.priority <= Priority.ALERT:
            log.warning("sender: %s message %s not delivered yet (%s); retrying", message.kind, message.id, error)
        else:
            log.info("sender: message %s not delivered yet (%s); retrying", message.id, error)
        await self.db(self.store.message_retry, message.id, not_before=not_before, error=error, uncertain=uncertain)

    async def _fail(self, message: Queued, error: str) -> None:
        log.error("sender: %s message %s failed: %s", message.kind, message.id, error)
        follow = self._acknowledge(message, ok=False, reason=error) or self._failure_notice(message, error)
        await self.db(self.store.message_failed, message.id, at=self.clock(), error=error, follow_up=follow)
        self.on_delivery(Delivery(message.key, message.kind, message.chat_id, False))

    async def _stop_chat(self, message: Queued, error: str) -> None:
        staff = self.staff_chat()
        if staff is not None and message.chat_id == staff:
            # The bot was removed from the staff chat: nothing can reach staff there; it must be loud.
            log.error("sender: the staff chat refuses the bot (%s): alerts cannot be delivered", error)
            await self._fail(message, error)
            return
        log.info("sender: a chat refuses the bot (%s); its messages are stopped", error.split(":")[0])
        follow = self._acknowledge(message, ok=False, reason=error)
        await self.db(self.store.stop_chat, message.chat_id, at=self.clock(), error=error)
        if follow:
            await self.db(self.store.enqueue, follow, self.clock())
        self.on_delivery(Delivery(message.key, message.kind, message.chat_id, False))

    def _acknowledge(self, message: Queued, *, ok: bool, reason: str) -> list[Outgoing]:
        """A staff reply relayed to a patient: tell the staff message that sent it how it went."""
        ack = message.payload.get("ack")
        if not ack:
            return []
        text = self.writer.texts.delivered if ok else self.writer.not_delivered(_reason(reason))
        return text_messages(
            f"{message.key}:ack",
            int(ack[0]),
            text,
            priority=int(Priority.REPLY),
            kind=NOTICE,
            at=self.clock(),
            reply_to=int(ack[1]),
        )

    def _failure_notice(self, message: Queued, error: str) -> list[Outgoing]:
        """A message that could not be delivered after the retries is reported in the staff chat."""
        staff = self.staff_chat()
        if staff is None or message.chat_id == staff or message.kind == NOTICE:
            return []
        who = f"id {message.patient}" if message.patient is not None else f"chat {message.chat_id}"
        text = self.writer.delivery_failed(who, _reason(error), message.payload.get("text", "")[:200])
        return text_messages(
            f"{message.key}:failed",
            staff,
            text,
            priority=int(Priority.ALERT),
            kind=NOTICE,
            at=self.clock(),
            patient=message.patient,
            extra={"link": True} if message.patient is not None else None,
        )


def _markup(buttons: list[list[list[str]]] | None) -> InlineKeyboardMarkup | None:
    if not buttons:
        return None
    return InlineKeyboardMarkup(
        [[InlineKeyboardButton(label, callback_data=data) for label, data in row] for row in buttons]
    )


def _seconds(value: int | float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _maybe_sent(exc: BaseException) -> bool:
    """Whether a failed request may have reached Telegram (a read timeout, a connection lost mid-answer): the HTTP
    layer says so on the errors it raises; any other timeout is taken as possibly delivered."""
    reached = reached_telegram(exc)
    return isinstance(exc, TimedOut) if reached is None else reached


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:120]}"


def _reason(error: str) -> str:
    lowered = error.lower()
    if "blocked" in lowered:
        return "the patient has blocked the bot"
    if "not found" in lowered or "deactivated" in lowered:
        return "the chat no longer exists"
    if "kicked" in lowered:
        return "the bot was removed from the chat"
    if "uncertain" in lowered:
        return "Telegram did not confirm the delivery"
    return "Telegram kept refusing it"
