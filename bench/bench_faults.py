"""Danger signs under faults: how soon the patient's safety message and the staff alert arrive when one
failure hits each of them, through the real `aftercare run` process and the fake Bot API.

Run: .venv/bin/python bench/bench_faults.py [--repeat 3]
Prints one JSON line per fault (it asserts nothing; targets in the README): the slowest of `--repeat`
danger signs, from the update being queued to the safety message and to the staff alert reaching the
fake server. Target: the safety message within 1 s and the alert within 5 s.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.botprocess import STAFF_CHAT, start_bot  # noqa: E402
from tests.fake_telegram import FakeTelegram  # noqa: E402

DANGER = "my lips and tongue are swelling fast and I can't breathe properly"

# Each fault is scripted once for the patient's chat and once for the staff chat, before the danger sign.
FAULTS: dict[str, Callable[[FakeTelegram, int], None]] = {
    "none": lambda fake, chat: None,
    "500": lambda fake, chat: fake.fail("sendMessage", chat_id=chat, status=500),
    "502 html": lambda fake, chat: fake.fail("sendMessage", chat_id=chat, status=502, html=True),
    "429 retry after 1": lambda fake, chat: fake.fail("sendMessage", chat_id=chat, status=429, retry_after=1),
    "connection dropped": lambda fake, chat: fake.drop("sendMessage", chat_id=chat),
    "answer lost after delivery": lambda fake, chat: fake.drop("sendMessage", chat_id=chat, after_processing=True),
    "stalled 15 s": lambda fake, chat: fake.stall("sendMessage", chat_id=chat, seconds=15),
}


def first_text(fake: FakeTelegram, chat: int, needle: str, since: float) -> float | None:
    times = [m["time"] for m in fake.messages_to(chat) if needle in str(m.get("text", "")).lower()]
    found = [t for t in times if t >= since]
    return min(found) if found else None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with FakeTelegram() as fake, tempfile.TemporaryDirectory() as tmp:
        proc = start_bot(fake, Path(tmp))
        try:
            fake.wait_for_polling_sync(timeout=60)
            patient = 800_000
            for name, inject in FAULTS.items():
                safety: list[float] = []
                alert: list[float] = []
                for _ in range(args.repeat):
                    patient += 1
                    inject(fake, patient)
                    inject(fake, STAFF_CHAT)
                    sent = time.time()
                    fake.send_text(patient, DANGER)
                    reply = seen = None
                    deadline = time.monotonic() + 30
                    while time.monotonic() < deadline and (reply is None or seen is None):
                        reply = reply or first_text(fake, patient, "emergency", sent)
                        seen = seen or first_text(fake, STAFF_CHAT, "emergency", sent)
                        time.sleep(0.02)
                    safety.append((reply - sent) if reply else float("inf"))
                    alert.append((seen - sent) if seen else float("inf"))
                    fake.clear_faults()
                figures = {
                    "fault": name,
                    "safety_message_s": round(max(safety), 2),
                    "staff_alert_s": round(max(alert), 2),
                }
                print(json.dumps(figures), flush=True)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
