"""The sandbox provider's chat socket, against a real daemon."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

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
