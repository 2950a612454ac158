"""The store on real databases (a SQLite file, and PostgreSQL in a schema of its own): what is in the tables."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest
from sqlalchemy import inspect
from sqlalchemy.exc import OperationalError

from bot.core.events import (
    AnswerCheckIn,
    CreateEnrolment,
    Forget,
    GiveConsent,
    KeepQuestion,
    OpenHandoff,
    Pending,
    RecordEscalation,
    RecordEvent,
    Remember,
    SetLanguage,
    SetPending,
    SetStopped,
)
from bot.core.recovery import Enrolment, Reminder
from bot.core.safety.model import Level
from bot.store import Store, open_store, schema
from bot.store.repository import DueReminder, InviteTaken, Outgoing
from bot.store.schema import MIGRATIONS

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
ALICE = 1001
BOB = 1002
STAFF = -1009876543210
T = TypeVar("T")


def at(minutes: float = 0) -> datetime:
    return T0 + timedelta(minutes=minutes)


@pytest.fixture
def db(database_url: str) -> Iterator[Store]:
    store = open_store(database_url)
    yield store
    store.close()


def run_together(count: int, work: Callable[[int], T]) -> list[T]:
    """Runs `work(i)` in `count` threads released at the same moment."""
    barrier = threading.Barrier(count)
    results: list[T | None] = [None] * count
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait()
            results[index] = work(index)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    return [r for r in results if r is not None]


def message(key: str, chat: int, *, priority: int = 2, minutes: float = 0) -> Outgoing:
    return Outgoing(
        key, chat, priority, "reply", {"method": "send", "text": key}, at(minutes), chat if chat > 0 else None
    )


# -- schema ----------------------------------------------------------------------------------------
def test_a_fresh_database_gets_every_table_and_every_migration_marked(db: Store) -> None:
    names = set(inspect(db.engine).get_table_names())
    assert {"inbox", "outbox", "reminders", "enrolments", "patients", "send_scopes"} <= names
    again = open_store(db.engine.url.render_as_string(hide_password=False))  # a second start migrates nothing
    again.close()
    assert MIGRATIONS


# -- the inbox -----------------------------------------------------------------------------------------
def test_updates_are_stored_once_and_claimed_in_chat_order(db: Store) -> None:
    assert db.store_updates([(1, ALICE, "{}"), (2, ALICE, "{}"), (3, BOB, "{}")], at()) == 3
    assert db.store_updates([(1, ALICE, "{}"), (4, ALICE, "{}")], at()) == 1  # a redelivered update is ignored
    first = db.claim_updates("p1", at(), timedelta(seconds=30), 10)
    assert sorted(u.update_id for u in first) == [1, 3]  # one per chat: ALICE's second waits for her first
    assert db.claim_updates("p2", at(), timedelta(seconds=30), 10) == []  # leased
    alice = next(u for u in first if u.chat_id == ALICE)
    db.commit_turn(chat_id=ALICE, lang="en", effects=(), outgoing=[], at=at(), update_row=alice.id)
    assert [u.update_id for u in db.claim_updates("p2", at(), timedelta(seconds=30), 10)] == [2]
    assert db.last_update_id() == 4


def test_a_lease_that_expires_gives_the_update_to_another_process(db: Store) -> None:
    db.store_updates([(10, ALICE, "{}")], at())
    assert db.claim_updates("dead", at(), timedelta(seconds=30), 10)
    assert db.claim_updates("alive", at(0.4), timedelta(seconds=30), 10) == []
    (taken,) = db.claim_updates("alive", at(1), timedelta(seconds=30), 10)
    assert taken.update_id == 10 and taken.attempts == 2


def test_two_processes_never_claim_the_same_update(db: Store) -> None:
    db.store_updates([(100 + i, 2000 + i, "{}") for i in range(40)], at())
    claims = run_together(4, lambda i: db.claim_updates(f"p{i}", at(), timedelta(seconds=30), 40))
    ids = [u.update_id for batch in claims for u in batch]
    assert len(ids) == len(set(ids)) == 40


def test_a_turn_is_committed_all_or_nothing(db: Store) -> None:
    db.store_updates([(20, ALICE, '{"text": "hi"}')], at())
    (update,) = db.claim_updates("p", at(), timedelta(seconds=30), 1)
    effects = (
        SetLanguage("it"),
        RecordEvent("answer", "bruising"),
        Remember("hi"),
        SetPending(Pending(Level.URGENT, "pus?", at())),
    )
    queued = db.commit_turn(
        chat_id=ALICE, lang="en", effects=effects, outgoing=[message("u20:r0", ALICE)], at=at(), update_row=update.id
    )
    assert queued == 1
    state = db.patient_state(ALICE, lang="en", now=at(1), idle=timedelta(hours=1))
    assert state.lang == "it" and state.recent[0].text == "hi" and state.pending is not None
    assert db.inbox_pending() == 0
    # Handling the same update again (a crash after the commit's messages were queued) queues nothing twice.
    assert db.commit_turn(chat_id=ALICE, lang="en", effects=(), outgoing=[message("u20:r0", ALICE)], at=at()) == 0


def test_a_turn_that_fails_leaves_nothing_behind(db: Store) -> None:
    enrolment = Enrolment("e1", "meso_face", at(), "Europe/Rome", False)
    db.commit_turn(
        chat_id=ALICE, lang="en", effects=(CreateEnrolment(enrolment, "invite", "", "n1", ALICE),), outgoing=[], at=at()
    )
    with pytest.raises(InviteTaken):
        db.commit_turn(
            chat_id=BOB,
            lang="en",
            effects=(
                RecordEvent("answer"),
                CreateEnrolment(Enrolment("e2", "meso_face", at(), "Europe/Rome", False), "invite", "", "n1", BOB),
            ),
            outgoing=[message("bob:1", BOB)],
            at=at(),
        )
    assert db.count_rows_for(BOB) == 0 and db.invite_owner("n1") == ALICE


# -- the outbox -----------------------------------------------------------------------------------------
def test_messages_go_one_at_a_time_per_chat_most_urgent_first(db: Store) -> None:
    db.enqueue(
        [
            message("a1", ALICE),
            message("a2", ALICE),
            message("alert", STAFF, priority=1),
            message("bulk", BOB, priority=3),
            message("safety", BOB, priority=0),
        ],
        at(),
    )
    batch = db.claim_messages("p", at(), timedelta(seconds=30), 10)
    assert [m.key for m in batch] == ["safety", "alert", "a1"]
    for queued in batch:
        db.message_sent(queued.id, at=at(), message_id=1)
    assert [m.key for m in db.claim_messages("p", at(), timedelta(seconds=30), 10)] == ["a2", "bulk"]


def test_a_held_chat_waits_and_no_other_chat_does(db: Store) -> None:
    db.enqueue([message("a", ALICE), message("b", BOB)], at())
    db.hold_chat(ALICE, (T0 + timedelta(seconds=10)).timestamp())
    assert [m.key for m in db.claim_messages("p", at(), timedelta(seconds=30), 10)] == ["b"]
    later = T0 + timedelta(seconds=11)
    assert [m.key for m in db.claim_messages("p", later, timedelta(seconds=30), 10)] == ["a"]


def test_a_blocked_chat_stops_its_queue_and_the_patient(db: Store) -> None:
    db.commit_turn(chat_id=ALICE, lang="en", effects=(), outgoing=[message("a1", ALICE), message("a2", ALICE)], at=at())
    assert db.stop_chat(ALICE, at=at(), error="403: blocked") == 2
    patient = db.get_patient(ALICE)
    assert patient is not None and patient.stopped
    assert db.claim_messages("p", at(), timedelta(seconds=30), 10) == []


def test_the_bot_wide_rate_is_shared_between_processes(db: Store) -> None:
    starts = run_together(4, lambda _i: db.reserve_sends(10, 1000.0, 0.1))
    assert sorted(starts) == pytest.approx([1000.0, 1001.0, 1002.0, 1003.0])  # 40 slots, none shared


def test_a_sent_staff_post_links_its_patient(db: Store) -> None:
    db.enqueue([Outgoing("post", STAFF, 1, "alert", {"method": "send", "text": "x", "link": True}, at(), ALICE)], at())
    (post,) = db.claim_messages("p", at(), timedelta(seconds=30), 1)
    db.message_sent(post.id, at=at(), message_id=77, link=(STAFF, 77, ALICE))
    assert db.patient_for_staff_message(STAFF, 77) == ALICE


# -- patients ----------------------------------------------------------------------------------------
def test_forget_deletes_every_row_about_the_patient(db: Store) -> None:
    enrolment = Enrolment("e3", "meso_face", at(), "Europe/Rome", False)
    reminder = Reminder("e3:first_care", "e3", "first_care", at(60), at(240))
    db.store_updates([(30, ALICE, '{"message": "secret"}')], at())
    db.commit_turn(
        chat_id=ALICE,
        lang="en",
        effects=(
            RecordEvent("answer"),
            KeepQuestion("q", "en", "fallback"),
            RecordEscalation(Level.URGENT),
            Remember("my words"),
            OpenHandoff(ALICE),
            CreateEnrolment(enrolment, "invite", "", "n3", ALICE),
            GiveConsent("e3", (reminder,)),
        ),
        outgoing=[message("x", ALICE), Outgoing("staff", STAFF, 1, "alert", {"text": "about Alice"}, at(), ALICE)],
        at=at(),
    )
    db.hold_chat(ALICE, at(5).timestamp())  # Telegram's flood limit for her chat names her too
    assert db.count_rows_for(ALICE) > 0
    db.commit_turn(chat_id=ALICE, lang="en", effects=(Forget(),), outgoing=[], at=at(1))
    assert db.count_rows_for(ALICE) == 0


def test_stop_and_resume(db: Store) -> None:
    db.commit_turn(chat_id=ALICE, lang="en", effects=(SetStopped(True),), outgoing=[], at=at())
    assert db.patient_state(ALICE, lang="en", now=at(), idle=timedelta(hours=1)).stopped
    db.commit_turn(chat_id=ALICE, lang="en", effects=(SetStopped(False),), outgoing=[], at=at(1))
    assert not db.patient_state(ALICE, lang="en", now=at(1), idle=timedelta(hours=1)).stopped


def test_retention_purges_handled_updates_and_sent_messages(db: Store) -> None:
    db.store_updates([(40, ALICE, '{"text": "words"}')], at())
    (update,) = db.claim_updates("p", at(), timedelta(seconds=30), 1)
    db.commit_turn(chat_id=ALICE, lang="en", effects=(), outgoing=[message("m", ALICE)], at=at(), update_row=update.id)
    (sent,) = db.claim_messages("p", at(), timedelta(seconds=30), 1)
    db.message_sent(sent.id, at=at(), message_id=3)
    assert db.purge(at(-1), handled_before=at(60 * 24 * 3)) >= 2
    assert db.messages(ALICE) == []


def test_retention_purges_stale_pacing_state_but_not_a_live_hold(db: Store) -> None:
    db.commit_turn(chat_id=ALICE, lang="en", effects=(RecordEvent("answer"),), outgoing=[], at=at())
    db.commit_turn(chat_id=BOB, lang="en", effects=(RecordEvent("answer"),), outgoing=[], at=at())
    db.hold_chat(ALICE, at(1).timestamp())  # long past at purge time
    db.hold_chat(BOB, at(60 * 24 * 10).timestamp())  # still holding
    alice, bob = db.count_rows_for(ALICE), db.count_rows_for(BOB)
    db.purge(at(-1), handled_before=at(60 * 24 * 3))
    assert db.count_rows_for(ALICE) == alice - 1
    assert db.count_rows_for(BOB) == bob


# -- reminders -----------------------------------------------------------------------------------------
def _enrol(db: Store, chat: int, reminders: tuple[Reminder, ...]) -> None:
    enrolment = Enrolment("e9", "meso_face", at(), "Europe/Rome", False)
    db.commit_turn(chat_id=chat, lang="en", effects=(CreateEnrolment(enrolment, "menu"),), outgoing=[], at=at())
    db.commit_turn(chat_id=chat, lang="en", effects=(GiveConsent("e9", reminders),), outgoing=[], at=at())


def render(due: DueReminder) -> tuple[list[Outgoing], Reminder | None]:
    return [Outgoing(f"rem:{due.key}", due.chat_id, 3, "reminder", {"text": due.step}, at(), due.chat_id)], None


def test_due_reminders_go_to_the_outbox_once_and_late_ones_are_missed(db: Store) -> None:
    _enrol(
        db,
        ALICE,
        (
            Reminder("e9:first_care", "e9", "first_care", at(60), at(120)),
            Reminder("e9:evening", "e9", "evening", at(600), at(700)),
            Reminder("e9:checkin", "e9", "checkin", at(3000), at(4000), checkin=True),
        ),
    )
    assert db.dispatch_reminders(at(30), 100, render) == (0, 0)
    assert db.dispatch_reminders(at(61), 100, render) == (1, 0)
    assert db.dispatch_reminders(at(62), 100, render) == (0, 0)  # never twice
    assert db.dispatch_reminders(at(800), 100, render) == (0, 1)  # the evening step is too late now
    states = {key: state for key, state, _ in db.reminders_of(ALICE)}
    assert states == {"e9:first_care": "queued", "e9:evening": "missed", "e9:checkin": "scheduled"}
    assert [key for key, _, _ in db.messages(ALICE)] == ["rem:e9:first_care"]


def test_a_stopped_patients_reminders_wait(db: Store) -> None:
    _enrol(db, ALICE, (Reminder("e9:first_care", "e9", "first_care", at(60), at(600)),))
    db.commit_turn(chat_id=ALICE, lang="en", effects=(SetStopped(True),), outgoing=[], at=at())
    assert db.dispatch_reminders(at(61), 100, render) == (0, 0)
    db.commit_turn(chat_id=ALICE, lang="en", effects=(SetStopped(False),), outgoing=[], at=at(62))
    assert db.dispatch_reminders(at(63), 100, render) == (1, 0)


def test_enrolling_again_never_duplicates_a_reminder(db: Store) -> None:
    reminders = (Reminder("e9:first_care", "e9", "first_care", at(60), at(600)),)
    _enrol(db, ALICE, reminders)
    _enrol(db, ALICE, reminders)
    assert len(db.reminders_of(ALICE)) == 1


def test_two_dispatchers_at_once_send_each_reminder_once(db: Store) -> None:
    for chat in range(3000, 3040):
        enrolment = Enrolment(f"e{chat}", "meso_face", at(), "Europe/Rome", False)
        db.commit_turn(
            chat_id=chat,
            lang="en",
            effects=(
                CreateEnrolment(enrolment, "menu"),
                GiveConsent(
                    enrolment.id, (Reminder(f"e{chat}:first_care", enrolment.id, "first_care", at(1), at(600)),)
                ),
            ),
            outgoing=[],
            at=at(),
        )
    results = run_together(3, lambda _i: db.dispatch_reminders(at(2), 100, render))
    assert sum(q for q, _ in results) == 40
    assert len(db.messages(state="pending")) == 40


def test_an_answered_check_in_is_not_asked_again(db: Store) -> None:
    _enrol(db, ALICE, (Reminder("e9:checkin", "e9", "checkin", at(60), at(600), checkin=True),))

    def with_again(due: DueReminder) -> tuple[list[Outgoing], Reminder | None]:
        again = Reminder(f"{due.key}:again", due.enrolment, f"{due.step}:again", at(300), at(900), checkin=True)
        return render(due)[0], again

    assert db.dispatch_reminders(at(61), 100, with_again) == (1, 0)
    state = db.patient_state(ALICE, lang="en", now=at(62), idle=timedelta(hours=1))
    assert state.open_checkin is not None and state.open_checkin.step == "checkin"
    db.commit_turn(chat_id=ALICE, lang="en", effects=(AnswerCheckIn("e9", "checkin", "fine"),), outgoing=[], at=at(70))
    assert db.dispatch_reminders(at(301), 100, render) == (0, 0)
    assert dict((k, s) for k, s, _ in db.reminders_of(ALICE))["e9:checkin:again"] == "cancelled"


def test_sqlite_threads_queue_for_the_write_lock_and_get_it_back_after_a_busy_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process holds the file: a write fails after the busy timeout, then everything goes on at once."""
    monkeypatch.setattr(schema, "SQLITE_BUSY_TIMEOUT", 0.3)
    path = tmp_path / "busy.db"
    db = open_store(f"sqlite:///{path}")
    try:
        other = sqlite3.connect(str(path))
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(OperationalError):
            db.hold_chat(ALICE, 1.0)  # BEGIN fails inside the process's turn at the lock: the turn must end
        other.rollback()
        other.close()
        started = time.monotonic()
        run_together(8, lambda i: db.hold_chat(ALICE + i, 1.0))  # threads take turns, none sleeps in SQLite
        assert time.monotonic() - started < 2.0
        assert db.count_rows_for(ALICE + 7) == 1
    finally:
        db.close()


def test_reading_a_patient_does_not_wait_for_another_process_holding_the_write_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every message reads the patient's state: that read must not queue behind a writer (a locked file
    delays only what needs to write)."""
    monkeypatch.setattr(schema, "SQLITE_BUSY_TIMEOUT", 5)
    path = tmp_path / "busy.db"
    db = open_store(f"sqlite:///{path}")
    try:
        db.commit_turn(chat_id=ALICE, lang="it", effects=(Remember("mi brucia la pelle"),), outgoing=[], at=at(0))
        other = sqlite3.connect(str(path))
        other.execute("BEGIN IMMEDIATE")
        other.execute("UPDATE patients SET lang = 'pl'")  # not committed: readers still see 'it'
        started = time.monotonic()
        state = db.patient_state(ALICE, lang="en", now=at(1), idle=timedelta(minutes=30))
        assert time.monotonic() - started < 1.0
        assert state.known and state.lang == "it"
        assert [r.text for r in state.recent] == ["mi brucia la pelle"]
        with pytest.raises(OperationalError):  # while writing still waits for it, and says so in the end
            monkeypatch.setattr(schema, "SQLITE_BUSY_TIMEOUT", 0.3)
            db.hold_chat(ALICE, 1.0)
        other.rollback()
        other.close()
    finally:
        db.close()
