"""Reminders: the ``schedules`` table is the truth of what fires when.

Each row fires at ``next_fire_at``, once (``cron`` NULL) or again and again
(its cron read in ``timezone``). A firing is one transaction: it locks the
due row (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so replicas firing at once
never both take it; SQLite has one writer), decides whether the occurrence
still goes, advances the row and creates the firing's campaign, whose
idempotency key ``schedule:<id>:<occurrence>`` makes a second creation a no-op.
Cron arithmetic is the caller's (``NextOccurrence``, ``CatchUp``): this layer
only stores.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from wahub.core.models import MessageStatus
from wahub.core.storage.campaigns import EXPANDING, QUEUED, SCHEDULED, create_campaign
from wahub.core.storage.engine import Database, insert_ignore
from wahub.core.storage.schema import campaigns, contacts, messages, schedules
from wahub.core.storage.segments import Segment, segment_filter

#: A schedule's states: still firing, nothing left to fire, stopped.
ACTIVE, DONE, CANCELLED = "active", "done", "cancelled"
#: Where a schedule comes from: the ``reminders:`` section or the REST API.
CONFIG, API = "config", "api"
#: What became of an occurrence.
FIRED, FIRED_LATE, SKIPPED = "fired", "fired_late", "skipped"
#: Why an occurrence was skipped: it came later than ``misfire_grace`` allows,
#: or a later occurrence, also due already, goes instead.
MISFIRE_GRACE_PASSED, SUPERSEDED = "misfire_grace_passed", "superseded"
#: A firing this many seconds after its time still counts as on time.
ON_TIME_SECONDS = 60.0

#: Campaign ids a schedule's answer lists: its latest firings'.
LATEST_NOTIFICATIONS = 20

#: The next occurrence of a schedule (its row) strictly after a unix time; None: it fires no more.
NextOccurrence = Callable[[Mapping[str, Any], float], float | None]


@dataclass(frozen=True)
class Missed:
    """A due schedule caught up at ``now``: the latest occurrence due, and the
    earlier due ones it supersedes, counted by why they are skipped."""

    occurrence: float
    grace_passed: int = 0
    superseded: int = 0


#: The catch-up of a due schedule (its row) at a unix time.
CatchUp = Callable[[Mapping[str, Any], float], Missed]


@dataclass(frozen=True)
class Notifications:
    """The campaigns a schedule's firings created: how many, and the latest
    ``LATEST_NOTIFICATIONS`` ids, newest first."""

    count: int
    latest: list[int]


@dataclass(frozen=True)
class ScheduleSpec:
    """What a schedule sends, to whom and when (the columns a creator chooses)."""

    provider: str
    audience: Mapping[str, Any]
    misfire_grace: float
    template: str | None = None
    language: str | None = None
    message: Mapping[str, Any] | None = None
    parameters: Mapping[str, Any] | None = None
    cron: str | None = None
    timezone: str | None = None
    event_at: float | None = None


@dataclass(frozen=True)
class Firing:
    """One due occurrence handled: fired (on time or late) or skipped."""

    schedule_id: int
    name: str
    occurrence: float
    outcome: str
    #: Seconds after its time that the occurrence was handled.
    late: float
    campaign_id: int | None
    #: Occurrences skipped in this step, by reason (this one included when skipped).
    skipped: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class SyncResult:
    """What keeping the configured reminders in step changed: schedule names."""

    created: list[str]
    updated: list[str]
    cancelled: list[str]


def _values(spec: ScheduleSpec) -> dict[str, Any]:
    values = asdict(spec)
    values["audience"] = dict(spec.audience)
    values["message"] = dict(spec.message) if spec.message is not None else None
    values["parameters"] = dict(spec.parameters) if spec.parameters is not None else None
    return values


def _schedule(row: Any) -> dict[str, Any]:
    return dict(row._mapping)


class ScheduleStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create_api(
        self, spec: ScheduleSpec, *, next_fire_at: float, now: float, idempotency_key: str
    ) -> tuple[dict[str, Any], bool]:
        """Create a reminder of the REST API, named ``api:<id>``; the same
        ``idempotency_key`` yields the first one. Returns it and whether it is new."""
        values = {
            **_values(spec),
            "name": f"api:new:{uuid.uuid4().hex}",
            "source": API,
            "next_fire_at": next_fire_at,
            "state": ACTIVE,
            "idempotency_key": idempotency_key,
            "created_at": now,
            "updated_at": now,
        }
        async with self.db.begin() as conn:
            result = await conn.execute(insert_ignore(conn, schedules, ["idempotency_key"]).values(**values))
            key = schedules.c.idempotency_key == idempotency_key
            found = int((await conn.execute(sa.select(schedules.c.id).where(key))).scalar_one())
            if result.rowcount:
                await conn.execute(schedules.update().where(schedules.c.id == found).values(name=f"api:{found}"))
            row = (await conn.execute(sa.select(schedules).where(schedules.c.id == found))).one()
        return _schedule(row), bool(result.rowcount)

    async def get(self, schedule_id: int) -> dict[str, Any] | None:
        async with self.db.connect() as conn:
            row = (await conn.execute(sa.select(schedules).where(schedules.c.id == schedule_id))).first()
        return None if row is None else _schedule(row)

    async def get_by_name(self, name: str) -> dict[str, Any] | None:
        async with self.db.connect() as conn:
            row = (await conn.execute(sa.select(schedules).where(schedules.c.name == name))).first()
        return None if row is None else _schedule(row)

    async def page(self, *, after: int | None = None, limit: int = 50) -> tuple[list[dict[str, Any]], int | None]:
        """Schedules by id, from both sources; the page and the next page's cursor (None at the end)."""
        statement = sa.select(schedules)
        if after is not None:
            statement = statement.where(schedules.c.id > after)
        async with self.db.connect() as conn:
            rows = (await conn.execute(statement.order_by(schedules.c.id).limit(limit + 1))).all()
        return [_schedule(row) for row in rows[:limit]], int(rows[limit - 1].id) if len(rows) > limit else None

    async def cancel(self, schedule_id: int, *, now: float) -> dict[str, Any] | None:
        """Stop a schedule (a finished one stays ``done``); None when no schedule has this id."""
        async with self.db.begin() as conn:
            await conn.execute(
                schedules.update()
                .where(schedules.c.id == schedule_id, schedules.c.state == ACTIVE)
                .values(state=CANCELLED, next_fire_at=None, updated_at=now)
            )
            row = (await conn.execute(sa.select(schedules).where(schedules.c.id == schedule_id))).first()
        return None if row is None else _schedule(row)

    async def notifications(self, schedule_ids: Sequence[int]) -> dict[int, Notifications]:
        """The campaigns (notifications) each schedule's firings created, read
        through the campaigns' idempotency key index."""
        found: dict[int, Notifications] = {}
        async with self.db.connect() as conn:
            for schedule_id in schedule_ids:
                mine = _fired_by(schedule_id)
                count = int(await conn.scalar(sa.select(sa.func.count()).select_from(campaigns).where(mine)) or 0)
                latest = sa.select(campaigns.c.id).where(mine).order_by(campaigns.c.id.desc())
                ids = (await conn.execute(latest.limit(LATEST_NOTIFICATIONS))).scalars().all() if count else []
                found[schedule_id] = Notifications(count, [int(campaign_id) for campaign_id in ids])
        return found

    async def unfinished_notifications(self, schedule_id: int) -> list[int]:
        """The schedule's campaigns still waiting, being written, or with messages
        still queued: what cancelling the schedule should stop too."""
        waiting = sa.exists().where(messages.c.campaign_id == campaigns.c.id, messages.c.status == MessageStatus.QUEUED)
        query = sa.select(campaigns.c.id).where(
            _fired_by(schedule_id),
            sa.or_(campaigns.c.state.in_([SCHEDULED, EXPANDING]), sa.and_(campaigns.c.state == QUEUED, waiting)),
        )
        async with self.db.connect() as conn:
            return [int(campaign_id) for campaign_id in (await conn.execute(query.order_by(campaigns.c.id))).scalars()]

    async def audience_zones(self, provider: str, tags: Sequence[str]) -> set[str | None]:
        """The time zones (None: unknown) of the provider's contacts that have every one of ``tags``."""
        async with self.db.connect() as conn:
            where = segment_filter(Segment(provider, tuple(tags)), conn.dialect.name)
            query = sa.select(contacts.c.timezone).where(where).distinct()
            return set((await conn.execute(query)).scalars().all())

    async def address_zones(self, provider: str, addresses: Sequence[str]) -> dict[str, str | None]:
        """Each address's contact's time zone (None: unknown, or no such contact)."""
        query = sa.select(contacts.c.address, contacts.c.timezone).where(
            contacts.c.provider == provider, contacts.c.address.in_(list(addresses))
        )
        async with self.db.connect() as conn:
            known = {address: zone for address, zone in (await conn.execute(query)).all()}
        return {address: known.get(address) for address in addresses}

    async def sync_config(
        self, wanted: Mapping[str, ScheduleSpec], first_firing: NextOccurrence, *, now: float
    ) -> SyncResult:
        """Make the configured schedules (``source`` config) be exactly ``wanted``
        (name -> spec), in one transaction: a new one fires first at
        ``first_firing(spec, now)``; a changed one keeps its next firing unless its
        cron or time zone changed; one no longer wanted is cancelled."""
        result = SyncResult([], [], [])
        async with self.db.begin() as conn:
            rows = (await conn.execute(sa.select(schedules).where(schedules.c.source == CONFIG))).all()
            existing = {row.name: _schedule(row) for row in rows}
            for name, spec in wanted.items():
                await self._put_config(conn, name, spec, existing.get(name), first_firing, now, result)
            gone = [name for name, row in existing.items() if name not in wanted and row["state"] == ACTIVE]
            if gone:
                await conn.execute(
                    schedules.update()
                    .where(schedules.c.source == CONFIG, schedules.c.name.in_(gone))
                    .values(state=CANCELLED, next_fire_at=None, updated_at=now)
                )
                result.cancelled.extend(sorted(gone))
        return result

    async def _put_config(
        self,
        conn: AsyncConnection,
        name: str,
        spec: ScheduleSpec,
        row: Mapping[str, Any] | None,
        first_firing: NextOccurrence,
        now: float,
        result: SyncResult,
    ) -> None:
        values = _values(spec)
        if row is None:
            values.update(name=name, source=CONFIG, state=ACTIVE, created_at=now, updated_at=now)
            values["next_fire_at"] = first_firing(values, now)
            await conn.execute(schedules.insert().values(**values))
            result.created.append(name)
            return
        restart = row["state"] != ACTIVE or (row["cron"], row["timezone"]) != (spec.cron, spec.timezone)
        if not restart and all(row[key] == value for key, value in values.items()):
            return
        if restart:
            values.update(state=ACTIVE, next_fire_at=first_firing(values, now))
        await conn.execute(schedules.update().where(schedules.c.id == row["id"]).values(**values, updated_at=now))
        result.updated.append(name)

    async def fire_next(
        self, now: float, following: NextOccurrence, catch_up: CatchUp, *, default_zone: str = "UTC"
    ) -> Firing | None:
        """Handle the most overdue schedule due at ``now``, in one transaction,
        or return None when none is due (or every due one is another replica's).

        The occurrence fires if it is at most ``misfire_grace`` seconds late
        (``fired_late`` past ``ON_TIME_SECONDS``), else it is skipped; earlier
        occurrences that a later due one supersedes are skipped. The schedule
        then waits for its next occurrence after ``now``, or is ``done``. The
        campaign counts its recipients (a segment's in ``default_zone`` for
        contacts without a zone) as it is created."""
        due = (
            sa.select(schedules)
            .where(schedules.c.state == ACTIVE, schedules.c.next_fire_at <= now)
            .order_by(schedules.c.next_fire_at, schedules.c.id)
            .limit(1)
            .with_for_update(skip_locked=True)
        )
        async with self.db.begin() as conn:
            row = (await conn.execute(due)).first()
            if row is None:
                return None
            return await _fire(conn, _schedule(row), now, following, catch_up(_schedule(row), now), default_zone)


def _fired_by(schedule_id: int) -> sa.ColumnElement[bool]:
    """Campaigns whose key is ``schedule:<id>:<digits>``: a range of the unique
    key's index, bounded by digits (which every collation orders alike)."""
    prefix = f"schedule:{schedule_id}:"
    key = campaigns.c.idempotency_key
    return sa.and_(key >= f"{prefix}0", key <= f"{prefix}{'9' * 20}", key.like(f"{prefix}%"))


async def _recipients(conn: AsyncConnection, provider: str, audience: Mapping[str, Any], default_zone: str) -> int:
    if "to" in audience:
        return len(audience["to"])
    spec = audience["segment"]
    segment = Segment(provider, tuple(spec["tags"]), spec.get("timezone"), default_zone)
    counting = sa.select(sa.func.count()).select_from(contacts).where(segment_filter(segment, conn.dialect.name))
    return int(await conn.scalar(counting) or 0)


async def _fire(
    conn: AsyncConnection,
    row: Mapping[str, Any],
    now: float,
    following: NextOccurrence,
    missed: Missed,
    default_zone: str,
) -> Firing:
    occurrence, grace = missed.occurrence, float(row["misfire_grace"])
    skipped: Counter[str] = Counter()
    if missed.grace_passed:
        skipped[MISFIRE_GRACE_PASSED] += missed.grace_passed
    if missed.superseded:
        skipped[SUPERSEDED] += missed.superseded
    late = now - occurrence
    campaign_id = None
    if late > grace:
        skipped[MISFIRE_GRACE_PASSED] += 1
        outcome = SKIPPED
    else:
        outcome = FIRED if late <= ON_TIME_SECONDS else FIRED_LATE
        campaign_id, _new = await create_campaign(
            conn,
            provider=row["provider"],
            template=row["template"],
            language=row["language"],
            message=row["message"],
            parameters=row["parameters"],
            audience=row["audience"],
            source=f"reminder:{row['name']}",
            idempotency_key=f"schedule:{row['id']}:{int(occurrence)}",
            now=now,
            recipients=await _recipients(conn, row["provider"], row["audience"], default_zone),
        )
    next_fire_at = following(row, now)
    values: dict[str, Any] = {
        "next_fire_at": next_fire_at,
        "state": ACTIVE if next_fire_at is not None else DONE,
        "skipped": schedules.c.skipped + sum(skipped.values()),
        "updated_at": now,
    }
    if campaign_id is not None:
        values.update(fired=schedules.c.fired + 1, last_fired_at=now)
    await conn.execute(
        schedules.update()
        .where(schedules.c.id == row["id"], schedules.c.next_fire_at == row["next_fire_at"])
        .values(**values)
    )
    return Firing(int(row["id"]), row["name"], occurrence, outcome, late, campaign_id, dict(skipped))
