"""Engine set-up and schema migration, run by every process at start-up and safe when several start at once."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, insert, select, text
from sqlalchemy.engine import URL, make_url

from bot.store.tables import Base, SchemaVersionRow

# Seconds a SQLite writer waits for another process's transaction before giving up.
SQLITE_BUSY_TIMEOUT = 15
# The execution option of transactions that only read (SQLite: they take no write lock).
READ_ONLY = "aftercare_read_only"
# Any constant will do: it only has to be the same in every bot process sharing the database.
PG_MIGRATION_LOCK = 0x61667463  # "aftc"


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    apply: Callable[[Connection], None]


def _baseline(connection: Connection) -> None:
    """Version 1 is the first release's schema, which `create_all` makes."""
    Base.metadata.create_all(connection)


# Applied in order to an existing database; append a step (never edit one) when a table changes.
# A fresh database gets the current schema from `create_all` and every step marked as applied.
MIGRATIONS: tuple[Migration, ...] = (Migration(1, "baseline", _baseline),)


def create_store_engine(url: str) -> Engine:
    """An engine for SQLite or PostgreSQL (psycopg 3); other back ends are refused up front."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(parsed)
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        # Long-lived bot processes outlive server restarts and idle timeouts.
        return create_engine(parsed, pool_pre_ping=True, hide_parameters=True)
    raise ValueError(f"unsupported database URL {parsed.render_as_string()}: use sqlite:/// or postgresql+psycopg://")


def _sqlite_engine(url: URL) -> Engine:
    database = url.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    # Bound values never appear in error messages or logs: they may be a patient's words.
    engine = create_engine(
        url, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT}, hide_parameters=True
    )
    event.listen(engine, "connect", _on_sqlite_connect)
    writer = _Writer()
    event.listen(engine, "begin", writer.begin)
    event.listen(engine, "commit", writer.end)
    event.listen(engine, "rollback", writer.end)
    event.listen(engine, "checkin", writer.checkin)
    return engine


class _Writer:
    """This process's turn at SQLite's write lock.

    Every transaction that may write takes the write lock at BEGIN (see `_on_sqlite_begin`); those marked
    `READ_ONLY` take none. Threads of one process that meet it taken would wait in SQLite's busy handler,
    which sleeps in growing steps of up to 100 ms and so leaves the lock idle while they sleep (the bot's
    workers spent a fifth of their time there). They queue on a lock of the process instead and get the
    file's lock the moment it is free; other processes still wait in the busy handler.
    """

    KEY = "aftercare_writer"

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def begin(self, connection: Connection) -> None:
        if connection.get_execution_options().get(READ_ONLY):
            # Under WAL a reader sees the last commit and never waits for the writer: no lock to take.
            connection.exec_driver_sql("BEGIN")
            return
        if not self._lock.acquire(timeout=SQLITE_BUSY_TIMEOUT):
            raise sqlite3.OperationalError("database is locked")
        try:
            _on_sqlite_begin(connection)
        except BaseException:
            self._lock.release()
            raise
        connection.info[self.KEY] = True

    def end(self, connection: Connection) -> None:
        self._release(connection.info)

    def checkin(self, dbapi_connection: Any, record: Any) -> None:
        """A connection back in the pool mid-transaction (rolled back by the pool): its turn ends too."""
        self._release(record.info)

    def _release(self, info: dict[Any, Any]) -> None:
        if info.pop(self.KEY, False):
            self._lock.release()


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    """WAL lets readers and one writer work at once; foreign keys are off in SQLite unless asked for."""
    # pysqlite's own transaction handling skips BEGIN before DDL; we emit BEGIN ourselves (see below).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        _enable_wal(cursor)
        cursor.execute("PRAGMA foreign_keys=ON")
        # In WAL mode NORMAL is safe against corruption and application crashes; it skips an fsync per commit.
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def _enable_wal(cursor: Any) -> None:
    """WAL is a property of the file, set by whichever process gets there first.

    Switching a file to WAL answers "database is locked" at once, without waiting for the busy timeout,
    while another process is doing the same; so wait here until the file is in WAL mode.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT
    while True:
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _on_sqlite_begin(connection: Connection) -> None:
    """Take the write lock at BEGIN: a deferred transaction that reads and then writes can fail under WAL
    when another process wrote in between, while BEGIN IMMEDIATE just waits its turn (busy timeout)."""
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def migrate(engine: Engine) -> None:
    """Brings the schema up to date in one transaction, serialised against other processes doing the same."""
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_MIGRATION_LOCK})
        # On SQLite, BEGIN IMMEDIATE already holds the database's write lock.
        Base.metadata.create_all(connection, tables=[Base.metadata.tables[SchemaVersionRow.__tablename__]])
        applied = set(connection.scalars(select(SchemaVersionRow.version)))
        if not applied:
            Base.metadata.create_all(connection)
            pending = list(MIGRATIONS)
        else:
            pending = [step for step in MIGRATIONS if step.version not in applied]
            for step in pending:
                step.apply(connection)
            # Tables added since the last release need no hand-written step.
            Base.metadata.create_all(connection)
        if pending:
            connection.execute(
                insert(SchemaVersionRow),
                [{"version": step.version, "description": step.description} for step in pending],
            )
