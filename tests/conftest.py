"""Shared fixtures: the fake Telegram server, an in-process request layer, and the real Application."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
from telegram import Update
from telegram.ext import Application
from telegram.request import BaseRequest, RequestData

from bot.config import Config, load_config
from bot.core.conversation import Assistant
from bot.runtime import load_assistant
from bot.store import Store, open_store
from bot.telegram.app import build_application
from tests.fake_telegram import FakeTelegram

STAFF_CHAT = -1001234567890
STAFF_USER = 424242


class InProcessRequest(BaseRequest):
    """PTB's request layer answered by the fake Bot API directly, without sockets."""

    def __init__(self, fake: FakeTelegram) -> None:
        self.fake = fake

    async def initialize(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    @property
    def read_timeout(self) -> float | None:
        return 5.0

    async def do_request(
        self, url: str, method: str, request_data: RequestData | None = None, *args: Any, **kwargs: Any
    ) -> tuple[int, bytes]:
        parts = urlsplit(url)
        body = urlencode(request_data.json_parameters if request_data else {}).encode()
        status, payload = await asyncio.to_thread(
            self.fake._dispatch, "POST", parts.path, parts.query, "application/x-www-form-urlencoded", body
        )
        return status, json.dumps(payload).encode()


@pytest.fixture(scope="session")
def shipped() -> tuple[Config, Assistant]:
    """The shipped content with the built-in defaults, loaded once."""
    return load_assistant(None)


@pytest.fixture
def fake() -> Iterator[FakeTelegram]:
    with FakeTelegram() as server:
        yield server


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = open_store(f"sqlite:///{tmp_path / 'bot.db'}")
    yield opened
    opened.close()


@pytest.fixture
async def app(fake: FakeTelegram, store: Store, shipped: tuple[Config, Assistant]) -> AsyncIterator[Application]:  # type: ignore[type-arg]
    config = load_config(
        None,
        environ={"TELEGRAM_BOT_TOKEN": fake.token, "AFTERCARE_STAFF_CHAT_ID": str(STAFF_CHAT)},
    )
    application = build_application(config, shipped[1], store, request=InProcessRequest(fake))
    async with application:
        yield application


async def deliver(app: Application, update: dict[str, Any]) -> None:  # type: ignore[type-arg]
    """Hand one update to the application, as polling or a webhook would."""
    await app.process_update(Update.de_json(update, app.bot))
