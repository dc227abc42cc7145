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
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from wahub.core.storage.engine import Database
from wahub.core.storage.plans import Plan, run_plan
from wahub.core.storage.schema import activity, conversations, messages

_INSERTED = ["conversation_id", "kind", "ref_id", "created_at"]

#: ``record_message_activity``'s statement, built once (parameters ``:kind``, ``:ids``, ``:now``).
_MESSAGE_ACTIVITY = activity.insert().from_select(
    _INSERTED,
    sa.select(
        messages.c.conversation_id,
        sa.bindparam("kind", type_=sa.String),
        messages.c.id,
        sa.bindparam("now", type_=sa.Float),
    )
    .where(messages.c.id.in_(sa.bindparam("ids", expanding=True)), messages.c.conversation_id.is_not(None))
    .order_by(messages.c.id),
)

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
    rows = [
        {"conversation_id": conversation_id, "kind": kind, "ref_id": ref_id, "created_at": now}
        for conversation_id, kind, ref_id in entries
        if conversation_id is not None
    ]
    if rows:
        await conn.execute(activity.insert(), rows)


async def record_message_activity(conn: AsyncConnection, kind: str, message_ids: Sequence[int], *, now: float) -> None:
    """Append a ``kind`` row about each of the messages ``message_ids`` that belongs
    to a conversation, reading the conversation ids in the same statement."""
    await run_plan(conn, message_activity(kind, message_ids, now=now))


def message_activity(kind: str, message_ids: Sequence[int], *, now: float) -> Plan[None]:
    """``record_message_activity`` as a plan (see ``wahub.core.storage.plans``)."""
    if message_ids:
        yield _MESSAGE_ACTIVITY, {"kind": kind, "ids": list(message_ids), "now": now}


async def record_contact_activity(conn: AsyncConnection, contact_id: int, *, now: float) -> None:
    """Append a ``contact`` row for each conversation of the contact, in one statement."""
    source = (
        sa.select(conversations.c.id, sa.literal("contact"), sa.cast(sa.null(), sa.BigInteger), sa.literal(now))
        .where(conversations.c.contact_id == contact_id)
        .order_by(conversations.c.id)
    )
    await conn.execute(activity.insert().from_select(_INSERTED, source))


class ActivityStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def after(self, cursor: int, *, limit: int = 500) -> list[Activity]:
        """Rows with an id above ``cursor``, in id order, at most ``limit``."""
        query = sa.select(activity).where(activity.c.id > cursor).order_by(activity.c.id).limit(limit)
        async with self.db.connect() as conn:
            return [_activity(row) for row in await conn.execute(query)]

    async def last_id(self) -> int:
        """The highest id committed so far (0 for an empty feed)."""
        async with self.db.connect() as conn:
            return int((await conn.execute(sa.select(sa.func.coalesce(sa.func.max(activity.c.id), 0)))).scalar_one())

    async def first_id(self) -> int | None:
        """The lowest id still kept, None for an empty feed: a reader whose cursor
        is below it has missed rows and must reload."""
        async with self.db.connect() as conn:
            first = (await conn.execute(sa.select(sa.func.min(activity.c.id)))).scalar_one()
        return None if first is None else int(first)

    async def prune(self, before: float) -> int:
        """Delete rows older than ``before``; how many."""
        async with self.db.begin() as conn:
            result = await conn.execute(activity.delete().where(activity.c.created_at < before))
        return result.rowcount


def _activity(row: Any) -> Activity:
    ref_id = None if row.ref_id is None else int(row.ref_id)
    return Activity(int(row.id), int(row.conversation_id), row.kind, ref_id, float(row.created_at))
