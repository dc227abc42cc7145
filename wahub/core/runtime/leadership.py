"""The leadership contexts of the app: roles are created before the dispatcher
and the scheduler register their callbacks, and started after them."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from wahub.core.hub import HUB_KEY
from wahub.core.storage.leadership import SCHEDULER_ROLE, Leadership, dispatch_role

_LOGGER = logging.getLogger(__name__)


async def leadership_ctx(app: web.Application) -> AsyncIterator[None]:
    """Create the hub's Leadership; the dispatcher and scheduler contexts register
    their callbacks, and ``leadership_start_ctx`` (entered after them) starts it."""
    hub = app[HUB_KEY]
    hub.leadership = Leadership(hub.storage, [*map(dispatch_role, hub.providers), SCHEDULER_ROLE])
    yield
    await hub.leadership.stop()


async def leadership_start_ctx(app: web.Application) -> AsyncIterator[None]:
    await app[HUB_KEY].leadership.start()
    yield
