"""The inbox page's HTML, rendered on the server with every value escaped,
and the static files of the inbox and its sign-in page."""

from __future__ import annotations

import html
from pathlib import Path
from string import Template

from aiohttp import web

from wahub.core.http.api_io import error
from wahub.plugins.inbox import auth
from wahub.plugins.inbox.state import Inbox

WEB_DIR = Path(__file__).resolve().parents[2] / "web"
#: The files ``/inbox/static/{name}`` serves, and the directory each comes from.
STATIC_FILES = {
    "inbox.js": WEB_DIR / "inbox" / "inbox.js",
    "inbox.css": WEB_DIR / "inbox" / "inbox.css",
    "login.css": WEB_DIR / "inbox" / "login.css",
    "whatsapp.js": WEB_DIR / "shared" / "whatsapp.js",
    "ticks.js": WEB_DIR / "shared" / "ticks.js",
}
_CONTENT_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


def inbox_page(operator_name: str, admin: bool, csrf_token: str) -> str:
    """The inbox page for ``operator_name``: the operator in the body's data
    attributes, the CSRF token in ``<meta name="csrf-token">``, every value escaped."""
    template = Template((WEB_DIR / "inbox" / "inbox.html").read_text(encoding="utf-8"))
    return template.substitute(
        operator=html.escape(operator_name, quote=True),
        admin="true" if admin else "false",
        csrf_token=html.escape(csrf_token, quote=True),
    )


def page_routes(inbox: Inbox) -> list[web.RouteDef]:
    """``GET /inbox`` and ``GET /inbox/static/{name}``."""

    async def page(request: web.Request) -> web.StreamResponse:
        session = auth.session_of(request)
        body = inbox_page(session.operator.name, session.operator.is_admin, session.csrf_token)
        # The page carries the session's CSRF token: never kept by a cache.
        return web.Response(text=body, content_type="text/html", headers={"Cache-Control": "no-store"})

    async def static(request: web.Request) -> web.StreamResponse:
        path = STATIC_FILES.get(request.match_info["name"])
        if path is None or not path.is_file():
            return await not_found(request)
        # Kept by the browser, but asked again each time (a 304 when unchanged): an upgrade shows at once.
        headers = {"Content-Type": _CONTENT_TYPES[path.suffix], "Cache-Control": "no-cache"}
        return auth.secure_headers(web.FileResponse(path, headers=headers), cache=True)

    return [
        web.get("/inbox", auth.guarded(inbox, page, page=True)),
        web.get("/inbox/static/{name}", static),
    ]


async def not_found(request: web.Request) -> web.StreamResponse:
    """Any other address under ``/inbox``: a 404 with the inbox's security headers."""
    return auth.secure_headers(error(404, "not_found", f"no such inbox address: {request.path[:200]}"))
