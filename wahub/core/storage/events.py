"""Integration events, written in the transaction of the change that causes
them: one ``deliveries`` row per ``crm:`` entry whose ``events:`` filter
takes the event, so a commit delivers what it changed and a rollback
delivers nothing.

The entries and their filters (``Subscription``) are set once on the
``Database`` at start-up; each transaction it begins carries them in its
connection's ``info`` (``SUBSCRIPTIONS``), which is how the change points,
plain functions of a connection, find them. Without entries nothing is
read or written here.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from wahub.core.models import EVENT_TYPES, message_text
from wahub.core.storage.engine import RECORDED, SUBSCRIPTIONS
from wahub.core.storage.schema import contact_identities, contacts, conversations, deliveries, messages

#: The first key of the advisory locks that order one contact's events (PostgreSQL).
_CONTACT_EVENTS_LOCK = 0x77657674


@dataclass(frozen=True)
class Subscription:
    """A ``crm:`` entry (``endpoint``) and the event types it takes:
    ``patterns`` of shell-style globs (``message.*``), every type when empty."""

    endpoint: str
    patterns: tuple[str, ...] = ()

    def takes(self, event_type: str) -> bool:
        return not self.patterns or any(fnmatch.fnmatchcase(event_type, pattern) for pattern in self.patterns)


@dataclass(frozen=True)
class Change:
    """An event to record: its type, the contact it is about, and its data."""

    type: str
    contact_id: int | None
    data: dict[str, Any]


def subscribed(conn: AsyncConnection, event_type: str | None = None) -> bool:
    """Whether any entry takes ``event_type`` (any type when None): callers
    skip building data nobody takes."""
    subscriptions: Sequence[Subscription] = conn.info.get(SUBSCRIPTIONS, ())
    return any(event_type is None or sub.takes(event_type) for sub in subscriptions)


def new_event_id() -> str:
    """``evt_``, the UTC time to the second (12 digits) and 12 random hex digits:
    unique across replicas, and in creation order to the second."""
    return f"evt_{dt.datetime.now(dt.UTC).strftime('%y%m%d%H%M%S')}{secrets.token_hex(6)}"


def iso(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def record_changes(conn: AsyncConnection, changes: Sequence[Change], *, now: float) -> None:
    """Write a delivery of each change to every entry that takes its type, in ``conn``'s transaction."""
    subscriptions: Sequence[Subscription] = conn.info.get(SUBSCRIPTIONS, ())
    rows: list[dict[str, Any]] = []
    for change in changes:
        event_id, timestamp = new_event_id(), iso(now)
        payload = {"type": change.type, "timestamp": timestamp, "data": change.data}
        rows.extend(
            {
                "endpoint": sub.endpoint,
                "event_id": event_id,
                "type": change.type,
                "contact_id": change.contact_id,
                "payload": payload,
                "state": "pending",
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            }
            for sub in subscriptions
            if sub.takes(change.type)
        )
    if rows:
        if conn.dialect.name != "sqlite":
            # Ids are handed out at insert, not at commit: two transactions recording
            # events of one contact take turns, so its deliveries commit in id order
            # (SQLite has one writer). Sorted, so two such locks never wait in a cycle.
            contacts_of = sorted({row["contact_id"] for row in rows if row["contact_id"] is not None})
            if contacts_of:
                await conn.execute(
                    sa.text(
                        "SELECT pg_advisory_xact_lock(CAST(:space AS bigint) * 4294967296 + k % 4294967296)"
                        " FROM unnest(CAST(:ids AS bigint[])) AS k"
                    ),
                    {"space": _CONTACT_EVENTS_LOCK, "ids": contacts_of},
                )
        await conn.execute(deliveries.insert(), rows)
        conn.info[RECORDED] = True


# -- what the events say --------------------------------------------------------


async def contact_data(conn: AsyncConnection, contact_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """``{id, provider, address, phone, name, language, tags}`` of each contact;
    ``phone`` is in E.164 (``+`` and digits), None for a contact known only by BSUID."""
    wanted = sorted(set(contact_ids))
    if not wanted:
        return {}
    rows = await conn.execute(sa.select(contacts).where(contacts.c.id.in_(wanted)))
    phones: dict[int, str] = {}
    ids = await conn.execute(
        sa.select(contact_identities.c.contact_id, contact_identities.c.value)
        .where(contact_identities.c.contact_id.in_(wanted), contact_identities.c.kind.in_(("wa_id", "phone")))
        .order_by(contact_identities.c.id)
    )
    for contact_id, value in ids:
        if value.isdigit():
            phones[int(contact_id)] = "+" + value
    found = {}
    for row in rows:
        phone = phones.get(int(row.id)) or ("+" + row.address if row.address.isdigit() else None)
        found[int(row.id)] = {
            "id": int(row.id),
            "provider": row.provider,
            "address": row.address,
            "phone": phone,
            "name": row.name,
            "language": row.language,
            "tags": list(row.tags or []),
        }
    return found


def message_data(row: Any) -> dict[str, Any]:
    body = dict(row.body or {})
    return {
        "id": int(row.id),
        "provider": row.provider,
        "provider_message_id": row.provider_message_id,
        "direction": row.direction,
        "type": row.type,
        "text": message_text(row.type, body),
        "body": {key: value for key, value in body.items() if key not in ("to", "keep_address")},
        "status": row.status,
        "origin": row.origin,
        "conversation_id": None if row.conversation_id is None else int(row.conversation_id),
        "error": {"code": row.error_code, "reason": row.error_reason} if row.error_code else None,
        "created_at": iso(float(row.created_at)),
    }


async def record_message_events(
    conn: AsyncConnection, event_type: str, message_ids: Sequence[int], *, now: float
) -> None:
    """One ``event_type`` event per message, with the message and its contact as they now are."""
    if not message_ids or not subscribed(conn, event_type):
        return
    rows = (
        await conn.execute(sa.select(messages).where(messages.c.id.in_(list(message_ids))).order_by(messages.c.id))
    ).all()
    people = await contact_data(conn, [int(row.contact_id) for row in rows if row.contact_id is not None])
    changes = []
    for row in rows:
        contact_id = None if row.contact_id is None else int(row.contact_id)
        changes.append(
            Change(event_type, contact_id, {"message": message_data(row), "contact": people.get(contact_id or 0)})
        )
    await record_changes(conn, changes, now=now)


async def record_contact_events(
    conn: AsyncConnection, event_type: str, contact_ids: Iterable[int], *, now: float, **extra: Any
) -> None:
    """A ``contact.*`` event per contact, with the contact as it now is and ``extra`` beside it."""
    if not subscribed(conn, event_type):
        return
    people = await contact_data(conn, contact_ids)
    changes = [Change(event_type, contact_id, {"contact": person, **extra}) for contact_id, person in people.items()]
    await record_changes(conn, changes, now=now)


async def record_owner_event(
    conn: AsyncConnection, conversation_id: int, change: Any, event_id: int, *, now: float
) -> None:
    """A ``conversation.<change>`` event for the ownership change just stored as ``event_id``."""
    event_type = f"conversation.{change.change}"
    if event_type not in EVENT_TYPES or not subscribed(conn, event_type):
        return
    row = (await conn.execute(sa.select(conversations).where(conversations.c.id == conversation_id))).one()
    people = await contact_data(conn, [int(row.contact_id)])
    data = {
        "conversation": {
            "id": conversation_id,
            "provider": row.provider,
            "owner": str(change.to_owner),
            "assignee": change.assignee,
        },
        "change": {
            "id": event_id,
            "change": change.change,
            "from": str(change.from_owner),
            "to": str(change.to_owner),
            "actor": change.actor,
            "reason": change.reason,
            "at": iso(change.at),
        },
        "contact": people.get(int(row.contact_id)),
    }
    await record_changes(conn, [Change(event_type, int(row.contact_id), data)], now=now)
