"""The activity feed: one row per change an operator's page shows live (a
message stored, a status moving on, an owner change, a note, a contact edited),
written in the transaction of the change itself, so the feed misses nothing a
commit made and shows nothing a rollback undid.

Readers follow it by id. On PostgreSQL ids are handed out before commit, so a
reader may see id 11 before id 10 commits: ``after`` returns rows in id order
and the reader (the inbox's socket) holds its cursor below a gap for a while
before it gives up on the gap (a rolled-back id never fills).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection

from wahub.core.storage.engine import Database

#: What an activity row is about; ``ref_id`` names a message (message, status),
#: a conversation event (owner), a note (note) or nothing (contact).
ACTIVITY_KINDS = ("message", "status", "owner", "note", "contact")


@dataclass(frozen=True)
class Activity:
    id: int
    conversation_id: int
    kind: str
    ref_id: int | None
    created_at: float


async def record_activity(
    conn: AsyncConnection, entries: Sequence[tuple[int | None, str, int | None]], *, now: float
) -> None:
    """Append ``(conversation_id, kind, ref_id)`` entries in ``conn``'s transaction;
    entries without a conversation are left out."""
    raise NotImplementedError


class ActivityStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def after(self, cursor: int, *, limit: int = 500) -> list[Activity]:
        """Rows with an id above ``cursor``, in id order, at most ``limit``."""
        raise NotImplementedError

    async def last_id(self) -> int:
        """The highest id committed so far (0 for an empty feed)."""
        raise NotImplementedError

    async def first_id(self) -> int | None:
        """The lowest id still kept, None for an empty feed: a reader whose cursor
        is below it has missed rows and must reload."""
        raise NotImplementedError

    async def prune(self, before: float) -> int:
        """Delete rows older than ``before``; how many."""
        raise NotImplementedError
