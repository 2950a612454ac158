"""Two real `aftercare run` processes sharing one PostgreSQL database; one is killed mid-burst.

Only one process polls Telegram at a time (an advisory lock); both work the inbox and the outbox.
Killing one with SIGKILL loses nothing: the survivor takes over polling and the dead one's claims
once their leases lapse; only messages in flight at the instant of the kill may be sent twice.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import postgres_schema
from tests.fake_telegram import FakeTelegram
from tests.test_e2e import BotProcess, answered, burst, write_config

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


@pytest.fixture
def pg_url() -> Iterator[str]:
    with postgres_schema() as url:
        yield url


def test_two_processes_one_killed_mid_burst_lose_nothing(fake: FakeTelegram, tmp_path: Path, pg_url: str) -> None:
    config = write_config(tmp_path)
    first_dir, second_dir = tmp_path / "a", tmp_path / "b"
    first_dir.mkdir()
    second_dir.mkdir()
    env = {"AFTERCARE_DATABASE_URL": pg_url}
    first = BotProcess(fake, first_dir, config, env)
    fake.wait_for_polling_sync(timeout=60)
    second = BotProcess(fake, second_dir, config, env)
    try:
        time.sleep(3)  # both running; one of them polls
        sent = burst(fake, 20, 5)
        time.sleep(0.5)
        first.stop(signal.SIGKILL)  # whichever was polling, the other must take over
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and any(answered(fake, chat) < count for chat, count in sent.items()):
            time.sleep(0.2)
        lost = {chat: count - answered(fake, chat) for chat, count in sent.items() if answered(fake, chat) < count}
        assert lost == {}, second.output()
        duplicates = sum(max(0, answered(fake, chat) - count) for chat, count in sent.items())
        assert duplicates <= 4, duplicates
    finally:
        first.stop(signal.SIGKILL)
        second.stop(signal.SIGKILL)


def test_the_bot_wide_send_rate_is_shared_not_multiplied(fake: FakeTelegram, tmp_path: Path, pg_url: str) -> None:
    config = write_config(tmp_path, "  max_messages_per_second: 10\n")
    fake.enforce_limits(per_bot_per_second=12)
    processes = []
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        processes.append(BotProcess(fake, folder, config, {"AFTERCARE_DATABASE_URL": pg_url}))
    try:
        fake.wait_for_polling_sync(timeout=60)
        time.sleep(3)
        sent = burst(fake, 40, 1)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(answered(fake, chat) < count for chat, count in sent.items()):
            time.sleep(0.2)
        assert all(answered(fake, chat) >= count for chat, count in sent.items())
        assert fake.flood_errors == 0  # two processes at 10/s each would have been refused at 12/s
    finally:
        for process in processes:
            process.stop(signal.SIGKILL)
