"""Inbox workers: run each stored webhook event through the pipeline.

Rows of one contact run in order (the storage hands out only a contact's
oldest unfinished row); rows of different contacts run concurrently, and the
delivery statuses of a claim as one batch (``steps.statuses``). Every
step is idempotent, so a row interrupted by a crash simply runs again: the
replies it queues carry keys derived from the event, and the outbox keeps one
message per key.

A row's claim is a short lease that a heartbeat renews while the row runs
(``wahub.core.work.leases``): a row cut short by a database failure runs again as
soon as the database answers, and one whose process died within seconds.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Coroutine, Sequence
from typing import Any

from aiohttp import web

from wahub.core.errors import LeaseLost, Unprocessable
from wahub.core.hub import HUB_KEY, Hub
from wahub.core.inbound.failures import is_permanent
from wahub.core.inbound.steps import Deferred, batched_status, run_steps, statuses
from wahub.core.models import StatusEvent
from wahub.core.plugins import report_exception
from wahub.core.storage.inbox import InboxRow
from wahub.core.storage.leases import database_unreachable
from wahub.core.work.backoff import backoff
from wahub.core.work.leases import LEASE_SECONDS, Claim, LeaseKeeper
from wahub.core.work.lifecycle import SHUTDOWN_GRACE, within_grace
from wahub.core.work.loop import ClaimLoop

_LOGGER = logging.getLogger(__name__)

#: Time one inbox row may take (its file, observers, routing, an AI model's
#: answer, replying) before it is retried.
PROCESS_SECONDS = 180.0
#: Attempts at a row failing for a passing reason (the database, the network, a time-out).
MAX_ATTEMPTS = 10
#: Attempts at a row failing because of its own data (a type or value error):
#: another try would fail the same way, so it gives up soon, to be replayed once fixed.
PERMANENT_ATTEMPTS = 3
#: Seconds between checks for rows whose retry time or lease has come.
POLL_SECONDS = 1.0
#: While webhooks wait for their commit, processing takes at most this share
#: of the time: acknowledging comes first, yet processing never stops.
BUSY_SHARE = 0.1


#: The log line of a row whose outcome another claim's stands for.
_CLAIMED_AGAIN = "inbox row %d was claimed again after its lease ran out; leaving it to that claim"

#: Delivery statuses a claim may take as one batch, applied in one transaction:
#: a campaign's thousands of statuses a second drain without starving the replies.
STATUS_BATCH = 50

#: Backoff of a failing row: 2 s, 4 s, ... capped at 5 minutes.
RETRY_BASE_SECONDS = 1.0
RETRY_CAP_SECONDS = 300.0


class InboxProcessor:
    def __init__(self, hub: Hub, workers: int) -> None:
        self.hub = hub
        self.workers = workers
        #: Rows in progress, with the time each started.
        self._running: dict[asyncio.Task[None], float] = {}
        self._claims: dict[Claim, asyncio.Task[None]] = {}
        storage = hub.storage.leases
        self.leases = LeaseKeeper("inbox", storage.renew_inbox, storage.hand_back_inbox, self._lost)
        self._resume_at = 0.0
        self.claims = ClaimLoop(
            "inbox events",
            capacity=self._free_slots,
            claim=self._claim,
            start=self._start,
            leases=self.leases,
            wake=hub.inbox_ready,
            poll=POLL_SECONDS,
            unreachable=functools.partial(database_unreachable, from_storage=True),
            report=lambda exc: report_exception(hub, exc, {"loop": "inbox"}),
            logger=_LOGGER,
        )
        #: Seconds without progress (see ``stuck_reason``) after which the inbox counts as stuck.
        self.stuck_after: float = hub.config["wahub"]["inbox_stuck_after"]
        #: When a row last ended.
        self._progress_at = time.monotonic()

    def start(self) -> None:
        self.claims.start_task("wahub-inbox-claimer")
        self.leases.start()

    def _free_slots(self) -> tuple[int, float]:
        """How many rows may start now, and how long to wait when none may."""
        if not self.hub.intake_busy():
            return self.workers - len(self._running), POLL_SECONDS
        if self._running:
            return 0, POLL_SECONDS  # the row's end wakes the loop
        pause = self._resume_at - time.monotonic()
        return (0, pause) if pause > 0 else (1, POLL_SECONDS)

    async def _claim(self, count: int) -> list[InboxRow]:
        return await self.hub.storage.claim_inbox(count, LEASE_SECONDS, statuses=STATUS_BATCH)

    def _start(self, rows: Sequence[InboxRow]) -> None:
        """Start each claimed row on its own, but the delivery statuses as one batch."""
        batch = [(row, event) for row in rows if (event := batched_status(row)) is not None]
        if batch:
            self._run(self._process_statuses(batch), [row for row, _event in batch])
        in_batch = {row.id for row, _event in batch}
        for row in rows:
            if row.id not in in_batch:
                self._run(self._process(row), [row])

    def _run(self, work: Coroutine[Any, Any, None], rows: Sequence[InboxRow]) -> None:
        task = asyncio.create_task(work, name=f"wahub-inbox-{rows[0].id}")
        self._running[task] = time.monotonic()
        for row in rows:
            self._claims[row.id, row.attempts] = task
        task.add_done_callback(self._done)

    def stuck_reason(self) -> str | None:
        """Why processing is stuck, as a short code, or None: no claim worked and
        no row ended for ``stuck_after`` seconds, because claims keep failing
        (``inbox_claims_failing``) or the claim loop does not turn at all
        (``inbox_stuck``: it waits for the database, or ended). A burst never
        trips it: claims keep working through one. /readyz also checks that an
        event has waited that long."""
        if time.monotonic() - max(self._progress_at, self.claims.turned_at) < self.stuck_after:
            return None
        return "inbox_claims_failing" if self.claims.failing else "inbox_stuck"

    def _lost(self, claim: Claim) -> None:
        """The row's lease could not be renewed in time: another process may run it now."""
        task = self._claims.get(claim)
        if task is not None:
            task.cancel()

    def _done(self, task: asyncio.Task[None]) -> None:
        self._claims = {claim: other for claim, other in self._claims.items() if other is not task}
        self._progress_at = time.monotonic()
        took = self._progress_at - self._running.pop(task)
        self._resume_at = time.monotonic() + took * (1 / BUSY_SHARE - 1)
        # A finished row may unblock the next row of its contact, or free a
        # worker for rows left: when the last claim left none, newer rows
        # wake the loop themselves as they are stored.
        if self.hub.storage.claim_left_rows:
            self.hub.inbox_ready.set()

    async def stop(self, grace: float) -> None:
        """Stop claiming and give rows in progress ``grace`` seconds to finish;
        the rest stay claimed and run again after their lease or a restart."""
        self.claims.stop()
        deadline = time.monotonic() + grace
        # Let a claim under way finish first, so that no row it claims is left behind.
        loop = [self.claims.task] if self.claims.task is not None else []
        await within_grace(
            "inbox",
            loop,
            grace=grace,
            on_timeout_message="the inbox claim under way did not end within %(grace).1f s; leaving it",
            logger=_LOGGER,
        )
        await within_grace(
            "inbox",
            set(self._running),
            grace=deadline - time.monotonic(),
            on_timeout_message="inbox rows still running at shutdown run again after their lease or a restart",
            logger=_LOGGER,
        )
        await self.leases.stop(within=deadline - time.monotonic())

    async def _process(self, row: InboxRow) -> None:
        stored = False
        try:
            stored = await self._attempt(row)
        finally:
            if stored:
                self.leases.done((row.id, row.attempts))
            else:
                self.leases.hand_back((row.id, row.attempts))

    async def _process_statuses(self, batch: Sequence[tuple[InboxRow, StatusEvent]]) -> None:
        rows = [row for row, _event in batch]
        stored: set[int] = set()
        try:
            try:
                async with asyncio.timeout(PROCESS_SECONDS):
                    lost = await statuses(self.hub, batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - each row alone, with the failure handling of one
                _LOGGER.info("a batch of %d statuses failed (%r); running each alone", len(rows), exc)
                for row in rows:
                    if await self._attempt(row):
                        stored.add(row.id)
                return
            stored.update(row.id for row in rows)
            for row in lost:
                _LOGGER.warning(_CLAIMED_AGAIN, row.id)
            self.hub.metrics.inbox_processed.labels("status", "done").inc(len(rows) - len(lost))
        finally:
            for row in rows:
                (self.leases.done if row.id in stored else self.leases.hand_back)((row.id, row.attempts))

    async def _attempt(self, row: InboxRow) -> bool:
        """Run the row's steps; False when its outcome could not be stored."""
        hub = self.hub
        try:
            async with asyncio.timeout(PROCESS_SECONDS):
                await run_steps(self.hub, row)
            hub.metrics.inbox_processed.labels(row.kind, "done").inc()
        except Deferred:
            _LOGGER.debug(
                "inbox row %d waits: for more of its sender's burst, or an older event under another id", row.id
            )
        except LeaseLost:
            _LOGGER.warning(_CLAIMED_AGAIN, row.id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - one bad event must not stop the workers
            if database_unreachable(exc) or not await self._database_answers():
                _LOGGER.warning("inbox row %d was cut short by a database failure; it runs again", row.id)
                return False
            try:
                await self._failed(row, exc)
            except Exception as store_exc:  # noqa: BLE001 - the row runs again
                _LOGGER.warning("cannot store the failure of inbox row %d (%r); it runs again", row.id, store_exc)
                return False
        return True

    async def _database_answers(self) -> bool:
        """Whether the database answers now: a step's network error may have been the database's."""
        try:
            await self.hub.storage.ping()
        except Exception:  # noqa: BLE001 - unreachable, whatever the reason
            return False
        return True

    async def _failed(self, row: InboxRow, exc: Exception) -> None:
        permanent = is_permanent(exc)
        attempts = 1 if isinstance(exc, Unprocessable) else PERMANENT_ATTEMPTS if permanent else MAX_ATTEMPTS
        give_up = row.attempts >= attempts
        _LOGGER.exception(
            "inbox row %d (%s) failed on attempt %d (%s)%s",
            row.id,
            row.kind,
            row.attempts,
            "its data" if permanent else "passing",
            "; giving up" if give_up else "",
        )
        self.hub.metrics.inbox_processed.labels(row.kind, "failed" if give_up else "retry").inc()
        retry_at = (
            None if give_up else time.time() + backoff(row.attempts, base=RETRY_BASE_SECONDS, cap=RETRY_CAP_SECONDS)
        )
        await self.hub.storage.retry_inbox(row, f"{type(exc).__name__}: {exc}", retry_at=retry_at)
        report_exception(self.hub, exc, {"inbox_id": row.id, "kind": row.kind})


async def pipeline_ctx(app: web.Application) -> AsyncIterator[None]:
    hub = app[HUB_KEY]
    if hub.storage.is_sqlite:
        # One process owns a SQLite file, so rows it claimed before a crash are free now.
        released = await hub.storage.release_inbox_claims()
        if released:
            _LOGGER.info("re-running %d inbox events interrupted by the last shutdown", released)
    processor = InboxProcessor(hub, hub.config["wahub"]["workers"])
    hub.inbox_stuck = processor.stuck_reason
    processor.start()
    yield
    await processor.stop(grace=SHUTDOWN_GRACE["inbox"])
