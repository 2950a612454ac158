"""The Telegram edge: python-telegram-bot application, handlers and keyboards."""
