"""The sandbox provider's chat socket, against a real daemon."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from yarl import URL

from wahub.testing import RunningDaemon, build_config, running_daemon


@pytest.fixture
async def daemon(sqlite_url: str) -> AsyncIterator[RunningDaemon]:
    async with running_daemon(build_config({"router": {"default_reply": "ok"}}, database=sqlite_url)) as running:
        yield running


async def test_a_page_from_elsewhere_cannot_open_the_chat(daemon: RunningDaemon) -> None:
    url = f"{daemon.url}/sandbox/ws?user=15551234567"
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(url, headers={"Origin": "https://evil.example"})
        assert refused.value.status == 403
        async with session.ws_connect(url, headers={"Origin": daemon.url}) as ws:
            assert (await ws.receive_json())["type"] == "history"


async def test_malformed_frames_get_an_error_and_the_chat_goes_on(daemon: RunningDaemon) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{daemon.url}/sandbox/ws?user=15551234567") as ws,
    ):
        assert (await ws.receive_json())["type"] == "history"
        await ws.send_str("not json")
        assert await ws.receive_json() == {"type": "error", "message": "frames are JSON objects"}
        await ws.send_json({"type": "seen", "ids": "not a list"})
        await ws.send_json({"type": "text", "text": "hello"})
        mine = await ws.receive_json()
        assert (mine["type"], mine["message"]["direction"], mine["message"]["text"]) == ("message", "in", "hello")
        reply = await ws.receive_json()
        assert (reply["message"]["direction"], reply["message"]["text"]) == ("out", "ok")


async def raw_get(daemon: RunningDaemon, path: str, headers: dict[str, str]) -> int:
    """The status of a GET sent with exactly these headers (Host included), on a new connection."""
    url = URL(daemon.url)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        lines = [f"GET {path} HTTP/1.1", *(f"{name}: {value}" for name, value in headers.items()), "Connection: close"]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), timeout=10)
        await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
        await writer.wait_closed()
    return int(status_line.split()[1])


WS_HEADERS = {"Upgrade": "websocket", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}


async def test_a_dns_rebinding_page_is_refused_on_the_page_socket_and_files(daemon: RunningDaemon) -> None:
    evil = {"Host": "evil.example", "Origin": "http://evil.example"}
    for path in ("/sandbox", "/sandbox/static/sandbox.js", "/sandbox/ws?user=15551234567"):
        headers = {**evil, **(WS_HEADERS if path.startswith("/sandbox/ws") else {})}
        assert await raw_get(daemon, path, headers) == 403, path
    port = URL(daemon.url).port
    # Any port: a container's port may be published as another.
    for host in (f"127.0.0.1:{port}", f"LOCALHOST:{port}", f"[::1]:{port}", "localhost:9000", "localhost"):
        assert await raw_get(daemon, "/sandbox", {"Host": host}) == 200, host
        assert await raw_get(daemon, "/sandbox/static/sandbox.css", {"Host": host}) == 200, host
    assert await raw_get(daemon, "/sandbox/static/index.html", {"Host": f"127.0.0.1:{port}"}) == 404


async def test_a_malformed_or_foreign_origin_is_refused_not_a_500(daemon: RunningDaemon) -> None:
    host = URL(daemon.url).host_port_subcomponent or ""
    port = URL(daemon.url).port
    for origin in ("http://[", "null", "file://", f"ftp://{host}", "http://evil.example", f"http://localhost:{port}"):
        headers = {"Host": host, "Origin": origin, **WS_HEADERS}
        assert await raw_get(daemon, "/sandbox/ws?user=15551234567", headers) == 403, origin


async def test_configured_hosts_replace_the_defaults(sqlite_url: str) -> None:
    entry = {"platform": "sandbox", "name": "sandbox", "hosts": ["Chat.Example.com", "192.168.1.20:8080"]}
    config = build_config({"providers": [entry]}, database=sqlite_url)
    async with running_daemon(config) as daemon:
        assert await raw_get(daemon, "/sandbox", {"Host": "chat.example.com"}) == 200
        assert await raw_get(daemon, "/sandbox", {"Host": "chat.example.com:8443"}) == 200
        assert await raw_get(daemon, "/sandbox", {"Host": "192.168.1.20:8080"}) == 200
        assert await raw_get(daemon, "/sandbox", {"Host": "192.168.1.20:9000"}) == 403
        assert await raw_get(daemon, "/sandbox", {"Host": URL(daemon.url).host_port_subcomponent or ""}) == 403
        async with aiohttp.ClientSession() as session:
            url = f"{daemon.url}/sandbox/ws?user=15551234567"
            headers = {"Host": "chat.example.com", "Origin": "https://chat.example.com"}
            async with session.ws_connect(url, headers=headers) as ws:
                assert (await ws.receive_json())["type"] == "history"
