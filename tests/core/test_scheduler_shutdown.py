"""Scheduled jobs: one still running when the daemon stops is cut off while
the database is still open, not left to the end of the event loop; one due
while the event loop was held up runs late rather than not at all."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import cast

from wahub import hookimpl
from wahub.core.hub import Hub
from wahub.core.runtime.scheduler import build_scheduler
from wahub.hookspecs import JobSpec
from wahub.testing import build_config, plugin_manager, running_daemon


@dataclass(eq=False)  # pluggy keeps plugins in sets
class SlowStartUpJob:
    started: asyncio.Event = field(default_factory=asyncio.Event)
    cut_off_with_database_open: bool = False

    @hookimpl
    def scheduled_jobs(self, hub: Hub) -> list[JobSpec]:
        return [JobSpec("test.slow", self._run, "interval", {"hours": 1}, at_start=True)]

    async def _run(self, hub: Hub) -> None:
        self.started.set()
        try:
            await asyncio.Event().wait()  # a clean-up that takes longer than the daemon runs
        finally:
            await hub.storage.ping()  # raises once the database is closed
            self.cut_off_with_database_open = True


async def test_a_running_job_is_cut_off_before_the_database_closes(database_url: str) -> None:
    job = SlowStartUpJob()
    pm = plugin_manager()
    pm.register(job)
    async with running_daemon(build_config(database=database_url, pm=pm), pm=pm):
        await asyncio.wait_for(job.started.wait(), timeout=30)
        assert not job.cut_off_with_database_open  # still running while the daemon runs
    assert job.cut_off_with_database_open


async def test_a_job_due_while_the_event_loop_was_held_up_still_runs() -> None:
    ran = asyncio.Event()

    async def job(hub: Hub) -> None:
        ran.set()

    scheduler = build_scheduler(cast(Hub, None), [JobSpec("test.late", job, "interval", {"hours": 6})])
    scheduler.start(paused=True)
    try:
        # Due a while ago: the event loop was held up (a slow start-up) past the moment.
        scheduler.modify_job("test.late", next_run_time=datetime.now(UTC) - timedelta(seconds=30))
        scheduler.resume()
        await asyncio.wait_for(ran.wait(), timeout=10)
    finally:
        scheduler.shutdown(wait=False)
