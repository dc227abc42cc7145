"""The example templates as the sandbox user reads them, against a real daemon:
a template message through ``POST /api/v1/messages``, a notification through
``wahub notify``."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from wahub.core.config.templates import load_templates
from wahub.plugins.providers.sandbox.provider import SandboxProvider
from wahub.testing import RunningDaemon, build_config, running_daemon

REPOSITORY = Path(__file__).parents[3]
TOKEN = "sandbox-notification-token-0123456789"
USER = "15551234567"
ORDER_42 = (
    "*Order 42*\n\nHi Ana, your order 42 has shipped.\n\n_Reply STOP to stop these messages_\n\n"
    "Track the order: https://shop.example.com/orders/42"
)


@pytest.fixture
async def daemon(sqlite_url: str) -> AsyncIterator[RunningDaemon]:
    raw = {"wahub": {"api_tokens": [TOKEN]}, "router": {"default_reply": "ok"}}
    async with running_daemon(build_config(raw, database=sqlite_url)) as running:
        provider = running.hub.providers["sandbox"]
        assert isinstance(provider, SandboxProvider)
        for definition in load_templates(REPOSITORY / "templates"):
            for language in definition.languages:
                await provider.create_template(definition.create_body(language))
        yield running


async def next_message(ws: aiohttp.ClientWebSocketResponse, direction: str) -> dict[str, Any]:
    """The next ``message`` frame of ``direction``, other frames skipped."""
    while True:
        frame = await ws.receive_json(timeout=10)
        if frame["type"] == "message" and frame["message"]["direction"] == direction:
            message: dict[str, Any] = frame["message"]
            return message


async def say_hi(ws: aiohttp.ClientWebSocketResponse) -> None:
    assert (await ws.receive_json())["type"] == "history"
    await ws.send_json({"type": "text", "text": "hi"})
    assert (await next_message(ws, "out"))["text"] == "ok"


async def test_a_named_template_with_a_header_shows_filled_in_and_stays_so_in_the_history(
    daemon: RunningDaemon,
) -> None:
    template = {
        "name": "order_update",
        "language": {"code": "en"},
        "components": [
            {"type": "header", "parameters": [{"type": "text", "parameter_name": "order_id", "text": "42"}]},
            {
                "type": "body",
                "parameters": [
                    {"type": "text", "parameter_name": "name", "text": "Ana"},
                    {"type": "text", "parameter_name": "order_id", "text": "42"},
                ],
            },
            {"type": "button", "sub_type": "url", "index": 0, "parameters": [{"type": "text", "text": "42"}]},
        ],
    }
    body = {"provider": "sandbox", "to": USER, "type": "template", "template": template}
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{daemon.url}/sandbox/ws?user={USER}") as ws:
            await say_hi(ws)
            async with session.post(f"{daemon.url}/api/v1/messages", json=body, headers=headers) as answer:
                assert answer.status == 202, await answer.text()
            shown = await next_message(ws, "out")
            assert (shown["type"], shown["text"], shown["buttons"]) == ("text", ORDER_42, [])
        async with session.ws_connect(f"{daemon.url}/sandbox/ws?user={USER}") as ws:
            history = (await ws.receive_json())["messages"]
            assert [m["text"] for m in history] == ["hi", "ok", ORDER_42]


async def test_a_notification_from_wahub_notify_shows_its_quick_replies_as_buttons(
    daemon: RunningDaemon, tmp_path: Path
) -> None:
    (tmp_path / "config.yaml").write_text("wahub:\n  log_level: info\n")  # --url and --token say the rest
    async with aiohttp.ClientSession() as session, session.ws_connect(f"{daemon.url}/sandbox/ws?user={USER}") as ws:
        await say_hi(ws)
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "wahub", "notify", "-c", str(tmp_path / "config.yaml"), "--every", "0.2"),
            *("--url", daemon.url, "--token", TOKEN),
            *("--template", "appointment_reminder", "--language", "en", "--to", USER),
            *("--param", "1=Ana", "--param", "2=Tuesday 10:00"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
        assert process.returncode == 0, err.decode()
        assert out.decode().splitlines()[-1] == "done: 1 messages, none refused"
        shown = await next_message(ws, "out")
    assert shown["text"] == "Hello Ana, this is a reminder of your appointment on Tuesday 10:00."
    assert (shown["type"], shown["buttons"]) == (
        "interactive",
        [{"id": "Confirm", "title": "Confirm"}, {"id": "Reschedule", "title": "Reschedule"}],
    )
