"""Deliveries of integration events to the ``crm:`` entries (written by
``wahub.core.storage.events`` with the change that caused them), their
endpoints' state, and the links a CRM backend keeps between wahub's records
and its own.

A delivery is ``pending`` until it is ``delivered`` or given up (``failed``).
Each endpoint gets one contact's events in id order: a claim takes only the
oldest pending delivery of each contact (deliveries without a contact go in
no particular order), so a retried event holds back that contact's later ones
and no other contact's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from wahub.core.models import IntegrationEvent
from wahub.core.storage.engine import Database, insert_ignore
from wahub.core.storage.leases import lease_over
from wahub.core.storage.schema import contact_identities, crm_links, deliveries, delivery_endpoints

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
STATES = (PENDING, DELIVERED, FAILED)

#: The columns a listing shows (the payload only with one delivery).
_LISTED = [
    deliveries.c.id,
    deliveries.c.endpoint,
    deliveries.c.event_id,
    deliveries.c.type,
    deliveries.c.contact_id,
    deliveries.c.state,
    deliveries.c.attempts,
    deliveries.c.next_attempt_at,
    deliveries.c.last_status,
    deliveries.c.last_error,
    deliveries.c.created_at,
    deliveries.c.first_failed_at,
    deliveries.c.finished_at,
]


@dataclass(frozen=True)
class Delivery:
    """A claimed delivery: what to send, and its attempts so far (settling it
    checks them, so a claim that lapsed and was taken again is not settled twice)."""

    id: int
    endpoint: str
    event: IntegrationEvent
    attempts: int


class DeliveryStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- the deliverers ------------------------------------------------------------

    async def claim(self, endpoint: str, *, limit: int, now: float, lease_until: float) -> list[Delivery]:
        """Up to ``limit`` due deliveries to ``endpoint``, each the oldest pending one
        of its contact, leased until ``lease_until``; none while the endpoint is disabled."""
        if limit <= 0:
            return []
        due = self._claimable(endpoint, now, self.db.engine.dialect.name).with_only_columns(deliveries.c.id).limit(1)
        async with self.db.connect() as conn:
            # A look first, so an idle deliverer never takes SQLite's write lock.
            if (await conn.execute(due)).first() is None:
                return []
        async with self.db.begin() as conn:
            if conn.dialect.name != "sqlite":
                # Replicas claim one endpoint in turn, so two never take one contact's next two events.
                await conn.execute(
                    sa.text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"deliveries:{endpoint}"}
                )
            if await _disabled(conn, endpoint) is not None:
                return []
            query = self._claimable(endpoint, now, conn.dialect.name).order_by(deliveries.c.id).limit(limit)
            claimed = [_delivery(row) for row in (await conn.execute(query)).all()]
            if claimed:
                await conn.execute(
                    deliveries.update()
                    .where(deliveries.c.id.in_([delivery.id for delivery in claimed]))
                    .values(lease_until=lease_until)
                )
        return claimed

    @staticmethod
    def _claimable(endpoint: str, now: float, dialect: str) -> sa.Select[Any]:
        """The endpoint's due, unleased deliveries that are their contact's oldest pending one."""
        earlier = deliveries.alias("earlier")
        held_back = (
            sa.select(earlier.c.id)
            .where(
                earlier.c.endpoint == endpoint,
                earlier.c.contact_id == deliveries.c.contact_id,
                earlier.c.state == PENDING,
                earlier.c.id < deliveries.c.id,
            )
            .exists()
        )
        free = sa.or_(deliveries.c.lease_until.is_(None), lease_over(deliveries.c.lease_until, now, dialect))
        return sa.select(deliveries).where(
            deliveries.c.endpoint == endpoint,
            deliveries.c.state == PENDING,
            # A first attempt is due at once, whatever clock the change was stamped by.
            sa.or_(deliveries.c.attempts == 0, deliveries.c.next_attempt_at <= now),
            free,
            sa.or_(deliveries.c.contact_id.is_(None), ~held_back),
        )

    async def delivered(self, delivery: Delivery, *, status: int | None, now: float) -> bool:
        """Record that ``delivery`` was taken; False when its claim had lapsed and
        another took it meanwhile (nothing is recorded then)."""
        return await self._settle(
            delivery,
            state=DELIVERED,
            last_status=status,
            last_error=None,
            next_attempt_at=None,
            finished_at=now,
        )

    async def retry(self, delivery: Delivery, *, at: float, status: int | None, error: str, now: float) -> bool:
        """Try again at ``at``: this attempt failed with ``error``."""
        return await self._settle(
            delivery,
            last_status=status,
            last_error=error,
            next_attempt_at=at,
            first_failed_at=sa.func.coalesce(deliveries.c.first_failed_at, now),
        )

    async def give_up(self, delivery: Delivery, *, status: int | None, error: str, now: float) -> bool:
        """Stop trying (the endpoint refused it for good, or its retries ran out)."""
        return await self._settle(
            delivery,
            state=FAILED,
            last_status=status,
            last_error=error,
            next_attempt_at=None,
            finished_at=now,
            first_failed_at=sa.func.coalesce(deliveries.c.first_failed_at, now),
        )

    async def _settle(self, delivery: Delivery, **values: Any) -> bool:
        async with self.db.begin() as conn:
            result = await conn.execute(
                deliveries.update()
                .where(
                    deliveries.c.id == delivery.id,
                    deliveries.c.state == PENDING,
                    deliveries.c.attempts == delivery.attempts,
                )
                .values(attempts=deliveries.c.attempts + 1, lease_until=None, **values)
            )
        return bool(result.rowcount)

    async def release(self, delivery_ids: Sequence[int]) -> None:
        """Give up the leases of deliveries cut off at shutdown: due again at once."""
        async with self.db.begin() as conn:
            await conn.execute(
                deliveries.update()
                .where(deliveries.c.id.in_(list(delivery_ids)), deliveries.c.state == PENDING)
                .values(lease_until=None)
            )

    async def recovered(self, endpoint: str, *, now: float) -> int:
        """After a success that followed failures: the endpoint's deliveries waiting
        out a backoff are due now. Returns how many."""
        async with self.db.begin() as conn:
            result = await conn.execute(
                deliveries.update()
                .where(
                    deliveries.c.endpoint == endpoint,
                    deliveries.c.state == PENDING,
                    deliveries.c.next_attempt_at > now,
                )
                .values(next_attempt_at=now)
            )
        return result.rowcount

    # -- endpoints ------------------------------------------------------------------

    async def disable(self, endpoint: str, *, reason: str, now: float) -> None:
        """Stop delivering to ``endpoint`` (it answered 410 Gone) until ``enable``."""
        async with self.db.begin() as conn:
            await conn.execute(
                insert_ignore(conn, delivery_endpoints, ["name"]),
                {"name": endpoint, "disabled_at": now, "disabled_reason": reason},
            )
            await conn.execute(
                delivery_endpoints.update()
                .where(delivery_endpoints.c.name == endpoint)
                .values(disabled_at=now, disabled_reason=reason)
            )

    async def enable(self, endpoint: str, *, now: float) -> bool:
        """Deliver to ``endpoint`` again, its pending deliveries at once; whether it was disabled."""
        async with self.db.begin() as conn:
            result = await conn.execute(delivery_endpoints.delete().where(delivery_endpoints.c.name == endpoint))
            await conn.execute(
                deliveries.update()
                .where(deliveries.c.endpoint == endpoint, deliveries.c.state == PENDING)
                .values(next_attempt_at=now)
            )
        return bool(result.rowcount)

    async def disabled(self, endpoint: str) -> tuple[float, str] | None:
        """When and why ``endpoint`` was disabled, None while it is enabled."""
        async with self.db.connect() as conn:
            return await _disabled(conn, endpoint)

    async def endpoints(self) -> dict[str, dict[str, Any]]:
        """Per endpoint that has deliveries: how many are in each state, and
        ``disabled`` (``{at, reason}`` or None)."""
        counts = sa.select(deliveries.c.endpoint, deliveries.c.state, sa.func.count()).group_by(
            deliveries.c.endpoint, deliveries.c.state
        )
        async with self.db.connect() as conn:
            found: dict[str, dict[str, Any]] = {}
            for endpoint, state, count in await conn.execute(counts):
                found.setdefault(endpoint, {"disabled": None, **dict.fromkeys(STATES, 0)})[state] = int(count)
            for row in await conn.execute(sa.select(delivery_endpoints)):
                entry = found.setdefault(row.name, {"disabled": None, **dict.fromkeys(STATES, 0)})
                entry["disabled"] = {"at": row.disabled_at, "reason": row.disabled_reason}
        return found

    # -- listing and replaying ------------------------------------------------------

    async def listing(
        self,
        *,
        endpoint: str | None = None,
        state: str | None = None,
        contact_id: int | None = None,
        after: int | None = None,
        limit: int = 50,
    ) -> tuple[list[dict[str, Any]], int | None]:
        """Deliveries, newest first, with the id to pass as ``after`` for the next page (None at the end)."""
        query = sa.select(*_LISTED)
        if endpoint is not None:
            query = query.where(deliveries.c.endpoint == endpoint)
        if state is not None:
            query = query.where(deliveries.c.state == state)
        if contact_id is not None:
            query = query.where(deliveries.c.contact_id == contact_id)
        if after is not None:
            query = query.where(deliveries.c.id < after)
        query = query.order_by(deliveries.c.id.desc()).limit(limit + 1)
        async with self.db.connect() as conn:
            rows = (await conn.execute(query)).all()
        page = [dict(row._mapping) for row in rows[:limit]]
        return page, (int(rows[limit - 1].id) if len(rows) > limit else None)

    async def get(self, delivery_id: int) -> dict[str, Any] | None:
        """One delivery, with its payload."""
        async with self.db.connect() as conn:
            row = (await conn.execute(sa.select(deliveries).where(deliveries.c.id == delivery_id))).first()
        return None if row is None else dict(row._mapping)

    async def replay(self, *, ids: Sequence[int] | None = None, endpoint: str | None = None, now: float) -> list[int]:
        """Deliver again, at once and with a fresh retry schedule: the deliveries
        ``ids`` (whatever their state, but for one being made right now), or else
        every failed one (of ``endpoint``). Returns the ids made pending."""
        async with self.db.begin() as conn:
            # A delivery being made now is left to finish: replaying it would send it twice at once.
            in_flight = sa.and_(
                deliveries.c.state == PENDING,
                deliveries.c.lease_until.is_not(None),
                ~lease_over(deliveries.c.lease_until, now, conn.dialect.name),
            )
            query = sa.select(deliveries.c.id).where(~in_flight)
            if ids is not None:
                query = query.where(deliveries.c.id.in_(list(ids)))
            else:
                query = query.where(deliveries.c.state == FAILED)
            if endpoint is not None:
                query = query.where(deliveries.c.endpoint == endpoint)
            chosen = [int(found) for found in (await conn.execute(query.order_by(deliveries.c.id))).scalars()]
            if chosen:
                await conn.execute(
                    deliveries.update()
                    .where(deliveries.c.id.in_(chosen))
                    .values(
                        state=PENDING,
                        attempts=0,
                        next_attempt_at=now,
                        lease_until=None,
                        first_failed_at=None,
                        finished_at=None,
                    )
                )
        if chosen:
            self.db.on_deliveries()
        return chosen

    async def sync_state(self, contact_id: int) -> list[dict[str, Any]]:
        """Per endpoint, where the contact's events stand: ``pending`` and
        ``failed`` counts, the last delivered, the oldest pending one's last
        error and next attempt."""
        query = (
            sa.select(
                deliveries.c.endpoint,
                deliveries.c.state,
                sa.func.count(),
                sa.func.max(deliveries.c.finished_at),
                sa.func.min(deliveries.c.id),
            )
            .where(deliveries.c.contact_id == contact_id)
            .group_by(deliveries.c.endpoint, deliveries.c.state)
        )
        async with self.db.connect() as conn:
            found: dict[str, dict[str, Any]] = {}
            oldest_pending: dict[int, str] = {}
            for endpoint, state, count, finished, first in await conn.execute(query):
                entry = found.setdefault(
                    endpoint,
                    {
                        "endpoint": endpoint,
                        "pending": 0,
                        "failed": 0,
                        "delivered_at": None,
                        "last_error": None,
                        "next_attempt_at": None,
                    },
                )
                if state == DELIVERED:
                    entry["delivered_at"] = finished
                elif state in (PENDING, FAILED):
                    entry[state] = int(count)
                if state == PENDING:
                    oldest_pending[int(first)] = endpoint
            if oldest_pending:
                heads = sa.select(deliveries.c.id, deliveries.c.last_error, deliveries.c.next_attempt_at).where(
                    deliveries.c.id.in_(list(oldest_pending))
                )
                for row in await conn.execute(heads):
                    found[oldest_pending[int(row.id)]].update(
                        last_error=row.last_error, next_attempt_at=row.next_attempt_at
                    )
        return [found[name] for name in sorted(found)]

    async def prune(self, *, delivered_before: float, failed_before: float) -> int:
        """Delete deliveries delivered before ``delivered_before`` and given up before ``failed_before``."""
        async with self.db.begin() as conn:
            result = await conn.execute(
                deliveries.delete().where(
                    sa.or_(
                        sa.and_(deliveries.c.state == DELIVERED, deliveries.c.finished_at < delivered_before),
                        sa.and_(deliveries.c.state == FAILED, deliveries.c.finished_at < failed_before),
                    )
                )
            )
        return result.rowcount

    # -- links between wahub's records and a CRM's ---------------------------------

    async def link(
        self, backend: str, kind: str, local_id: str | int, remote_id: str, *, data: Any = None, now: float
    ) -> None:
        """Keep (or replace) the link of wahub's ``kind`` record ``local_id`` to ``remote_id``."""
        values = {"remote_id": str(remote_id), "data": data, "updated_at": now}
        async with self.db.begin() as conn:
            result = await conn.execute(
                crm_links.update()
                .where(crm_links.c.backend == backend, crm_links.c.kind == kind, crm_links.c.local_id == str(local_id))
                .values(**values)
            )
            if not result.rowcount:
                await conn.execute(
                    insert_ignore(conn, crm_links, ["backend", "kind", "local_id"]),
                    {"backend": backend, "kind": kind, "local_id": str(local_id), **values},
                )
            if kind == "contact":  # one of the contact's ids too, as `crm:<entry>`
                await conn.execute(
                    insert_ignore(conn, contact_identities, ["contact_id", "kind", "value"]),
                    {"contact_id": int(local_id), "kind": f"crm:{backend}", "value": str(remote_id), "created_at": now},
                )

    async def linked(self, backend: str, kind: str, local_id: str | int) -> tuple[str, Any] | None:
        """The remote id (and data) wahub's ``kind`` record ``local_id`` is linked to."""
        query = sa.select(crm_links.c.remote_id, crm_links.c.data).where(
            crm_links.c.backend == backend, crm_links.c.kind == kind, crm_links.c.local_id == str(local_id)
        )
        async with self.db.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else (row.remote_id, row.data)

    async def linked_to(self, backend: str, kind: str, remote_id: str) -> str | None:
        """wahub's id of the ``kind`` record linked to ``remote_id``."""
        query = sa.select(crm_links.c.local_id).where(
            crm_links.c.backend == backend, crm_links.c.kind == kind, crm_links.c.remote_id == str(remote_id)
        )
        async with self.db.connect() as conn:
            return (await conn.execute(query.order_by(crm_links.c.id.desc()))).scalars().first()

    async def unlink(self, backend: str, kind: str, local_id: str | int) -> bool:
        async with self.db.begin() as conn:
            result = await conn.execute(
                crm_links.delete().where(
                    crm_links.c.backend == backend, crm_links.c.kind == kind, crm_links.c.local_id == str(local_id)
                )
            )
        return bool(result.rowcount)

    async def links(self, kind: str, local_id: str | int) -> dict[str, str]:
        """Every backend's remote id of wahub's ``kind`` record ``local_id``."""
        query = sa.select(crm_links.c.backend, crm_links.c.remote_id).where(
            crm_links.c.kind == kind, crm_links.c.local_id == str(local_id)
        )
        async with self.db.connect() as conn:
            return {row.backend: row.remote_id for row in await conn.execute(query)}


async def _disabled(conn: AsyncConnection, endpoint: str) -> tuple[float, str] | None:
    row = (await conn.execute(sa.select(delivery_endpoints).where(delivery_endpoints.c.name == endpoint))).first()
    if row is None or row.disabled_at is None:
        return None
    return float(row.disabled_at), row.disabled_reason or ""


def _delivery(row: Any) -> Delivery:
    payload = row.payload
    event = IntegrationEvent(
        id=row.event_id,
        type=row.type,
        timestamp=payload["timestamp"],
        data=payload["data"],
        contact_id=None if row.contact_id is None else int(row.contact_id),
        attempt=int(row.attempts),
    )
    return Delivery(int(row.id), row.endpoint, event, int(row.attempts))
