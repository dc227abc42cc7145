"""Live updates: one poller per process follows the activity feed and pushes
what changed to every open inbox page over its WebSocket (see docs/inbox.md)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from wahub.core.hub import Hub
from wahub.plugins.inbox.state import Inbox, inbox_of


class Live:
    """This process's open pages and the poller that feeds them."""

    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        yield


def live_of(hub: Hub) -> Live:
    """The daemon's live feed, made on first use."""
    live = hub.state.get("inbox.live")
    if live is None:
        live = hub.state["inbox.live"] = Live(inbox_of(hub))
    assert isinstance(live, Live)
    return live


def live_routes(inbox: Inbox) -> list[web.RouteDef]:
    return []
