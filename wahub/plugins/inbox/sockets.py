"""The inbox page's socket, ``GET /inbox/ws?after=<cursor>``: who may open
it, and handing it to the live feed (``live``) until the page leaves."""

from __future__ import annotations

import asyncio

from aiohttp import web

from wahub.core.http.api_io import error
from wahub.core.hub import HUB_KEY, Hub
from wahub.plugins.inbox.auth import current_session, origin_refusal, secure_headers
from wahub.plugins.inbox.live import Client, close_page, live_of
from wahub.plugins.inbox.state import Inbox, inbox_of


def _after(request: web.Request) -> int | None:
    """The ``after`` cursor; ``ValueError`` when it is not one."""
    given = request.query.get("after")
    if given is None or given == "":
        return None
    if not (given.isascii() and given.isdigit() and len(given) <= 19):
        raise ValueError(given)
    return int(given)


def _refused(status: int, code: str, message: str) -> web.StreamResponse:
    return secure_headers(error(status, code, message))


async def _close_on_shutdown(hub: Hub, client: Client) -> None:
    await hub.shutting_down.wait()
    await close_page(client, b"wahub is shutting down")


async def socket(request: web.Request) -> web.StreamResponse:
    """``GET /inbox/ws?after=<cursor>``: the page's live updates. Refused
    with 403 ``cross_origin`` from another origin (logged once per origin),
    401 ``signed_out`` without a valid session, 400 when the request is no
    WebSocket upgrade; every answer has the inbox's security headers."""
    hub = request.app[HUB_KEY]
    inbox, live = inbox_of(hub), live_of(hub)
    try:
        after = _after(request)
    except ValueError:
        return _refused(400, "invalid_cursor", "after must be the cursor of a previous frame")
    if hub.shutting_down.is_set():
        return _refused(503, "shutting_down", "wahub is restarting; connect again in a moment")
    refusal = origin_refusal(inbox, request)
    if refusal is not None:
        live.warn_refused(refusal)
        return _refused(403, "cross_origin", refusal)
    session = await current_session(inbox, request)
    if session is None:
        return _refused(401, "signed_out", "sign in to the inbox first: this socket has no valid session")
    ws = web.WebSocketResponse(heartbeat=30)
    if not ws.can_prepare(request).ok:
        message = (
            "this is the inbox's live-updates socket, but the request is no WebSocket upgrade: "
            "a proxy in front of wahub must pass the Upgrade and Connection headers on"
        )
        return _refused(400, "not_websocket", message)
    secure_headers(ws)
    try:
        await ws.prepare(request)
    except ConnectionResetError:
        return _refused(400, "handshake_failed", "the connection closed during the handshake")
    client = Client(ws, session, transport=request.transport)
    closer = asyncio.create_task(_close_on_shutdown(hub, client))
    try:
        await live.attach(client, after)
        async for _ in ws:
            pass  # the page sends nothing but pings, which aiohttp answers
    finally:
        closer.cancel()
        live.leave(client)
    return ws


def live_routes(inbox: Inbox) -> list[web.RouteDef]:
    return [web.get("/inbox/ws", socket)]
