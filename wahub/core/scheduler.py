"""Timed jobs declared by plugins through the ``scheduled_jobs`` hook."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from wahub.core.hub import HUB_KEY, Hub
from wahub.core.leader import SCHEDULER_ROLE
from wahub.core.plugins import report_exception

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobSpec:
    """A job: ``func(hub)`` run on ``trigger`` ("interval", "cron" or "date")
    with APScheduler's ``trigger_args`` (e.g. ``{"minutes": 5}``).
    ``id`` must be stable so a restart replaces the job instead of adding one."""

    id: str
    func: Callable[[Hub], Awaitable[None]]
    trigger: str
    trigger_args: dict[str, Any] = field(default_factory=dict)


def _guarded(hub: Hub, spec: JobSpec) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        try:
            await spec.func(hub)
        except Exception as exc:
            _LOGGER.exception("scheduled job %s failed", spec.id)
            report_exception(hub, exc, {"job": spec.id})

    return run


def build_scheduler(hub: Hub) -> AsyncIOScheduler:
    scheduler = AsyncIOScheduler(timezone="UTC")
    for specs in hub.pm.hook.scheduled_jobs(hub=hub):
        for spec in specs or ():
            scheduler.add_job(
                _guarded(hub, spec),
                spec.trigger,
                id=spec.id,
                name=spec.id,
                replace_existing=True,
                coalesce=True,
                max_instances=1,
                **spec.trigger_args,
            )
    return scheduler


async def scheduler_ctx(app: web.Application) -> AsyncIterator[None]:
    """Jobs run only on the replica holding the scheduler role (see ``wahub.core.leader``)."""
    hub = app[HUB_KEY]
    scheduler = build_scheduler(hub)
    scheduler.start(paused=True)

    async def acquired(role: str) -> None:
        if role == SCHEDULER_ROLE and scheduler.running:
            scheduler.resume()

    async def lost(role: str) -> None:
        if role == SCHEDULER_ROLE and scheduler.running:
            scheduler.pause()

    hub.leadership.on_change(acquired, lost)
    yield
    scheduler.shutdown(wait=False)
