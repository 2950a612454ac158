"""The Telegram edge: the service (inbox, worker, sender wiring), update translation, the webhook."""

import os

# python-telegram-bot 22 gives a 429's retry_after as a timedelta when asked; the sender handles both.
os.environ.setdefault("PTB_TIMEDELTA", "1")
