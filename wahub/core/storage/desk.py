"""What the operator inbox reads and writes besides ownership: the listing of
conversations with previews and unread counts, search, internal notes, how far
each operator has read, how many conversations each holds, and the alerts
about queued conversations nobody took.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from wahub.core.models import Owner
from wahub.core.storage.activity import record_activity
from wahub.core.storage.conversations import _COLUMNS, _conversation
from wahub.core.storage.engine import Database, insert_ignore
from wahub.core.storage.schema import (
    contact_identities,
    contacts,
    conversation_events,
    conversation_notes,
    conversation_reads,
    conversations,
    messages,
    queue_alerts,
)

#: The listing's sections, in the order the page shows them.
SECTIONS = ("queued", "mine", "open", "resolved")

#: The latest message's columns in a listing row's ``last``.
_LAST_COLUMNS = ("id", "direction", "type", "body", "status", "error_code", "origin", "idempotency_key", "created_at")

_last_message = messages.alias("last_message")
_handoff = conversation_events.alias("handoff")


@dataclass(frozen=True)
class Note:
    """An internal note: seen by operators, never sent."""

    id: int
    conversation_id: int
    author: str
    text: str
    created_at: float


class DeskStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def listing(
        self,
        *,
        operator_id: int,
        operator: str,
        section: str | None = None,
        search: str | None = None,
        only: Sequence[int] = (),
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Conversations as the inbox lists them, each with ``section`` set:

        - ``queued`` (owner queued): oldest hand-off first;
        - ``mine`` (assigned to ``operator``), ``open`` (assigned to another
          operator, or the business app's): latest activity first;
        - ``resolved`` (the bot's): latest update first (``updated_at``); their
          ``unread`` is 0.

        ``section`` keeps one of them; ``search`` keeps those whose contact's
        name or address, or one of whose text messages, holds it (case-folded);
        ``only`` keeps those ids (for a live update). Row keys: the keys of
        ``ConversationStore.list``'s rows, plus ``section``, ``tags``,
        ``queued_at`` (when it was handed off, for queued ones), ``unread`` (its
        inbound messages after the last this operator read), and ``last`` (the
        latest message row: id, direction, type, body, status, error_code,
        created_at; None without messages). At most ``limit`` per section.
        Also ``active_at``: the later of its last update and its latest message.
        """
        sections = [section] if section is not None else list(SECTIONS)
        unknown = [name for name in sections if name not in SECTIONS]
        if unknown:
            raise ValueError(f"unknown inbox section {unknown[0]!r}: use one of {', '.join(SECTIONS)}")
        query, active_at = self._listing_query(operator_id, search)
        async with self.db.connect() as conn:
            if only:
                # A live update: the few conversations named, in one query, sorted here.
                query = query.where(conversations.c.id.in_(list(only)), _in_sections(sections, operator))
                found = [_listed(row, operator) for row in await conn.execute(query)]
                return sorted(found, key=_listing_order)
            listed: list[dict[str, Any]] = []
            for name in sections:
                ordered = query.where(_in_sections([name], operator)).order_by(*_section_order(name, active_at))
                listed.extend(_listed(row, operator) for row in await conn.execute(ordered.limit(limit)))
        return listed

    def _listing_query(self, operator_id: int, search: str | None) -> tuple[sa.Select[Any], sa.ColumnElement[Any]]:
        """The listing's rows with their latest message, hand-off and unread count,
        and the expression of their latest activity."""
        latest_message = (
            sa.select(messages.c.id)
            .where(messages.c.conversation_id == conversations.c.id)
            .order_by(messages.c.id.desc())
            .limit(1)
            .correlate(conversations)
            .scalar_subquery()
        )
        latest_handoff = (
            sa.select(conversation_events.c.id)
            .where(
                conversation_events.c.conversation_id == conversations.c.id,
                conversation_events.c.to_owner == Owner.QUEUED.value,
            )
            .order_by(conversation_events.c.id.desc())
            .limit(1)
            .correlate(conversations)
            .scalar_subquery()
        )
        unread = (
            sa.select(sa.func.count())
            .select_from(messages)
            .where(
                messages.c.conversation_id == conversations.c.id,
                messages.c.direction == "in",
                messages.c.id > sa.func.coalesce(conversation_reads.c.message_id, 0),
            )
            .correlate(conversations, conversation_reads)
            .scalar_subquery()
        )
        updated = conversations.c.updated_at
        latest_at = sa.func.coalesce(_last_message.c.created_at, updated)
        on_sqlite = self.db.engine.dialect.name == "sqlite"
        active_at = sa.func.max(updated, latest_at) if on_sqlite else sa.func.greatest(updated, latest_at)
        query = sa.select(
            *_COLUMNS,
            conversations.c.updated_at,
            conversations.c.last_inbound_at,
            conversations.c.last_human_at,
            contacts.c.tags,
            _handoff.c.occurred_at.label("queued_at"),
            # The bot's conversations are nobody's to read: their history is not counted.
            sa.case((conversations.c.owner == Owner.BOT.value, 0), else_=unread).label("unread"),
            active_at.label("active_at"),
            *(_last_message.c[name].label(f"last_{name}") for name in _LAST_COLUMNS),
        ).select_from(
            conversations.join(contacts, contacts.c.id == conversations.c.contact_id)
            .outerjoin(_last_message, _last_message.c.id == latest_message)
            .outerjoin(
                _handoff,
                sa.and_(conversations.c.owner == Owner.QUEUED.value, _handoff.c.id == latest_handoff),
            )
            .outerjoin(
                conversation_reads,
                sa.and_(
                    conversation_reads.c.operator_id == operator_id,
                    conversation_reads.c.conversation_id == conversations.c.id,
                ),
            )
        )
        if search:
            query = query.where(_matching(search))
        return query, active_at

    async def mark_read(self, operator_id: int, conversation_id: int, message_id: int) -> None:
        """The operator has seen the conversation up to ``message_id`` (never moves back)."""
        async with self.db.begin() as conn:
            insert = (sqlite.insert if conn.dialect.name == "sqlite" else postgresql.insert)(conversation_reads)
            statement = insert.values(
                operator_id=operator_id, conversation_id=conversation_id, message_id=message_id
            ).on_conflict_do_update(
                index_elements=["operator_id", "conversation_id"],
                set_={"message_id": insert.excluded.message_id},
                where=conversation_reads.c.message_id < insert.excluded.message_id,
            )
            await conn.execute(statement)

    async def add_note(self, conversation_id: int, author: str, text: str, *, now: float) -> Note:
        """Store a note and its activity row, in one transaction."""
        values = {"conversation_id": conversation_id, "author": author, "text": text, "created_at": now}
        async with self.db.begin() as conn:
            statement = conversation_notes.insert().returning(conversation_notes.c.id)
            note_id = int((await conn.execute(statement, values)).scalar_one())
            await record_activity(conn, [(conversation_id, "note", note_id)], now=now)
        return Note(note_id, conversation_id, author, text, now)

    async def notes(self, conversation_id: int, *, since: float | None = None) -> list[Note]:
        """The conversation's notes, oldest first (from ``since`` on, if given)."""
        query = sa.select(conversation_notes).where(conversation_notes.c.conversation_id == conversation_id)
        if since is not None:
            query = query.where(conversation_notes.c.created_at >= since)
        async with self.db.connect() as conn:
            return [_note(row) for row in await conn.execute(query.order_by(conversation_notes.c.id))]

    async def notes_by_id(self, note_ids: Sequence[int]) -> list[Note]:
        """The notes with these ids, in id order (unknown ids are left out)."""
        if not note_ids:
            return []
        query = sa.select(conversation_notes).where(conversation_notes.c.id.in_(list(note_ids)))
        async with self.db.connect() as conn:
            return [_note(row) for row in await conn.execute(query.order_by(conversation_notes.c.id))]

    async def messages_by_id(self, message_ids: Sequence[int]) -> list[dict[str, Any]]:
        """Message rows (every column), in id order."""
        if not message_ids:
            return []
        query = sa.select(messages).where(messages.c.id.in_(list(message_ids))).order_by(messages.c.id)
        async with self.db.connect() as conn:
            return [dict(row._mapping) for row in await conn.execute(query)]

    async def open_counts(self, operators: Sequence[str]) -> dict[str, int]:
        """How many conversations each operator holds now (assigned to them)."""
        if not operators:
            return {}
        query = (
            sa.select(conversations.c.assignee, sa.func.count())
            .where(conversations.c.owner == Owner.ASSIGNED.value, conversations.c.assignee.in_(list(operators)))
            .group_by(conversations.c.assignee)
        )
        async with self.db.connect() as conn:
            held = {name: int(count) for name, count in await conn.execute(query)}
        return {name: held.get(name, 0) for name in operators}

    async def waiting_since(self, before: float, *, limit: int = 100) -> list[tuple[int, int, float]]:
        """Queued conversations handed off before ``before`` about which no alert
        went out yet: ``(conversation_id, event_id, queued_at)``, oldest first.
        A conversation released back to the queue waits from its release."""
        latest_handoff = (
            sa.select(sa.func.max(conversation_events.c.id))
            .where(
                conversation_events.c.conversation_id == conversations.c.id,
                conversation_events.c.to_owner == Owner.QUEUED.value,
            )
            .correlate(conversations)
            .scalar_subquery()
        )
        alerted = sa.exists().where(queue_alerts.c.event_id == conversation_events.c.id)
        query = (
            sa.select(conversations.c.id, conversation_events.c.id, conversation_events.c.occurred_at)
            .select_from(conversations.join(conversation_events, conversation_events.c.id == latest_handoff))
            .where(
                conversations.c.owner == Owner.QUEUED.value,
                conversation_events.c.occurred_at < before,
                ~alerted,
            )
            .order_by(conversation_events.c.occurred_at, conversation_events.c.id)
            .limit(limit)
        )
        async with self.db.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [(int(conversation_id), int(event_id), float(at)) for conversation_id, event_id, at in rows]

    async def mark_alerted(self, event_id: int, *, now: float) -> bool:
        """Record the alert about a hand-off; False when one was already recorded."""
        async with self.db.begin() as conn:
            result = await conn.execute(
                insert_ignore(conn, queue_alerts, ["event_id"]), {"event_id": event_id, "sent_at": now}
            )
        return result.rowcount > 0


def _in_sections(sections: Sequence[str], operator: str) -> sa.ColumnElement[bool]:
    owner, assignee = conversations.c.owner, conversations.c.assignee
    mine = sa.and_(owner == Owner.ASSIGNED.value, assignee == operator)
    others = sa.and_(owner == Owner.ASSIGNED.value, sa.or_(assignee.is_(None), assignee != operator))
    conditions = {
        "queued": owner == Owner.QUEUED.value,
        "mine": mine,
        "open": sa.or_(others, owner == Owner.PHONE.value),
        "resolved": owner == Owner.BOT.value,
    }
    return sa.or_(*(conditions[name] for name in sections))


def _section_of(owner: str, assignee: str | None, operator: str) -> str:
    if owner == Owner.QUEUED:
        return "queued"
    if owner == Owner.BOT:
        return "resolved"
    return "mine" if owner == Owner.ASSIGNED and assignee == operator else "open"


def _section_order(section: str, active_at: sa.ColumnElement[Any]) -> list[sa.ColumnElement[Any]]:
    if section == "queued":
        return [sa.func.coalesce(_handoff.c.occurred_at, conversations.c.owner_changed_at).asc(), conversations.c.id]
    if section == "resolved":
        # Every conversation the bot has: read in the order of an index, so that
        # only the first rows' latest message is looked up, however many there are.
        return [conversations.c.updated_at.desc(), conversations.c.id.desc()]
    return [active_at.desc(), conversations.c.id.desc()]


def _listing_order(item: dict[str, Any]) -> tuple[int, float, int]:
    """The order ``_section_order`` gives, for rows sorted here."""
    rank = SECTIONS.index(item["section"])
    if item["section"] == "queued":
        return rank, item["queued_at"] or item["owner_changed_at"], item["id"]
    if item["section"] == "resolved":
        return rank, -item["updated_at"], -item["id"]
    return rank, -item["active_at"], -item["id"]


def _matching(search: str) -> sa.ColumnElement[bool]:
    """Conversations whose contact's name, address or an id of it, or one of
    whose text messages, holds ``search`` (case-folded; % and _ match themselves)."""
    escaped = search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    pattern = f"%{escaped}%"
    text = messages.c.body["text"]["body"].as_string()
    in_text = (
        sa.exists()
        .where(
            messages.c.conversation_id == conversations.c.id,
            messages.c.type == "text",
            sa.func.lower(text).like(pattern, escape="\\"),
        )
        .correlate(conversations)
    )
    by_identity = sa.select(contact_identities.c.contact_id).where(
        sa.func.lower(contact_identities.c.value).like(pattern, escape="\\")
    )
    return sa.or_(
        sa.func.lower(contacts.c.name).like(pattern, escape="\\"),
        sa.func.lower(contacts.c.address).like(pattern, escape="\\"),
        contacts.c.id.in_(by_identity),
        in_text,
    )


def _listed(row: Any, operator: str) -> dict[str, Any]:
    last = None
    if row.last_id is not None:
        last = {name: row._mapping[f"last_{name}"] for name in _LAST_COLUMNS}
        last["id"] = int(last["id"])
    return {
        **_conversation(row).__dict__,
        "updated_at": row.updated_at,
        "last_inbound_at": row.last_inbound_at,
        "last_human_at": row.last_human_at,
        "section": _section_of(row.owner, row.assignee, operator),
        "tags": list(row.tags or []),
        "queued_at": row.queued_at if row.owner == Owner.QUEUED else None,
        "unread": int(row.unread or 0),
        "active_at": float(row.active_at),
        "last": last,
    }


def _note(row: Any) -> Note:
    return Note(int(row.id), int(row.conversation_id), row.author, row.text, float(row.created_at))
