"""The claim loop of the inbox workers and the dispatcher.

Each turn asks how many rows may start (``capacity``), claims up to that many
with a lease (``claim``), records the claims with the ``LeaseKeeper`` and hands
the rows to ``start``. When it got fewer rows than it asked for, it waits for
its ``wake`` event, at most ``poll`` seconds (or the shorter wait ``capacity``
named): rows whose retry time or lease has come need no event. A failed claim
is logged and tried again after ``poll`` seconds: each time with its traceback
when the database refused it, once when the database is unreachable, until a
claim works again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, Protocol, TypeVar

from wahub.core.work.leases import LeaseKeeper


class Claimable(Protocol):
    """A claimed row: its id and its ``attempts`` count at the claim."""

    @property
    def id(self) -> int: ...

    @property
    def attempts(self) -> int: ...


RowT = TypeVar("RowT", bound=Claimable)


class ClaimLoop(Generic[RowT]):
    """Claims rows of ``what`` (as the logs name them) until ``stop``.

    - ``capacity()``: how many rows may start now, and the longest wait when
      fewer are claimed;
    - ``claim(count)``: claims up to ``count`` rows, or returns None when there
      is nothing to claim for now (no database call made);
    - ``start(rows)``: takes the rows of one claim (their leases are recorded already);
    - ``unreachable(exc)``: whether a failed claim found the database unreachable;
    - ``report(exc)``: called with the first failure of a series (error reporting).
    """

    def __init__(
        self,
        what: str,
        *,
        capacity: Callable[[], tuple[int, float]],
        claim: Callable[[int], Awaitable[Sequence[RowT] | None]],
        start: Callable[[Sequence[RowT]], None],
        leases: LeaseKeeper,
        wake: asyncio.Event,
        poll: float,
        unreachable: Callable[[Exception], bool],
        report: Callable[[Exception], None],
        logger: logging.Logger,
    ) -> None:
        self.what = what
        self._capacity = capacity
        self._claim = claim
        self._start = start
        self._leases = leases
        self._wake = wake
        self._poll = poll
        self._unreachable = unreachable
        self._report = report
        self._logger = logger
        self._stopping = False
        #: Whether the last claim found the database unreachable.
        self.database_away = False
        #: Whether the last claim failed.
        self.failing = False
        #: When a turn last went without a failed claim.
        self.turned_at = time.monotonic()
        self.task: asyncio.Task[None] | None = None

    def start_task(self, name: str) -> asyncio.Task[None]:
        self.task = asyncio.create_task(self.run(), name=name)
        return self.task

    def stop(self) -> None:
        """Claim no more: the loop ends once a claim under way has been taken in."""
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            rows, want, wait = await self._turn()
            if len(rows) < want or want <= 0:
                try:
                    async with asyncio.timeout(min(wait, self._poll)):
                        await self._wake.wait()
                except TimeoutError:
                    pass

    async def _turn(self) -> tuple[Sequence[RowT], int, float]:
        want, wait = self._capacity()
        since = time.monotonic()
        claimed: Sequence[RowT] | None = None
        try:
            claimed = await self._claim(want) if want > 0 else None
        except Exception as exc:  # noqa: BLE001 - logged here, tried again
            self._failed(exc)
            return [], want, self._poll
        self.failing, self.turned_at = False, time.monotonic()
        if claimed is None:
            return [], want, wait
        if self.database_away:
            self._logger.info("claiming %s again", self.what)
            self.database_away = False
        self._leases.claimed([(row.id, row.attempts) for row in claimed], since)
        self._start(claimed)
        return claimed, want, wait

    def _failed(self, exc: Exception) -> None:
        self.failing = True
        if not self.database_away:
            self._report(exc)
        if self._unreachable(exc):
            if not self.database_away:
                self._logger.warning(
                    "cannot claim %s, the database is unreachable (%r); trying again every %g s",
                    self.what,
                    exc,
                    self._poll,
                )
            self.database_away = True
            return
        self._logger.exception("cannot claim %s; trying again", self.what)
        self.database_away = False
