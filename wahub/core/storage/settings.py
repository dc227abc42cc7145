"""Values every replica shares (the ``settings`` table): written once, by
whichever replica comes first, and read the same by all."""

from __future__ import annotations

import sqlalchemy as sa

from wahub.core.storage.engine import Database, insert_ignore
from wahub.core.storage.schema import settings


class SettingsStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, key: str) -> str | None:
        async with self.db.connect() as conn:
            found = (await conn.execute(sa.select(settings.c.value).where(settings.c.key == key))).scalar()
        return None if found is None else str(found)

    async def setdefault(self, key: str, value: str) -> str:
        """The value stored under ``key``: ``value`` unless one was stored first."""
        async with self.db.begin() as conn:
            await conn.execute(insert_ignore(conn, settings, ["key"]), {"key": key, "value": value})
            stored = (await conn.execute(sa.select(settings.c.value).where(settings.c.key == key))).scalar()
        return str(stored)
