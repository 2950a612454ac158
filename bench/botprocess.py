"""The real `aftercare run` process against the fake Bot API, started the same way by every benchmark."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.fake_telegram import FakeTelegram

STAFF_CHAT = -100999


def start_bot(fake: FakeTelegram, folder: Path, config: str | None = None) -> subprocess.Popen[bytes]:
    """`aftercare run` in `folder`, on SQLite at `folder/bench.db`; `config` is the text of its config file
    (None: the defaults built into the package). Its output is discarded: the benchmarks read the fake server."""
    env = {
        **os.environ,
        "TELEGRAM_BOT_TOKEN": fake.token,
        "AFTERCARE_TELEGRAM_API_URL": fake.base_url,
        "AFTERCARE_DATABASE_URL": f"sqlite:///{folder / 'bench.db'}",
        "AFTERCARE_STAFF_CHAT_ID": str(STAFF_CHAT),
    }
    command = [sys.executable, "-m", "bot"]
    if config is not None:
        (folder / "config.yaml").write_text(config, encoding="utf-8")
        command += ["--config", str(folder / "config.yaml")]
    return subprocess.Popen(
        [*command, "run"], cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
