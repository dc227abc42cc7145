"""Captures for the contract suite (``ContractSuite.capture``): what a provider
that does not send over HTTP delivered, as ``Recorded`` items.

``sandbox_frames`` opens a real chat socket for the message's recipient, as the
``/sandbox`` page does, and records every frame the sandbox pushes to it as
``Recorded("WS", "/sandbox/ws?user=<to>", json=<frame>)``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
from aiohttp import web

from wahub.core.models import OutgoingMessage
from wahub.core.provider import Provider
from wahub.plugins.providers.sandbox.provider import SandboxProvider
from wahub.testing import serve_on_loopback
from wahub.testing.contract_format import Recorded

#: How long a capture waits for the first frame, then for each further one.
FIRST_FRAME_SECONDS = 0.5
MORE_FRAMES_SECONDS = 0.05


@asynccontextmanager
async def sandbox_frames(provider: Provider, message: OutgoingMessage) -> AsyncIterator[list[Recorded]]:
    """Record the frames the sandbox pushes to ``message.to``'s chat page while inside."""
    if not isinstance(provider, SandboxProvider):
        raise TypeError(f"sandbox_frames captures a SandboxProvider, not {type(provider).__name__}")
    joined = asyncio.Event()

    async def socket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        provider.clients[message.to].add(ws)
        joined.set()
        async for _frame in ws:
            pass
        provider.clients[message.to].discard(ws)
        return ws

    app = web.Application()
    app.router.add_get("/sandbox/ws", socket)
    runner, url = await serve_on_loopback(app)
    recorded: list[Recorded] = []
    path = f"/sandbox/ws?user={message.to}"
    try:
        async with aiohttp.ClientSession() as session, session.ws_connect(url + path) as ws:
            await asyncio.wait_for(joined.wait(), FIRST_FRAME_SECONDS)
            yield recorded
            wait = FIRST_FRAME_SECONDS
            while True:
                try:
                    frame = await ws.receive_json(timeout=wait)
                except (TimeoutError, TypeError):
                    break
                recorded.append(Recorded("WS", path, json=frame))
                wait = MORE_FRAMES_SECONDS
    finally:
        await runner.cleanup()
