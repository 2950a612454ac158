"""Reminders benchmark: bursts of due reminders through the real `aftercare run` and the fake Bot API.

Run: .venv/bin/python bench/bench_reminders.py [--reminders 10000] [--window 30] [--patients 100000]
Prints, as JSON lines (it asserts nothing; targets in the README):
- `limited`: reminders due at once with Telegram's limits enforced by the fake server (30/s per bot,
  1/s per chat, 20/min per group): messages/s sustained over a window (every message the bot sent,
  and the reminders alone, after the first two seconds), 429s earned, and the reply latency of
  patients who write during the burst;
- `unlimited`: the same with no limit anywhere (a self-hosted Bot API server): messages/s;
- `startup`: time to polling and peak memory of the process with 10 and with N enrolled patients.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sqlalchemy import insert  # noqa: E402

from bench.botprocess import start_bot  # noqa: E402
from bot.store import open_store  # noqa: E402
from bot.store.tables import EnrolmentRow, PatientRow, ReminderRow  # noqa: E402
from tests.fake_telegram import FakeTelegram  # noqa: E402

FIRST_CHAT = 10_000_000


def seed(db: Path, patients: int, *, due_now: int) -> None:
    """`patients` enrolled patients, each with one reminder; `due_now` of them due at once, the rest in days."""
    store = open_store(f"sqlite:///{db}")
    now = datetime.now(UTC)
    try:
        with store.engine.begin() as connection:
            for start in range(0, patients, 5000):
                chunk = range(start, min(patients, start + 5000))
                connection.execute(
                    insert(PatientRow),
                    [
                        {
                            "chat_id": FIRST_CHAT + i,
                            "lang": "en",
                            "stopped": False,
                            "created_at": now,
                            "last_seen_at": now,
                        }
                        for i in chunk
                    ],
                )
                connection.execute(
                    insert(EnrolmentRow),
                    [
                        {
                            "id": f"b{i}",
                            "chat_id": FIRST_CHAT + i,
                            "treatment": "meso_face",
                            "treated_at": now - timedelta(hours=2),
                            "zone": "Europe/Rome",
                            "source": "menu",
                            "ref": "",
                            "created_at": now,
                            "consent_at": now,
                        }
                        for i in chunk
                    ],
                )
                connection.execute(
                    insert(ReminderRow),
                    [
                        {
                            "key": f"b{i}:first_care",
                            "enrolment_id": f"b{i}",
                            "chat_id": FIRST_CHAT + i,
                            "step": "first_care",
                            "checkin": False,
                            "due_at": now - timedelta(minutes=1) if i < due_now else now + timedelta(days=3),
                            "expires_at": now + timedelta(hours=3) if i < due_now else now + timedelta(days=3, hours=3),
                            "state": "scheduled",
                        }
                        for i in chunk
                    ],
                )
    finally:
        store.close()


CONTENT: Path | None = None  # --content: another content folder (default: the shipped faq/)


def start_reminder_bot(fake: FakeTelegram, folder: Path, rate: float) -> subprocess.Popen[bytes]:
    """The bot with quiet hours off (the burst is due now, whatever the hour) and the given send rate."""
    extra = (
        f"content_dir: {CONTENT}\nlanguages: [en]\nreminders:\n  treatments: [meso_face, microneedling]\n"
        if CONTENT
        else "reminders:\n"
    )
    return start_bot(fake, folder, f"{extra}  quiet_hours: ''\ntelegram:\n  max_messages_per_second: {rate}\n")


def reminders_sent(fake: FakeTelegram) -> list[float]:
    return sorted(
        c.time for c in fake.calls_to("sendMessage") if c.ok and int(c.params.get("chat_id", 0)) >= FIRST_CHAT
    )


def steady_rate(times: list[float], settle: float = 2.0) -> float:
    """Messages a second from `settle` seconds after the first one to the last one."""
    steady = [t for t in times if t >= times[0] + settle] if times else []
    span = steady[-1] - steady[0] if len(steady) > 1 else 0.0
    return round((len(steady) - 1) / span, 1) if span else 0.0


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def burst(reminders: int, window: float, *, limited: bool) -> dict[str, object]:
    with FakeTelegram() as fake, tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        db = folder / "bench.db"
        seed(db, reminders, due_now=reminders)
        if limited:
            fake.enforce_limits()
        proc = start_reminder_bot(fake, folder, 29 if limited else 0)
        latencies: list[float] = []
        try:
            fake.wait_for_polling_sync(timeout=120)
            deadline = time.monotonic() + window
            asked: list[tuple[int, float]] = []
            n = 0
            while time.monotonic() < deadline:
                if limited and len(asked) < 40:  # patients writing during the burst
                    chat = 900_000 + n
                    n += 1
                    asked.append((chat, time.time()))
                    fake.send_text(chat, "how long does the swelling last?")
                if not limited and len(reminders_sent(fake)) >= reminders:
                    break
                time.sleep(0.5)
            sent = reminders_sent(fake)
            for chat, at in asked:
                replies = sorted(
                    c.time for c in fake.calls_to("sendMessage") if c.ok and c.params.get("chat_id") == chat
                )
                if replies:
                    latencies.append((replies[0] - at) * 1000)
            everything = sorted(c.time for c in fake.calls_to("sendMessage") if c.ok)
            result: dict[str, object] = {
                "mode": "limited" if limited else "unlimited",
                "reminders_due": reminders,
                "delivered": len(sent),
                # Sustained: after the first seconds (the burst being queued), every message the bot sent
                # (reminders and the replies to patients who wrote meanwhile share Telegram's limit).
                "messages_per_s": steady_rate(everything),
                "reminders_per_s": steady_rate(sent),
                "flood_errors_429": fake.flood_errors,
            }
            if latencies:
                latencies.sort()
                result |= {
                    "patients_writing": len(asked),
                    "answered": len(latencies),
                    "reply_p50_ms": round(statistics.median(latencies), 1),
                    "reply_p99_ms": round(latencies[int(0.99 * (len(latencies) - 1))], 1),
                }
            return result
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)


def startup(patients: int) -> dict[str, object]:
    with FakeTelegram() as fake, tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        db = folder / "bench.db"
        seed(db, patients, due_now=0)
        began = time.perf_counter()
        proc = start_reminder_bot(fake, folder, 29)
        try:
            fake.wait_for_polling_sync(timeout=120)
            ready = time.perf_counter() - began
            time.sleep(6)  # a reminder tick has run over the whole table
            return {
                "mode": "startup",
                "patients": patients,
                "seconds_to_polling": round(ready, 2),
                "peak_rss_mb": round(peak_rss_mb(proc.pid), 0),
            }
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reminders", type=int, default=10_000)
    parser.add_argument("--window", type=float, default=30.0, help="seconds the limited burst is watched")
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--content", type=Path, help="a content folder other than the shipped one")
    args = parser.parse_args()
    global CONTENT
    CONTENT = args.content.resolve() if args.content else None
    print(json.dumps(burst(args.reminders, args.window, limited=True)), flush=True)
    print(json.dumps(burst(args.reminders, 120.0, limited=False)), flush=True)
    print(json.dumps(startup(10)), flush=True)
    print(json.dumps(startup(args.patients)), flush=True)


if __name__ == "__main__":
    main()
