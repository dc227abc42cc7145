"""The outbox: queued outgoing messages claimed with a lease, handed back,
rescheduled, and marked sent or failed, and the queue's depth for the
metrics. Queuing (``enqueue``) and statuses live in ``storage_messages``."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from wahub.core.models import MessageStatus, OutgoingMessage
from wahub.core.storage.activity import record_message_activity
from wahub.core.storage.engine import Database
from wahub.core.storage.leases import lease_over
from wahub.core.storage.messages import message_locks, moves_forward
from wahub.core.storage.schema import contacts, conversations, messages, status_events


@dataclass(frozen=True)
class OutboxRow:
    id: int
    provider: str
    message: OutgoingMessage
    attempts: int
    created_at: float
    #: When the contact last wrote (the service window), if the message belongs to a conversation.
    last_inbound_at: float | None = None
    #: ``reply`` or ``business`` (``wahub.core.policy.checks.Origin``): quiet hours hold only the latter.
    origin: str = "business"
    #: The contact's own time zone for quiet hours; None: the configured default.
    timezone: str | None = None


class OutboxStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def outbox_depth(self) -> dict[str, tuple[int, float]]:
        """Per provider: queued messages and the age in seconds of the oldest."""
        query = (
            sa.select(messages.c.provider, sa.func.count(), sa.func.min(messages.c.created_at))
            .where(messages.c.status == MessageStatus.QUEUED)
            .group_by(messages.c.provider)
        )
        now = time.time()
        async with self.db.connect() as conn:
            rows = (await conn.execute(query)).all()
        return {provider: (int(count), now - oldest) for provider, count, oldest in rows}

    async def claim_outbox(
        self, limit: int, lease_seconds: float, providers: Collection[str], *, now: float | None = None
    ) -> list[OutboxRow]:
        """Claim queued messages of ``providers`` due at ``now`` (default: the
        current time), leasing them so no one else sends them. Leases are
        always on the wall clock, the one their renewals use."""
        wall = time.time()
        now = wall if now is None else now
        query = (
            sa.select(
                messages.c.id,
                messages.c.provider,
                messages.c.body,
                messages.c.attempts,
                messages.c.created_at,
                conversations.c.last_inbound_at,
                messages.c.origin,
                contacts.c.timezone,
            )
            .select_from(
                messages.outerjoin(conversations, conversations.c.id == messages.c.conversation_id).outerjoin(
                    contacts, contacts.c.id == messages.c.contact_id
                )
            )
            .where(
                messages.c.status == MessageStatus.QUEUED,
                messages.c.provider.in_(list(providers)),
                messages.c.next_attempt_at <= now,
            )
            .order_by(messages.c.next_attempt_at, messages.c.id)
            .limit(limit)
        )
        async with self.db.begin() as conn:
            lapsed = lease_over(messages.c.lease_until, wall, conn.dialect.name)
            query = query.where(sa.or_(messages.c.lease_until.is_(None), lapsed))
            if conn.dialect.name != "sqlite":
                query = query.with_for_update(of=messages, skip_locked=True)
            rows = (await conn.execute(query)).all()
            if rows:
                await conn.execute(
                    messages.update()
                    .where(messages.c.id.in_([r.id for r in rows]))
                    .values(lease_until=wall + lease_seconds, attempts=messages.c.attempts + 1, updated_at=now)
                )
        return [
            OutboxRow(
                r.id,
                r.provider,
                OutgoingMessage.from_json(r.body),
                r.attempts + 1,
                r.created_at,
                r.last_inbound_at,
                r.origin or "business",
                r.timezone,
            )
            for r in rows
        ]

    async def defer(self, due: Sequence[tuple[int, float]]) -> None:
        """Hand claimed messages back, due again at the given times, without counting
        the claim as an attempt (pacing, not failure, held them back)."""
        if not due:
            return
        statement = (
            messages.update()
            .where(messages.c.id == sa.bindparam("row_id"), messages.c.status == MessageStatus.QUEUED)
            .values(
                next_attempt_at=sa.bindparam("due_at"),
                lease_until=None,
                attempts=messages.c.attempts - 1,
                updated_at=time.time(),
            )
        )
        async with self.db.begin() as conn:
            await conn.execute(statement, [{"row_id": row_id, "due_at": due_at} for row_id, due_at in due])

    async def release_outbox_claims(self, provider: str) -> int:
        """Make ``provider``'s leased queued messages due again: called by the process
        that just became that provider's only dispatcher, so no one else holds them."""
        async with self.db.begin() as conn:
            result = await conn.execute(
                messages.update()
                .where(
                    messages.c.provider == provider,
                    messages.c.status == MessageStatus.QUEUED,
                    messages.c.lease_until.is_not(None),
                )
                .values(lease_until=None)
            )
        return result.rowcount

    async def mark_sent(self, sent: Sequence[tuple[int, str, str]]) -> dict[int, str | None]:
        """Store provider ids of sent messages ``(id, provider, provider_message_id)`` in one
        transaction, moving each to ``sent``, or further when status webhooks for
        that id arrived before the provider's answer (a ``failed`` one with its error).
        Returns the messages failed that way, with their error codes."""
        if not sent:
            return {}
        now = time.time()
        async with self.db.begin() as conn:
            keys = sorted({(provider, pmid) for _, provider, pmid in sent})
            await message_locks(conn, keys)
            early: defaultdict[tuple[str, str], list[Any]] = defaultdict(list)
            events = await conn.execute(
                sa.select(status_events).where(status_events.c.provider_message_id.in_([pmid for _, pmid in keys]))
            )
            for event in events:
                early[event.provider, event.provider_message_id].append(event)
            updates = []
            for message_id, provider, pmid in sent:
                values: dict[str, Any] = {
                    "row_id": message_id,
                    "pmid": pmid,
                    "status": MessageStatus.SENT,
                    "code": None,
                    "why": None,
                }
                for event in early.get((provider, pmid), ()):
                    if moves_forward(values["status"], event.status):
                        values["status"] = event.status
                        if event.status == MessageStatus.FAILED:
                            values.update(code=event.error_code, why=event.error_title)
                updates.append(values)
            await conn.execute(
                messages.update()
                .where(messages.c.id == sa.bindparam("row_id"))
                .values(
                    provider_message_id=sa.bindparam("pmid"),
                    status=sa.bindparam("status"),
                    error_code=sa.bindparam("code"),
                    error_reason=sa.bindparam("why"),
                    lease_until=None,
                    updated_at=now,
                ),
                updates,
            )
            await record_message_activity(conn, "status", [message_id for message_id, _, _ in sent], now=now)
        return {values["row_id"]: values["code"] for values in updates if values["status"] == MessageStatus.FAILED}

    async def reschedule(self, message_id: int, *, retry_at: float, error_code: str | None, reason: str) -> None:
        """Keep a message queued for another attempt at ``retry_at``."""
        now = time.time()
        async with self.db.begin() as conn:
            await conn.execute(
                messages.update()
                .where(messages.c.id == message_id)
                .values(
                    next_attempt_at=retry_at,
                    lease_until=None,
                    error_code=error_code,
                    error_reason=reason,
                    updated_at=now,
                )
            )
            await record_message_activity(conn, "status", [message_id], now=now)

    async def mark_failed(self, message_id: int, *, error_code: str | None, reason: str) -> None:
        now = time.time()
        async with self.db.begin() as conn:
            await conn.execute(
                messages.update()
                .where(messages.c.id == message_id)
                .values(
                    status=MessageStatus.FAILED,
                    lease_until=None,
                    error_code=error_code,
                    error_reason=reason,
                    updated_at=now,
                )
            )
            await record_message_activity(conn, "status", [message_id], now=now)
