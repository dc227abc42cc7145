"""The sandbox chat, from its page in real headless Chromium, from
``wahub chat`` run as a process and over raw sockets, against the real daemon.

The person's message goes page -> WebSocket -> signed webhook over HTTP ->
inbox -> pipeline -> rules router -> outbox -> sandbox provider -> page, and
the receipts come back the same way as status webhooks.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
import socket
import struct
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa

from wahub.core.errors import ConfigError
from wahub.core.models import InboundMessage
from wahub.plugins.providers.sandbox.provider import SandboxProvider
from wahub.testing import TEST_SECRET, RunningDaemon, build_config, running_daemon, wait_until

try:
    from playwright.async_api import expect
except ImportError:  # the page fixture skips (or fails in CI) with the reason
    pass
else:
    expect.set_options(timeout=15_000)

ROUTER = {
    "rules": [
        {"match": {"keyword": ["hi", "hello"]}, "reply": "Hello! How can I help?"},
        {
            "match": {"keyword": "menu"},
            "reply": {"text": "What would you like?", "buttons": ["Opening hours", "Delivery"]},
        },
        {"match": {"keyword": "opening hours"}, "reply": "Monday to Friday, 9 to 18."},
    ],
    "default_reply": "Sorry, I did not understand.",
}


@pytest.fixture
async def daemon(database_url: str) -> AsyncIterator[RunningDaemon]:
    async with running_daemon(build_config({"router": ROUTER}, database=database_url)) as running:
        yield running


def bubble(page: Any, direction: str, text: str) -> Any:
    return page.locator(f'li.msg[data-direction="{direction}"]').filter(has_text=text)


async def test_message_gets_rule_reply_and_ticks_advance_to_read(daemon: RunningDaemon, page: Any) -> None:
    await page.goto(f"{daemon.url}/sandbox")
    await expect(page.locator("body")).to_have_attribute("data-connection", "connected")
    composer = page.get_by_label("Message")
    await composer.fill("hi there")
    await composer.press("Enter")

    await expect(bubble(page, "in", "hi there")).to_be_visible()
    reply = bubble(page, "out", "Hello! How can I help?")
    await expect(reply).to_be_visible()
    await expect(reply).to_have_attribute("data-status", "read")
    await expect(reply.locator(".msg__tick")).to_have_attribute("aria-label", "read")

    # The stored message went the whole way too, and a reload shows the same history.
    async def stored_status() -> Any:
        async with daemon.hub.storage.engine.connect() as conn:
            query = sa.text("SELECT status FROM messages WHERE direction = 'out'")
            return (await conn.execute(query)).scalar_one_or_none() == "read"

    await wait_until(stored_status)
    await page.reload()
    await expect(bubble(page, "out", "Hello! How can I help?")).to_have_attribute("data-status", "read")
    await expect(bubble(page, "in", "hi there")).to_have_count(1)


async def test_tapping_a_reply_button_is_routed_like_text(daemon: RunningDaemon, page: Any) -> None:
    await page.goto(f"{daemon.url}/sandbox")
    await expect(page.locator("body")).to_have_attribute("data-connection", "connected")
    await page.get_by_label("Message").fill("menu")
    await page.get_by_label("Message").press("Enter")
    menu = bubble(page, "out", "What would you like?")
    await expect(menu.get_by_role("button")).to_have_text(["Opening hours", "Delivery"])
    await menu.get_by_role("button", name="Opening hours").click()
    await expect(bubble(page, "out", "Monday to Friday, 9 to 18.")).to_have_attribute("data-status", "read")


def faults(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Every error or traceback the daemon logged."""
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


async def stored(daemon: RunningDaemon) -> list[tuple[str, str]]:
    """The direction and text of each message stored for the chat's default user."""
    history = await daemon.hub.storage.messages.history("sandbox", "15551230000", limit=1000)
    return [(row["direction"], row["body"]["text"]["body"]) for row in history]


async def test_piped_wahub_chat_prints_the_reply_and_exits_0(
    daemon: RunningDaemon, caplog: pytest.LogCaptureFixture
) -> None:
    chat = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "wahub", "chat", "--url", daemon.url),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    # `echo hi | wahub chat`: the input is written and closed at once.
    async with asyncio.timeout(60):
        out, err = await chat.communicate(b"hi\n")
    output = out.decode()

    assert (chat.returncode, err.decode()) == (0, "")
    assert re.search(r"^you  \d\d:\d\d  hi$", output, re.M), output
    assert re.search(r"^bot  \d\d:\d\d  Hello! How can I help\?  ✓$", output, re.M), output
    assert "      ✓✓ read" in output.splitlines()
    assert await stored(daemon) == [("in", "hi"), ("out", "Hello! How can I help?")]
    assert faults(caplog) == []


async def leave_abruptly(daemon: RunningDaemon, *, after_handshake: bool) -> None:
    """Open the chat socket and reset the connection, without a closing handshake."""
    host, port = daemon.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET /sandbox/ws?user=15551230000 HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    await writer.drain()
    if after_handshake:
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
    # A zero linger turns the close into a reset, as when a process or a network dies.
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@pytest.mark.parametrize("after_handshake", [True, False], ids=["during-history", "during-handshake"])
async def test_a_client_leaving_mid_chat_leaves_no_traceback(
    daemon: RunningDaemon, caplog: pytest.LogCaptureFixture, after_handshake: bool
) -> None:
    caplog.set_level(logging.DEBUG, logger="wahub.plugins.providers.sandbox.provider")
    # A long history (about 400 kB) cannot all be written before the reset arrives.
    for number in range(100):
        text = f"{number} " + "x" * 4000
        content = {"text": {"body": text}}
        message = InboundMessage("sandbox", f"sbx.in.old{number}", "15551230000", "text", content, time.time())
        await daemon.hub.storage.messages.record_inbound(message)

    await leave_abruptly(daemon, after_handshake=after_handshake)

    async def noticed() -> bool:
        return bool(faults(caplog)) or any("sandbox chat client left" in r.getMessage() for r in caplog.records)

    await wait_until(noticed)
    assert faults(caplog) == []
    # The daemon goes on serving the same user.
    await leave_abruptly(daemon, after_handshake=True)
    assert len(await stored(daemon)) == 100


async def test_the_sender_gets_each_message_accepted_by_its_ref(daemon: RunningDaemon) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{daemon.url}/sandbox/ws?user=15551230000") as ws,
    ):
        assert (await ws.receive_json())["type"] == "history"
        await ws.send_json({"type": "text", "text": "hi", "ref": "a-1"})
        mine = await ws.receive_json()
        accepted = await ws.receive_json()
        assert accepted == {"type": "accepted", "ref": "a-1", "id": mine["message"]["id"]}
        assert (mine["message"]["direction"], mine["message"]["text"]) == ("in", "hi")
        await ws.send_json({"type": "text", "text": "hi", "ref": 7})
        assert await ws.receive_json() == {"type": "error", "message": "'ref' must be a string of 1 to 64 characters"}
        await ws.send_json({"type": "sticker", "ref": "a-2"})
        assert await ws.receive_json() == {"type": "error", "message": "cannot send a 'sticker' frame", "ref": "a-2"}
    await wait_until(answered(daemon))


async def test_frames_the_sandbox_cannot_take_are_errors_never_accepted(
    daemon: RunningDaemon, caplog: pytest.LogCaptureFixture
) -> None:
    unstorable = "the text holds a NUL character or an unpaired surrogate"
    refused = {
        "[" * 5000 + "]" * 5000: "frames are JSON objects",
        '["a"]': "frames are JSON objects",
        '{"type": "text", "text": "\\udc00 lone", "ref": "r"}': unstorable,
        '{"type": "text", "text": "a\\u0000b", "ref": "r"}': unstorable,
        '{"type": "text", "text": 1e400, "ref": "r"}': "a text frame needs 'text': the message, as a string",
        json.dumps({"type": "text", "text": "x" * 4097, "ref": "r"}): "a message is at most 4096 characters",
    }
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{daemon.url}/sandbox/ws?user=15551230000") as ws,
    ):
        assert (await ws.receive_json())["type"] == "history"
        for frame, problem in refused.items():
            await ws.send_str(frame)
            answer = await ws.receive_json()
            assert (answer["type"], answer["message"]) == ("error", problem), frame[:40]
        await ws.send_json({"type": "text", "text": "hi"})
    await wait_until(answered(daemon))
    assert faults(caplog) == []


def answered(daemon: RunningDaemon) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await stored(daemon) == [("in", "hi"), ("out", "Hello! How can I help?")]

    return check


async def test_a_client_without_refs_that_hangs_up_at_once_still_delivers(daemon: RunningDaemon) -> None:
    # As `wahub chat` did before it waited: send, then close without reading anything.
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{daemon.url}/sandbox/ws?user=15551230000") as ws,
    ):
        await ws.send_json({"type": "text", "text": "hi"})
    await wait_until(answered(daemon))


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        (
            {"delivered_after": 61},
            "providers[0].delivered_after: expected a number of seconds between 0 and 60, got 61",
        ),
        ({"read_after": -1}, "providers[0].read_after: expected a number of seconds between 0 and 60, got -1"),
        ({"read_after": "soon"}, "providers[0].read_after: expected a number of seconds, got 'soon'"),
    ],
)
def test_receipt_delays_are_seconds_from_0_to_60(options: dict[str, Any], problem: str, tmp_path: Path) -> None:
    provider = {"platform": "sandbox", "name": "sandbox", **options}
    with pytest.raises(ConfigError) as caught:
        build_config({"providers": [provider]}, database=f"sqlite:///{tmp_path}/wahub.db")
    assert [str(p) for p in caught.value.problems if "after" in str(p)] == [f"<embedded defaults>: {problem}"]


def test_receipt_delays_default_to_1_and_2_seconds(tmp_path: Path) -> None:
    config = build_config(database=f"sqlite:///{tmp_path}/wahub.db")
    assert (config["providers"][0]["delivered_after"], config["providers"][0]["read_after"]) == (1.0, 2.0)


RECORD_STATUSES = """() => {
  window.statuses = [];
  const note = (item) => window.statuses.push([item.dataset.id, item.dataset.status, performance.now()]);
  new MutationObserver((changes) => {
    for (const change of changes) {
      if (change.type === "attributes") note(change.target);
      for (const node of change.addedNodes || []) if (node.matches && node.matches("li.msg")) note(node);
    }
  }).observe(document.getElementById("messages"),
             {subtree: true, childList: true, attributes: true, attributeFilter: ["data-status"]});
}"""


async def test_the_ticks_take_the_configured_time_in_order(database_url: str, page: Any) -> None:
    sandbox = {"platform": "sandbox", "name": "sandbox", "secret": TEST_SECRET, "delivered_after": 1, "read_after": 2}
    async with running_daemon(build_config({"router": ROUTER, "providers": [sandbox]}, database=database_url)) as d:
        await page.goto(f"{d.url}/sandbox")
        await expect(page.locator("body")).to_have_attribute("data-connection", "connected")
        await page.evaluate(RECORD_STATUSES)
        await page.get_by_label("Message").fill("hi")
        await page.get_by_label("Message").press("Enter")
        reply = bubble(page, "out", "Hello! How can I help?")
        # Each tick is on the screen for a while: sent, then delivered, then read.
        await expect(reply).to_have_attribute("data-status", "sent")
        await expect(reply).to_have_attribute("data-status", "delivered")
        await expect(reply).to_have_attribute("data-status", "read")
        reply_id = await reply.get_attribute("data-id")
        seen = [(status, at) for item, status, at in await page.evaluate("window.statuses") if item == reply_id]

    assert [status for status, _ in seen] == ["sent", "delivered", "read"]
    assert seen[0][1] < seen[1][1] < seen[2][1]


async def test_a_reply_held_by_the_pair_rate_limit_shows_as_waiting_then_arrives(database_url: str, page: Any) -> None:
    sandbox = {
        "platform": "sandbox",
        "name": "sandbox",
        "secret": TEST_SECRET,
        "pair_limit": {"burst": 1, "every": 5},
        "delivered_after": 0,
        "read_after": 0,
    }
    async with running_daemon(build_config({"router": ROUTER, "providers": [sandbox]}, database=database_url)) as d:
        await page.goto(f"{d.url}/sandbox")
        await expect(page.locator("body")).to_have_attribute("data-connection", "connected")
        composer = page.get_by_label("Message")
        await composer.fill("hi")
        await composer.press("Enter")
        await expect(bubble(page, "out", "Hello! How can I help?")).to_have_attribute("data-status", "read")
        await composer.fill("menu")
        await composer.press("Enter")

        menu = bubble(page, "out", "What would you like?")
        await expect(menu).to_have_attribute("data-pending", "true")
        await expect(menu.locator(".msg__pending")).to_have_text(
            re.compile(r"^waiting: pair rate limit, retrying in [1-5] s$")
        )
        await expect(menu).to_have_attribute("data-status", "read")
        await expect(menu).not_to_have_attribute("data-pending", "true")
        assert (await menu.get_attribute("data-id") or "").startswith("sbx.out.")
        await expect(page.locator('li.msg[data-direction="out"]')).to_have_count(2)
        await expect(page.locator(".msg__pending")).to_have_count(0)


async def test_a_queued_reply_is_pending_in_the_history_with_its_reason(daemon: RunningDaemon) -> None:
    provider = daemon.hub.providers["sandbox"]
    assert isinstance(provider, SandboxProvider)
    waiting = {
        "id": 1,
        "direction": "out",
        "status": "queued",
        "body": {"type": "text", "text": {"body": "soon"}},
        "created_at": time.time(),
        "next_attempt_at": time.time() + 4,
        "error_reason": None,
    }
    shown = provider.pending.shown_row(waiting, time.time())
    assert shown["id"] == "wahub.1"
    assert shown["pending"]["reason"] == "pair rate limit"
    assert 3 < shown["pending"]["retry_in"] <= 4
    retried = {**waiting, "error_reason": "network: timed out"}
    assert provider.pending.shown_row(retried, time.time())["pending"]["reason"] == (
        "the last try failed (network: timed out)"
    )
