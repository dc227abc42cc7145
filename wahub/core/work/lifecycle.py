"""How long-running work stops: the shutdown stages, their grace, and ``within_grace``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Collection, Iterable
from typing import Any

_LOGGER = logging.getLogger(__name__)

#: Seconds each shutdown stage may take, in order. Their sum keeps the daemon's
#: exit within 10 s of SIGTERM; what a stage cuts off runs again at the next
#: start, as after a crash.
SHUTDOWN_GRACE = {
    "requests": 2.5,  # HTTP requests in progress (webhooks waiting for their commit)
    "inbox": 2.5,  # inbox rows being processed
    "intake": 0.5,  # the inbox writer's last commit
    "sends": 1.5,  # sends in flight
    "plugins": 0.5,  # plugin lifespans exiting
    "providers": 0.5,  # providers stopping
    "background": 0.5,  # tasks started with hub.spawn
}


async def within_grace(
    stage: str,
    work: Awaitable[object] | Collection[asyncio.Future[Any]],
    *,
    on_timeout_message: str,
    grace: float | None = None,
    cancel: Iterable[asyncio.Future[Any]] = (),
    logger: logging.Logger = _LOGGER,
) -> bool:
    """Await ``work`` for at most the grace of shutdown stage ``stage``
    (``grace`` seconds instead when given: what is left of it); returns whether
    it ended in time.

    ``work`` is an awaitable, cut off at the end of the grace, or tasks, waited
    for together and cancelled if they outlive it. On time-out,
    ``on_timeout_message`` is logged as a warning (it may show the grace as
    ``%(grace).1f``), the tasks in ``cancel`` are cancelled as well, and
    whatever was cancelled is awaited to its end.
    """
    seconds = max(SHUTDOWN_GRACE[stage] if grace is None else grace, 0.0)
    late: set[asyncio.Future[Any]] = set()
    if isinstance(work, Collection):
        if work:
            _done, late = await asyncio.wait(set(work), timeout=seconds)
        in_time = not late
    else:
        try:
            async with asyncio.timeout(seconds):
                await work
        except TimeoutError:
            in_time = False
        else:
            in_time = True
    if in_time:
        return True
    logger.warning(on_timeout_message, {"grace": seconds})
    late.update(cancel)
    for task in late:
        task.cancel()
    await asyncio.gather(*late, return_exceptions=True)
    return False
