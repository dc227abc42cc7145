"""Notifications: one ``campaigns`` row per notification (or reminder firing),
expanded into one ``messages`` row per recipient in batches, each batch in the
same transaction as the campaign's progress (``position``).

``position`` is how far the audience was walked: for ``{"to": [...]}`` the
number of addresses done, for a segment the id of the last contact read
(segments are walked by contact id, a page at a time, so a crash resumes
where the last committed batch ended and a large segment is never all in
memory). The writer holds a lease (``lease_until``) while it writes; a
replica that dies lets another take the campaign over when it runs out.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from wahub.core.models import MessageStatus
from wahub.core.storage.activity import record_activity
from wahub.core.storage.engine import Database, insert_ignore
from wahub.core.storage.leases import lease_over
from wahub.core.storage.schema import campaigns, contacts, messages, templates
from wahub.core.storage.segments import Segment, segment_filter

#: A campaign's states: waiting for ``send_at``, being written out, every
#: recipient's message written, or stopped.
SCHEDULED, EXPANDING, QUEUED, CANCELLED = "scheduled", "expanding", "queued", "cancelled"


async def create_campaign(
    conn: AsyncConnection,
    *,
    provider: str,
    template: str | None,
    audience: Mapping[str, Any],
    source: str,
    idempotency_key: str,
    now: float,
    language: str | None = None,
    parameters: Mapping[str, Any] | Sequence[Any] | None = None,
    per_recipient: Mapping[str, Any] | None = None,
    send_at: float | None = None,
    recipients: int = 0,
    message: Mapping[str, Any] | None = None,
) -> tuple[int, bool]:
    """Create a campaign inside the caller's transaction (a reminder's firing
    creates one with the schedule's advance). It sends ``template`` (with
    ``language``, ``parameters`` and ``per_recipient``) or else ``message``, a
    canonical body without ``to``. The same ``idempotency_key``
    yields the first one's id. Returns the id and whether it is new."""
    values = {
        "provider": provider,
        "template": template,
        "message": dict(message) if message is not None else None,
        "language": language,
        "audience": dict(audience),
        "parameters": parameters,
        "per_recipient": dict(per_recipient) if per_recipient is not None else None,
        "source": source,
        "idempotency_key": idempotency_key,
        "state": SCHEDULED if send_at is not None and send_at > now else EXPANDING,
        "send_at": send_at,
        "recipients": recipients,
        "refused": {},
        "created_at": now,
        "updated_at": now,
    }
    result = await conn.execute(insert_ignore(conn, campaigns, ["idempotency_key"]).values(**values))
    found = await conn.scalar(sa.select(campaigns.c.id).where(campaigns.c.idempotency_key == idempotency_key))
    assert found is not None
    return int(found), bool(result.rowcount)


#: Largest audience a notification may have.
MAX_RECIPIENTS = 100_000
#: Contacts read at a time while walking a segment.
CONTACT_PAGE = 1000
#: What a cancelled campaign's queued messages fail with.
CANCELLED_CODE = "cancelled"


@dataclass(frozen=True)
class Campaign:
    """A campaign as its writer and the API read it."""

    id: int
    provider: str
    template: str | None
    language: str | None
    message: dict[str, Any] | None
    audience: dict[str, Any]
    parameters: dict[str, Any] | None
    per_recipient: dict[str, Any] | None
    source: str
    idempotency_key: str
    state: str
    send_at: float | None
    position: int
    recipients: int
    refused: dict[str, int]
    created_at: float
    expanded_at: float | None
    cancelled_at: float | None


@dataclass(frozen=True)
class SegmentPage:
    """The addresses of one page of a segment's walk and where the next page starts
    (the last contact id read; None once every contact was read)."""

    addresses: list[str]
    next_after: int | None


def _campaign(row: Any) -> Campaign:
    values = dict(row._mapping)
    values.pop("lease_until", None)
    values.pop("updated_at", None)
    values["refused"] = dict(values["refused"] or {})
    return Campaign(**values)


def merged_refusals(before: Mapping[str, int], added: Mapping[str, int]) -> dict[str, int]:
    total = dict(before)
    for reason, count in added.items():
        total[reason] = total.get(reason, 0) + count
    return total


@dataclass(frozen=True)
class Batch:
    """One batch of a campaign's writing: the messages rows to insert (``values``
    of ``messages``), the refusals by reason, the audience position after it
    and whether it is the last."""

    rows: list[dict[str, Any]]
    refused: dict[str, int]
    position: int
    last: bool


class CampaignStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, **fields: Any) -> tuple[int, bool]:
        """``create_campaign`` in a transaction of its own."""
        async with self.db.begin() as conn:
            return await create_campaign(conn, **fields)

    async def get(self, campaign_id: int) -> Campaign | None:
        async with self.db.connect() as conn:
            row = (await conn.execute(sa.select(campaigns).where(campaigns.c.id == campaign_id))).one_or_none()
        return None if row is None else _campaign(row)

    async def find_by_key(self, idempotency_key: str) -> Campaign | None:
        async with self.db.connect() as conn:
            row = (
                await conn.execute(sa.select(campaigns).where(campaigns.c.idempotency_key == idempotency_key))
            ).one_or_none()
        return None if row is None else _campaign(row)

    async def list(self, *, after: int | None = None, limit: int = 50) -> tuple[list[Campaign], int | None]:
        """Campaigns newest first, those older than ``after`` when given; the page
        and the cursor of the next one (None at the end)."""
        statement = sa.select(campaigns)
        if after is not None:
            statement = statement.where(campaigns.c.id < after)
        statement = statement.order_by(campaigns.c.id.desc()).limit(limit + 1)
        async with self.db.connect() as conn:
            rows = (await conn.execute(statement)).all()
        return [_campaign(row) for row in rows[:limit]], int(rows[limit - 1].id) if len(rows) > limit else None

    async def message_counts(self, campaign_id: int) -> dict[tuple[str, str | None], int]:
        """The campaign's messages by ``(status, error_code)``, read in one query."""
        statement = (
            sa.select(messages.c.status, messages.c.error_code, sa.func.count())
            .where(messages.c.campaign_id == campaign_id)
            .group_by(messages.c.status, messages.c.error_code)
        )
        async with self.db.connect() as conn:
            rows = (await conn.execute(statement)).all()
        return {(status, code): int(count) for status, code, count in rows}

    async def recent_messages(self, since: float) -> dict[tuple[str, str, str], int]:
        """Per ``(provider, status, error code or "")``, the messages of the
        campaigns created since ``since``."""
        recent = sa.select(campaigns.c.id).where(campaigns.c.created_at >= since)
        code = sa.func.coalesce(messages.c.error_code, "")
        statement = (
            sa.select(messages.c.provider, messages.c.status, code, sa.func.count())
            .where(messages.c.campaign_id.in_(recent))
            .group_by(messages.c.provider, messages.c.status, code)
        )
        async with self.db.connect() as conn:
            rows = (await conn.execute(statement)).all()
        return {(provider, status, reason): int(count) for provider, status, reason, count in rows}

    async def segment_page(self, segment: Segment, *, after: int, limit: int = CONTACT_PAGE) -> SegmentPage:
        """The addresses of the segment's contacts among the next ``limit`` contacts
        (by id) after ``after``."""
        async with self.db.connect() as conn:
            statement = (
                sa.select(contacts.c.id, contacts.c.address)
                .where(segment_filter(segment, conn.dialect.name), contacts.c.id > after)
                .order_by(contacts.c.id)
                .limit(limit)
            )
            rows = (await conn.execute(statement)).all()
        addresses = [row.address for row in rows]
        return SegmentPage(addresses, int(rows[-1].id) if len(rows) == limit else None)

    async def template_buttons(self, provider: str, name: str | None) -> dict[str, str]:
        """Button index -> ``url`` or ``quick_reply`` of the stored template
        ``name`` (its first stored language): how a button's parameter is sent."""
        if name is None:
            return {}
        statement = (
            sa.select(templates.c.components)
            .where(templates.c.provider == provider, templates.c.name == name, templates.c.components.is_not(None))
            .order_by(templates.c.language)
            .limit(1)
        )
        async with self.db.connect() as conn:
            components = await conn.scalar(statement)
        kinds: dict[str, str] = {}
        for component in components or ():
            if str(component.get("type", "")).upper() == "BUTTONS":
                for index, button in enumerate(component.get("buttons", ())):
                    kind = str(button.get("type", "")).lower()
                    kinds[str(index)] = kind if kind in ("url", "quick_reply") else "url"
        return kinds

    async def release_claims(self) -> int:
        """End every campaign's lease (SQLite, at start-up: this process owns the
        file, so a lease left in it is a crash's). Returns how many there were."""
        async with self.db.begin() as conn:
            result = await conn.execute(
                campaigns.update().where(campaigns.c.lease_until.is_not(None)).values(lease_until=None)
            )
        return int(result.rowcount)

    async def claim(self, *, now: float, lease_seconds: float) -> Campaign | None:
        """Lease one campaign to write out: one being written whose lease is free,
        or a scheduled one whose ``send_at`` has come (it becomes ``expanding``).
        On PostgreSQL a campaign another replica is claiming is skipped."""
        wall = time.time()
        due = sa.or_(
            campaigns.c.state == EXPANDING,
            sa.and_(campaigns.c.state == SCHEDULED, campaigns.c.send_at <= now),
        )
        async with self.db.begin() as conn:
            free = sa.or_(
                campaigns.c.lease_until.is_(None), lease_over(campaigns.c.lease_until, wall, conn.dialect.name)
            )
            query = sa.select(campaigns).where(due, free).order_by(campaigns.c.id).limit(1)
            if conn.dialect.name != "sqlite":
                query = query.with_for_update(skip_locked=True)
            row = (await conn.execute(query)).one_or_none()
            if row is None:
                return None
            await conn.execute(
                campaigns.update()
                .where(campaigns.c.id == row.id)
                .values(state=EXPANDING, lease_until=wall + lease_seconds, updated_at=now)
            )
        return dataclasses.replace(_campaign(row), state=EXPANDING)

    async def write_batch(self, campaign: Campaign, batch: Batch, *, now: float, lease_seconds: float) -> int | None:
        """Insert the batch's messages and advance the campaign past it, in one
        transaction; a message already written (same idempotency key) is not
        written again. Returns how many were inserted, or None when the campaign
        is no longer this writer's to write (cancelled, or written further by
        another replica whose lease it took): then nothing is written."""
        async with self.db.begin() as conn:
            query = sa.select(campaigns.c.state, campaigns.c.position, campaigns.c.refused).where(
                campaigns.c.id == campaign.id
            )
            if conn.dialect.name != "sqlite":
                query = query.with_for_update()
            current = (await conn.execute(query)).one()
            if current.state != EXPANDING or current.position != campaign.position:
                return None
            inserted: Sequence[Any] = []
            if batch.rows:
                inserted = (
                    await conn.execute(
                        insert_ignore(conn, messages, ["idempotency_key"])
                        .values(batch.rows)
                        .returning(messages.c.id, messages.c.conversation_id)
                    )
                ).all()
                await record_activity(conn, [(row.conversation_id, "message", row.id) for row in inserted], now=now)
            values: dict[str, Any] = {
                "position": batch.position,
                "refused": merged_refusals(current.refused or {}, batch.refused),
                "lease_until": time.time() + lease_seconds,
                "updated_at": now,
            }
            if batch.last:
                values.update(state=QUEUED, expanded_at=now, lease_until=None)
            await conn.execute(campaigns.update().where(campaigns.c.id == campaign.id).values(**values))
        return len(inserted)

    async def cancel(self, campaign_id: int, *, now: float) -> bool:
        """Stop the campaign: nothing more is written, and its queued messages
        that no dispatcher holds fail with ``cancelled``; a dispatcher fails the
        ones it holds before their send (a send already handed to the provider
        finishes). Returns False when there is no such campaign."""
        wall = time.time()
        async with self.db.begin() as conn:
            found = await conn.scalar(sa.select(campaigns.c.state).where(campaigns.c.id == campaign_id))
            if found is None:
                return False
            if found != CANCELLED:
                await conn.execute(
                    campaigns.update()
                    .where(campaigns.c.id == campaign_id)
                    .values(state=CANCELLED, cancelled_at=now, lease_until=None, updated_at=now)
                )
            free = sa.or_(messages.c.lease_until.is_(None), lease_over(messages.c.lease_until, wall, conn.dialect.name))
            cancelled = (
                await conn.execute(
                    messages.update()
                    .where(messages.c.campaign_id == campaign_id, messages.c.status == MessageStatus.QUEUED, free)
                    .values(
                        status=MessageStatus.FAILED,
                        error_code=CANCELLED_CODE,
                        error_reason="the notification was cancelled before this message was sent",
                        next_attempt_at=None,
                        updated_at=now,
                    )
                    .returning(messages.c.id, messages.c.conversation_id)
                )
            ).all()
            await record_activity(conn, [(row.conversation_id, "status", row.id) for row in cancelled], now=now)
        return True
