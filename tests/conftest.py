"""Shared fixtures: content, stores on SQLite and PostgreSQL, the fake Bot API, and a running service.

Nothing here writes outside temporary folders: the encoder cache lives in the system's temporary
directory (so repeated runs are fast), databases in pytest's `tmp_path`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

# Before anything imports the runtime: the encoder and classifier caches go to a temporary folder.
os.environ.setdefault("AFTERCARE_CACHE_DIR", str(Path(tempfile.gettempdir()) / "aftercare-test-cache"))

from bot.config import Config, load_config
from bot.core.conversation import Assistant
from bot.runtime import load_assistant
from bot.store import Store, open_store
from tests.fake_telegram import FakeTelegram

REPO = Path(__file__).resolve().parent.parent
FIXTURE_CONTENT = Path(__file__).parent / "fixtures" / "faq"
STAFF_CHAT = -1001234567890
# A clinic's facts, as content validation sees them (placeholder values to check texts' lengths against).
TEST_CLINIC = {
    "clinic_name": "Clinic",
    "clinic_phone": "+1 555",
    "clinic_email": "a@b.c",
    "clinic_address": "Street 1",
    "opening_hours": "9-17",
    "booking_url": "https://x.example",
    "emergency_number": "112",
    "crisis_line": "116 123",
}
STAFF_USER = 424242
PG_URL = os.environ.get("AFTERCARE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REQUIRE_POSTGRES = os.environ.get("AFTERCARE_REQUIRE_POSTGRES") == "1"


def _postgres_reason() -> str | None:
    """None when the PostgreSQL server answers; else why its tests are skipped."""
    try:
        import psycopg
        from sqlalchemy.engine import make_url

        dsn = make_url(PG_URL).set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(dsn, connect_timeout=3):
            return None
    except Exception as exc:  # any failure to connect means: no server here
        return f"{type(exc).__name__}"


_PG_REASON = _postgres_reason()


def pytest_report_header(config: pytest.Config) -> str:
    if _PG_REASON is None:
        return f"PostgreSQL: {PG_URL.split('@')[-1]}"
    return (
        f"PostgreSQL: not reachable at {PG_URL.split('@')[-1]} ({_PG_REASON}): its tests are skipped. "
        "Start a server there (or set AFTERCARE_TEST_POSTGRES_URL) to run them."
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _PG_REASON is None:
        return
    if REQUIRE_POSTGRES:
        raise pytest.UsageError(
            f"AFTERCARE_REQUIRE_POSTGRES=1 but PostgreSQL at {PG_URL.split('@')[-1]} is not reachable ({_PG_REASON})"
        )
    skip = pytest.mark.skip(reason=f"no PostgreSQL server at {PG_URL.split('@')[-1]}")
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)


# -- content ---------------------------------------------------------------------------------------
def fixture_config(tmp_path: Path | None = None, **environ: str) -> Config:
    """The built-in defaults with the small test content (two topics, two plans)."""
    env = {"AFTERCARE_INVITE_SECRET": "test-secret", **environ}
    config = load_config(None, environ=env)
    reminders = config.reminders.model_copy(update={"treatments": ("meso_face", "microneedling")})
    return config.model_copy(
        update={"content_dir": FIXTURE_CONTENT, "languages": ("en",), "default_language": "en", "reminders": reminders}
    )


@pytest.fixture(scope="session")
def fixture_assistant() -> tuple[Config, Assistant]:
    """The test content with the real encoder and classifier, loaded once (fast, and independent of curators)."""
    from bot.runtime import assistant_for

    config = fixture_config()
    return config, assistant_for(config)


@pytest.fixture(scope="session")
def shipped() -> tuple[Config, Assistant]:
    """The shipped content with the built-in defaults, loaded once."""
    return load_assistant(None)


# -- stores ----------------------------------------------------------------------------------------
@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = open_store(f"sqlite:///{tmp_path / 'bot.db'}")
    yield opened
    opened.close()


@contextlib.contextmanager
def postgres_schema() -> Iterator[str]:
    """A URL whose search_path is a fresh schema, dropped afterwards."""
    import psycopg
    from sqlalchemy.engine import make_url

    schema = f"test_{uuid.uuid4().hex[:12]}"
    dsn = make_url(PG_URL).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(dsn, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The same test on a SQLite file and on the real PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'data' / 'aftercare.db'}"
        return
    with postgres_schema() as url:
        yield url


# -- Telegram ----------------------------------------------------------------------------------------
@pytest.fixture
def fake() -> Iterator[FakeTelegram]:
    with FakeTelegram() as server:
        yield server


class RunningService:
    """The real service in the test's event loop, talking over real HTTP to the fake Bot API."""

    def __init__(self, service: Any, task: asyncio.Task[int]) -> None:
        self.service = service
        self.task = task

    async def stop(self) -> int:
        self.service.stop.set()
        return await asyncio.wait_for(self.task, 20)


@contextlib.asynccontextmanager
async def running_service(
    fake: FakeTelegram, store: Store, assistant: Assistant, config: Config
) -> AsyncIterator[RunningService]:
    from bot.telegram.service import Service

    service = Service(config, assistant, store)
    task = asyncio.create_task(service.run())
    try:
        await fake.wait_for_polling(timeout=20)
    except AssertionError:
        if task.done():
            task.result()
        raise
    running = RunningService(service, task)
    try:
        yield running
    finally:
        if not task.done():
            await running.stop()


def service_config(fake: FakeTelegram, **overrides: Any) -> Config:
    config = fixture_config(
        TELEGRAM_BOT_TOKEN=fake.token,
        AFTERCARE_TELEGRAM_API_URL=fake.base_url,
        AFTERCARE_STAFF_CHAT_ID=str(STAFF_CHAT),
    )
    telegram = config.telegram.model_copy(update={"poll_timeout": 1, "staff_user_ids": (STAFF_USER,), **overrides})
    return config.model_copy(update={"telegram": telegram})
