"""Singleton roles across replicas: which process dispatches each business
number's outbox, and which runs the scheduler.

On SQLite one process owns the database file, so it holds every role from the
start. On PostgreSQL each role is a session-level advisory lock held on a
connection of its own: the process that gets the lock has the role until it
exits or loses that connection, and PostgreSQL frees the lock the moment the
connection ends (a killed process's socket is closed by its kernel). The
others try again every ``CHECK_SECONDS``, so a role moves within that time.

When the server ends that connection (a restart of PostgreSQL), the holder
hears it at once and gives its roles up before the server can grant the locks
again; every process then tries again every ``CHECK_SECONDS``, and one takes
each role back within that time of the database answering.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from contextlib import suppress

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from wahub.core.storage.store import Storage

_LOGGER = logging.getLogger(__name__)

CHECK_SECONDS = 2.0
#: First key of wahub's two-key advisory locks; the second is hashtext(role).
_ROLE_LOCK_SPACE = 0x7761

RoleCallback = Callable[[str], Awaitable[None]]


class Leadership:
    def __init__(self, storage: Storage, roles: Iterable[str]) -> None:
        self.storage = storage
        self.roles = list(roles)
        self.held: set[str] = set()
        self._conn: AsyncConnection | None = None
        self._acquired: list[RoleCallback] = []
        self._lost: list[RoleCallback] = []
        self._task: asyncio.Task[None] | None = None
        #: Set when the server ended the roles' connection, to check at once.
        self._ended = asyncio.Event()

    def holds(self, role: str) -> bool:
        return role in self.held

    def on_change(self, acquired: RoleCallback, lost: RoleCallback) -> None:
        """Call ``acquired(role)`` when this process gets a role, ``lost(role)`` when it loses one."""
        self._acquired.append(acquired)
        self._lost.append(lost)

    async def start(self) -> None:
        await self._check()
        if not self.storage.is_sqlite:
            self._task = asyncio.create_task(self._run(), name="wahub-leadership")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._drop(stopping=True)

    async def _run(self) -> None:
        while True:
            with suppress(TimeoutError):
                async with asyncio.timeout(CHECK_SECONDS):
                    await self._ended.wait()
            self._ended.clear()
            try:
                await self._check()
            except Exception:
                _LOGGER.exception("checking replica roles failed; trying again")

    async def _check(self) -> None:
        if self.storage.is_sqlite:
            for role in self.roles:
                await self._gain(role)
            return
        try:
            if self._conn is None:
                self._conn = await self._connect()
            if self.held:
                await self._conn.execute(sa.text("SELECT 1"))
            for role in self.roles:
                if role not in self.held:
                    got = await self._conn.execute(
                        sa.text("SELECT pg_try_advisory_lock(:space, hashtext(:role))"),
                        {"space": _ROLE_LOCK_SPACE, "role": role},
                    )
                    # Autocommit-like: the lock is session-level, the transaction only wraps the query.
                    await self._conn.commit()
                    if got.scalar_one():
                        await self._gain(role)
        except Exception as exc:  # noqa: BLE001 - a lost connection means the roles are lost
            if self.held:
                _LOGGER.warning("lost the database connection that holds replica roles: %r", exc)
            else:
                _LOGGER.debug("cannot take replica roles yet: %r", exc)
            await self._drop()

    async def _connect(self) -> AsyncConnection:
        conn = await self.storage.engine.connect()
        try:
            driver = (await conn.get_raw_connection()).driver_connection
            if driver is not None:
                driver.add_termination_listener(self._connection_ended)
        except BaseException:
            await conn.close()
            raise
        return conn

    def _connection_ended(self, driver_connection: object) -> None:
        # Also called when this process closes the connection; then there is nothing to check.
        if self._conn is not None:
            self._ended.set()

    async def _gain(self, role: str) -> None:
        if role in self.held:
            return
        self.held.add(role)
        _LOGGER.info("this process now runs %s", role)
        for callback in self._acquired:
            await callback(role)

    async def _drop(self, *, stopping: bool = False) -> None:
        """Give up every role: at INFO when the process is stopping, at WARNING
        when it loses them while running (another replica may take them over)."""
        lost, self.held = self.held, set()
        conn, self._conn = self._conn, None
        if conn is not None:
            # Closed, not handed back to the pool: a session that still holds a
            # lock must end, or no process could take the role.
            with suppress(Exception):
                await conn.invalidate()
            with suppress(Exception):
                await conn.close()
        for role in lost:
            if stopping:
                _LOGGER.info("this process no longer runs %s (shutting down)", role)
            else:
                _LOGGER.warning("this process no longer runs %s", role)
            for callback in self._lost:
                await callback(role)


def dispatch_role(provider: str) -> str:
    return f"dispatch:{provider}"


SCHEDULER_ROLE = "scheduler"
