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
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from wahub.core.canonical.placeholders import is_positional, placeholders
from wahub.core.models import MessageStatus
from wahub.core.storage.activity import record_activity
from wahub.core.storage.engine import Database, insert_ignore
from wahub.core.storage.events import record_message_events
from wahub.core.storage.leases import lease_over
from wahub.core.storage.schema import campaigns, contact_identities, contacts, messages, templates
from wahub.core.storage.segments import Segment, segment_filter

#: A campaign's states: waiting for ``send_at``, being written out, every
#: recipient's message written, or stopped.
SCHEDULED, EXPANDING, QUEUED, CANCELLED = "scheduled", "expanding", "queued", "cancelled"


def initial_state(send_at: float | None, now: float) -> str:
    """A new campaign's state: waiting for ``send_at`` when it is ahead, else being written."""
    return SCHEDULED if send_at is not None and send_at > now else EXPANDING


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
        "state": initial_state(send_at, now),
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
#: The refusal counting the recipients of a campaign whose writing failed for
#: another reason than the database: they are never written.
WRITE_FAILED = "write_failed"
#: Addresses looked up per query when finding their contacts.
ADDRESS_CHUNK = 500


def person_key(contact_id: int | None, address: str) -> str:
    """Who a recipient is: ``c<id>`` of the contact the send policy finds for
    the address, else the address without its leading ``+`` (one person
    however the number is written)."""
    return f"c{contact_id}" if contact_id is not None else address.lstrip("+")


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


@dataclass(frozen=True)
class TemplateLayout:
    """How a stored template takes a notification's parameters object: each
    button's kind (index -> ``url`` or ``quick_reply``: a URL's variable or a
    quick reply's payload) and the name of a text header's placeholder when
    the template's parameters are named."""

    buttons: Mapping[str, str] = field(default_factory=dict)
    header_name: str | None = None


async def _still_writing(conn: AsyncConnection, campaign: Campaign) -> Any:
    """The campaign's row (state, position, refused), locked until the
    transaction ends, while it is still being written where ``campaign`` left
    it; None once it was cancelled or written further by another replica."""
    query = sa.select(campaigns.c.state, campaigns.c.position, campaigns.c.refused).where(campaigns.c.id == campaign.id)
    if conn.dialect.name != "sqlite":
        query = query.with_for_update()
    current = (await conn.execute(query)).one()
    if current.state != EXPANDING or current.position != campaign.position:
        return None
    return current


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

    async def segment_count(self, segment: Segment, *, limit: int) -> int:
        """How many contacts the segment has, counting no further than ``limit``
        (one query, reading at most ``limit`` of them)."""
        async with self.db.connect() as conn:
            found = sa.select(contacts.c.id).where(segment_filter(segment, conn.dialect.name)).limit(limit).subquery()
            counted = await conn.scalar(sa.select(sa.func.count()).select_from(found))
        return int(counted or 0)

    async def people(self, provider: str, addresses: Sequence[str]) -> dict[str, str]:
        """Each address's ``person_key``, its contact found as the send policy
        finds it: the contact with that address, else the first having it (or
        it without ``+``) among its ids, as a wa_id of a contact now addressed
        by its BSUID. Two queries per ``ADDRESS_CHUNK`` addresses."""
        found: dict[str, str] = {}
        async with self.db.connect() as conn:
            for start in range(0, len(addresses), ADDRESS_CHUNK):
                chunk = list(addresses[start : start + ADDRESS_CHUNK])
                own = sa.select(contacts.c.address, contacts.c.id).where(
                    contacts.c.provider == provider, contacts.c.address.in_(chunk)
                )
                owners = {address: int(contact_id) for address, contact_id in (await conn.execute(own)).all()}
                values = list(dict.fromkeys(value for address in chunk for value in (address, address.lstrip("+"))))
                known = (
                    sa.select(contact_identities.c.value, sa.func.min(contacts.c.id))
                    .join(contacts, contact_identities.c.contact_id == contacts.c.id)
                    .where(contacts.c.provider == provider, contact_identities.c.value.in_(values))
                    .group_by(contact_identities.c.value)
                )
                known_by = {value: int(contact_id) for value, contact_id in (await conn.execute(known)).all()}
                for address in chunk:
                    ids = [known_by[value] for value in (address, address.lstrip("+")) if value in known_by]
                    found[address] = person_key(owners.get(address, min(ids, default=None)), address)
        return found

    async def template_layout(self, provider: str, name: str | None) -> TemplateLayout:
        """How the stored template ``name`` (its first stored language) takes a
        notification's parameters: its buttons' kinds and its header's name."""
        if name is None:
            return TemplateLayout()
        statement = (
            sa.select(templates.c.components)
            .where(templates.c.provider == provider, templates.c.name == name, templates.c.components.is_not(None))
            .order_by(templates.c.language)
            .limit(1)
        )
        async with self.db.connect() as conn:
            components = await conn.scalar(statement)
        kinds: dict[str, str] = {}
        header_name = None
        for component in components or ():
            kind = str(component.get("type", "")).upper()
            if kind == "BUTTONS":
                for index, button in enumerate(component.get("buttons", ())):
                    sub_type = str(button.get("type", "")).lower()
                    kinds[str(index)] = sub_type if sub_type in ("url", "quick_reply") else "url"
            elif kind == "HEADER" and isinstance(component.get("text"), str):
                names = [name for name in placeholders(component["text"]) if not is_positional(name)]
                header_name = names[0] if names else None
        return TemplateLayout(kinds, header_name)

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
            current = await _still_writing(conn, campaign)
            if current is None:
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

    async def give_up(self, campaign: Campaign, *, now: float) -> bool:
        """End a campaign whose writing cannot go on: it becomes ``queued`` (what
        is written is sent) and the recipients not yet written or refused are
        counted refused under ``WRITE_FAILED``. False when the campaign is no
        longer this writer's (cancelled, or written further by another)."""
        async with self.db.begin() as conn:
            current = await _still_writing(conn, campaign)
            if current is None:
                return False
            written = await conn.scalar(
                sa.select(sa.func.count()).select_from(messages).where(messages.c.campaign_id == campaign.id)
            )
            refused = dict(current.refused or {})
            left = campaign.recipients - int(written or 0) - sum(refused.values())
            if left > 0:
                refused = merged_refusals(refused, {WRITE_FAILED: left})
            await conn.execute(
                campaigns.update()
                .where(campaigns.c.id == campaign.id)
                .values(state=QUEUED, refused=refused, expanded_at=now, lease_until=None, updated_at=now)
            )
        return True

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
            await record_message_events(conn, "message.status", [row.id for row in cancelled], now=now)
        return True
