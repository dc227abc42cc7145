"""Notifications: one ``campaigns`` row per notification (or reminder firing),
expanded into one ``messages`` row per recipient in batches, each batch in the
same transaction as the campaign's progress (``position``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from wahub.core.storage.engine import Database, insert_ignore
from wahub.core.storage.schema import campaigns

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


class CampaignStore:
    def __init__(self, db: Database) -> None:
        self.db = db
