"""Logging for the running bot: useful to operators, silent about patients and the token."""

from __future__ import annotations

import logging


class RedactingFormatter(logging.Formatter):
    """Formats as usual, then removes secrets from the whole text, tracebacks included.

    python-telegram-bot puts the token in some error messages ("The token `…` was rejected"),
    and Bot API URLs contain it; nothing that reaches the log may show it.
    """

    def __init__(self, fmt: str, secrets: list[str]) -> None:
        super().__init__(fmt)
        self.secrets = [s for s in secrets if s]

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "<redacted>")
        return text

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(super().format(record))


def setup_logging(secrets: list[str], level: int = logging.INFO) -> RedactingFormatter:
    formatter = RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", secrets)
    handler = logging.StreamHandler()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every request URL at INFO, and Bot API URLs contain the token.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    # python-telegram-bot logs the data it received (patients' words) at DEBUG, and the scheduler every tick.
    for noisy in ("telegram", "apscheduler", "tornado.access", "sqlalchemy"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return formatter
