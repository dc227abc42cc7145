"""Conversations: their owner, the history of its changes, and what a turn reads.

The owner changes only here, in a transaction that locks the conversation's
row (``FOR UPDATE`` on PostgreSQL; SQLite has one writer), checks the change
is allowed from the current owner (``OWNER_CHANGES``), bumps
``owner_version`` and records the change with who, why and when. A bot turn
remembers the version it started under and queues its replies only if it is
still the same (``Storage.finish_with_replies``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from wahub.core.models import OWNER_CHANGES, Conversation, OutgoingMessage, Owner, OwnershipChange
from wahub.core.storage.activity import record_activity
from wahub.core.storage.contacts import LANGUAGE_SET
from wahub.core.storage.engine import Database, insert_ignore
from wahub.core.storage.events import record_owner_event
from wahub.core.storage.messages import Refusal
from wahub.core.storage.policy import ContactContext
from wahub.core.storage.schema import contacts, conversation_events, conversations, messages

_COLUMNS = (
    conversations.c.id,
    conversations.c.provider,
    conversations.c.contact_id,
    contacts.c.address,
    conversations.c.owner,
    conversations.c.assignee,
    conversations.c.owner_changed_at,
    conversations.c.created_at,
    contacts.c.language,
    contacts.c.language_source,
    contacts.c.name,
)


@dataclass(frozen=True)
class Owned:
    """A conversation's owner as a turn sees it, read under the row's lock."""

    owner: Owner
    version: int
    #: The last inbound message a turn or a person covered; None before the first turn.
    answered_through: int | None = None
    assignee: str | None = None
    #: When a person last wrote or the owner last changed (unix seconds), if ever.
    active_at: float | None = None


@dataclass(frozen=True)
class Transition:
    """A change of owner to make: ``change`` is a key of ``OWNER_CHANGES``;
    ``event_key`` records it once however often its cause runs; with
    ``quiet_before``, only if no person was active since then; with
    ``only_from``, only from those owners (an operator taking a conversation
    takes it from the queue or the bot, never from another operator); with
    ``held_by``, only while it is assigned to that operator (checked under the
    row's lock, so an operator acting on their own conversation never acts on
    one that was just given to someone else)."""

    change: str
    actor: str
    reason: str
    assignee: str | None = None
    event_key: str | None = None
    quiet_before: float | None = None
    only_from: frozenset[Owner] | None = None
    held_by: str | None = None


@dataclass(frozen=True)
class Page:
    """One page of a listing; ``next_after`` is the cursor of the next page, None at the end."""

    items: list[dict[str, Any]]
    next_after: int | None


def _conversation(row: Any) -> Conversation:
    return Conversation(
        id=int(row.id),
        provider=row.provider,
        contact_id=int(row.contact_id),
        address=row.address,
        owner=Owner(row.owner),
        assignee=row.assignee,
        owner_changed_at=float(row.owner_changed_at if row.owner_changed_at is not None else row.created_at),
        language=row.language,
        contact_name=row.name,
        language_set=row.language_source == LANGUAGE_SET,
    )


def _change(row: Any) -> OwnershipChange:
    return OwnershipChange(
        conversation_id=int(row.conversation_id),
        change=row.change,
        from_owner=Owner(row.from_owner),
        to_owner=Owner(row.to_owner),
        actor=row.actor,
        reason=row.reason,
        at=float(row.occurred_at),
        assignee=row.assignee,
        id=int(row.id),
    )


@functools.cache
def _owned_query(locked: bool) -> sa.Select[Any]:
    """The owner of the conversation ``:conversation`` (its row ``locked`` on PostgreSQL), built once."""
    columns = ("owner", "owner_version", "answered_through", "assignee", "last_human_at", "owner_changed_at")
    query = sa.select(*(conversations.c[name] for name in columns))
    query = query.where(conversations.c.id == sa.bindparam("conversation"))
    return query.with_for_update() if locked else query


def _owned(row: Any) -> Owned:
    active = max((time for time in (row.last_human_at, row.owner_changed_at) if time is not None), default=None)
    return Owned(Owner(row.owner), int(row.owner_version), row.answered_through, row.assignee, active)


async def lock_owner(conn: AsyncConnection, conversation_id: int) -> Owned:
    """The conversation's owner and version, its row locked until the transaction ends."""
    query = _owned_query(locked=conn.dialect.name != "sqlite")
    return _owned((await conn.execute(query, {"conversation": conversation_id})).one())


@dataclass(frozen=True)
class TurnStart:
    """What a bot turn starts from, read together: the owner, the conversation,
    and, while the bot owns it, the inbound messages the turn would answer:
    those after the last one a turn (or a person) covered, oldest first."""

    owned: Owned
    conversation: Conversation
    messages: list[dict[str, Any]]
    #: The contact as the send policy sees it (``PolicyStore.contact``).
    contact: ContactContext


@dataclass(frozen=True)
class TurnEnd:
    """How a bot turn ends: the owner version it started under, the last
    inbound message it answers, and its hand-off (actor, reason), if any."""

    version: int
    answered_through: int
    handoff: tuple[str, str] | None = None


@dataclass(frozen=True)
class Finished:
    """What finishing an inbox row did: replies newly queued, the owner change
    it made, and whether the bot's replies were dropped (the owner had changed)."""

    created: int
    change: tuple[Conversation, OwnershipChange] | None = None
    dropped: bool = False


async def owner_if_changed(conn: AsyncConnection, conversation_id: int, turn: TurnEnd) -> Owner | None:
    """The conversation's owner now if it changed since the turn began, None while
    the bot still owns it unchanged (the row stays locked)."""
    owned = await lock_owner(conn, conversation_id)
    return None if owned.owner == Owner.BOT and owned.version == turn.version else owned.owner


async def _turn_messages(conn: AsyncConnection, conversation_id: int, upto: int, limit: int) -> list[dict[str, Any]]:
    """The inbound messages a turn ending at message ``upto`` answers: those after
    the last one a turn (or a person) covered, oldest first, at most ``limit``."""
    params = {"conversation": conversation_id, "upto": upto, "limit": limit}
    rows = [dict(row._mapping) for row in await conn.execute(_TURN_MESSAGES, params)]
    return rows[::-1]


def dropped_reply(reply: OutgoingMessage | Refusal, owner: Owner) -> Refusal:
    """A bot reply not sent because the conversation went to ``owner`` meanwhile."""
    if isinstance(reply, Refusal):
        return reply
    reason = f"not sent: the owner changed, the conversation went to {owner} while the bot was answering"
    return Refusal(reply, "owner_changed", reason)


#: The conversation ``:conversation`` as ``get`` reads it (built once).
_CONVERSATION_BY_ID = (
    sa.select(*_COLUMNS)
    .join(contacts, contacts.c.id == conversations.c.contact_id)
    .where(conversations.c.id == sa.bindparam("conversation"))
)
#: ``_CONVERSATION_BY_ID`` with what ``Owned`` reads (built once).
_TURN_START = _CONVERSATION_BY_ID.add_columns(
    conversations.c.owner_version,
    conversations.c.answered_through,
    conversations.c.last_human_at,
    conversations.c.last_inbound_at,
    contacts.c.timezone,
)
#: The inbound messages of ``:conversation`` after the one answered last, up to
#: ``:upto``, newest first, at most ``:limit`` (built once).
_TURN_MESSAGES = (
    sa.select(messages)
    .where(
        messages.c.conversation_id == sa.bindparam("conversation"),
        messages.c.direction == "in",
        messages.c.id
        > sa.select(sa.func.coalesce(conversations.c.answered_through, 0))
        .where(conversations.c.id == sa.bindparam("conversation"))
        .scalar_subquery(),
        messages.c.id <= sa.bindparam("upto"),
    )
    .order_by(messages.c.id.desc())
    .limit(sa.bindparam("limit", type_=sa.Integer))
)


class ConversationStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def _select(self) -> sa.Select[Any]:
        return sa.select(*_COLUMNS).join(contacts, contacts.c.id == conversations.c.contact_id)

    async def get(self, conversation_id: int) -> Conversation | None:
        async with self.db.connect() as conn:
            row = (await conn.execute(_CONVERSATION_BY_ID, {"conversation": conversation_id})).first()
        return _conversation(row) if row is not None else None

    async def owned(self, conversation_id: int) -> Owned:
        """The owner and version a bot turn starts under."""
        async with self.db.connect() as conn:
            return _owned((await conn.execute(_owned_query(locked=False), {"conversation": conversation_id})).one())

    async def change_owner(
        self, conversation_id: int, transition: Transition, *, now: float, conn: AsyncConnection | None = None
    ) -> tuple[Conversation, OwnershipChange] | None:
        """Apply ``transition`` and record it, in ``conn``'s transaction or a new
        one; None when the current owner does not allow it (a hand-off of a
        conversation already queued), its ``event_key`` was recorded before (a
        re-run), or, with ``quiet_before``, a person was active since then."""
        if conn is None:
            async with self.db.begin() as own:
                return await self._change_owner(own, conversation_id, transition, now)
        return await self._change_owner(conn, conversation_id, transition, now)

    async def _change_owner(
        self, conn: AsyncConnection, conversation_id: int, transition: Transition, now: float
    ) -> tuple[Conversation, OwnershipChange] | None:
        allowed, to_owner = OWNER_CHANGES[transition.change]
        current = await lock_owner(conn, conversation_id)
        assignee = transition.assignee if to_owner == Owner.ASSIGNED else None
        if (
            current.owner not in allowed
            or (transition.only_from is not None and current.owner not in transition.only_from)
            or (
                transition.held_by is not None
                and (current.owner != Owner.ASSIGNED or current.assignee != transition.held_by)
            )
            or (current.owner == to_owner == Owner.ASSIGNED and current.assignee == assignee)
            or (transition.quiet_before is not None and (current.active_at or 0.0) >= transition.quiet_before)
        ):
            return None
        change = OwnershipChange(
            conversation_id,
            transition.change,
            current.owner,
            to_owner,
            transition.actor,
            transition.reason,
            now,
            assignee,
        )
        recorded = await conn.execute(
            insert_ignore(conn, conversation_events, ["event_key"]).returning(conversation_events.c.id),
            {
                "conversation_id": conversation_id,
                "change": change.change,
                "from_owner": change.from_owner,
                "to_owner": change.to_owner,
                "actor": change.actor,
                "reason": change.reason,
                "assignee": assignee,
                "event_key": transition.event_key,
                "occurred_at": now,
            },
        )
        event_id = recorded.scalar_one_or_none()
        if event_id is None:
            return None
        await record_activity(conn, [(conversation_id, "owner", event_id)], now=now)
        await record_owner_event(conn, conversation_id, change, int(event_id), now=now)
        human = {"last_human_at": now} if change.change in ("assigned", "phone") else {}
        await conn.execute(
            conversations.update()
            .where(conversations.c.id == conversation_id)
            .values(
                owner=to_owner,
                assignee=assignee,
                owner_version=conversations.c.owner_version + 1,
                owner_changed_at=now,
                updated_at=now,
                **human,
            )
        )
        row = (await conn.execute(self._select().where(conversations.c.id == conversation_id))).one()
        return _conversation(row), change

    async def events(self, conversation_id: int) -> list[OwnershipChange]:
        """Every change of the conversation's owner, oldest first."""
        query = (
            sa.select(conversation_events)
            .where(conversation_events.c.conversation_id == conversation_id)
            .order_by(conversation_events.c.id)
        )
        async with self.db.connect() as conn:
            return [_change(row) for row in await conn.execute(query)]

    async def events_by_id(self, event_ids: Sequence[int]) -> list[OwnershipChange]:
        """The stored changes of owner with these ids, in id order."""
        query = (
            sa.select(conversation_events)
            .where(conversation_events.c.id.in_(list(event_ids)))
            .order_by(conversation_events.c.id)
        )
        async with self.db.connect() as conn:
            return [_change(row) for row in await conn.execute(query)]

    async def note_human(self, conversation_id: int, now: float, conn: AsyncConnection | None = None) -> None:
        """A person wrote in the conversation (an operator, the API, the business app)."""
        statement = (
            conversations.update()
            .where(conversations.c.id == conversation_id)
            .values(last_human_at=now, updated_at=now)
        )
        if conn is not None:
            await conn.execute(statement)
            return
        async with self.db.begin() as own:
            await own.execute(statement)

    async def quiet_since(self, before: float, *, after: int = 0, limit: int = 100) -> list[int]:
        """Conversations a person owns or was asked for, in which no person has
        written (nor the owner changed) since ``before``: due back to the bot;
        by id, from after ``after``."""
        last = sa.func.coalesce(conversations.c.last_human_at, conversations.c.owner_changed_at, 0.0)
        changed = sa.func.coalesce(conversations.c.owner_changed_at, 0.0)
        query = (
            sa.select(conversations.c.id)
            .where(
                conversations.c.owner != Owner.BOT.value,
                conversations.c.id > after,
                sa.func.greatest(last, changed) < before
                if self.db.engine.dialect.name != "sqlite"
                else sa.func.max(last, changed) < before,
            )
            .order_by(conversations.c.id)
            .limit(limit)
        )
        async with self.db.connect() as conn:
            return [int(value) for value in (await conn.execute(query)).scalars()]

    async def turn_start(self, conversation_id: int, upto: int, *, limit: int = 20) -> TurnStart:
        """The owner and the conversation a turn ending at message ``upto`` starts
        from, and, while the bot owns it, the messages it answers: one connection."""
        async with self.db.connect() as conn:
            row = (await conn.execute(_TURN_START, {"conversation": conversation_id})).one()
            owned = _owned(row)
            messages = await _turn_messages(conn, conversation_id, upto, limit) if owned.owner == Owner.BOT else []
        contact = ContactContext(row.contact_id, row.id, row.last_inbound_at, row.timezone, row.language)
        return TurnStart(owned, _conversation(row), messages, contact)

    async def history(
        self, conversation_id: int, *, leave_out: Sequence[str], limit: int
    ) -> tuple[list[dict[str, Any]], list[OwnershipChange]]:
        """The latest ``limit`` messages (oldest first), but for those whose provider
        ids are in ``leave_out`` (the turn's own) and the refused and dropped ones,
        with the owner changes since the first of them."""
        query = (
            sa.select(messages)
            .where(
                messages.c.conversation_id == conversation_id,
                sa.or_(messages.c.direction == "in", messages.c.error_code.is_(None)),
                sa.or_(
                    messages.c.provider_message_id.is_(None), messages.c.provider_message_id.not_in(list(leave_out))
                ),
            )
            .order_by(messages.c.id.desc())
            .limit(limit)
        )
        async with self.db.connect() as conn:
            rows = [dict(row._mapping) for row in await conn.execute(query)][::-1]
            since = rows[0]["created_at"] if rows else 0.0
            changes = [
                _change(row)
                for row in await conn.execute(
                    sa.select(conversation_events)
                    .where(
                        conversation_events.c.conversation_id == conversation_id,
                        conversation_events.c.occurred_at >= since,
                    )
                    .order_by(conversation_events.c.id)
                )
            ]
        return rows, changes

    async def list(
        self,
        *,
        owners: Sequence[str] = (),
        contact_id: int | None = None,
        updated_since: float | None = None,
        only: int | None = None,
        after: int | None = None,
        limit: int = 50,
    ) -> Page:
        """Conversations, newest activity first is not stable under paging, so by id:
        filtered by owner, contact, last update, or one id (``only``); ``after`` is
        the previous page's cursor."""
        query = self._select().add_columns(
            conversations.c.updated_at, conversations.c.last_inbound_at, conversations.c.last_human_at
        )
        if owners:
            query = query.where(conversations.c.owner.in_(list(owners)))
        if contact_id is not None:
            query = query.where(conversations.c.contact_id == contact_id)
        if updated_since is not None:
            query = query.where(conversations.c.updated_at >= updated_since)
        if only is not None:
            query = query.where(conversations.c.id == only)
        if after is not None:
            query = query.where(conversations.c.id > after)
        query = query.order_by(conversations.c.id).limit(limit + 1)
        async with self.db.connect() as conn:
            rows = (await conn.execute(query)).all()
        items = [
            {
                **_conversation(row).__dict__,
                "updated_at": row.updated_at,
                "last_inbound_at": row.last_inbound_at,
                "last_human_at": row.last_human_at,
            }
            for row in rows[:limit]
        ]
        return Page(items, int(rows[limit - 1].id) if len(rows) > limit else None)

    async def messages(self, conversation_id: int, *, before: int | None = None, limit: int = 50) -> Page:
        """The conversation's messages, newest first (refused and dropped ones
        included, with their reason); ``before`` is the previous page's cursor."""
        query = sa.select(messages).where(messages.c.conversation_id == conversation_id)
        if before is not None:
            query = query.where(messages.c.id < before)
        query = query.order_by(messages.c.id.desc()).limit(limit + 1)
        async with self.db.connect() as conn:
            rows = [dict(row._mapping) for row in await conn.execute(query)]
        return Page(rows[:limit], int(rows[limit - 1]["id"]) if len(rows) > limit else None)
