"""The deliverers: each ``crm:`` entry's events, from the ``deliveries`` table
to its backend's ``deliver``.

One deliverer per entry runs on every replica; claims are taken in turn, so
an entry gets each contact's events one at a time, in order, up to its
``concurrency`` contacts at once. A delivery that fails (an exception, or
longer than the entry's ``timeout``) is tried again on the Standard Webhooks
schedule (5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h after each
failure: about three days in all), not before the ``Retry-After`` the other
side gave; then it is given up (``failed``) and listed for a replay. A
backend's ``gone`` (410) disables the entry until it is enabled again.
Nothing here is awaited by the WhatsApp side: a CRM that is down only makes
its own deliveries wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator

from aiohttp import web

from wahub.core.crm import CRMBackend
from wahub.core.errors import DeliveryFailed
from wahub.core.hub import HUB_KEY, Hub
from wahub.core.storage.deliveries import Delivery
from wahub.core.work.lifecycle import within_grace

_LOGGER = logging.getLogger(__name__)

#: Seconds before each retry (Standard Webhooks' example schedule).
RETRY_DELAYS = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 50400.0, 72000.0, 86400.0)
#: A ``Retry-After`` longer than this is read as this.
MAX_RETRY_AFTER = 86400.0
#: Seconds a claim outlives the entry's ``timeout``: the delivery is cut off at
#: the timeout, so after a crash it is due again this long after it began.
LEASE_MARGIN = 5.0
#: Seconds between looks at the table when nothing woke the deliverer (retries
#: fall due, other replicas' changes, a test's clock moved).
POLL = 1.0


def retry_delay(attempts: int, retry_after: float | None) -> float | None:
    """Seconds until the next try after ``attempts`` failed ones (this one
    included), never before ``retry_after``; None when the schedule is spent."""
    if attempts > len(RETRY_DELAYS):
        return None
    delay = RETRY_DELAYS[attempts - 1] * random.uniform(0.9, 1.1)
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
    return delay


class Deliverer:
    """Delivers one ``crm:`` entry's events until ``stop``."""

    def __init__(self, hub: Hub, backend: CRMBackend) -> None:
        self.hub = hub
        self.backend = backend
        self.name = backend.name
        self.timeout = float(backend.config.get("timeout", 15))
        self.concurrency = int(backend.config.get("concurrency", 4))
        self.wake = asyncio.Event()
        self._stopping = False
        #: Deliveries being made, by their task.
        self._in_flight: dict[asyncio.Task[None], int] = {}
        #: Outcomes being recorded: shutdown waits for them before the database closes.
        self.recording: set[asyncio.Future[None]] = set()
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.run(), name=f"wahub-deliveries-{self.name}")

    def stop(self) -> None:
        self._stopping = True
        self.wake.set()

    async def run(self) -> None:
        storage, clock = self.hub.storage, self.hub.clock
        failing = False
        while not self._stopping:
            self.wake.clear()
            free = self.concurrency - len(self._in_flight)
            claimed: list[Delivery] = []
            if free > 0:
                now = clock.time()
                try:
                    claimed = await storage.deliveries.claim(
                        self.name, limit=free, now=now, lease_until=now + self.timeout + LEASE_MARGIN
                    )
                except Exception:
                    if not failing:
                        _LOGGER.exception("cannot claim deliveries for %s; trying again", self.name)
                    failing = True
                else:
                    failing = False
            for delivery in claimed:
                task = asyncio.create_task(self._deliver(delivery), name=f"wahub-delivery-{delivery.id}")
                self._in_flight[task] = delivery.id
                task.add_done_callback(self._done)
            if len(claimed) < free or free <= 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(POLL):
                        await self.wake.wait()

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.pop(task, None)
        self.wake.set()

    def in_flight(self) -> dict[asyncio.Task[None], int]:
        """The deliveries being made now, by their task."""
        return dict(self._in_flight)

    async def _deliver(self, delivery: Delivery) -> None:
        failure: DeliveryFailed | None = None
        try:
            async with asyncio.timeout(self.timeout):
                await self.backend.deliver(delivery.event)
        except DeliveryFailed as exc:
            failure = exc
        except TimeoutError:
            failure = DeliveryFailed(f"no answer within {self.timeout:g} s")
        except Exception as exc:
            _LOGGER.exception("delivering %s to %s failed", delivery.event.id, self.name)
            failure = DeliveryFailed(f"{type(exc).__name__}: {exc}")
        # Recorded even when shutdown cuts this task off now: a query cancelled
        # half-way would leave its connection to be closed after the database.
        record = asyncio.ensure_future(self._record(delivery, failure))
        self.recording.add(record)
        record.add_done_callback(self.recording.discard)
        await asyncio.shield(record)

    async def _record(self, delivery: Delivery, failure: DeliveryFailed | None) -> None:
        if failure is not None:
            await self._failed(delivery, failure)
            return
        storage, now = self.hub.storage, self.hub.clock.time()
        if not await storage.deliveries.delivered(delivery, status=None, now=now):
            _LOGGER.info("%s took %s after its claim had lapsed", self.name, delivery.event.id)
            return
        self.hub.metrics.deliveries.labels(self.name, "delivered").inc()
        if delivery.attempts:
            await storage.deliveries.recovered(self.name, now=now)
            _LOGGER.info("%s takes deliveries again", self.name)

    async def _failed(self, delivery: Delivery, failure: DeliveryFailed) -> None:
        storage, metrics, now = self.hub.storage, self.hub.metrics, self.hub.clock.time()
        if failure.gone:
            await storage.deliveries.disable(self.name, reason=failure.reason, now=now)
            await storage.deliveries.retry(delivery, at=now, status=failure.status, error=failure.reason, now=now)
            metrics.deliveries.labels(self.name, "gone").inc()
            _LOGGER.warning(
                "%s is disabled: %s; enable it with `wahub deliveries enable %s` once it is back",
                self.name,
                failure.reason,
                self.name,
            )
            return
        delay = None if failure.permanent else retry_delay(delivery.attempts + 1, failure.retry_after)
        if delay is None:
            await storage.deliveries.give_up(delivery, status=failure.status, error=failure.reason, now=now)
            metrics.deliveries.labels(self.name, "failed").inc()
            _LOGGER.warning("gave up delivering %s to %s: %s", delivery.event.id, self.name, failure.reason)
            return
        await storage.deliveries.retry(delivery, at=now + delay, status=failure.status, error=failure.reason, now=now)
        metrics.deliveries.labels(self.name, "retried").inc()
        if not delivery.attempts:
            _LOGGER.warning("%s did not take %s (%s); retrying", self.name, delivery.event.id, failure.reason)


async def crm_ctx(app: web.Application) -> AsyncIterator[None]:
    """Start the ``crm:`` backends (storage records their events from the start)
    and run a deliverer for each; at shutdown stop the deliverers, wait for the
    deliveries in flight within the grace of sends (those cut off are due again
    at once at the next start), then stop the backends."""
    hub = app[HUB_KEY]
    started: list[CRMBackend] = []
    try:
        for backend in hub.crm.values():
            await backend.start()
            started.append(backend)
        deliverers = [Deliverer(hub, backend) for backend in started]

        def woken() -> None:
            for deliverer in deliverers:
                deliverer.wake.set()

        hub.storage.db.on_deliveries = woken
        for deliverer in deliverers:
            deliverer.start()
        try:
            yield
        finally:
            await _stop_deliverers(hub, deliverers)
    finally:
        await within_grace(
            "plugins",
            _stop_backends(started),
            on_timeout_message="CRM backends did not stop within %(grace).1f s; leaving them",
            logger=_LOGGER,
        )


async def _stop_deliverers(hub: Hub, deliverers: list[Deliverer]) -> None:
    for deliverer in deliverers:
        deliverer.stop()
    loops = {deliverer.task for deliverer in deliverers if deliverer.task is not None}
    # A claim is one short query: only a database that does not answer outlasts this.
    await within_grace(
        "sends", loops, grace=10.0, on_timeout_message="a deliverer's claim was cut off at shutdown", logger=_LOGGER
    )
    work = {task: delivery_id for deliverer in deliverers for task, delivery_id in deliverer.in_flight().items()}
    await within_grace(
        "sends",
        set(work),
        on_timeout_message="deliveries still running at shutdown are tried again at the next start",
        logger=_LOGGER,
    )
    # Outcomes still being written finish before the database closes (a query cut
    # off half-way would leave its connection open behind the closed pool).
    recording = {record for deliverer in deliverers for record in deliverer.recording}
    if recording:
        await asyncio.wait(recording, timeout=10)
    cut = [delivery_id for task, delivery_id in work.items() if task.cancelled()]
    if cut:
        await hub.storage.deliveries.release(cut)


async def _stop_backends(backends: list[CRMBackend]) -> None:
    for backend in reversed(backends):
        try:
            await backend.stop()
        except Exception:
            _LOGGER.exception("CRM backend %s failed to stop", backend.name)
