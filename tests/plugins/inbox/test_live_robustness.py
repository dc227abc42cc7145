"""The inbox's live socket when pages misbehave, origins are wrong, or
PostgreSQL commits an activity late: a real daemon over real sockets."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
import sqlalchemy as sa

from tests.plugins.inbox.kit import Desk, desk, frame, inbox_daemon, user_says
from wahub.core.storage.activity import record_activity
from wahub.core.storage.schema import activity
from wahub.plugins.inbox.auth import SECURITY_HEADERS
from wahub.plugins.inbox.live import Client, live_of
from wahub.testing import RunningDaemon, wait_until

#: Rows written at once to the feed: one activity frame of a few hundred kB.
FLOOD_ROWS = 500


def most_a_socket_buffers() -> int:
    """Bytes the kernel may buffer on a connection whose peer does not read (its
    largest send buffer), and a megabyte for the buffers above it."""
    try:
        largest = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    except (OSError, IndexError, ValueError):
        largest = 8 << 20
    return largest + (1 << 20)


async def conversation_id(daemon: RunningDaemon) -> int:
    page = await daemon.hub.storage.conversations.list()
    return int(page.items[0]["id"])


async def add_activity(daemon: RunningDaemon, conversation: int, count: int) -> int:
    """``count`` contact-edit rows about ``conversation``, committed; the highest id."""
    async with daemon.hub.storage.db.begin() as conn:
        await record_activity(conn, [(conversation, "contact", None)] * count, now=time.time())
        return int((await conn.execute(sa.select(sa.func.max(activity.c.id)))).scalar_one())


@contextlib.asynccontextmanager
async def unread_socket(daemon: RunningDaemon, page: Desk) -> AsyncIterator[socket.socket]:
    """A page's socket opened by hand on a tiny receive buffer, and never read after the handshake."""
    loop = asyncio.get_running_loop()
    parts = urlsplit(daemon.url)
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.setblocking(False)
    try:
        await loop.sock_connect(raw, (parts.hostname, parts.port))
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET /inbox/ws HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Cookie: wahub_session={page.token}\r\nOrigin: {daemon.url}\r\n\r\n"
        )
        await loop.sock_sendall(raw, request.encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += await loop.sock_recv(raw, 1024)
        assert answer.startswith(b"HTTP/1.1 101"), answer
        yield raw
    finally:
        raw.close()


async def read_until_closed(raw: socket.socket) -> None:
    """Read what the server had queued until it closes or cuts the connection."""
    loop = asyncio.get_running_loop()
    with contextlib.suppress(ConnectionResetError):
        while await loop.sock_recv(raw, 1 << 20):
            pass


async def last_id(daemon: RunningDaemon) -> int:
    return await daemon.hub.storage.activity.last_id()


async def activity_until(ws: aiohttp.ClientWebSocketResponse, cursor: int) -> list[dict[str, Any]]:
    """The activity frames the socket receives until one reports ``cursor``."""
    frames: list[dict[str, Any]] = []
    while not frames or frames[-1]["cursor"] < cursor:
        got = await frame(ws)
        if got["type"] == "activity":
            frames.append(got)
    return frames


async def test_a_page_that_stops_reading_delays_no_other_page(database_url: str) -> None:
    async with inbox_daemon(database_url) as daemon, aiohttp.ClientSession() as http:
        ana, bob, eve = [await desk(daemon, http, name) for name in ("ana", "bob", "eve")]
        await user_says(daemon, http, "hello")
        conversation = await conversation_id(daemon)
        live = live_of(daemon.hub)
        async with ana.socket() as healthy, eve.socket() as leaving, unread_socket(daemon, bob) as stuck:
            assert (await frame(healthy))["type"] == "hello"
            assert (await frame(leaving))["type"] == "hello"

            async def bobs_page() -> Client | None:
                return next((client for client in live.clients if client.session.operator.name == "bob"), None)

            unread = await wait_until(bobs_page)

            async def flood() -> int:
                """A frame of a few hundred kB: it reaches the page that reads; its size."""
                newest = await add_activity(daemon, conversation, FLOOD_ROWS)
                frames = await activity_until(healthy, newest)
                assert sum(len(f["events"]) for f in frames) == FLOOD_ROWS
                return sum(len(json.dumps(f)) for f in frames)

            # More than the kernel buffers for the page that does not read: the server waits on it.
            sent = 0
            while sent < most_a_socket_buffers():
                sent += await flood()
            # Disabled while the other page is stuck: signed out all the same.
            await daemon.hub.storage.operators.set_disabled("eve", True, now=0)
            while (ended := await frame(leaving))["type"] == "activity":
                pass
            assert ended["type"] == "signed_out"
            await user_says(daemon, http, "still live", sender="15557654321")
            events = [e for f in await activity_until(healthy, await last_id(daemon)) for e in f["events"]]
            assert any(e["kind"] == "message" and e["entry"]["direction"] == "in" for e in events)
            # The stuck page is dropped (its page reconnects and resumes from its cursor).
            async with asyncio.timeout(60):  # a guard against hanging, not a measure
                while unread in live.clients:
                    await flood()
                await read_until_closed(stuck)
            assert unread not in live.clients


async def test_a_socket_from_another_origin_is_refused_403_and_logged_once(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with inbox_daemon(database_url) as daemon, aiohttp.ClientSession() as http:
        ana = await desk(daemon, http, "ana")
        url = f"{daemon.url}/inbox/ws"
        elsewhere = {**ana.headers, "Origin": "https://inbox.example.com"}
        with caplog.at_level(logging.WARNING, logger="wahub.plugins.inbox.live"):
            for _ in range(3):
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    await http.ws_connect(url, headers=elsewhere)
                assert refused.value.status == 403
            async with http.get(url, headers=elsewhere) as answer:
                assert answer.status == 403
                error = (await answer.json())["error"]
                assert error["code"] == "cross_origin" and "inbox.origins" in error["message"]
                assert all(answer.headers.get(name) == value for name, value in SECURITY_HEADERS.items())
                assert answer.headers["Cache-Control"] == "no-store"
        warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
        assert len(warnings) == 1, warnings
        assert "https://inbox.example.com" in warnings[0] and "inbox.origins" in warnings[0]


async def test_every_refused_socket_names_why_with_the_security_headers(database_url: str) -> None:
    async with inbox_daemon(database_url) as daemon, aiohttp.ClientSession() as http:
        ana = await desk(daemon, http, "ana")
        url = f"{daemon.url}/inbox/ws"
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(url, headers={"Origin": daemon.url})
        assert refused.value.status == 401
        cases = [
            ({"Origin": daemon.url}, "", 401, "signed_out"),
            ({**ana.headers, "Cookie": "wahub_session=ended"}, "", 401, "signed_out"),
            (ana.headers, "", 400, "not_websocket"),
            (ana.headers, "?after=yesterday", 400, "invalid_cursor"),
        ]
        for headers, query, status, code in cases:
            async with http.get(f"{url}{query}", headers=headers) as answer:
                assert (answer.status, (await answer.json())["error"]["code"]) == (status, code)
                assert all(answer.headers.get(name) == value for name, value in SECURITY_HEADERS.items())
                assert answer.headers["Cache-Control"] == "no-store"


async def test_an_activity_committed_late_when_the_feed_starts_is_still_sent(postgres_url: str) -> None:
    async with inbox_daemon(postgres_url) as daemon, aiohttp.ClientSession() as http:
        ana = await desk(daemon, http, "ana")
        await user_says(daemon, http, "hello")
        conversation = await conversation_id(daemon)
        async with contextlib.AsyncExitStack() as stack:
            async with daemon.hub.storage.db.begin() as late:
                # This transaction takes its id first and commits last, once the feed is followed.
                await record_activity(late, [(conversation, "contact", None)], now=time.time())
                late_id = int((await late.execute(sa.select(sa.func.max(activity.c.id)))).scalar_one())
                newest = await add_activity(daemon, conversation, 1)
                assert newest > late_id
                ws = await stack.enter_async_context(ana.socket())
                assert (await frame(ws))["type"] == "hello"
            seen: list[int] = []
            while late_id not in seen:
                got = await frame(ws)
                seen += [event["id"] for event in got.get("events", [])]
            assert seen.count(late_id) == 1 and newest not in seen
