"""The sandbox chat page in a real headless Chromium.

The page talks to a stand-in for the sandbox provider defined here: a small
aiohttp app that serves ``wahub/web/sandbox/`` and speaks the ``/sandbox/ws``
protocol. It exists only so this file can check what a person sees in the
browser; the full-daemon browser test drives the real provider.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSMsgType, web
from pytest_aiohttp import AiohttpServer

from wahub.plugins.providers.sandbox.provider import STATIC_FILES

try:
    from playwright.async_api import Page, expect
except ImportError:  # the page fixture skips (or fails in CI) with the reason
    Page = Any  # type: ignore[misc,assignment]
else:
    expect.set_options(timeout=10_000)

SANDBOX_DIR = Path(__file__).resolve().parents[2] / "wahub" / "web" / "sandbox"
Frame = dict[str, Any]
# 2024-05-06 12:03:00 UTC; the browser context runs in UTC.
NOON = 1714996980.0


class StandInSandboxServer:
    """Just enough of the sandbox provider's WebSocket protocol for the page.

    A text becomes an "in" message and the bot answers with two buttons; a
    "received" ack moves a bot message to sent then delivered, "seen" to read;
    a tapped button gets a plain answer. Every frame the page sends is kept.
    """

    def __init__(self) -> None:
        self.history: list[Frame] = []
        self.frames: list[Frame] = []
        self.connections: list[dict[str, str]] = []
        self.accepting = True
        self.url = ""
        self._sockets: set[web.WebSocketResponse] = set()
        self._changed = asyncio.Event()
        self._next_id = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/sandbox", self._index)
        app.router.add_get("/sandbox/ws", self._socket)
        app.router.add_get("/sandbox/static/{name}", self._static)
        app.on_shutdown.append(self._close_sockets)
        return app

    def bot_message(self, text: str, **fields: Any) -> Frame:
        self._next_id += 1
        message: Frame = {
            "id": f"out-{self._next_id}",
            "direction": "out",
            "type": "text",
            "text": text,
            "status": "queued",
            "timestamp": time.time(),
        }
        message.update(fields)
        return message

    async def push(self, frame: Frame) -> None:
        """Send ``frame`` to every connected page."""
        if frame["type"] == "message":
            self.history.append(frame["message"])
        for socket in list(self._sockets):
            await socket.send_json(frame)

    async def drop(self) -> None:
        """Close every socket, as a restarting daemon would."""
        await self._close_sockets()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        async with asyncio.timeout(10):
            while not predicate():
                await self._changed.wait()
                self._changed.clear()

    async def wait_for_frame(self, predicate: Callable[[Frame], bool]) -> Frame:
        await self.wait_for(lambda: any(predicate(frame) for frame in self.frames))
        return next(frame for frame in self.frames if predicate(frame))

    def _notify(self) -> None:
        self._changed.set()

    async def _close_sockets(self, app: web.Application | None = None) -> None:
        for socket in list(self._sockets):
            await socket.close()

    async def _index(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(SANDBOX_DIR / "index.html")

    async def _static(self, request: web.Request) -> web.FileResponse:
        """The files the real sandbox serves (its own and the shared ones)."""
        path = STATIC_FILES.get(request.match_info["name"])
        if path is None:
            raise web.HTTPNotFound()
        return web.FileResponse(path)

    async def _socket(self, request: web.Request) -> web.StreamResponse:
        if not self.accepting:
            return web.Response(status=503, text="restarting")
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        self.connections.append(dict(request.query))
        self._sockets.add(socket)
        self._notify()
        try:
            await socket.send_json({"type": "history", "messages": self.history})
            async for message in socket:
                if message.type is WSMsgType.TEXT:
                    frame = message.json()
                    self.frames.append(frame)
                    self._notify()
                    await self._answer(frame)
        finally:
            self._sockets.discard(socket)
            self._notify()
        return socket

    async def _answer(self, frame: Frame) -> None:
        if frame["type"] == "text":
            self._next_id += 1
            echo = {
                "id": f"in-{self._next_id}",
                "direction": "in",
                "type": "text",
                "text": frame["text"],
                "status": "received",
                "timestamp": time.time(),
            }
            await self.push({"type": "message", "message": echo})
            buttons = [{"id": "yes", "title": "Yes"}, {"id": "no", "title": "No"}]
            reply = self.bot_message(f"You said: {frame['text']}", type="interactive", buttons=buttons)
            await self.push({"type": "message", "message": reply})
        elif frame["type"] == "button":
            await self.push({"type": "message", "message": self.bot_message(f"You chose {frame['title']}")})
        elif frame["type"] == "received":
            for status in ("sent", "delivered"):
                await self._move(frame["ids"], status)
        elif frame["type"] == "seen":
            await self._move(frame["ids"], "read")

    async def _move(self, ids: list[str], status: str) -> None:
        for message in self.history:
            if message["id"] in ids:
                message["status"] = status
        for message_id in ids:
            await self.push({"type": "status", "id": message_id, "status": status})


@pytest.fixture
async def stand_in_sandbox_server(aiohttp_server: AiohttpServer) -> StandInSandboxServer:
    """A stand-in for the sandbox provider's routes, for this page test only."""
    stand_in = StandInSandboxServer()
    server = await aiohttp_server(stand_in.app())
    stand_in.url = str(server.make_url("/sandbox"))
    return stand_in


async def open_chat(page: Page, stand_in: StandInSandboxServer) -> None:
    await page.goto(stand_in.url)
    await expect(page.locator("body")).to_have_attribute("data-connection", "connected")


def bubble(page: Page, direction: str, text: str) -> Any:
    return page.locator(f'li.msg[data-direction="{direction}"]').filter(has_text=text)


async def test_conversation_shows_both_sides_and_ticks_reach_read(
    stand_in_sandbox_server: StandInSandboxServer, page: Page
) -> None:
    stand_in = stand_in_sandbox_server
    await open_chat(page, stand_in)
    user = await page.get_by_label("Your number").input_value()
    assert re.fullmatch(r"1555\d{7}", user)
    assert stand_in.connections == [{"user": user, "name": "Sandbox user"}]

    composer = page.get_by_label("Message")
    await composer.fill("Hello <b>bot</b>")
    await composer.press("Enter")

    mine = bubble(page, "in", "Hello <b>bot</b>")
    await expect(mine).to_be_visible()
    await expect(composer).to_have_value("")
    reply = bubble(page, "out", "You said: Hello <b>bot</b>")
    await expect(reply).to_be_visible()
    await expect(reply.get_by_role("button")).to_have_text(["Yes", "No"])
    await expect(reply).to_have_attribute("data-status", "read")
    await expect(reply.locator(".msg__tick")).to_have_attribute("aria-label", "read")
    assert await page.locator("#messages b").count() == 0

    reply_id = await reply.get_attribute("data-id")
    assert {"type": "received", "ids": [reply_id]} in stand_in.frames
    assert {"type": "seen", "ids": [reply_id]} in stand_in.frames
    assert stand_in.frames[0] == {"type": "text", "text": "Hello <b>bot</b>"}


async def test_empty_input_is_not_sent(stand_in_sandbox_server: StandInSandboxServer, page: Page) -> None:
    stand_in = stand_in_sandbox_server
    await open_chat(page, stand_in)
    composer = page.get_by_label("Message")
    await composer.fill("   ")
    await composer.press("Enter")
    await page.get_by_role("button", name="Send").click()
    await composer.fill("after")
    await page.get_by_role("button", name="Send").click()
    await expect(bubble(page, "in", "after")).to_be_visible()
    assert [frame for frame in stand_in.frames if frame["type"] == "text"] == [{"type": "text", "text": "after"}]


async def test_tapping_buttons_sends_the_button_with_its_message_as_context(
    stand_in_sandbox_server: StandInSandboxServer, page: Page
) -> None:
    stand_in = stand_in_sandbox_server
    await open_chat(page, stand_in)
    composer = page.get_by_label("Message")
    await composer.fill("first")
    await composer.press("Enter")
    first = bubble(page, "out", "You said: first")
    await composer.fill("second")
    await composer.press("Enter")
    await expect(bubble(page, "out", "You said: second")).to_be_visible()
    first_id = await first.get_attribute("data-id")

    # Buttons of older messages stay tappable, as on WhatsApp.
    await first.get_by_role("button", name="No").click()
    tapped = await stand_in.wait_for_frame(lambda frame: frame["type"] == "button")
    assert tapped == {"type": "button", "id": "no", "title": "No", "context": first_id}
    await expect(bubble(page, "out", "You chose No")).to_be_visible()


async def test_status_only_moves_forward(stand_in_sandbox_server: StandInSandboxServer, page: Page) -> None:
    stand_in = stand_in_sandbox_server
    await open_chat(page, stand_in)
    composer = page.get_by_label("Message")
    await composer.fill("hi")
    await composer.press("Enter")
    reply = bubble(page, "out", "You said: hi")
    await expect(reply).to_have_attribute("data-status", "read")
    reply_id = await reply.get_attribute("data-id")

    await stand_in.push({"type": "status", "id": reply_id, "status": "delivered"})
    failed = stand_in.bot_message("Could not send", status="failed")
    await stand_in.push({"type": "message", "message": failed})
    await stand_in.push({"type": "status", "id": failed["id"], "status": "read"})
    marker = stand_in.bot_message("marker")
    await stand_in.push({"type": "message", "message": marker})

    # Frames are handled in order, so once the marker shows, the late ones were applied.
    await expect(bubble(page, "out", "marker")).to_be_visible()
    await expect(reply).to_have_attribute("data-status", "read")
    await expect(reply.locator(".msg__tick")).to_have_attribute("aria-label", "read")
    failed_bubble = page.locator(f'li.msg[data-id="{failed["id"]}"]')
    await expect(failed_bubble).to_have_attribute("data-status", "failed")
    await expect(failed_bubble.locator(".msg__tick")).to_have_attribute("aria-label", "failed")


async def test_history_is_shown_escaped_with_local_times_and_acknowledged(
    stand_in_sandbox_server: StandInSandboxServer, page: Page
) -> None:
    stand_in = stand_in_sandbox_server
    hostile = '<img src="x" onerror="window.hacked = true">'
    old_read = stand_in.bot_message("Welcome back", status="read", timestamp=NOON - 60)
    mine = {"id": "in-1", "direction": "in", "type": "text", "text": hostile, "timestamp": NOON}
    unread = stand_in.bot_message("Reminder: tomorrow 9:00", status="sent", timestamp=NOON)
    stand_in.history.extend([old_read, mine, unread])

    await open_chat(page, stand_in)
    await expect(page.locator("li.msg")).to_have_count(3)
    await expect(bubble(page, "in", hostile).locator(".msg__text")).to_have_text(hostile)
    assert await page.locator("#messages img").count() == 0
    assert await page.evaluate("window.hacked") is None
    await expect(page.locator("li.msg time")).to_have_text(["12:02", "12:03", "12:03"])
    await expect(page.locator(f'li.msg[data-id="{unread["id"]}"]')).to_have_attribute("data-status", "read")

    acks = [frame for frame in stand_in.frames if frame["type"] in ("received", "seen")]
    assert acks[:2] == [
        {"type": "received", "ids": [unread["id"]]},
        {"type": "seen", "ids": [unread["id"]]},
    ]


async def test_reconnects_after_the_server_drops_the_socket_and_keeps_typed_text(
    stand_in_sandbox_server: StandInSandboxServer, page: Page
) -> None:
    stand_in = stand_in_sandbox_server
    await open_chat(page, stand_in)
    composer = page.get_by_label("Message")
    send = page.get_by_role("button", name="Send")
    await composer.fill("before")
    await composer.press("Enter")
    reply = bubble(page, "out", "You said: before")
    await expect(reply).to_have_attribute("data-status", "read")

    stand_in.accepting = False
    await stand_in.drop()
    banner = page.get_by_role("status").filter(has_text="Reconnecting")
    await expect(banner).to_be_visible()
    await expect(page.locator("body")).to_have_attribute("data-connection", "reconnecting")
    await expect(send).to_be_disabled()
    await expect(reply.get_by_role("button", name="Yes")).to_be_disabled()
    await composer.fill("typed while offline")
    await composer.press("Enter")
    await expect(composer).to_have_value("typed while offline")

    stand_in.accepting = True
    await expect(banner).to_be_hidden()
    await expect(send).to_be_enabled()
    await expect(composer).to_have_value("typed while offline")
    await expect(page.locator("li.msg")).to_have_count(2)
    await composer.press("Enter")
    await expect(bubble(page, "in", "typed while offline")).to_be_visible()
    assert len(stand_in.connections) == 2


async def test_changing_the_identity_reconnects_and_is_remembered(
    stand_in_sandbox_server: StandInSandboxServer, page: Page
) -> None:
    stand_in = stand_in_sandbox_server
    await open_chat(page, stand_in)
    number = page.get_by_label("Your number")
    name = page.get_by_label("Your name")

    await number.fill("12ab")
    await page.get_by_role("button", name="Apply").click()
    await expect(number).to_have_attribute("aria-invalid", "true")
    await expect(page.locator("body")).to_have_attribute("data-connection", "connected")
    assert len(stand_in.connections) == 1

    # Each field applies on change, so leaving the number field may reconnect once already.
    ada = {"user": "447700900123", "name": "Ada"}
    await number.fill(ada["user"])
    await name.fill(ada["name"])
    await page.get_by_role("button", name="Apply").click()
    await stand_in.wait_for(lambda: stand_in.connections[-1] == ada)
    await expect(page.locator("body")).to_have_attribute("data-connection", "connected")

    seen_before_reload = len(stand_in.connections)
    await page.reload()
    await expect(number).to_have_value(ada["user"])
    await expect(name).to_have_value(ada["name"])
    await stand_in.wait_for(lambda: len(stand_in.connections) > seen_before_reload)
    assert stand_in.connections[-1] == ada


async def test_server_errors_are_announced(stand_in_sandbox_server: StandInSandboxServer, page: Page) -> None:
    stand_in = stand_in_sandbox_server
    await open_chat(page, stand_in)
    await stand_in.push({"type": "error", "message": "Message too long (4096 characters at most)"})
    await expect(page.get_by_role("alert")).to_have_text("Message too long (4096 characters at most)")


async def test_formatting_is_rendered_and_hostile_text_stays_text(
    stand_in_sandbox_server: StandInSandboxServer, page: Page
) -> None:
    stand_in = stand_in_sandbox_server
    hostile = '*<img src="x" onerror="window.hacked = true">* _<script>window.hacked = 1</script>_'
    stand_in.history.append(stand_in.bot_message("*Bold* _italic_ ~gone~ `code`\n```\nblock *x*```", status="read"))
    stand_in.history.append(stand_in.bot_message(hostile, status="read"))
    await open_chat(page, stand_in)

    first = page.locator("li.msg .msg__text").first
    await expect(first.locator("strong")).to_have_text("Bold")
    await expect(first.locator("em")).to_have_text("italic")
    await expect(first.locator("s")).to_have_text("gone")
    await expect(first.locator("code")).to_have_text("code")
    await expect(first.locator("pre")).to_have_text("block *x*")
    second = page.locator("li.msg .msg__text").nth(1)
    await expect(second.locator("strong")).to_have_text('<img src="x" onerror="window.hacked = true">')
    await expect(second.locator("em")).to_have_text("<script>window.hacked = 1</script>")
    assert await page.locator("#messages img, #messages script").count() == 0
    assert await page.evaluate("window.hacked") is None


async def test_the_empty_chat_says_what_to_try(stand_in_sandbox_server: StandInSandboxServer, page: Page) -> None:
    stand_in = stand_in_sandbox_server
    await open_chat(page, stand_in)
    hint = page.locator("#empty-hint")
    await expect(hint).to_be_visible()
    await expect(hint).to_contain_text("Say “hi”")
    await expect(hint).to_contain_text("Ask for a person")
    composer = page.get_by_label("Message")
    await composer.fill("hi")
    await composer.press("Enter")
    await expect(bubble(page, "in", "hi")).to_be_visible()
    await expect(hint).to_be_hidden()


async def test_a_bad_number_is_explained(stand_in_sandbox_server: StandInSandboxServer, page: Page) -> None:
    stand_in = stand_in_sandbox_server
    await open_chat(page, stand_in)
    number = page.get_by_label("Your number")
    error = page.locator("#identity-error")
    await expect(error).to_be_hidden()
    for typed, problem in [
        ("+1 555", "“+1 555” is not a number: use digits only, without “+”, spaces or dashes."),
        ("12345", "“12345” has 5 digits: a number has 6 to 15."),
        ("", "Type your number: 6 to 15 digits."),
    ]:
        await number.fill(typed)
        await page.get_by_role("button", name="Apply").click()
        await expect(error).to_have_text(problem)
        await expect(error).to_have_attribute("role", "alert")
    await number.fill("447700900123")
    await page.get_by_role("button", name="Apply").click()
    await expect(error).to_be_hidden()
    await stand_in.wait_for(lambda: stand_in.connections[-1]["user"] == "447700900123")
    assert len(stand_in.connections) == 2


async def test_a_reply_waiting_in_the_outbox_shows_why_then_becomes_the_message(
    stand_in_sandbox_server: StandInSandboxServer, page: Page
) -> None:
    stand_in = stand_in_sandbox_server
    await open_chat(page, stand_in)
    waiting = stand_in.bot_message("Your order *shipped*", id="wahub.5")
    waiting["pending"] = {"reason": "pair rate limit", "retry_in": 30}
    await stand_in.push({"type": "pending", "message": waiting})

    pending = page.locator('li.msg[data-id="wahub.5"]')
    await expect(pending).to_have_attribute("data-pending", "true")
    await expect(pending).to_have_attribute("data-status", "queued")
    await expect(pending.locator(".msg__pending")).to_have_text(
        re.compile(r"^waiting: pair rate limit, retrying in (30|29|28) s$")
    )
    # The page counts down by itself.
    await expect(pending.locator(".msg__pending")).not_to_have_text(re.compile("in 30 s"))

    sent = {**waiting, "id": "sbx.out.5", "status": "sent"}
    del sent["pending"]
    await stand_in.push({"type": "message", "message": sent, "replaces": "wahub.5"})
    real = page.locator('li.msg[data-id="sbx.out.5"]')
    await expect(real).to_have_attribute("data-status", "read")
    await expect(real.locator("strong")).to_have_text("shipped")
    await expect(page.locator("li.msg")).to_have_count(1)
    await expect(page.locator(".msg__pending")).to_have_count(0)
    # Only the message that reached the phone was acknowledged.
    acked = [frame["ids"] for frame in stand_in.frames if frame["type"] in ("received", "seen")]
    assert acked == [["sbx.out.5"], ["sbx.out.5"]]


async def test_a_pending_reply_that_failed_shows_the_reason(
    stand_in_sandbox_server: StandInSandboxServer, page: Page
) -> None:
    stand_in = stand_in_sandbox_server
    waiting = stand_in.bot_message("Offer", id="wahub.9", pending={"reason": "pacing", "retry_in": 0})
    stand_in.history.append(waiting)
    await open_chat(page, stand_in)
    pending = page.locator('li.msg[data-id="wahub.9"]')
    await expect(pending.locator(".msg__pending")).to_have_text("waiting: pacing")
    failed = {**waiting, "status": "failed", "error": "the 24-hour service window closed"}
    del failed["pending"]
    await stand_in.push({"type": "settled", "id": "wahub.9", "message": failed})
    await expect(pending).to_have_attribute("data-status", "failed")
    await expect(pending.locator(".msg__error")).to_have_text("not sent: the 24-hour service window closed")
    await expect(pending.locator(".msg__pending")).to_have_count(0)
