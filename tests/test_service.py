"""The real service (inbox, dialogue, outbox, sender) in the test's event loop, over HTTP to the fake Bot API.

Faults are injected the way Telegram produces them; what a patient or the staff would notice is asserted.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.config import Config
from bot.core.conversation import Assistant
from bot.store import Store
from tests.conftest import STAFF_CHAT, STAFF_USER, running_service, service_config
from tests.fake_telegram import FakeTelegram

PATIENT = 5001
OTHER = 5002


@pytest.fixture
def config(fake: FakeTelegram) -> Config:
    return service_config(fake)


def texts_to(fake: FakeTelegram, chat_id: int) -> list[str]:
    return [m.get("text") or m.get("caption") or "" for m in fake.messages_to(chat_id)]


async def until(condition: Any, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_question_is_answered_and_the_update_is_stored_first(
    fake: FakeTelegram, store: Store, fixture_assistant: tuple[Config, Assistant], config: Config
) -> None:
    async with running_service(fake, store, fixture_assistant[1], config):
        fake.send_text(PATIENT, "how long do bruises last?")
        await until(lambda: any("bruises" in t.lower() for t in texts_to(fake, PATIENT)), what="the answer")
        assert store.inbox_pending() == 0
        assert store.last_update_id() is not None  # the update went through the inbox


async def test_a_danger_sign_gets_the_safety_message_and_the_staff_alert(
    fake: FakeTelegram, store: Store, fixture_assistant: tuple[Config, Assistant], config: Config
) -> None:
    async with running_service(fake, store, fixture_assistant[1], config):
        fake.send_text(PATIENT, "I can't breathe")
        await until(lambda: any("emergency" in t.lower() for t in texts_to(fake, PATIENT)), what="safety message")
        await until(lambda: any("EMERGENCY" in t for t in texts_to(fake, STAFF_CHAT)), what="staff alert")
        alert = next(t for t in texts_to(fake, STAFF_CHAT) if "EMERGENCY" in t)
        assert "I can't breathe" in alert


@pytest.mark.parametrize(
    "fault",
    [
        {"status": 500},
        {"status": 502, "html": True},
        {"drop": True},
    ],
    ids=["500", "502-html", "dropped"],
)
async def test_one_failure_on_the_safety_reply_delays_neither_reply_nor_alert(
    fake: FakeTelegram,
    store: Store,
    fixture_assistant: tuple[Config, Assistant],
    config: Config,
    fault: dict[str, Any],
) -> None:
    async with running_service(fake, store, fixture_assistant[1], config):
        if fault.get("drop"):
            fake.drop("sendMessage", chat_id=PATIENT)
        else:
            fake.fail("sendMessage", chat_id=PATIENT, **fault)
        sent = time.monotonic()
        fake.send_text(PATIENT, "I can't breathe")
        await until(lambda: any("emergency" in t.lower() for t in texts_to(fake, PATIENT)), 5, "safety message")
        assert time.monotonic() - sent < 1.5
        await until(lambda: any("EMERGENCY" in t for t in texts_to(fake, STAFF_CHAT)), 5, "staff alert")
        assert sum("emergency" in t.lower() for t in texts_to(fake, PATIENT)) == 1


@pytest.mark.parametrize(
    "fault",
    [{"status": 500, "times": 2}, {"status": 403, "description": "Forbidden: bot is not a member"}, {"status": 429}],
    ids=["500-twice", "403-once", "429"],
)
async def test_a_staff_alert_that_fails_is_retried_until_delivered(
    fake: FakeTelegram,
    store: Store,
    fixture_assistant: tuple[Config, Assistant],
    config: Config,
    fault: dict[str, Any],
) -> None:
    async with running_service(fake, store, fixture_assistant[1], config):
        fake.fail("sendMessage", chat_id=STAFF_CHAT, **fault)
        fake.send_text(PATIENT, "I have a fever of 39")
        await until(lambda: any("URGENT" in t for t in texts_to(fake, STAFF_CHAT)), 8, "staff alert")
        assert any("clinic" in t.lower() for t in texts_to(fake, PATIENT))


async def test_a_429_on_the_staff_chat_does_not_hold_back_patients(
    fake: FakeTelegram, store: Store, fixture_assistant: tuple[Config, Assistant], config: Config
) -> None:
    async with running_service(fake, store, fixture_assistant[1], config):
        fake.fail("sendMessage", chat_id=STAFF_CHAT, status=429, retry_after=5, times=5)
        fake.send_text(PATIENT, "I have pus")
        fake.send_text(OTHER, "how long do bruises last?")
        started = time.monotonic()
        await until(lambda: any("bruises" in t.lower() for t in texts_to(fake, OTHER)), 3, "the other answer")
        assert time.monotonic() - started < 2.0


async def test_a_blocked_patient_is_stopped_and_nothing_is_retried(
    fake: FakeTelegram, store: Store, fixture_assistant: tuple[Config, Assistant], config: Config
) -> None:
    async with running_service(fake, store, fixture_assistant[1], config):
        fake.send_text(PATIENT, "hi")
        await until(lambda: bool(texts_to(fake, PATIENT)), what="greeting")
        fake.block_chat(PATIENT)
        fake.send_text(PATIENT, "how long do bruises last?")
        await until(lambda: any(state == "stopped" for _, state, _ in store.messages(PATIENT)), what="stopped")
        patient = store.get_patient(PATIENT)
        assert patient is not None and patient.stopped


async def test_my_chat_member_kicked_marks_the_patient_stopped_at_once(
    fake: FakeTelegram, store: Store, fixture_assistant: tuple[Config, Assistant], config: Config
) -> None:
    async with running_service(fake, store, fixture_assistant[1], config):
        fake.send_text(PATIENT, "hi")
        await until(lambda: bool(texts_to(fake, PATIENT)), what="greeting")
        fake.block_chat(PATIENT, notify=True)
        await until(lambda: bool((p := store.get_patient(PATIENT)) and p.stopped), what="stopped")


async def test_the_same_update_delivered_twice_is_answered_once(
    fake: FakeTelegram, store: Store, fixture_assistant: tuple[Config, Assistant], config: Config
) -> None:
    async with running_service(fake, store, fixture_assistant[1], config):
        update = fake.send_text(PATIENT, "how long do bruises last?", enqueue=False)
        fake.push_twice(update)
        await until(lambda: any("bruises" in t.lower() for t in texts_to(fake, PATIENT)), what="answer")
        await asyncio.sleep(0.5)
        assert sum("bruises" in t.lower() for t in texts_to(fake, PATIENT)) == 1


async def test_a_revoked_token_stops_the_service_with_an_error(
    fake: FakeTelegram, store: Store, fixture_assistant: tuple[Config, Assistant], config: Config
) -> None:
    async with running_service(fake, store, fixture_assistant[1], config) as running:
        fake.revoke_token()
        code = await asyncio.wait_for(running.task, 20)
    assert code != 0


async def test_a_token_refused_only_when_sending_stops_the_service_with_an_error(
    fake: FakeTelegram, store: Store, fixture_assistant: tuple[Config, Assistant], config: Config
) -> None:
    """In webhook mode nothing polls: a revoked token shows only when the bot sends. The process must exit
    (a supervisor notices), not keep accepting updates it can never answer."""
    async with running_service(fake, store, fixture_assistant[1], config) as running:
        fake.fail("sendMessage", status=401, times=None)
        fake.send_text(PATIENT, "how long do bruises last?")
        code = await asyncio.wait_for(running.task, 20)
    assert code == 3


async def test_staff_reply_is_relayed_and_its_delivery_reported(
    fake: FakeTelegram, store: Store, fixture_assistant: tuple[Config, Assistant], config: Config
) -> None:
    async with running_service(fake, store, fixture_assistant[1], config):
        fake.send_text(PATIENT, "I have pus")
        await until(lambda: any("URGENT" in t for t in texts_to(fake, STAFF_CHAT)), what="alert")
        alert = next(m for m in fake.messages_to(STAFF_CHAT) if "URGENT" in (m.get("text") or ""))
        fake.reply_to_bot(
            STAFF_CHAT,
            "Please come in at 3pm",
            reply_to_message_id=alert["message_id"],
            user_id=STAFF_USER,
            chat_type="supergroup",
        )
        await until(lambda: any("3pm" in t for t in texts_to(fake, PATIENT)), what="relayed reply")
        await until(lambda: any("✓" in t for t in texts_to(fake, STAFF_CHAT)), what="delivery note")


async def test_a_staff_reply_that_cannot_be_delivered_says_why(
    fake: FakeTelegram, store: Store, fixture_assistant: tuple[Config, Assistant], config: Config
) -> None:
    async with running_service(fake, store, fixture_assistant[1], config):
        fake.send_text(PATIENT, "I have pus")
        await until(lambda: any("URGENT" in t for t in texts_to(fake, STAFF_CHAT)), what="alert")
        alert = next(m for m in fake.messages_to(STAFF_CHAT) if "URGENT" in (m.get("text") or ""))
        fake.block_chat(PATIENT)
        fake.reply_to_bot(
            STAFF_CHAT,
            "Please come in",
            reply_to_message_id=alert["message_id"],
            user_id=STAFF_USER,
            chat_type="supergroup",
        )
        await until(lambda: any("blocked" in t for t in texts_to(fake, STAFF_CHAT)), what="not-delivered note")


async def test_a_forged_staff_relay_from_a_patient_chat_reaches_nobody(
    fake: FakeTelegram, store: Store, fixture_assistant: tuple[Config, Assistant], config: Config
) -> None:
    async with running_service(fake, store, fixture_assistant[1], config):
        fake.send_text(PATIENT, "I have pus")
        await until(lambda: any("URGENT" in t for t in texts_to(fake, STAFF_CHAT)), what="alert")
        before = len(texts_to(fake, PATIENT))
        # A patient's own chat cannot act as the staff: a "close" button press forged there does nothing.
        fake.send_text(OTHER, "hello")
        await until(lambda: bool(texts_to(fake, OTHER)), what="greeting")
        greeting = fake.messages_to(OTHER)[-1]
        fake.press_button(OTHER, greeting["message_id"], f"z:{PATIENT}", strict=False)
        fake.send_text(OTHER, "/close")
        await asyncio.sleep(0.5)
        assert len(texts_to(fake, PATIENT)) == before


async def test_a_long_staff_reply_is_split(
    fake: FakeTelegram, store: Store, fixture_assistant: tuple[Config, Assistant], config: Config
) -> None:
    async with running_service(fake, store, fixture_assistant[1], config):
        fake.send_text(PATIENT, "I have pus")
        await until(lambda: any("URGENT" in t for t in texts_to(fake, STAFF_CHAT)), what="alert")
        alert = next(m for m in fake.messages_to(STAFF_CHAT) if "URGENT" in (m.get("text") or ""))
        long_reply = "\n\n".join(f"Paragraph {i}: " + "word " * 150 for i in range(8))
        fake.reply_to_bot(
            STAFF_CHAT, long_reply, reply_to_message_id=alert["message_id"], user_id=STAFF_USER, chat_type="supergroup"
        )
        await until(lambda: sum("Paragraph" in t for t in texts_to(fake, PATIENT)) >= 2, what="split reply")
        assert all(len(t) <= 4096 for t in texts_to(fake, PATIENT))


@pytest.fixture
def locker(store: Store, tmp_path: Path) -> Iterator[Any]:
    """Holds the SQLite file's write lock from another connection, like another process would."""
    holders: list[threading.Event] = []

    def hold(seconds: float) -> None:
        release = threading.Event()
        holders.append(release)
        ready = threading.Event()

        def run() -> None:
            connection = sqlite3.connect(str(tmp_path / "bot.db"), timeout=1)
            connection.execute("BEGIN IMMEDIATE")
            ready.set()
            release.wait(seconds)
            connection.rollback()
            connection.close()

        threading.Thread(target=run, daemon=True).start()
        ready.wait(5)

    yield hold
    for release in holders:
        release.set()


async def test_a_locked_database_does_not_delay_the_safety_message(
    fake: FakeTelegram, store: Store, fixture_assistant: tuple[Config, Assistant], config: Config, locker: Any
) -> None:
    async with running_service(fake, store, fixture_assistant[1], config):
        locker(8.0)
        sent = time.monotonic()
        fake.send_text(PATIENT, "I can't breathe")
        await until(lambda: any("emergency" in t.lower() for t in texts_to(fake, PATIENT)), 4, "safety message")
        assert time.monotonic() - sent < 2.5
        await until(lambda: any("EMERGENCY" in t for t in texts_to(fake, STAFF_CHAT)), 6, "staff alert")
        fake.send_text(OTHER, "how long do bruises last?")  # an ordinary question waits for the database
        await until(lambda: any("bruises" in t.lower() for t in texts_to(fake, OTHER)), 20, "the delayed answer")
        await asyncio.sleep(1.0)
        assert sum("emergency" in t.lower() for t in texts_to(fake, PATIENT)) == 1


async def test_an_update_still_being_handled_when_its_lease_lapses_is_not_handled_again(
    fake: FakeTelegram,
    store: Store,
    fixture_assistant: tuple[Config, Assistant],
    config: Config,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A turn slower than the inbox lease (a busy database, say): the worker must not begin it a second time."""
    from datetime import timedelta

    from bot.telegram import pipeline, service

    monkeypatch.setattr(service, "INBOX_LEASE", timedelta(milliseconds=200))
    handle = pipeline.Pipeline.handle

    turns: list[int] = []

    def slow(self: pipeline.Pipeline, *args: Any, **kwargs: Any) -> pipeline.Result:
        turns.append(kwargs["update_id"])
        time.sleep(1.0)  # five leases long
        return handle(self, *args, **kwargs)

    monkeypatch.setattr(pipeline.Pipeline, "handle", slow)
    async with running_service(fake, store, fixture_assistant[1], config):
        fake.send_text(PATIENT, "how long do bruises last?")
        await until(lambda: any("bruises" in t.lower() for t in texts_to(fake, PATIENT)), what="the answer")
        await asyncio.sleep(1.5)
        assert sum("bruises" in t.lower() for t in texts_to(fake, PATIENT)) == 1
        assert store.inbox_pending() == 0
        assert len(turns) == len(set(turns)) == 1  # one turn: its effects (events, recent messages) applied once


async def test_sends_that_a_busy_event_loop_made_late_never_break_the_bot_wide_limit(
    fake: FakeTelegram, store: Store, fixture_assistant: tuple[Config, Assistant]
) -> None:
    """The schedule is spaced, but a stalled loop wakes every overdue send at once: Telegram would refuse the
    ones over its count for that second. The sender keeps any one second under its own limit regardless."""
    from datetime import UTC, datetime

    from bot.core.events import Priority
    from bot.delivery.outgoing import text_messages

    fake.enforce_limits(per_bot_per_second=6)  # the bot keeps 5: a message of room, as 28 of Telegram's 30
    now = datetime.now(UTC)
    messages = [
        m
        for i in range(20)
        for m in text_messages(
            f"burst:{i}", 7000 + i, f"reminder {i}", priority=int(Priority.BULK), kind="reminder", at=now
        )
    ]
    async with running_service(
        fake, store, fixture_assistant[1], service_config(fake, max_messages_per_second=5)
    ) as running:
        store.enqueue(messages, now)
        running.service.sender.wake()
        await until(lambda: len(fake.deliveries()) >= 2, what="the first reminders")
        time.sleep(1.5)  # the event loop is stuck (a slow callback): a second and a half of slots go by
        await until(lambda: all(fake.messages_to(7000 + i) for i in range(20)), 20, "every reminder")
    assert fake.flood_errors == 0


async def test_a_claimed_message_that_waited_past_most_of_its_lease_goes_back_unsent(
    fake: FakeTelegram, store: Store, fixture_assistant: tuple[Config, Assistant], config: Config
) -> None:
    """A claimed message whose turn came so late that its lease could lapse mid-send (another claim would then
    send it again) is not sent by the late task: it goes back to the queue, and the sender sends it once."""
    from datetime import UTC, datetime, timedelta

    from bot.core.events import Priority
    from bot.delivery.outgoing import text_messages
    from bot.delivery.sender import LEASE

    later = datetime.now(UTC) + timedelta(seconds=30)  # not due yet: the running sender leaves it alone
    async with running_service(fake, store, fixture_assistant[1], config) as running:
        store.enqueue(
            text_messages("late:1", 7100, "a reminder", priority=int(Priority.BULK), kind="reminder", at=later), later
        )
        [claimed] = store.claim_messages("a-slow-process", later, LEASE, 1)
        sender = running.service.sender
        sender._unanswered += 1  # as drain_once counts it
        await sender._send_at(claimed, time.time(), time.monotonic() - LEASE.total_seconds())
        assert fake.messages_to(7100) == []  # the late task did not send it
        await until(lambda: len(fake.messages_to(7100)) == 1, 10, "the reminder, sent by a fresh claim")
        await asyncio.sleep(0.5)
    assert len(fake.messages_to(7100)) == 1


async def test_a_send_under_way_when_the_bot_is_stopped_finishes_and_is_recorded(
    fake: FakeTelegram, store: Store, fixture_assistant: tuple[Config, Assistant], config: Config
) -> None:
    """Stopping (SIGTERM, a deploy) while Telegram is slow to answer: the reply still arrives, and it is recorded
    as sent, so the next start does not send it again."""
    from datetime import UTC, datetime

    async with running_service(fake, store, fixture_assistant[1], config) as running:
        fake.stall("sendMessage", chat_id=PATIENT, seconds=1.0)
        fake.send_text(PATIENT, "how long do bruises last?")
        await until(lambda: store.inbox_pending() == 0, what="the turn")
        await asyncio.sleep(0.3)  # its reply is on its way, waiting for Telegram
        await running.stop()
    assert len(fake.messages_to(PATIENT)) == 1
    assert store.next_message_due(datetime.now(UTC)) is None  # nothing left to send again
