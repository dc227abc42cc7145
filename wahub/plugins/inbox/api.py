"""The inbox page's JSON endpoints under ``/inbox/api`` (see docs/inbox.md)."""

from __future__ import annotations

from aiohttp import web

from wahub.plugins.inbox.state import Inbox


def api_routes(inbox: Inbox) -> list[web.RouteDef]:
    return []
