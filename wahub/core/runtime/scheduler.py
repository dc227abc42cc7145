"""Timed jobs declared by plugins through the ``scheduled_jobs`` hook."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime

from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from wahub.core.hub import HUB_KEY, Hub
from wahub.core.plugins import report_exception
from wahub.core.storage.leadership import SCHEDULER_ROLE
from wahub.core.work.lifecycle import within_grace
from wahub.hookspecs import JobSpec

_LOGGER = logging.getLogger(__name__)


def _guarded(
    hub: Hub, spec: JobSpec, running: set[asyncio.Task[object]], closed: asyncio.Event
) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        if closed.is_set():
            # Submitted just before the shutdown, started after it: it would find the database closing.
            return
        task = asyncio.current_task()
        if task is not None:
            running.add(task)
            task.add_done_callback(running.discard)
        try:
            await spec.func(hub)
        except asyncio.CancelledError:
            # Only the shutdown cancels a job; it runs again at its next turn or start.
            _LOGGER.info("scheduled job %s was cut off by the shutdown", spec.id)
        except Exception as exc:
            _LOGGER.exception("scheduled job %s failed", spec.id)
            report_exception(hub, exc, {"job": spec.id})

    return run


def build_scheduler(
    hub: Hub,
    specs: Sequence[JobSpec] | None = None,
    running: set[asyncio.Task[object]] | None = None,
    closed: asyncio.Event | None = None,
) -> AsyncIOScheduler:
    """A scheduler holding ``specs`` (default: every plugin's ``scheduled_jobs``);
    the jobs running at a moment are in ``running``, when given, and a job
    that starts once ``closed`` is set does nothing."""
    scheduler = AsyncIOScheduler(timezone="UTC")
    running = set() if running is None else running
    closed = asyncio.Event() if closed is None else closed
    for spec in _specs(hub) if specs is None else specs:
        scheduler.add_job(
            _guarded(hub, spec, running, closed),
            spec.trigger,
            id=spec.id,
            name=spec.id,
            replace_existing=True,
            coalesce=True,
            # A run due while the event loop was held up (a busy start-up) runs
            # late rather than not at all: skipped, it would wait a whole interval.
            misfire_grace_time=None,
            max_instances=1,
            **spec.trigger_args,
        )
    return scheduler


def _specs(hub: Hub) -> list[JobSpec]:
    return [spec for specs in hub.pm.hook.scheduled_jobs(hub=hub) for spec in specs or ()]


async def scheduler_ctx(app: web.Application) -> AsyncIterator[None]:
    """Jobs run only on the replica holding the scheduler role (see ``wahub.core.runtime.leadership``)."""
    hub = app[HUB_KEY]
    specs = _specs(hub)
    running: set[asyncio.Task[object]] = set()
    closed = asyncio.Event()
    scheduler = build_scheduler(hub, specs, running, closed)
    at_start = [spec.id for spec in specs if spec.at_start]
    scheduler.start(paused=True)

    async def acquired(role: str) -> None:
        if role == SCHEDULER_ROLE and scheduler.running:
            now = datetime.now(UTC)
            for job_id in at_start:  # due now; the job's trigger goes on from there
                if scheduler.get_job(job_id) is not None:
                    scheduler.modify_job(job_id, next_run_time=now)
            scheduler.resume()

    async def lost(role: str) -> None:
        if role == SCHEDULER_ROLE and scheduler.running:
            scheduler.pause()

    hub.leadership.on_change(acquired, lost)
    yield
    closed.set()
    scheduler.shutdown(wait=False)
    # A job still running (a start-up clean-up in a daemon stopped at once, a
    # reminders' pass) gets the grace to finish, and only then is cut off: both
    # while the database it uses is still open. A job cancelled in the middle
    # of a query has its connection terminated, and a terminated SQLite
    # connection closed after the database would wait for ever.
    await within_grace(
        "background",
        set(running),
        on_timeout_message="scheduled jobs still running %(grace).1f s into the shutdown were cut off",
    )
