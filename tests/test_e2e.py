"""End to end: the real `aftercare run` process, over real HTTP, against the fake Bot API server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.store import open_store
from tests.fake_telegram import FakeTelegram

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parent.parent
STAFF_CHAT = -100777
PATIENT = 81001


class BotProcess:
    def __init__(
        self, fake: FakeTelegram, tmp_path: Path, extra_env: dict[str, str] | None = None, config: Path | None = None
    ) -> None:
        self.db = tmp_path / "bot.db"
        env = {
            **os.environ,
            "TELEGRAM_BOT_TOKEN": fake.token,
            "AFTERCARE_TELEGRAM_API_URL": fake.base_url,
            "AFTERCARE_DATABASE_URL": f"sqlite:///{self.db}",
            "AFTERCARE_STAFF_CHAT_ID": str(STAFF_CHAT),
            **(extra_env or {}),
        }
        args = [sys.executable, "-m", "bot"] + (["--config", str(config)] if config else []) + ["run"]
        self.log = tmp_path / "bot.log"
        self._log_handle = self.log.open("w")
        self.proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=self._log_handle, stderr=subprocess.STDOUT)

    def output(self) -> str:
        if not self._log_handle.closed:
            self._log_handle.flush()
        return self.log.read_text(encoding="utf-8", errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._log_handle.close()


@pytest.fixture
def fake() -> Iterator[FakeTelegram]:
    with FakeTelegram() as server:
        yield server


@pytest.fixture
def bot(fake: FakeTelegram, tmp_path: Path) -> Iterator[BotProcess]:
    process = BotProcess(fake, tmp_path)
    try:
        fake.wait_for_polling_sync(timeout=30)
    except AssertionError:
        process.stop(signal.SIGKILL)
        raise AssertionError("bot did not start polling:\n" + process.output()) from None
    yield process
    process.stop(signal.SIGKILL)


def wait_for_text(fake: FakeTelegram, chat_id: int, needle: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in fake.messages_to(chat_id):
            if needle.lower() in (message.get("text") or "").lower():
                return str(message["text"])
        time.sleep(0.02)
    raise AssertionError(
        f"no message with {needle!r} to {chat_id}; got {[m['text'] for m in fake.messages_to(chat_id)]}"
    )


def test_a_whole_conversation_over_http(fake: FakeTelegram, bot: BotProcess) -> None:
    fake.send_text(PATIENT, "/start", language_code="it")
    wait_for_text(fake, PATIENT, "assistente")
    assert {c["command"] for c in fake.commands(language_code="pl")} >= {"start", "forget", "stop"}

    fake.send_text(PATIENT, "quando posso truccarmi di nuovo?", language_code="it")
    wait_for_text(fake, PATIENT, "trucco")

    fake.send_text(PATIENT, "ho 39 di febbre e del pus sulla guancia", first_name="Marta", language_code="it")
    alert = wait_for_text(fake, STAFF_CHAT, "pus sulla guancia")
    assert "Marta" in alert

    # Telegram says "too many requests": the bot waits as told and the answer still arrives.
    fake.fail_next("sendMessage", status=429, description="Too Many Requests: retry after 1", retry_after=1)
    fake.send_text(PATIENT, "posso andare in palestra domani?", language_code="it")
    wait_for_text(fake, PATIENT, "palestra", timeout=15)

    fake.send_sticker(PATIENT)
    wait_for_text(fake, PATIENT, "testo")
    assert fake.token not in bot.output()


def test_forget_leaves_nothing_in_the_database(fake: FakeTelegram, bot: BotProcess) -> None:
    fake.send_text(PATIENT, "/start", language_code="en")
    fake.send_text(PATIENT, "when can I wear make-up?", language_code="en")
    fake.send_text(PATIENT, "/forget", language_code="en")
    wait_for_text(fake, PATIENT, "permanently delete")
    confirm = fake.messages_to(PATIENT)[-1]
    fake.press_button(PATIENT, confirm["message_id"], "x:y")
    wait_for_text(fake, PATIENT, "has been deleted")
    store = open_store(f"sqlite:///{bot.db}")
    try:
        assert store.count_rows_for(PATIENT) == 0
    finally:
        store.close()


def test_duplicate_delivery_is_answered_once(fake: FakeTelegram, bot: BotProcess) -> None:
    update = fake.send_text(PATIENT, "when can I wear make-up?", enqueue=False)
    fake.push_twice(update)
    wait_for_text(fake, PATIENT, "make-up")
    time.sleep(1.0)
    assert len(fake.messages_to(PATIENT)) == 1


def test_sigterm_finishes_cleanly(fake: FakeTelegram, bot: BotProcess) -> None:
    fake.send_text(PATIENT, "when can I wear make-up?")
    wait_for_text(fake, PATIENT, "make-up")
    assert bot.stop(signal.SIGTERM) == 0
    store = open_store(f"sqlite:///{bot.db}")  # the database is consistent and holds the conversation
    try:
        assert store.count_rows_for(PATIENT) > 0
    finally:
        store.close()


def test_missing_token_is_a_clear_error(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TELEGRAM_BOT_TOKEN"}
    result = subprocess.run(
        [sys.executable, "-m", "bot", "run"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "TELEGRAM_BOT_TOKEN" in result.stderr and "Traceback" not in result.stderr


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_webhook_rejects_forged_requests(fake: FakeTelegram, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/telegram"
    config = tmp_path / "config.yaml"
    config.write_text(
        f"telegram:\n  webhook:\n    url: {url}\n    listen: 127.0.0.1\n    port: {port}\n"
        f"    secret_token: s3cret-hook\n",
        encoding="utf-8",
    )
    process = BotProcess(fake, tmp_path, config=config)
    try:
        deadline = time.monotonic() + 30
        while fake.webhook_url != url and time.monotonic() < deadline:
            time.sleep(0.05)
        assert fake.webhook_url == url, process.output()
        forged = fake.send_text(PATIENT, "when can I wear make-up?", enqueue=False)
        status = 0
        while time.monotonic() < deadline:  # the server may need a moment to listen
            try:
                status, _ = FakeTelegram.post_webhook(url, forged, secret_token="wrong")
                break
            except OSError:
                time.sleep(0.1)
        assert status == 403
        status, _ = FakeTelegram.post_webhook(url, forged)
        assert status == 403
        time.sleep(0.5)
        assert fake.messages_to(PATIENT) == []
        # A genuine update (delivered by the fake with the secret) is answered.
        fake.send_text(PATIENT, "when can I wear make-up?")
        wait_for_text(fake, PATIENT, "make-up")
    finally:
        assert process.stop(signal.SIGTERM) == 0


def test_a_rejected_token_is_reported_without_printing_it(tmp_path: Path) -> None:
    wrong = "999999:WRONG-token-that-must-not-be-printed"
    with FakeTelegram() as server:
        env = {
            **os.environ,
            "TELEGRAM_BOT_TOKEN": wrong,
            "AFTERCARE_TELEGRAM_API_URL": server.base_url,
            "AFTERCARE_DATABASE_URL": f"sqlite:///{tmp_path / 'bot.db'}",
        }
        result = subprocess.run(
            [sys.executable, "-m", "bot", "run"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
    assert result.returncode == 1
    assert "rejected the bot token" in result.stderr
    assert wrong not in result.stdout + result.stderr
    assert "WRONG-token" not in result.stdout + result.stderr
