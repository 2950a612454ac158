"""Knowledge-engine benchmark: start-up, index build, per-message latency of triage + matching, peak memory.

Run: .venv/bin/python bench/bench_engine.py [--rounds N] [FILE.jsonl ...]
(default files: ../shared/eval/dev.*.jsonl next to the repository, else the tests' triage sets).
Prints figures; it asserts nothing (targets: p99 <= 20 ms per message, start-up <= 2 s with warm caches).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("files", nargs="*", type=Path)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    files = args.files or sorted((REPO.parent / "shared" / "eval").glob("dev.*.jsonl"))
    files = files or sorted((REPO / "tests" / "data").glob("*.jsonl"))

    t0 = time.perf_counter()
    from bot.runtime import load_assistant

    t_import = time.perf_counter() - t0
    t1 = time.perf_counter()
    _, assistant = load_assistant(None)  # exactly what `aftercare shell|ask|run` do at start-up
    t_start = time.perf_counter() - t1
    content = assistant.content

    # The parts, one after the other and without the start-up caches, for information (what a first start
    # after a content change costs; start-up overlaps the encoder with the rest).
    from bot.config import load_config
    from bot.core.content import load_content
    from bot.core.conversation import Assistant
    from bot.runtime import load_encoder

    config = load_config(None, environ={})
    facts = {lang: config.facts(lang) for lang in config.languages}
    t2 = time.perf_counter()
    load_content(config.content_dir, config.languages, facts)
    t_load = time.perf_counter() - t2
    t3 = time.perf_counter()
    Assistant(content, facts, config.default_language)
    t_index = time.perf_counter() - t3
    t4 = time.perf_counter()
    load_encoder()
    t_encoder = time.perf_counter() - t4

    rows = [json.loads(line) for f in files for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]
    for row in rows[:20]:  # warm-up
        assistant.answer(row["text"], row.get("lang", "en"))
    latencies: list[float] = []
    for _ in range(args.rounds):
        for row in rows:
            start = time.perf_counter_ns()
            assistant.answer(row["text"], row.get("lang", "en"))
            latencies.append((time.perf_counter_ns() - start) / 1e6)
    latencies.sort()
    long_message = "my face is a bit red and " * 400  # 10,000 characters
    start = time.perf_counter_ns()
    assistant.answer(long_message, "en")
    t_long = (time.perf_counter_ns() - start) / 1e6

    documents = sum(len(e.questions) + len(e.keywords) + 1 for p in content.packs.values() for e in p.faq.entries)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"messages: {len(rows)} x {args.rounds} rounds from {len(files)} file(s); {documents} indexed documents")
    print(f"start-up (load_assistant: config, content, index, encoder, cached vectors): {t_start * 1000:.0f} ms")
    print(
        f"  parts without the caches: import {t_import * 1000:.0f} ms, content load+validate {t_load * 1000:.0f} ms, "
        f"index + triage build {t_index * 1000:.0f} ms, sentence encoder load {t_encoder * 1000:.0f} ms"
    )
    print(
        f"per message (triage + matching + reply): p50 {statistics.median(latencies):.2f} ms, "
        f"p99 {latencies[int(0.99 * (len(latencies) - 1))]:.2f} ms, max {latencies[-1]:.2f} ms"
    )
    print(f"10,000-character message: {t_long:.2f} ms")
    print(f"peak memory (max RSS): {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
