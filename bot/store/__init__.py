"""Persistence: SQLAlchemy on SQLite or PostgreSQL, the source of truth for everything that survives a restart."""

from bot.store.repository import Handoff, KeptQuestion, Patient, Stats, Store, open_store

__all__ = ["Handoff", "KeptQuestion", "Patient", "Stats", "Store", "open_store"]
