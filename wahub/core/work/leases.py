"""Leases on claimed rows (inbox events, queued messages), kept short and renewed.

A claim holds a row for ``LEASE_SECONDS``. While this process works on the
row, a heartbeat renews the lease every ``RENEW_SECONDS``, so a row is never
taken from a process that is still on it, however long the work takes. When
the process dies or loses the database, the renewals stop and the row is free
again within ``LEASE_SECONDS``; a row whose work ended without its outcome
being stored (the database failed) is handed back at the first heartbeat the
database answers. On PostgreSQL no lease runs out during the first
``RESTART_GRACE`` seconds after the server started (see
``wahub.core.storage.leases.lease_over``): after a restart, every process
first gets the time to reconnect and renew the leases it still needs.

A process that could not renew a lease in time gives the work up (its
``lost`` callback), since another process may have taken the row. Work that
cannot be undone, a send from its call to the provider until its id is
stored, is pinned instead: its lease is renewed however late, until then.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

_LOGGER = logging.getLogger(__name__)

LEASE_SECONDS = 8.0
RENEW_SECONDS = 2.0
#: Seconds after a PostgreSQL server start during which no lease runs out.
RESTART_GRACE = 5.0
#: A lease counts as lost this long before its end, for replicas' clocks and claims in progress.
_MARGIN = 1.0

#: A claim: the row's id and its ``attempts`` count at the claim, which tells one claim from the next.
Claim = tuple[int, int]
Renew = Callable[[list[Claim], float], Awaitable[set[Claim]]]
Release = Callable[[list[Claim]], Awaitable[None]]


class LeaseKeeper:
    """Renews the leases of the claims this process works on.

    ``renew(claims, lease_seconds)`` extends the leases and returns the claims
    still held; ``release(claims)`` hands claims back; ``lost(claim)`` is
    called for work to give up.
    """

    def __init__(self, name: str, renew: Renew, release: Release, lost: Callable[[Claim], None]) -> None:
        self.name = name
        self._renew = renew
        self._release = release
        self._lost = lost
        #: Claim -> monotonic time until which its lease surely holds.
        self._held: dict[Claim, float] = {}
        self._pinned: set[Claim] = set()
        #: Claims to hand back -> monotonic time their lease ends anyway.
        self._returning: dict[Claim, float] = {}
        self._failing = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"wahub-leases-{self.name}")

    async def stop(self, within: float) -> None:
        """Stop renewing; claims handed back meanwhile (work cut short by the
        shutdown) are freed at once if the database takes it ``within`` seconds,
        else their leases run out."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._returning and within > 0:
            await self._try(self._release, list(self._returning), within=within)

    def claimed(self, claims: Iterable[Claim], since: float) -> None:
        """Record claims whose query started at monotonic time ``since``."""
        until = since + LEASE_SECONDS - _MARGIN
        for claim in claims:
            self._held[claim] = until

    def holds(self, claim: Claim) -> bool:
        """Whether the lease surely still holds, so the work may go on."""
        return self._held.get(claim, 0.0) > time.monotonic()

    def pin(self, claim: Claim) -> None:
        """Keep renewing ``claim`` however late, until ``done``: its work cannot be given up."""
        self._pinned.add(claim)

    def done(self, claim: Claim) -> None:
        """The work ended and its outcome is stored: stop renewing."""
        self._held.pop(claim, None)
        self._pinned.discard(claim)

    def hand_back(self, claim: Claim) -> None:
        """The work ended without its outcome stored: free the row at the next heartbeat."""
        until = self._held.pop(claim, None)
        self._pinned.discard(claim)
        if until is not None:
            self._returning[claim] = until

    async def _run(self) -> None:
        # A database call is never cut off (a cancelled statement may leave its
        # connection unusable): a heartbeat still waiting for the database
        # delays the next one, while lapsed work is still given up on time.
        beating: asyncio.Task[None] | None = None
        try:
            while True:
                await asyncio.sleep(RENEW_SECONDS)
                self._give_up_lapsed()
                if beating is None or beating.done():
                    beating = asyncio.create_task(self._beat_logged(), name=f"wahub-lease-beat-{self.name}")
        finally:
            if beating is not None:
                beating.cancel()
                await asyncio.gather(beating, return_exceptions=True)

    async def _beat_logged(self) -> None:
        try:
            await self.beat()
        except Exception:
            _LOGGER.exception("the %s lease heartbeat failed; trying again", self.name)

    def _give_up_lapsed(self) -> None:
        now = time.monotonic()
        for claim, until in list(self._held.items()):
            if until <= now and claim not in self._pinned:
                self._give_up(claim)

    async def beat(self) -> None:
        """One heartbeat: give up lapsed work, hand back what ended, renew the rest."""
        self._give_up_lapsed()
        now = time.monotonic()
        self._returning = {claim: until for claim, until in self._returning.items() if until > now}
        if self._returning:
            returning = list(self._returning)
            if await self._try(self._release, returning):
                for claim in returning:
                    self._returning.pop(claim, None)
        if self._held:
            await self._renew_held(time.monotonic())

    async def _renew_held(self, started: float) -> None:
        claims = list(self._held)
        renewed: set[Claim] = set()

        async def renew(batch: list[Claim]) -> None:
            renewed.update(await self._renew(batch, LEASE_SECONDS))

        if not await self._try(renew, claims):
            return
        until = started + LEASE_SECONDS - _MARGIN
        for claim in claims:
            if claim not in self._held:
                continue  # finished meanwhile
            if claim in renewed:
                self._held[claim] = until
            elif claim not in self._pinned:
                self._give_up(claim)  # another claim has the row now

    async def _try(
        self, call: Callable[[list[Claim]], Awaitable[None]], claims: list[Claim], within: float | None = None
    ) -> bool:
        try:
            async with asyncio.timeout(within):
                await call(claims)
        except Exception as exc:  # noqa: BLE001 - the next heartbeat tries again
            if not self._failing:
                _LOGGER.warning(
                    "cannot renew the %s leases (%r); trying again every %.0f s", self.name, exc, RENEW_SECONDS
                )
            self._failing = True
            return False
        if self._failing:
            _LOGGER.info("%s leases renewed again", self.name)
        self._failing = False
        return True

    def _give_up(self, claim: Claim) -> None:
        del self._held[claim]
        _LOGGER.warning(
            "the lease of %s row %d ran out before it could be renewed; leaving the row", self.name, claim[0]
        )
        self._lost(claim)
