"""The inbox's HTML: the sign-in page and the inbox page, rendered on the
server with every value escaped, plus their static files."""

from __future__ import annotations

from aiohttp import web

from wahub.plugins.inbox.state import Inbox


def login_page(*, csrf_token: str, name: str = "", problem: str | None = None, next_path: str = "/inbox") -> str:
    """The sign-in page's HTML (``problem``: why the last attempt failed)."""
    raise NotImplementedError


def page_routes(inbox: Inbox) -> list[web.RouteDef]:
    """``GET /inbox`` and ``GET /inbox/static/{name}``."""
    return []
