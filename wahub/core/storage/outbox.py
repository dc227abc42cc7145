"""The outbox: queued outgoing messages claimed with a lease, handed back,
rescheduled, and marked sent or failed, and the queue's depth for the
metrics. Queuing (``enqueue``) and statuses live in ``storage_messages``.

A message of a cancelled notification is never claimed, deferred or
rescheduled: it fails with ``cancelled`` instead (the cancel itself fails only
the messages no dispatcher holds)."""

from __future__ import annotations

import functools
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from wahub.core.models import MessageStatus, OutgoingMessage
from wahub.core.storage.activity import message_activity, record_message_activity
from wahub.core.storage.campaigns import CANCELLED, CANCELLED_CODE
from wahub.core.storage.contacts import add_identities
from wahub.core.storage.engine import Database
from wahub.core.storage.events import record_message_events
from wahub.core.storage.leases import lease_over
from wahub.core.storage.messages import message_locks, moves_forward
from wahub.core.storage.plans import BEGIN, Plan, run_plan
from wahub.core.storage.schema import campaigns, contacts, conversations, messages, status_events

#: Statuses of a message the provider accepted.
#: What a send's answer taught of its recipient: the address it went to, and
#: the recipient's ids it reported (kind -> value).
Learnt = tuple[str, Mapping[str, str]]

_ACCEPTED = (MessageStatus.SENT, MessageStatus.DELIVERED, MessageStatus.READ)
#: The customer service window, as ``wahub.core.policy.checks`` keeps it (storage sits below the policy).
SERVICE_WINDOW_SECONDS = 24 * 3600.0
#: Why a message of a cancelled notification failed on its way to the provider.
CANCELLED_REASON = "the notification was cancelled while this message waited for its turn"


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
    #: 0: a conversation message, 1: a bulk one (sent after lane 0, paced within the messaging limit).
    lane: int = 0
    #: The notification (``campaigns`` row) the message belongs to, if any.
    campaign_id: int | None = None


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
        self,
        limit: int,
        lease_seconds: float,
        providers: Collection[str],
        *,
        now: float | None = None,
        bulk: Mapping[str, int] | None = None,
        admit: Callable[[OutboxRow], bool] | None = None,
    ) -> list[OutboxRow]:
        """Claim up to ``limit`` queued messages of ``providers`` due at ``now``
        (default: the current time), leasing them so no one else sends them:
        conversation messages (lane 0) first, then bulk ones (lane 1) to fill
        up, at most ``bulk[provider]`` of each provider's when ``bulk`` is given.
        A bulk message is claimed only when ``admit(row)`` (if given) lets it
        go; the others stay queued, untouched, and so do the later bulk
        messages to their recipients, keeping their order. A message of a
        cancelled notification fails with ``cancelled`` instead of being claimed.
        Leases are always on the wall clock, the one their renewals use."""
        wall = time.time()
        now = wall if now is None else now
        if not providers or limit <= 0:
            return []
        dialect = self.db.engine.dialect.name
        plan = _claim_plan(dialect, limit, lease_seconds, list(providers), now, wall, bulk, admit)
        return await self.db.run(plan)

    async def cancelled_campaigns(self, campaign_ids: Collection[int]) -> set[int]:
        """Those of the notifications ``campaign_ids`` that were cancelled."""
        if not campaign_ids:
            return set()
        query = sa.select(campaigns.c.id).where(campaigns.c.id.in_(list(campaign_ids)), campaigns.c.state == CANCELLED)
        async with self.db.connect() as conn:
            return {int(found) for found in (await conn.scalars(query)).all()}

    async def reached_users(self, provider: str, since: float) -> dict[str, float]:
        """The users ``provider``'s number started a conversation with since ``since``
        (a template it sent outside their service window), each with the time of
        the latest such send. A send's time is when it was last due; a user who
        wrote after the send counts, since whether the window was open before is unknown."""
        sent_at = messages.c.next_attempt_at
        query = (
            sa.select(messages.c.address, sa.func.max(sent_at))
            .select_from(messages.outerjoin(conversations, conversations.c.id == messages.c.conversation_id))
            .where(
                messages.c.status.in_(_ACCEPTED),
                sent_at >= since,
                messages.c.provider == provider,
                messages.c.direction == "out",
                messages.c.type == "template",
                sa.not_(
                    sa.and_(
                        conversations.c.last_inbound_at.is_not(None),
                        conversations.c.last_inbound_at >= sent_at - SERVICE_WINDOW_SECONDS,
                        conversations.c.last_inbound_at <= sent_at,
                    )
                ),
            )
            .group_by(messages.c.address)
        )
        async with self.db.connect() as conn:
            found = (await conn.execute(query)).all()
        return {address: float(at) for address, at in found}

    async def defer(self, due: Sequence[tuple[int, float]]) -> None:
        """Hand claimed messages back, due again at the given times, without counting
        the claim as an attempt (pacing, not failure, held them back); those of a
        cancelled notification fail with ``cancelled`` instead."""
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
            failed = await run_plan(conn, _fail_cancelled([row_id for row_id, _ in due], time.time()))
            deferred = [{"row_id": row_id, "due_at": due_at} for row_id, due_at in due if row_id not in failed]
            if deferred:
                await conn.execute(statement, deferred)

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

    async def mark_sent(
        self, sent: Sequence[tuple[int, str, str]], learnt: Mapping[int, Learnt] | None = None
    ) -> dict[int, str | None]:
        """Store provider ids of sent messages ``(id, provider, provider_message_id)`` in one
        transaction, moving each to ``sent``, or further when status webhooks for
        that id arrived before the provider's answer (a ``failed`` one with its error).
        ``learnt`` gives, by message id, the address a message went to and the
        recipient's ids its answer reported, kept with that contact.
        Returns the messages failed that way, with their error codes."""
        if not sent:
            return {}
        now = time.time()
        providers = {message_id: provider for message_id, provider, _pmid in sent}
        async with self.db.begin() as conn:
            for message_id, (address, identities) in (learnt or {}).items():
                await add_identities(conn, providers[message_id], address, identities, now=now)
            keys = sorted({(provider, pmid) for _, provider, pmid in sent})
            await message_locks(conn, keys)
            early: defaultdict[tuple[str, str], list[Any]] = defaultdict(list)
            events = await conn.execute(_EARLY_STATUSES, {"pmids": [pmid for _, pmid in keys]})
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
                    "now": now,
                }
                for event in early.get((provider, pmid), ()):
                    if moves_forward(values["status"], event.status):
                        values["status"] = event.status
                        if event.status == MessageStatus.FAILED:
                            values.update(code=event.error_code, why=event.error_title)
                updates.append(values)
            await conn.execute(_MARK_SENT, updates)
            await record_message_activity(conn, "status", [message_id for message_id, _, _ in sent], now=now)
            await record_message_events(conn, "message.sent", [message_id for message_id, _, _ in sent], now=now)
        return {values["row_id"]: values["code"] for values in updates if values["status"] == MessageStatus.FAILED}

    async def reschedule(self, message_id: int, *, retry_at: float, error_code: str | None, reason: str) -> bool:
        """Keep a message queued for another attempt at ``retry_at``; False when
        it failed with ``cancelled`` instead, its notification cancelled."""
        now = time.time()
        async with self.db.begin() as conn:
            if await run_plan(conn, _fail_cancelled([message_id], now)):
                return False
            await conn.execute(
                messages.update()
                .where(messages.c.id == message_id, messages.c.status == MessageStatus.QUEUED)
                .values(
                    next_attempt_at=retry_at,
                    lease_until=None,
                    error_code=error_code,
                    error_reason=reason,
                    updated_at=now,
                )
            )
            await record_message_activity(conn, "status", [message_id], now=now)
        return True

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
            await record_message_events(conn, "message.status", [message_id], now=now)


# Statements of every claim and send, built once (building one costs more than running it).
#: Lease the claimed messages ``:ids`` until ``:lease_end``, counting the attempt.
_TAKE = (
    messages.update()
    .where(messages.c.id.in_(sa.bindparam("ids", expanding=True)))
    .values(lease_until=sa.bindparam("lease_end"), attempts=messages.c.attempts + 1, updated_at=sa.bindparam("now"))
)


def _due_in(lane: int) -> sa.Exists:
    return sa.exists().where(
        messages.c.status == MessageStatus.QUEUED,
        messages.c.lane == lane,
        messages.c.next_attempt_at <= sa.bindparam("now"),
        messages.c.provider.in_(sa.bindparam("providers", expanding=True)),
        sa.or_(messages.c.lease_until.is_(None), messages.c.lease_until <= sa.bindparam("wall")),
    )


#: Whether a claim at ``:now`` (``:wall`` on the wall clock) may find messages
#: of ``:providers`` to send, in each lane: read before the claim's write
#: transaction, which the claim after each send would otherwise open for nothing.
_DUE = sa.select(_due_in(0).label("conversations"), _due_in(1).label("bulk"))
#: The statuses already stored for the provider ids ``:pmids``.
_EARLY_STATUSES = sa.select(status_events).where(
    status_events.c.provider_message_id.in_(sa.bindparam("pmids", expanding=True))
)
#: A sent message's provider id and status (one set of parameters per message).
_MARK_SENT = (
    messages.update()
    .where(messages.c.id == sa.bindparam("row_id"))
    .values(
        provider_message_id=sa.bindparam("pmid"),
        status=sa.bindparam("status"),
        error_code=sa.bindparam("code"),
        error_reason=sa.bindparam("why"),
        lease_until=None,
        updated_at=sa.bindparam("now"),
    )
)


def _claim_plan(
    dialect: str,
    limit: int,
    lease_seconds: float,
    providers: list[str],
    now: float,
    wall: float,
    bulk: Mapping[str, int] | None,
    admit: Callable[[OutboxRow], bool] | None,
) -> Plan[list[OutboxRow]]:
    """``OutboxStore.claim_outbox`` as a plan (see ``wahub.core.storage.plans``).
    It first reads whether anything is due in each lane (``_DUE``): most
    claims, right after a send, stop there, without a write transaction."""
    [due] = yield _DUE, {"now": now, "wall": wall, "providers": providers}
    if not due.conversations and not due.bulk:
        return []
    yield BEGIN, {}
    found = list((yield from _claimable(dialect, 0, limit, providers, now, wall))) if due.conversations else []
    if not due.bulk:
        bulk = {}  # none due: no bulk select
    if bulk is None:
        found += yield from _claimable(dialect, 1, limit - len(found), providers, now, wall)
    else:
        for provider in providers:
            room = min(limit - len(found), bulk.get(provider, 0))
            found += yield from _claimable(dialect, 1, room, [provider], now, wall)
    yield from _fail_cancelled([r.id for r in found if r.campaign_state == CANCELLED], wall)
    rows = _admitted([_outbox_row(r) for r in found if r.campaign_state != CANCELLED], admit)
    if rows:
        yield _TAKE, {"ids": [row.id for row in rows], "lease_end": wall + lease_seconds, "now": now}
    return rows


def _claimable(
    dialect: str, lane: int, limit: int, providers: Collection[str], now: float, wall: float
) -> Plan[list[Any]]:
    """Up to ``limit`` due queued rows of ``lane``, unleased or lapsed, oldest due first (locked on
    PostgreSQL), each with the state of its notification (``campaign_state``, None for none)."""
    if limit <= 0 or not providers:
        return []
    params = {"lane": lane, "limit": limit, "providers": list(providers), "now": now, "wall": wall}
    return (yield _claimable_query(dialect), params)


@functools.cache
def _claimable_query(dialect: str) -> sa.Select[Any]:
    """The query of ``_claimable``, built once per database kind (building and keying
    it cost more than running it); its parameters are ``_claimable``'s."""
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
            messages.c.lane,
            messages.c.campaign_id,
            campaigns.c.state.label("campaign_state"),
        )
        .select_from(
            messages.outerjoin(conversations, conversations.c.id == messages.c.conversation_id)
            .outerjoin(contacts, contacts.c.id == messages.c.contact_id)
            .outerjoin(campaigns, campaigns.c.id == messages.c.campaign_id)
        )
        .where(
            messages.c.status == MessageStatus.QUEUED,
            messages.c.lane == sa.bindparam("lane"),
            messages.c.next_attempt_at <= sa.bindparam("now"),
            messages.c.provider.in_(sa.bindparam("providers", expanding=True)),
            sa.or_(messages.c.lease_until.is_(None), lease_over(messages.c.lease_until, sa.bindparam("wall"), dialect)),
        )
        .order_by(messages.c.next_attempt_at, messages.c.id)
        .limit(sa.bindparam("limit", type_=sa.Integer))
    )
    if dialect != "sqlite":
        query = query.with_for_update(of=messages, skip_locked=True)
    return query


def _outbox_row(found: Any) -> OutboxRow:
    return OutboxRow(
        found.id,
        found.provider,
        OutgoingMessage.from_json(found.body),
        found.attempts + 1,
        found.created_at,
        found.last_inbound_at,
        found.origin or "business",
        found.timezone,
        found.lane,
        found.campaign_id,
    )


def _admitted(rows: list[OutboxRow], admit: Callable[[OutboxRow], bool] | None) -> list[OutboxRow]:
    """The rows to claim: every conversation row, and the bulk rows ``admit`` lets
    go, none after a refused one to the same recipient."""
    if admit is None:
        return rows
    kept: list[OutboxRow] = []
    waiting: set[tuple[str, str]] = set()
    for row in rows:
        recipient = (row.provider, row.message.to)
        if row.lane and (recipient in waiting or not admit(row)):
            waiting.add(recipient)
        else:
            kept.append(row)
    return kept


def _fail_cancelled(message_ids: Sequence[int], now: float) -> Plan[set[int]]:
    """Fail those of the queued messages ``message_ids`` whose notification was
    cancelled, with ``cancelled``; returns their ids."""
    if not message_ids:
        return set()
    failed = [row.id for row in (yield _FAIL_CANCELLED, {"ids": list(message_ids), "now": now})]
    yield from message_activity("status", failed, now=now)
    return {int(message_id) for message_id in failed}


#: Fail the queued messages ``:ids`` of a cancelled notification, at ``:now``.
_FAIL_CANCELLED = (
    messages.update()
    .where(
        messages.c.id.in_(sa.bindparam("ids", expanding=True)),
        messages.c.status == MessageStatus.QUEUED,
        sa.select(campaigns.c.id)
        .where(campaigns.c.id == messages.c.campaign_id, campaigns.c.state == CANCELLED)
        .exists(),
    )
    .values(
        status=MessageStatus.FAILED,
        error_code=CANCELLED_CODE,
        error_reason=CANCELLED_REASON,
        next_attempt_at=None,
        lease_until=None,
        updated_at=sa.bindparam("now"),
    )
    .returning(messages.c.id)
)
