"""End to end: the real `aftercare run` process, over real HTTP, against the fake Bot API server.

Includes `kill -9` in the middle of bursts: the figures (lost and duplicated answers) are what the
README's delivery guarantees promise.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.store import open_store
from tests.conftest import FIXTURE_CONTENT, STAFF_USER
from tests.fake_telegram import FakeTelegram

pytestmark = pytest.mark.e2e

STAFF_CHAT = -100777
PATIENT = 81001

TEST_PLANS = """\
meso_face:
  steps:
    - id: first_care
      after: 2s
      late: 1h
    - id: evening
      after: 3s
      late: 1h
    - id: morning
      after: 4s
      late: 1h
    - id: checkin
      after: 5s
      late: 1h
      checkin: {fine: ok, still_swollen: trouble}
    - id: book_next
      day: 14
      at: "10:00"
microneedling:
  steps:
    - id: first_care
      after: 2s
    - id: checkin
      after: 4s
      checkin: {fine: ok, worse: trouble}
    - id: book_next
      day: 14
      at: "10:00"
"""


def write_config(tmp_path: Path, extra: str = "", *, fast_plans: bool = False) -> Path:
    """A clinic folder with the small test content (optionally with plans due in seconds)."""
    content = tmp_path / "faq"
    shutil.copytree(FIXTURE_CONTENT, content)
    if fast_plans:
        (content / "plans.yaml").write_text(TEST_PLANS, encoding="utf-8")
    config = tmp_path / "config.yaml"
    config.write_text(
        "content_dir: faq\nlanguages: [en]\ndefault_language: en\n"
        "reminders:\n  treatments: [meso_face, microneedling]\n  quiet_hours: ''\n"
        f"telegram:\n  staff_user_ids: [{STAFF_USER}]\n  poll_timeout: 1\n{extra}",
        encoding="utf-8",
    )
    return config


class BotProcess:
    def __init__(
        self, fake: FakeTelegram, tmp_path: Path, config: Path, extra_env: dict[str, str] | None = None
    ) -> None:
        self.db = tmp_path / "bot.db"
        self.tmp_path = tmp_path
        self.env = {
            **os.environ,
            "TELEGRAM_BOT_TOKEN": fake.token,
            "AFTERCARE_TELEGRAM_API_URL": fake.base_url,
            "AFTERCARE_DATABASE_URL": f"sqlite:///{self.db}",
            "AFTERCARE_STAFF_CHAT_ID": str(STAFF_CHAT),
            "AFTERCARE_INVITE_SECRET": "e2e-secret",
            **(extra_env or {}),
        }
        self.config = config
        self.runs = 0
        self.start()

    def start(self) -> None:
        self.runs += 1
        self.log = self.tmp_path / f"bot-{self.runs}.log"
        self._log_handle = self.log.open("w")
        args = [sys.executable, "-m", "bot", "--config", str(self.config), "run"]
        self.proc = subprocess.Popen(
            args, cwd=self.tmp_path, env=self.env, stdout=self._log_handle, stderr=subprocess.STDOUT
        )

    def output(self) -> str:
        if not self._log_handle.closed:
            self._log_handle.flush()
        return self.log.read_text(encoding="utf-8", errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._log_handle.close()


@pytest.fixture
def bot(fake: FakeTelegram, tmp_path: Path) -> Iterator[BotProcess]:
    process = BotProcess(fake, tmp_path, write_config(tmp_path))
    wait_polling(fake, process)
    yield process
    process.stop(signal.SIGKILL)


def wait_polling(fake: FakeTelegram, process: BotProcess) -> None:
    try:
        fake.wait_for_polling_sync(timeout=60)
    except AssertionError:
        process.stop(signal.SIGKILL)
        raise AssertionError("bot did not start polling:\n" + process.output()) from None


def wait_for_text(fake: FakeTelegram, chat_id: int, needle: str, timeout: float = 15) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in fake.messages_to(chat_id):
            if needle.lower() in (message.get("text") or message.get("caption") or "").lower():
                return message
        time.sleep(0.02)
    raise AssertionError(
        f"no message with {needle!r} to {chat_id}; got {[m.get('text') for m in fake.messages_to(chat_id)]}"
    )


def wait_for_start(fake: FakeTelegram, chat_id: int, start: str, timeout: float = 30) -> dict[str, object]:
    """A message that begins with `start` (a reminder, not the plan that lists it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in fake.messages_to(chat_id):
            if (message.get("text") or "").lower().startswith(start.lower()):
                return message
        time.sleep(0.05)
    raise AssertionError(f"no message starting {start!r}; got {[m.get('text') for m in fake.messages_to(chat_id)]}")


def test_a_conversation_and_a_staff_alert_over_http(fake: FakeTelegram, bot: BotProcess) -> None:
    fake.send_text(PATIENT, "/start")
    wait_for_text(fake, PATIENT, "assistant")
    assert {c["command"] for c in fake.commands(language_code="en")} >= {"start", "plan", "stop", "forget"}
    fake.send_text(PATIENT, "how long do bruises last?")
    wait_for_text(fake, PATIENT, "bruises are common")
    fake.send_text(PATIENT, "I have a fever and there is pus", first_name="Marta")
    alert = wait_for_text(fake, STAFF_CHAT, "URGENT")
    assert "Marta" in str(alert["text"]) and "pus" in str(alert["text"])
    fake.send_sticker(PATIENT)
    wait_for_text(fake, PATIENT, "text messages")
    assert fake.token not in bot.output()
    assert "pus" not in bot.output()  # nothing a patient wrote is logged


def test_forget_leaves_nothing_in_the_database(fake: FakeTelegram, bot: BotProcess) -> None:
    fake.send_text(PATIENT, "how long do bruises last?")
    wait_for_text(fake, PATIENT, "bruises")
    fake.send_text(PATIENT, "/forget")
    confirm = wait_for_text(fake, PATIENT, "permanently delete")
    fake.press_button(PATIENT, int(str(confirm["message_id"])), "x:1")
    wait_for_text(fake, PATIENT, "has been deleted")
    time.sleep(0.5)
    store = open_store(f"sqlite:///{bot.db}")
    try:
        assert store.count_rows_for(PATIENT) == 0
    finally:
        store.close()


def test_sigterm_finishes_cleanly(fake: FakeTelegram, bot: BotProcess) -> None:
    fake.send_text(PATIENT, "how long do bruises last?")
    wait_for_text(fake, PATIENT, "bruises")
    assert bot.stop(signal.SIGTERM) == 0


def burst(fake: FakeTelegram, patients: int, per_patient: int) -> dict[int, int]:
    """Sends `per_patient` questions from each of `patients` patients, interleaved; returns chat -> count."""
    sent: dict[int, int] = {}
    for round_ in range(per_patient):
        for index in range(patients):
            chat = 90000 + index
            fake.send_text(
                chat, "how long do bruises last?" if round_ % 2 == 0 else "how do i book my next appointment"
            )
            sent[chat] = sent.get(chat, 0) + 1
    return sent


def answered(fake: FakeTelegram, chat: int) -> int:
    """Answers the patient got: each question of a burst gets exactly one message."""
    return len(fake.messages_to(chat))


def test_kill_9_in_the_middle_of_a_burst_loses_nothing(fake: FakeTelegram, bot: BotProcess) -> None:
    """20 patients send 5 messages each; the bot is killed (SIGKILL) twice mid-burst and restarted."""
    rng = random.Random(7)
    sent = burst(fake, 20, 5)
    for _ in range(2):
        time.sleep(rng.uniform(0.2, 0.8))
        bot.stop(signal.SIGKILL)
        bot.start()
        wait_polling(fake, bot)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(answered(fake, chat) < count for chat, count in sent.items()):
        time.sleep(0.1)
    lost = {chat: count - answered(fake, chat) for chat, count in sent.items() if answered(fake, chat) < count}
    assert lost == {}, bot.output()
    duplicates = sum(max(0, answered(fake, chat) - count) for chat, count in sent.items())
    # Only messages in flight at the instant of a kill may be sent twice (the README documents the figure).
    assert duplicates <= 4, duplicates


def test_a_danger_sign_in_a_burst_with_kill_9_still_gets_reply_and_alert(fake: FakeTelegram, bot: BotProcess) -> None:
    burst(fake, 10, 3)
    fake.send_text(PATIENT, "I can't breathe")
    bot.stop(signal.SIGKILL)
    bot.start()
    wait_polling(fake, bot)
    wait_for_text(fake, PATIENT, "emergency", timeout=30)
    wait_for_text(fake, STAFF_CHAT, "EMERGENCY", timeout=30)


def test_reminders_arrive_in_order_and_a_worrying_check_in_alerts_staff(fake: FakeTelegram, tmp_path: Path) -> None:
    process = BotProcess(fake, tmp_path, write_config(tmp_path, fast_plans=True))
    try:
        wait_polling(fake, process)
        fake.send_text(STAFF_CHAT, "/invite meso_face", user_id=STAFF_USER, chat_type="supergroup")
        invite = wait_for_text(fake, STAFF_CHAT, "t.me/", timeout=20)
        uploads = [c.files["photo"] for c in fake.calls_to("sendPhoto") if c.ok and "photo" in c.files]
        assert uploads and uploads[0].data.startswith(b"\x89PNG"), "staff get the invite as a QR image"
        caption = str(invite.get("caption") or invite.get("text"))
        payload = caption.split("start=")[1].split()[0]
        fake.send_text(PATIENT, f"/start {payload}")
        consent = wait_for_text(fake, PATIENT, "may i send you")
        fake.press_button(
            PATIENT,
            int(str(consent["message_id"])),
            next(d for _, d in FakeTelegram.buttons(consent) if d and d.startswith("k:1:")),
        )
        wait_for_text(fake, PATIENT, "Your recovery reminders")
        first = wait_for_start(fake, PATIENT, "cold compress")
        evening = wait_for_start(fake, PATIENT, "evening care")
        morning = wait_for_start(fake, PATIENT, "sunscreen this morning")
        checkin = wait_for_start(fake, PATIENT, "swelling and redness gone")
        order = [int(str(m["message_id"])) for m in (first, evening, morning, checkin)]
        assert order == sorted(order)
        fake.press_button(
            PATIENT,
            int(str(checkin["message_id"])),
            next(d for _, d in FakeTelegram.buttons(checkin) if d and d.endswith(":still_swollen")),
        )
        wait_for_text(fake, STAFF_CHAT, "CHECK-IN", timeout=20)
        # Opening the same link again enrols nobody twice and sends nothing twice.
        fake.send_text(PATIENT, f"/start {payload}")
        time.sleep(3)
        starts = [(m.get("text") or "").lower() for m in fake.messages_to(PATIENT)]
        assert sum(t.startswith("cold compress") for t in starts) == 1
    finally:
        process.stop(signal.SIGKILL)


def test_missing_token_is_a_clear_error(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TELEGRAM_BOT_TOKEN"}
    result = subprocess.run(
        [sys.executable, "-m", "bot", "run"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert "TELEGRAM_BOT_TOKEN" in result.stderr and "Traceback" not in result.stderr


def test_a_rejected_token_is_reported_without_printing_it(tmp_path: Path) -> None:
    wrong = "999999:WRONG-token-that-must-not-be-printed"
    config = write_config(tmp_path)
    with FakeTelegram() as server:
        env = {
            **os.environ,
            "TELEGRAM_BOT_TOKEN": wrong,
            "AFTERCARE_TELEGRAM_API_URL": server.base_url,
            "AFTERCARE_DATABASE_URL": f"sqlite:///{tmp_path / 'bot.db'}",
        }
        result = subprocess.run(
            [sys.executable, "-m", "bot", "--config", str(config), "run"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode != 0
    assert "rejected the bot token" in result.stderr
    assert "WRONG-token" not in result.stdout + result.stderr


def test_a_token_revoked_while_running_exits_non_zero(fake: FakeTelegram, bot: BotProcess) -> None:
    fake.revoke_token()
    assert bot.proc.wait(timeout=60) != 0
    assert "rejected the bot token" in bot.output()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_webhook_without_a_secret_refuses_to_start(fake: FakeTelegram, tmp_path: Path) -> None:
    config = write_config(tmp_path, "  webhook:\n    url: https://bot.example/telegram\n")
    env = {**os.environ, "TELEGRAM_BOT_TOKEN": fake.token, "AFTERCARE_TELEGRAM_API_URL": fake.base_url}
    env.pop("AFTERCARE_WEBHOOK_SECRET", None)
    result = subprocess.run(
        [sys.executable, "-m", "bot", "--config", str(config), "run"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "secret_token" in result.stderr


def test_webhook_stores_before_answering_and_refuses_forged_and_oversized_requests(
    fake: FakeTelegram, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/telegram"
    config = write_config(tmp_path, f"  webhook:\n    url: {url}\n    port: {port}\n    secret_token: s3cret-hook\n")
    process = BotProcess(fake, tmp_path, config)
    try:
        deadline = time.monotonic() + 60
        while fake.webhook_url != url and time.monotonic() < deadline:
            time.sleep(0.05)
        assert fake.webhook_url == url, process.output()
        forged = fake.send_text(PATIENT, "how long do bruises last?", enqueue=False)
        status = 0
        while time.monotonic() < deadline:
            try:
                status, _ = FakeTelegram.post_webhook(url, forged, secret_token="wrong")
                break
            except OSError:
                time.sleep(0.1)
        assert status == 403
        huge = dict(forged)
        huge["message"] = {**forged["message"], "text": "x" * 2_000_000}
        try:
            status, _ = FakeTelegram.post_webhook(url, huge, secret_token="s3cret-hook")
        except OSError:  # refused before the body was read: the connection closes while it is being sent
            status = 413
        assert status in {413, 400}
        time.sleep(0.5)
        assert fake.messages_to(PATIENT) == []
        fake.send_text(PATIENT, "how long do bruises last?")  # genuine: the fake posts it with the secret
        wait_for_text(fake, PATIENT, "bruises")
    finally:
        assert process.stop(signal.SIGTERM) == 0
