"""Contacts, conversations, messages and delivery statuses. Claiming and
settling queued messages is the outbox's job (``storage_outbox``)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from wahub.core.models import STATUS_RANK, EchoMessage, InboundMessage, MessageStatus, OutgoingMessage, StatusEvent
from wahub.core.storage.activity import record_activity
from wahub.core.storage.engine import Database, insert_ignore
from wahub.core.storage.events import record_contact_events, record_message_events
from wahub.core.storage.schema import (
    consent_events,
    contact_identities,
    contacts,
    conversations,
    messages,
    status_events,
)


@dataclass(frozen=True)
class InboundRecord:
    contact_id: int
    conversation_id: int
    message_id: int


@dataclass(frozen=True)
class Refusal:
    """A message the send policy refused: kept ``failed`` with its reason code, never sent."""

    message: OutgoingMessage
    reason: str
    detail: str


@dataclass(frozen=True)
class StatusChange:
    message_id: int
    status: str


async def message_locks(conn: AsyncConnection, keys: Sequence[tuple[str, str]]) -> None:
    """Serialise ``mark_sent`` and ``apply_status`` of the messages ``(provider,
    provider_message_id)`` on PostgreSQL, where each could otherwise miss the
    other's uncommitted write (SQLite has one writer). Callers pass keys sorted,
    so two transactions never wait for each other in a cycle."""
    if conn.dialect.name != "sqlite":
        await conn.execute(
            sa.text("SELECT pg_advisory_xact_lock(hashtext(k)) FROM unnest(CAST(:keys AS text[])) AS k"),
            {"keys": [f"{provider}:{pmid}" for provider, pmid in keys]},
        )


def moves_forward(current: str, new: str) -> bool:
    """Statuses only advance (queued, sent, delivered, read); failed is final."""
    return current != MessageStatus.FAILED and STATUS_RANK.get(new, -1) > STATUS_RANK.get(current, -1)


def queued_values(
    provider: str,
    message: OutgoingMessage,
    *,
    idempotency_key: str,
    now: float,
    conversation_id: int | None = None,
    contact_id: int | None = None,
    not_before: float | None = None,
    origin: str = "business",
    lane: int = 0,
) -> dict[str, Any]:
    """The ``messages`` row of an outgoing message queued at ``now``, due then
    or at ``not_before`` if later: one shape for single sends and campaigns."""
    return {
        "provider": provider,
        "direction": "out",
        "contact_id": contact_id,
        "conversation_id": conversation_id,
        "address": message.to,
        "type": message.type,
        "body": message.to_record(),
        "status": MessageStatus.QUEUED,
        "idempotency_key": idempotency_key,
        "origin": origin,
        "lane": lane,
        "attempts": 0,
        "next_attempt_at": max(now, not_before or 0.0),
        "created_at": now,
        "updated_at": now,
    }


# The statements each inbound event runs, built once (building one costs more than running it).
_CONTACT_BY_ADDRESS = sa.select(contacts.c.id, contacts.c.name).where(
    contacts.c.provider == sa.bindparam("provider"), contacts.c.address == sa.bindparam("address")
)
_CONVERSATION_OF = sa.select(conversations.c.id, conversations.c.last_inbound_at).where(
    conversations.c.provider == sa.bindparam("provider"), conversations.c.contact_id == sa.bindparam("contact")
)
_INBOUND_AT = (
    conversations.update()
    .where(conversations.c.id == sa.bindparam("conversation"))
    .values(last_inbound_at=sa.bindparam("inbound_at"), updated_at=sa.bindparam("now"))
)

#: Messages ``:row_id`` move to the status ``:new_status`` (built once; see ``apply_statuses``).
_STATUS_FORWARD = (
    messages.update()
    .where(messages.c.id == sa.bindparam("row_id"))
    .values(status=sa.bindparam("new_status"), updated_at=sa.bindparam("now"))
)
#: The same for a failed status, which brings its error.
_STATUS_FAILED = _STATUS_FORWARD.values(error_code=sa.bindparam("code"), error_reason=sa.bindparam("title"))
#: The messages of one provider that it knows by the ids ``:pmids``.
_BY_PROVIDER_IDS = sa.select(
    messages.c.id, messages.c.status, messages.c.conversation_id, messages.c.provider_message_id
).where(
    messages.c.provider == sa.bindparam("provider"),
    messages.c.provider_message_id.in_(sa.bindparam("pmids", expanding=True)),
)


@dataclass
class _Sent:
    """A message a batch of statuses moves: its status as the batch has left it so far."""

    id: int
    status: str
    conversation_id: int | None


async def _sent_by_provider_id(conn: AsyncConnection, events: Sequence[StatusEvent]) -> dict[tuple[str, str], _Sent]:
    """The messages that ``events`` are about, by ``(provider, provider message id)``."""
    ids: dict[str, set[str]] = {}
    for event in events:
        ids.setdefault(event.provider, set()).add(event.message_id)
    known: dict[tuple[str, str], _Sent] = {}
    for provider, pmids in ids.items():
        for row in await conn.execute(_BY_PROVIDER_IDS, {"provider": provider, "pmids": sorted(pmids)}):
            known[provider, row.provider_message_id] = _Sent(row.id, row.status, row.conversation_id)
    return known


def _rounds(events: Sequence[StatusEvent]) -> list[list[StatusEvent]]:
    """``events`` cut where a message comes again: within a round each message
    moves once, so each change is written and announced as it was."""
    rounds: list[list[StatusEvent]] = [[]]
    seen: set[tuple[str, str]] = set()
    for event in events:
        key = (event.provider, event.message_id)
        if key in seen:
            rounds.append([])
            seen.clear()
        seen.add(key)
        rounds[-1].append(event)
    return rounds


async def _move_forward(
    conn: AsyncConnection, events: Sequence[StatusEvent], known: dict[tuple[str, str], _Sent], now: float
) -> list[StatusChange | None]:
    """Move each message of one round forward to its event's status, if that is newer."""
    changes: list[StatusChange | None] = []
    forward: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    moved: list[_Sent] = []
    for event in events:
        sent = known.get((event.provider, event.message_id))
        if sent is None or not moves_forward(sent.status, event.status):
            changes.append(None)
            continue
        sent.status = event.status
        params = {"row_id": sent.id, "new_status": event.status, "now": now}
        if event.status == MessageStatus.FAILED:
            failed.append({**params, "code": event.error_code, "title": event.error_title})
        else:
            forward.append(params)
        moved.append(sent)
        changes.append(StatusChange(sent.id, event.status))
    for statement, rows in ((_STATUS_FORWARD, forward), (_STATUS_FAILED, failed)):
        if rows:
            await conn.execute(statement, rows)
    if moved:
        await record_activity(conn, [(sent.conversation_id, "status", sent.id) for sent in moved], now=now)
        await record_message_events(conn, "message.status", [sent.id for sent in moved], now=now)
    return changes


class MessageStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def record_inbound(self, message: InboundMessage) -> InboundRecord:
        """Upsert the sender's contact and conversation and store the message, in one
        transaction; running it again for the same message changes nothing.

        Every id the provider gave for the sender is kept as an identity of the
        contact. A contact known by its wa_id whose first message with a BSUID
        arrives is moved to the BSUID (``sender``), keeping its history.
        """
        row = {"direction": "in", "body": {"type": message.type, **message.content}, "status": MessageStatus.RECEIVED}
        return await self._record(message, message.sender, message.sender_name, message.timestamp, row)

    async def record_echo(self, echo: EchoMessage) -> InboundRecord:
        """Store a message the business sent from its app (coexistence) as a sent
        outbound message of the user's conversation, upserting both as
        ``record_inbound`` does; running it again for the same echo changes nothing."""
        body = {"to": echo.recipient, "type": echo.type, **echo.content}
        row = {"direction": "out", "body": body, "status": MessageStatus.SENT, "origin": "phone"}
        return await self._record(echo, echo.recipient, None, None, row)

    async def _record(
        self,
        event: InboundMessage | EchoMessage,
        address: str,
        name: str | None,
        inbound_at: float | None,
        row: dict[str, Any],
    ) -> InboundRecord:
        now = time.time()
        identities = event.identities or {"wa_id": address}
        async with self.db.begin() as conn:
            if address != identities.get("wa_id", address):
                await self._adopt_contact(conn, event.provider, address, identities["wa_id"], now)
            contact_id = await self._upsert_contact(conn, event.provider, address, name, now)
            await conn.execute(
                insert_ignore(conn, contact_identities, ["contact_id", "kind", "value"]),
                [
                    {"contact_id": contact_id, "kind": kind, "value": value, "created_at": now}
                    for kind, value in identities.items()
                ],
            )
            conversation_id = await self._upsert_conversation(conn, event.provider, contact_id, inbound_at, now)
            message_id = (
                await conn.execute(
                    insert_ignore(conn, messages, ["provider", "provider_message_id"]).returning(messages.c.id),
                    {
                        **row,
                        "provider": event.provider,
                        "contact_id": contact_id,
                        "conversation_id": conversation_id,
                        "address": address,
                        "type": event.type,
                        "provider_message_id": event.external_id,
                        "created_at": event.timestamp or now,
                        "updated_at": now,
                    },
                )
            ).scalar_one_or_none()
            if message_id is not None:
                await record_activity(conn, [(conversation_id, "message", message_id)], now=now)
                kind = "message.received" if row["direction"] == "in" else "message.sent"
                await record_message_events(conn, kind, [message_id], now=now)
            else:  # stored before: a redelivery
                message_id = (
                    await conn.execute(
                        sa.select(messages.c.id).where(
                            messages.c.provider == event.provider, messages.c.provider_message_id == event.external_id
                        )
                    )
                ).scalar_one()
        return InboundRecord(contact_id, conversation_id, message_id)

    async def _adopt_contact(self, conn: AsyncConnection, provider: str, address: str, wa_id: str, now: float) -> None:
        """Give the contact addressed by ``wa_id`` (and its messages) the new
        ``address``, unless a contact already has it."""
        found = {
            row.address: row.id
            for row in await conn.execute(
                sa.select(contacts.c.id, contacts.c.address).where(
                    contacts.c.provider == provider, contacts.c.address.in_([address, wa_id])
                )
            )
        }
        if address in found or wa_id not in found:
            return
        await conn.execute(
            contacts.update().where(contacts.c.id == found[wa_id]).values(address=address, updated_at=now)
        )
        await conn.execute(messages.update().where(messages.c.contact_id == found[wa_id]).values(address=address))
        await conn.execute(
            consent_events.update()
            .where(consent_events.c.provider == provider, consent_events.c.address == wa_id)
            .values(address=address)
        )

    async def _upsert_contact(
        self, conn: AsyncConnection, provider: str, address: str, name: str | None, now: float
    ) -> int:
        key = {"provider": provider, "address": address}
        # A user who wrote before is found by one statement; a new one is inserted.
        row = (await conn.execute(_CONTACT_BY_ADDRESS, key)).one_or_none()
        if row is None:
            inserted = insert_ignore(conn, contacts, ["provider", "address"]).returning(contacts.c.id, contacts.c.name)
            values = {**key, "name": name, "created_at": now, "updated_at": now}
            # No row back when another writer (a replica) inserted it meanwhile.
            row = (await conn.execute(inserted, values)).one_or_none() or (
                await conn.execute(_CONTACT_BY_ADDRESS, key)
            ).one()
        if name and row.name != name:
            await conn.execute(contacts.update().where(contacts.c.id == row.id).values(name=name, updated_at=now))
            await record_contact_events(conn, "contact.updated", [int(row.id)], now=now, changed=["name"])
        return int(row.id)

    async def _upsert_conversation(
        self, conn: AsyncConnection, provider: str, contact_id: int, inbound_at: float | None, now: float
    ) -> int:
        key = {"provider": provider, "contact": contact_id}
        row = (await conn.execute(_CONVERSATION_OF, key)).one_or_none()
        if row is None:
            inserted = insert_ignore(conn, conversations, ["provider", "contact_id"]).returning(
                conversations.c.id, conversations.c.last_inbound_at
            )
            values = {
                "provider": provider,
                "contact_id": contact_id,
                "owner": "bot",
                "created_at": now,
                "updated_at": now,
            }
            row = (await conn.execute(inserted, values)).one_or_none() or (
                await conn.execute(_CONVERSATION_OF, key)
            ).one()
        if inbound_at is not None and (row.last_inbound_at is None or inbound_at > row.last_inbound_at):
            await conn.execute(_INBOUND_AT, {"conversation": row.id, "inbound_at": inbound_at, "now": now})
        return int(row.id)

    async def enqueue(
        self,
        provider: str,
        message: OutgoingMessage,
        *,
        idempotency_key: str,
        conversation_id: int | None = None,
        contact_id: int | None = None,
        not_before: float | None = None,
        origin: str = "business",
        refused: Refusal | None = None,
        now: float | None = None,
        conn: AsyncConnection | None = None,
        lane: int = 0,
    ) -> tuple[int, bool]:
        """Queue a message for the dispatcher (not before ``not_before``, if given).
        Returns ``(id, created)``; a repeated idempotency key returns the first
        message's id and ``created=False``. ``lane`` 1 marks a bulk message, sent
        after conversation messages (lane 0) and paced within the messaging limit.

        With ``refused``, the message is stored ``failed`` with the refusal's
        reason code instead, as history: the dispatcher never sees it."""
        now = time.time() if now is None else now
        values = queued_values(
            provider,
            message,
            idempotency_key=idempotency_key,
            conversation_id=conversation_id,
            contact_id=contact_id,
            not_before=not_before,
            origin=origin,
            lane=lane,
            now=now,
        )
        if refused is not None:
            values.update(
                status=MessageStatus.FAILED,
                error_code=refused.reason,
                error_reason=refused.detail,
                next_attempt_at=None,
            )
        if conn is None:
            async with self.db.begin() as own:
                return await self._enqueue(own, values)
        return await self._enqueue(conn, values)

    async def _enqueue(self, conn: AsyncConnection, values: dict[str, Any]) -> tuple[int, bool]:
        inserted = (
            await conn.execute(insert_ignore(conn, messages, ["idempotency_key"]).returning(messages.c.id), values)
        ).scalar_one_or_none()
        if inserted is not None:
            await record_activity(conn, [(values["conversation_id"], "message", inserted)], now=values["updated_at"])
            return int(inserted), True
        row_id = (
            await conn.execute(sa.select(messages.c.id).where(messages.c.idempotency_key == values["idempotency_key"]))
        ).scalar_one()
        return int(row_id), False

    async def find_by_key(self, idempotency_key: str) -> int | None:
        """The id of the message queued with ``idempotency_key``, if any."""
        async with self.db.connect() as conn:
            found = await conn.execute(sa.select(messages.c.id).where(messages.c.idempotency_key == idempotency_key))
            return found.scalar_one_or_none()

    async def apply_status(self, event: StatusEvent) -> StatusChange | None:
        """Record a status event and move its message forward. Returns the change,
        or None when the message is unknown (yet) or the status is not newer."""
        [change] = await self.apply_statuses([event])
        return change

    async def apply_statuses(self, events: Sequence[StatusEvent]) -> list[StatusChange | None]:
        """``apply_status`` for each of ``events``, in order, in one transaction:
        a status is kept and moves its message forward as if applied alone, also
        when another status of that message comes earlier in the batch. Returns
        each event's change, or None."""
        now = time.time()
        changes: list[StatusChange | None] = []
        async with self.db.begin() as conn:
            await message_locks(conn, sorted({(event.provider, event.message_id) for event in events}))
            await conn.execute(
                insert_ignore(conn, status_events, ["provider", "provider_message_id", "status"]),
                [
                    {
                        "provider": event.provider,
                        "provider_message_id": event.message_id,
                        "status": event.status,
                        "timestamp": event.timestamp,
                        "error_code": event.error_code,
                        "error_title": event.error_title,
                        "pricing_category": event.pricing_category,
                        "created_at": now,
                    }
                    for event in events
                ],
            )
            known = await _sent_by_provider_id(conn, events)
            for batch in _rounds(events):
                changes.extend(await _move_forward(conn, batch, known, now))
        return changes

    async def sent_message(self, provider: str, provider_message_id: str) -> OutgoingMessage | None:
        """The outgoing message the provider knows by this id, if it is recorded."""
        query = sa.select(messages.c.body).where(
            messages.c.provider == provider,
            messages.c.provider_message_id == provider_message_id,
            messages.c.direction == "out",
        )
        async with self.db.connect() as conn:
            body = (await conn.execute(query)).scalar()
        return None if body is None else OutgoingMessage.from_json(body)

    async def get(self, message_id: int) -> dict[str, Any] | None:
        async with self.db.connect() as conn:
            row = (await conn.execute(sa.select(messages).where(messages.c.id == message_id))).one_or_none()
        return dict(row._mapping) if row else None

    async def history(self, provider: str, address: str, *, limit: int = 100) -> list[dict[str, Any]]:
        """The latest ``limit`` messages exchanged with ``address``, oldest first."""
        query = (
            sa.select(messages)
            .where(messages.c.provider == provider, messages.c.address == address)
            .order_by(messages.c.id.desc())
            .limit(limit)
        )
        async with self.db.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [dict(r._mapping) for r in reversed(rows)]

    async def status_history(self, provider: str, provider_message_id: str) -> list[dict[str, Any]]:
        """Every status event kept for a sent message, in the order they happened,
        each with ``implied`` false; see :func:`with_implied_sent` for the one that is not."""
        query = (
            sa.select(
                status_events.c.status,
                status_events.c.timestamp,
                status_events.c.error_code,
                status_events.c.error_title,
                status_events.c.pricing_category,
            )
            .where(status_events.c.provider == provider, status_events.c.provider_message_id == provider_message_id)
            .order_by(status_events.c.timestamp, status_events.c.id)
        )
        async with self.db.connect() as conn:
            rows = (await conn.execute(query)).all()
        return with_implied_sent([{**row._mapping, "implied": False} for row in rows])

    async def status_histories(
        self, provider: str, provider_message_ids: Sequence[str]
    ) -> dict[str, list[dict[str, Any]]]:
        """``status_history`` of many sent messages in one query (a page of a
        conversation), by provider message id; a message without statuses has none."""
        if not provider_message_ids:
            return {}
        query = (
            sa.select(
                status_events.c.provider_message_id,
                status_events.c.status,
                status_events.c.timestamp,
                status_events.c.error_code,
                status_events.c.error_title,
                status_events.c.pricing_category,
            )
            .where(
                status_events.c.provider == provider,
                status_events.c.provider_message_id.in_(list(provider_message_ids)),
            )
            .order_by(status_events.c.timestamp, status_events.c.id)
        )
        async with self.db.connect() as conn:
            rows = (await conn.execute(query)).all()
        found: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            entry = {**row._mapping, "implied": False}
            found.setdefault(entry.pop("provider_message_id"), []).append(entry)
        return {key: with_implied_sent(history) for key, history in found.items()}


def with_implied_sent(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add the ``sent`` a ``delivered`` or ``read`` implies when no ``sent`` status came.

    Providers may skip ``sent`` or deliver it after ``delivered``: the message
    was sent all the same. The entry is marked ``implied`` and takes the time of
    the first later status; once a real ``sent`` is stored, it shows instead.
    """
    if any(entry["status"] == MessageStatus.SENT for entry in history):
        return history
    later = next(
        (i for i, entry in enumerate(history) if entry["status"] in (MessageStatus.DELIVERED, MessageStatus.READ)), None
    )
    if later is None:
        return history
    implied = {
        "status": MessageStatus.SENT,
        "timestamp": history[later]["timestamp"],
        "error_code": None,
        "error_title": None,
        "pricing_category": None,
        "implied": True,
    }
    return [*history[:later], implied, *history[later:]]
