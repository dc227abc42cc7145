"""Leases of claimed inbox rows and queued messages: when one has run out,
renewing the ones in progress, handing back the ones cut short.

See ``wahub.core.work.leases`` for how the daemon uses them.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from wahub.core.models import InboxState, MessageStatus
from wahub.core.storage.schema import inbox, messages
from wahub.core.work.leases import RESTART_GRACE, Claim

if TYPE_CHECKING:
    from wahub.core.storage.engine import Database

#: asyncpg's errors that say the server went away. Read from ``sys.modules``:
#: with SQLite only, asyncpg is never imported, and none of its errors can occur.
_CONNECTION_ERRORS = ("PostgresConnectionError", "CannotConnectNowError", "AdminShutdownError", "CrashShutdownError")


def _connection_errors() -> tuple[type[BaseException], ...]:
    asyncpg = sys.modules.get("asyncpg")
    return tuple(getattr(asyncpg, name) for name in _CONNECTION_ERRORS) if asyncpg is not None else ()


def database_unreachable(exc: BaseException, *, from_storage: bool = False) -> bool:
    """Whether ``exc`` says the database could not be reached or ended the
    connection (a restart, a network failure), rather than refused a query.

    A refused connection or a time-out may come from anything that talks to
    the network; they count only when ``exc`` came from a storage call
    (``from_storage``), where the database is the only peer."""
    if from_storage and isinstance(exc, (OSError, TimeoutError)):
        return True
    seen: BaseException | None = exc
    lost = _connection_errors()
    # SQLAlchemy wraps the driver's error (``orig``), which wraps asyncpg's (``__cause__``).
    for _depth in range(4):
        if seen is None:
            return False
        if isinstance(seen, lost):
            return True
        if isinstance(seen, sa.exc.DBAPIError):
            if seen.connection_invalidated:
                return True
            seen = seen.orig
        else:
            seen = seen.__cause__
    return False


def lease_over(lease_until: Any, now: float | sa.BindParameter[float], dialect: str) -> sa.ColumnElement[bool]:
    """Whether a lease has run out at ``now``. On PostgreSQL none does in the
    first ``RESTART_GRACE`` seconds after the server started: after a restart,
    every process first gets the time to renew the leases it still holds."""
    over: sa.ColumnElement[bool] = lease_until <= now
    if dialect == "sqlite":
        return over
    uptime = sa.text(f"now() - pg_postmaster_start_time() >= interval '{RESTART_GRACE:g} seconds'")
    return sa.and_(over, uptime)


def _claims_in(table: sa.Table, claims: Sequence[Claim]) -> sa.ColumnElement[bool]:
    """Rows of ``table`` still under one of ``claims`` (their id and attempts)."""
    return sa.tuple_(table.c.id, table.c.attempts).in_([tuple(claim) for claim in claims])


class LeaseStore:
    """``claim_lock(conn)`` is the lock inbox claims take, held by whatever re-opens an inbox row."""

    def __init__(self, db: Database, claim_lock: Callable[[AsyncConnection], Awaitable[None]]) -> None:
        self.db = db
        self._claim_lock = claim_lock

    async def renew_inbox(self, claims: Sequence[Claim], lease_seconds: float) -> set[Claim]:
        """Extend the leases of inbox rows in progress; returns the claims still
        held. A row whose outcome its claim has stored (done or failed) counts
        as held: no other claim can take it, and the work after the commit (the
        hooks on what it stored) goes on until it tells the keeper it is done."""
        if not claims:
            return set()
        async with self.db.begin() as conn:
            renewed = await conn.execute(
                inbox.update()
                .where(_claims_in(inbox, claims), inbox.c.state == InboxState.PROCESSING)
                .values(lease_until=time.time() + lease_seconds)
                .returning(inbox.c.id, inbox.c.attempts)
            )
            held = {(row.id, row.attempts) for row in renewed}
            rest = [claim for claim in claims if tuple(claim) not in held]
            if rest:
                ended = await conn.execute(
                    sa.select(inbox.c.id, inbox.c.attempts).where(
                        _claims_in(inbox, rest), inbox.c.state.in_([InboxState.DONE, InboxState.FAILED])
                    )
                )
                held.update((row.id, row.attempts) for row in ended)
            return held

    async def hand_back_inbox(self, claims: Sequence[Claim]) -> None:
        """Make claimed inbox rows runnable again at once: their processing was
        cut short (the database failed), not refused."""
        if not claims:
            return
        async with self.db.begin() as conn:
            await self._claim_lock(conn)
            await conn.execute(
                inbox.update()
                .where(_claims_in(inbox, claims), inbox.c.state == InboxState.PROCESSING)
                .values(state=InboxState.PENDING, lease_until=None)
            )

    async def renew_outbox(self, claims: Sequence[Claim], lease_seconds: float) -> set[Claim]:
        """Extend the leases of claimed messages not yet sent; returns the claims still held."""
        if not claims:
            return set()
        async with self.db.begin() as conn:
            renewed = await conn.execute(
                messages.update()
                .where(
                    _claims_in(messages, claims),
                    messages.c.status == MessageStatus.QUEUED,
                    messages.c.lease_until.is_not(None),
                )
                .values(lease_until=time.time() + lease_seconds)
                .returning(messages.c.id, messages.c.attempts)
            )
            return {(row.id, row.attempts) for row in renewed}

    async def hand_back_outbox(self, claims: Sequence[Claim]) -> None:
        """End the leases of claimed messages still queued, so they are due at once."""
        if not claims:
            return
        async with self.db.begin() as conn:
            await conn.execute(
                messages.update()
                .where(_claims_in(messages, claims), messages.c.status == MessageStatus.QUEUED)
                .values(lease_until=None, updated_at=time.time())
            )
