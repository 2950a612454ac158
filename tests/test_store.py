"""The store on real databases: a SQLite file, and PostgreSQL in a schema of its own per test."""

from __future__ import annotations

import os
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import TypeVar

import psycopg
import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from bot.store import Handoff, KeptQuestion, Patient, Stats, Store, open_store
from bot.store.schema import MIGRATIONS

PG_URL = os.environ.get("AFTERCARE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
ALICE = 1001  # patients are bare chat ids
BOB = 1002
STAFF = -1009876543210

T = TypeVar("T")


def at(minutes: float = 0) -> datetime:
    return T0 + timedelta(minutes=minutes)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        # A subdirectory that does not exist yet: open_store creates it.
        yield f"sqlite:///{tmp_path / 'data' / 'aftercare.db'}"
        return
    schema = f"test_store_{uuid.uuid4().hex[:12]}"
    dsn = make_url(PG_URL).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(dsn, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def store(url: str) -> Iterator[Store]:
    store = open_store(url)
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

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    return [result for result in results if result is not None]


def fill_everything(store: Store, chat_id: int, *, staff_message_id: int) -> None:
    """One row of every kind that refers to the patient."""
    store.touch_patient(chat_id, lang="en", at=at())
    store.record_event(chat_id, "answer", at(1), topic="swelling")
    store.record_feedback(chat_id, "swelling", "en", False, at(2), message_id=10)
    store.keep_question(chat_id, "is it normal?", "en", "unhelpful", at(2))
    store.record_escalation(chat_id, "urgent", at(3))
    store.open_handoff(chat_id, at(4))
    store.link_staff_message(STAFF, staff_message_id, chat_id, at(4))


# Patients


def test_a_patient_is_registered_once_and_then_only_seen(store: Store) -> None:
    assert store.get_patient(ALICE) is None

    first = store.touch_patient(ALICE, lang="en", at=at())
    again = store.touch_patient(ALICE, lang="fr", at=at(5))

    assert first == Patient(ALICE, "en", False, at(), at())
    assert again == Patient(ALICE, "en", False, at(), at(5))
    assert store.get_patient(ALICE) == again


def test_last_seen_never_moves_backwards(store: Store) -> None:
    store.touch_patient(ALICE, lang="en", at=at(10))
    # Another process handling an older update finishes later.
    assert store.touch_patient(ALICE, lang="en", at=at(3)).last_seen_at == at(10)


def test_language_and_stop(store: Store) -> None:
    store.touch_patient(ALICE, lang="en", at=at())
    store.set_language(ALICE, "de", at(1))
    assert store.set_stopped(ALICE, True, at(2))

    patient = store.get_patient(ALICE)
    assert patient == Patient(ALICE, "de", True, at(), at(2))

    assert store.set_stopped(ALICE, False, at(3))
    assert store.get_patient(ALICE) == Patient(ALICE, "de", False, at(), at(3))


def test_set_language_registers_a_new_patient_and_stop_needs_one(store: Store) -> None:
    store.set_language(BOB, "it", at())
    assert store.get_patient(BOB) == Patient(BOB, "it", False, at(), at())
    assert not store.set_stopped(ALICE, True, at())
    assert store.get_patient(ALICE) is None


def test_forget_deletes_every_row_of_the_patient_and_nothing_else(store: Store) -> None:
    fill_everything(store, ALICE, staff_message_id=500)
    fill_everything(store, BOB, staff_message_id=501)
    bob_rows = store.count_rows_for(BOB)
    assert store.count_rows_for(ALICE) == 7 == bob_rows

    assert store.forget_patient(ALICE) == 7

    assert store.count_rows_for(ALICE) == 0
    assert store.get_patient(ALICE) is None
    assert store.patient_for_staff_message(STAFF, 500) is None
    assert store.active_handoff(ALICE, at(5), timedelta(hours=1)) is None
    assert store.count_rows_for(BOB) == bob_rows
    assert store.patient_for_staff_message(STAFF, 501) == BOB
    assert store.forget_patient(ALICE) == 0


def test_no_personal_details_are_stored(url: str, store: Store) -> None:
    fill_everything(store, ALICE, staff_message_id=500)
    engine = create_engine(url)
    try:
        inspector = inspect(engine)
        tables = inspector.get_table_names()
        columns = {column["name"] for table in tables for column in inspector.get_columns(table)}
    finally:
        engine.dispose()
    assert "patients" in tables
    assert not {column for column in columns if any(word in column for word in ("name", "phone", "user"))}


# Events, feedback, kept questions, statistics


def test_a_second_press_changes_the_vote(store: Store) -> None:
    store.record_feedback(ALICE, "bruising", "en", True, at(), message_id=7)
    store.record_feedback(ALICE, "bruising", "en", False, at(1), message_id=7)
    store.record_feedback(ALICE, "swelling", "en", True, at(2), message_id=8)
    store.record_feedback(BOB, "bruising", "en", True, at(2), message_id=7)

    stats = store.stats(at())
    assert (stats.helpful, stats.unhelpful) == (2, 1)
    assert store.count_rows_for(ALICE) == 2


def test_kept_questions_are_truncated_and_carry_no_chat_id(store: Store) -> None:
    store.keep_question(ALICE, "x" * 5000, "en", "fallback", at(1))
    store.keep_question(BOB, "can I swim?", "fr", "unsure", at(2))
    store.keep_question(BOB, "too old", "fr", "unsure", at(-60))

    kept = store.kept_questions(since=at())

    assert kept == [
        KeptQuestion("x" * 1000, "en", "fallback", at(1)),
        KeptQuestion("can I swim?", "fr", "unsure", at(2)),
    ]
    assert not hasattr(kept[0], "chat_id")


def test_stats_count_the_period(store: Store) -> None:
    store.touch_patient(ALICE, lang="en", at=at(-120))  # seen only before the period
    store.touch_patient(BOB, lang="en", at=at(1))
    store.touch_patient(1003, lang="en", at=at(2))
    store.record_event(BOB, "answer", at(-120), topic="swelling")
    for minute, kind in enumerate(["answer", "answer", "fallback", "unsure", "triage", "greeting"]):
        store.record_event(BOB, kind, at(minute), topic="swelling" if kind == "answer" else None)
    store.record_feedback(BOB, "swelling", "en", True, at(1), message_id=1)
    store.record_feedback(BOB, "swelling", "en", False, at(2), message_id=2)
    store.record_escalation(BOB, "emergency", at(3))
    store.record_escalation(BOB, "urgent", at(-120))

    assert store.stats(since=at()) == Stats(patients=2, answered=2, fallbacks=2, helpful=1, unhelpful=1, escalations=1)
    assert store.stats(since=at(100)) == Stats(0, 0, 0, 0, 0, 0)


def test_purge_deletes_what_is_older_than_the_date(store: Store) -> None:
    old, recent = at(-60 * 24 * 100), at()
    for when, message_id in ((old, 1), (recent, 2)):
        store.record_event(ALICE, "answer", when, topic="swelling")
        store.record_feedback(ALICE, "swelling", "en", True, when, message_id=message_id)
        store.keep_question(ALICE, "question", "en", "fallback", when)
        store.record_escalation(ALICE, "urgent", when)
        store.link_staff_message(STAFF, message_id, ALICE, when)
        store.claim_update(message_id, when)
    store.open_handoff(ALICE, old)
    store.close_handoff(ALICE, old)
    store.open_handoff(ALICE, recent)

    assert store.purge(before=at(-60 * 24 * 90)) == 7

    assert store.kept_questions(since=old) == [KeptQuestion("question", "en", "fallback", recent)]
    assert store.stats(since=old) == Stats(patients=0, answered=1, fallbacks=0, helpful=1, unhelpful=0, escalations=1)
    assert store.patient_for_staff_message(STAFF, 1) is None
    assert store.patient_for_staff_message(STAFF, 2) == ALICE
    assert store.active_handoff(ALICE, recent, timedelta(hours=1)) is not None
    # A purged claim may be claimed again: Telegram does not redeliver updates that old.
    assert store.claim_update(1, recent)
    assert not store.claim_update(2, recent)


# Handoff


def test_open_handoff_reuses_the_open_one(store: Store) -> None:
    first = store.open_handoff(ALICE, at())
    again = store.open_handoff(ALICE, at(5))

    assert first == Handoff(ALICE, at(), at())
    assert again == Handoff(ALICE, at(), at(5))
    assert store.count_rows_for(ALICE) == 1


def test_a_handoff_stays_active_with_activity_and_closes_when_idle(store: Store) -> None:
    idle = timedelta(minutes=30)
    store.open_handoff(ALICE, at())
    store.touch_handoff(ALICE, at(20))

    assert store.active_handoff(ALICE, at(50), idle) == Handoff(ALICE, at(), at(20))
    assert store.active_handoff(ALICE, at(51), idle) is None
    # Closed for good: a touch no longer revives it, and a new request opens a new one.
    assert not store.touch_handoff(ALICE, at(52))
    assert store.active_handoff(ALICE, at(52), idle) is None
    assert store.open_handoff(ALICE, at(53)) == Handoff(ALICE, at(53), at(53))


def test_close_handoff(store: Store) -> None:
    assert not store.close_handoff(ALICE, at())
    store.open_handoff(ALICE, at())
    assert store.close_handoff(ALICE, at(1))
    assert not store.close_handoff(ALICE, at(2))
    assert store.active_handoff(ALICE, at(2), timedelta(hours=1)) is None


def test_staff_messages_lead_back_to_the_patient(store: Store) -> None:
    store.link_staff_message(STAFF, 77, ALICE)
    store.link_staff_message(STAFF, 78, BOB, at())

    assert store.patient_for_staff_message(STAFF, 77) == ALICE
    assert store.patient_for_staff_message(STAFF, 78) == BOB
    assert store.patient_for_staff_message(STAFF, 79) is None
    assert store.patient_for_staff_message(-100, 77) is None


def test_concurrent_open_handoff_opens_one(store: Store) -> None:
    handoffs = run_together(4, lambda index: store.open_handoff(ALICE, at(index)))

    assert len({handoff.opened_at for handoff in handoffs}) == 1
    assert store.count_rows_for(ALICE) == 1


# Update de-duplication and settings


def test_an_update_is_claimed_once(store: Store) -> None:
    assert store.claim_update(42, at())
    assert not store.claim_update(42, at(1))
    assert store.claim_update(43, at(1))


def test_concurrent_claims_give_each_update_to_exactly_one_thread(url: str, store: Store) -> None:
    other = open_store(url)  # a second process's store, sharing only the database
    try:
        stores = (store, other)
        update_ids = range(1, 41)
        won = run_together(4, lambda index: [u for u in update_ids if stores[index % 2].claim_update(u, at())])
    finally:
        other.close()

    claimed = [update_id for batch in won for update_id in batch]
    assert sorted(claimed) == list(update_ids)


def test_settings(store: Store) -> None:
    assert store.get_setting("staff_chat_id") is None
    store.set_setting("staff_chat_id", "-4001")
    store.set_setting("staff_chat_id", "-1004001")
    assert store.get_setting("staff_chat_id") == "-1004001"


# Start-up, restart and time


def test_data_survives_a_restart_and_migration_runs_again_harmlessly(url: str) -> None:
    first = open_store(url)
    fill_everything(first, ALICE, staff_message_id=500)
    first.set_setting("staff_chat_id", "-1004001")
    assert first.claim_update(99, at())
    first.close()

    second = open_store(url)
    try:
        assert second.get_patient(ALICE) == Patient(ALICE, "en", False, at(), at())
        assert second.count_rows_for(ALICE) == 7
        assert second.get_setting("staff_chat_id") == "-1004001"
        assert not second.claim_update(99, at(1))
    finally:
        second.close()

    versions = _schema_versions(url)
    assert versions == [step.version for step in MIGRATIONS]


def test_processes_starting_together_migrate_once(url: str) -> None:
    stores = run_together(3, lambda _: open_store(url))
    for store in stores:
        store.close()
    assert _schema_versions(url) == [step.version for step in MIGRATIONS]


def test_sqlite_file_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "aftercare.db"
    open_store(f"sqlite:///{path}").close()
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_unsupported_database_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported database URL"):
        open_store("mysql://localhost/aftercare")


def test_times_come_back_aware_in_utc(store: Store) -> None:
    paris = timezone(timedelta(hours=1))
    local = datetime(2025, 3, 1, 10, 0, tzinfo=paris)  # the same instant as T0

    patient = store.touch_patient(ALICE, lang="en", at=local)
    store.keep_question(ALICE, "q", "en", "fallback", local)
    store.open_handoff(ALICE, local)

    assert patient.created_at == T0 and patient.created_at.tzinfo == UTC
    stored = store.get_patient(ALICE)
    assert stored is not None and stored.last_seen_at.tzinfo == UTC and stored.last_seen_at == T0
    assert store.kept_questions(since=T0)[0].at.utcoffset() == timedelta(0)
    handoff = store.active_handoff(ALICE, T0, timedelta(minutes=1))
    assert handoff is not None and handoff.opened_at.tzinfo == UTC


def test_naive_times_are_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="naive datetime"):
        store.touch_patient(ALICE, lang="en", at=datetime(2025, 3, 1, 9, 0))
    with pytest.raises(ValueError, match="naive datetime"):
        store.stats(since=datetime(2025, 3, 1))


def _schema_versions(url: str) -> list[int]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return list(connection.scalars(text("SELECT version FROM schema_version ORDER BY version")))
    finally:
        engine.dispose()
