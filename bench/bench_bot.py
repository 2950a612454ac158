"""Bot benchmark: N simulated patients against the fake Bot API, the real `aftercare run` process in between.

Run: .venv/bin/python bench/bench_bot.py [--users 50] [--rate 50] [--seconds 20] [--pace 0]
Prints replies/s and p50/p99 latency from update (queued at the fake server) to reply (sendMessage
received by the fake server). Target on a 2-core machine: p99 ≤ 150 ms at 50 messages/s.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.botprocess import start_bot  # noqa: E402
from tests.fake_telegram import FakeTelegram  # noqa: E402

QUESTIONS = {
    "en": [
        "when can I wear make-up again?",
        "can I go to the gym tomorrow?",
        "how long does the swelling last",
        "is a glass of wine ok tonight?",
        "sunscreen??",
    ],
    "it": [
        "quando posso truccarmi?",
        "posso andare in palestra domani?",
        "quanto dura il gonfiore?",
        "crema solare??",
        "posso bere un bicchiere di vino stasera?",
    ],
    "pl": [
        "kiedy moge sie umalowac?",
        "czy moge isc jutro na silownie?",
        "ile trzyma opuchlizna",
        "krem z filtrem?",
        "czy moge wypic lampke wina?",
    ],
    "es": [
        "cuando me puedo maquillar?",
        "puedo ir al gym mañana?",
        "cuanto dura la hinchazon",
        "protector solar??",
        "puedo tomar una cerveza esta noche?",
    ],
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--rate", type=float, default=50.0, help="messages per second, all users together")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument(
        "--pace",
        type=float,
        default=0.0,
        help="the bot's total send rate limit (telegram.max_messages_per_second); 0, the default here, measures "
        "what the bot itself can do, since the fake server has no flood limit (the shipped default is 29)",
    )
    args = parser.parse_args()

    with FakeTelegram() as fake, tempfile.TemporaryDirectory() as tmp:
        proc = start_bot(fake, Path(tmp), f"telegram:\n  max_messages_per_second: {args.pace}\n")
        try:
            fake.wait_for_polling_sync(timeout=60)
            langs = list(QUESTIONS)
            cpu_before = _cpu_seconds(proc.pid)
            sent: dict[int, list[float]] = {}
            total = int(args.rate * args.seconds)
            start = time.perf_counter()
            for n in range(total):
                due = start + n / args.rate
                pause = due - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                user = 700000 + n % args.users
                lang = langs[user % len(langs)]
                text = QUESTIONS[lang][(n // args.users) % len(QUESTIONS[lang])]
                sent.setdefault(user, []).append(time.time())
                fake.send_text(user, text, language_code=lang)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                answered = sum(min(len(fake.messages_to(u)), len(t)) for u, t in sent.items())
                if answered >= total:
                    break
                time.sleep(0.1)
            elapsed = time.perf_counter() - start
            cpu = _cpu_seconds(proc.pid) - cpu_before
            latencies: list[float] = []
            for user, times in sent.items():
                replies = sorted(m["time"] for m in fake.messages_to(user))
                latencies += [(r - s) * 1000 for s, r in zip(times, replies, strict=False)]
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        stages = _stages(Path(tmp) / "bench.db", sent)
    latencies.sort()
    result = {
        "pace": args.pace,
        "users": args.users,
        "offered_rate": args.rate,
        "messages": total,
        "replies": len(latencies),
        "replies_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(statistics.median(latencies), 1),
        "p99_ms": round(latencies[int(0.99 * (len(latencies) - 1))], 1),
        "max_ms": round(latencies[-1], 1),
        "bot_cpu_ms_per_message": round(cpu * 1000 / max(1, len(latencies)), 2),
        **stages,
    }
    print(json.dumps(result))


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system, every thread) the bot process has used so far (Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _stages(path: Path, sent: dict[int, list[float]]) -> dict[str, float]:
    """Where the time goes, from the database's own timestamps (median ms): update queued at the fake
    server -> stored in the inbox -> its turn begins -> the reply is recorded as sent."""
    import sqlite3
    from datetime import datetime

    def epoch(value: str) -> float:
        return (
            datetime.fromisoformat(value).timestamp()
            if "+" in value or value.endswith("Z")
            else (datetime.fromisoformat(value + "+00:00").timestamp())
        )

    try:
        db = sqlite3.connect(str(path))
        inbox = db.execute(
            "SELECT chat_id, received_at, done_at FROM inbox WHERE done_at IS NOT NULL ORDER BY id"
        ).fetchall()
        outbox = db.execute(
            "SELECT chat_id, created_at, sent_at FROM outbox WHERE sent_at IS NOT NULL AND kind = 'reply' ORDER BY id"
        ).fetchall()
        db.close()
    except sqlite3.Error:
        return {}
    queued: dict[int, list[float]] = {user: list(times) for user, times in sent.items()}
    receive, wait, turn_to_sent = [], [], []
    for chat, received, done in inbox:
        if queued.get(chat):
            receive.append((epoch(received) - queued[chat].pop(0)) * 1000)
        wait.append((epoch(done) - epoch(received)) * 1000)
    for _chat, created, sent_at in outbox:
        turn_to_sent.append((epoch(sent_at) - epoch(created)) * 1000)
    return {
        "stage_receive_ms": round(statistics.median(receive), 1) if receive else 0.0,
        "stage_inbox_wait_ms": round(statistics.median(wait), 1) if wait else 0.0,
        "stage_turn_to_sent_ms": round(statistics.median(turn_to_sent), 1) if turn_to_sent else 0.0,
    }


if __name__ == "__main__":
    main()
