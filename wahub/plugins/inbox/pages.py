"""The inbox page's HTML, rendered on the server with every value escaped,
and the static files of the inbox and its sign-in page."""

from __future__ import annotations

from aiohttp import web

from wahub.plugins.inbox.state import Inbox


def page_routes(inbox: Inbox) -> list[web.RouteDef]:
    """``GET /inbox`` and ``GET /inbox/static/{name}``."""
    return []
