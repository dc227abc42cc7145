"""`wahub chat`'s client against a small fake of the sandbox WebSocket."""

from __future__ import annotations

import asyncio
import io
import os
import pty
import re
import sys
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import pytest
from aiohttp import WSMsgType, web
from pytest_aiohttp import AiohttpServer

from wahub.chat import ChatError, run_chat, sandbox_ws_url
from wahub.chat_text import Screen, stdin_lines, whatsapp_lines
from wahub.cli import main

Frame = dict[str, Any]
T0 = 1714996980.0
BUTTONS = [{"id": "yes", "title": "Yes"}, {"id": "no", "title": "No"}]


def clock(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).strftime("%H:%M")


class FakeSandbox:
    """The sandbox provider's WebSocket, reduced to what the client relies on.

    A text is echoed as an "in" message, confirmed to its sender as accepted
    and answered with two buttons; a tapped button gets a plain answer;
    "received" moves a bot message to sent then delivered, "seen" to read.
    "count to three" is answered with "one", and each number once it is seen
    with the next. Three texts fare worse: "drop me" is never confirmed,
    "refuse me" is refused, "hang up" closes the connection. Every frame from
    the client is kept in order.
    """

    def __init__(self) -> None:
        self.history: list[Frame] = []
        self.frames: list[Frame] = []
        self.connections: list[dict[str, str]] = []
        self.url = ""
        self._sockets: set[web.WebSocketResponse] = set()
        self._count = 0
        # The bot message that follows each one once it is seen.
        self._sequels: dict[str, Frame] = {}

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/sandbox/ws", self._socket)
        app.on_shutdown.append(self._close_all)
        return app

    def message(self, direction: str, text: str, **fields: Any) -> Frame:
        self._count += 1
        message: Frame = {
            "id": f"{direction}-{self._count}",
            "direction": direction,
            "type": "text",
            "text": text,
            "status": "queued" if direction == "out" else "received",
            "timestamp": T0 + self._count * 60,
        }
        message.update(fields)
        return message

    async def push(self, frame: Frame) -> None:
        for socket in list(self._sockets):
            await socket.send_json(frame)

    async def close(self) -> None:
        await self._close_all()

    async def _close_all(self, app: web.Application | None = None) -> None:
        for socket in list(self._sockets):
            await socket.close()

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        self.connections.append(dict(request.query))
        self._sockets.add(socket)
        try:
            await socket.send_json({"type": "history", "messages": self.history})
            async for raw in socket:
                if raw.type is WSMsgType.TEXT:
                    frame = raw.json()
                    self.frames.append(frame)
                    await self._answer(socket, frame)
        finally:
            self._sockets.discard(socket)
        return socket

    async def _answer(self, socket: web.WebSocketResponse, frame: Frame) -> None:
        if frame["type"] in ("text", "button"):
            await self._take(socket, frame)
        elif frame["type"] == "received":
            for reply in [
                {"type": "status", "id": i, "status": s} for s in ("sent", "delivered") for i in frame["ids"]
            ]:
                await self.push(reply)
        elif frame["type"] == "seen":
            for message_id in frame["ids"]:
                await self.push({"type": "status", "id": message_id, "status": "read"})
                if message_id in self._sequels:
                    await self.push({"type": "message", "message": self._sequels.pop(message_id)})

    async def _take(self, socket: web.WebSocketResponse, frame: Frame) -> None:
        text = frame.get("text")
        if text == "drop me":
            return
        if text == "refuse me":
            await socket.send_json(
                {"type": "error", "message": "not delivered: the inbox is full", "ref": frame["ref"]}
            )
            return
        if text == "hang up":
            await socket.close()
            return
        if frame["type"] == "text":
            await self.push({"type": "message", "message": self.message("in", text)})
        await socket.send_json({"type": "accepted", "ref": frame["ref"], "id": f"in-{self._count}"})
        if text == "count to three":
            one, two, three = (self.message("out", number) for number in ("one", "two", "three"))
            self._sequels = {one["id"]: two, two["id"]: three}
            reply = one
        elif frame["type"] == "text":
            reply = self.message("out", f"You said: {text}", type="interactive", buttons=BUTTONS)
        else:
            reply = self.message("out", f"You chose {frame['title']}")
        await self.push({"type": "message", "message": reply})


class Terminal:
    """Plays the person at the keyboard and the screen they read."""

    def __init__(self) -> None:
        self.shown: list[str] = []
        self._typed: asyncio.Queue[str | None] = asyncio.Queue()
        self._changed = asyncio.Event()

    def emit(self, line: str) -> None:
        self.shown.append(line)
        self._changed.set()

    def type(self, *lines: str) -> None:
        for line in lines:
            self._typed.put_nowait(line)

    def end(self) -> None:
        self._typed.put_nowait(None)

    async def lines(self) -> AsyncIterator[str]:
        while (line := await self._typed.get()) is not None:
            yield line

    async def wait_for(self, line: str) -> None:
        await self.wait_until(lambda: line in self.shown)

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        async with asyncio.timeout(5):
            while not condition():
                await self._changed.wait()
                self._changed.clear()


@pytest.fixture
async def sandbox(aiohttp_server: AiohttpServer) -> FakeSandbox:
    fake = FakeSandbox()
    server = await aiohttp_server(fake.app())
    fake.url = str(server.make_url("/"))
    return fake


@pytest.fixture
async def terminal() -> Terminal:
    return Terminal()


def start_chat(
    sandbox: FakeSandbox, terminal: Terminal, user: str = "15551234567", **options: float
) -> asyncio.Task[None]:
    options.setdefault("reconnect_first", 0.05)
    return asyncio.create_task(run_chat(sandbox.url, user, "Ada", terminal.lines(), terminal.emit, **options))


async def test_history_is_shown_and_acknowledged(sandbox: FakeSandbox, terminal: Terminal) -> None:
    welcome = sandbox.message("out", "Welcome!\nType menu for options.", status="sent")
    hello = sandbox.message("in", "hello")
    old = sandbox.message("out", "Earlier answer", status="read", buttons=BUTTONS)
    photo = sandbox.message("in", "", type="image")
    sandbox.history.extend([welcome, hello, old, photo])

    chat = start_chat(sandbox, terminal)
    await terminal.wait_for("      ✓✓ read  (Welcome! Type menu for option…)")
    terminal.end()
    await chat

    assert sandbox.connections == [{"user": "15551234567", "name": "Ada"}]
    address = sandbox.url.replace("http://", "ws://")
    assert terminal.shown == [
        f"* connected to {address}sandbox/ws as 15551234567 (Ada); type a button's number to tap it, "
        "/help for help, /quit to leave",
        f"bot  {clock(welcome['timestamp'])}  Welcome!",
        "            Type menu for options.  ✓",
        f"you  {clock(hello['timestamp'])}  hello",
        f"bot  {clock(old['timestamp'])}  Earlier answer  ✓✓ read",
        "  [1] Yes  [2] No",
        f"you  {clock(photo['timestamp'])}  (image)",
        "      ✓✓ delivered  (Welcome! Type menu for option…)",
        "      ✓✓ read  (Welcome! Type menu for option…)",
    ]
    assert sandbox.frames == [
        {"type": "received", "ids": [welcome["id"]]},
        {"type": "seen", "ids": [welcome["id"]]},
    ]


async def test_typed_lines_are_sent_and_numbers_tap_the_latest_buttons(
    sandbox: FakeSandbox, terminal: Terminal
) -> None:
    read = "      ✓✓ read"
    chat = start_chat(sandbox, terminal)
    for line in ("", "   ", "3"):
        terminal.type(line)
    await terminal.wait_until(lambda: terminal.shown.count(read) == 1)
    terminal.type("Hi there")
    await terminal.wait_until(lambda: terminal.shown.count(read) == 2)
    terminal.type(" 2 ")
    await terminal.wait_until(lambda: terminal.shown.count(read) == 3)
    terminal.type("1")
    await terminal.wait_until(lambda: terminal.shown.count(read) == 4)
    terminal.end()
    await chat

    statuses = ["      ✓ sent", "      ✓✓ delivered", read]
    assert terminal.shown[1:] == [
        f"you  {clock(T0 + 60)}  3",
        f"bot  {clock(T0 + 120)}  You said: 3  ◷",
        "  [1] Yes  [2] No",
        *statuses,
        f"you  {clock(T0 + 180)}  Hi there",
        f"bot  {clock(T0 + 240)}  You said: Hi there  ◷",
        "  [1] Yes  [2] No",
        *statuses,
        f"bot  {clock(T0 + 300)}  You chose No  ◷",
        *statuses,
        f"you  {clock(T0 + 360)}  1",
        f"bot  {clock(T0 + 420)}  You said: 1  ◷",
        "  [1] Yes  [2] No",
        *statuses,
    ]
    typed = [frame for frame in sandbox.frames if frame["type"] in ("text", "button")]
    assert typed == [
        {"type": "text", "text": "3", "ref": "1"},
        {"type": "text", "text": "Hi there", "ref": "2"},
        {"type": "button", "id": "no", "title": "No", "context": "out-4", "ref": "3"},
        {"type": "text", "text": "1", "ref": "4"},
    ]
    acks = [frame for frame in sandbox.frames if frame["type"] in ("received", "seen")]
    assert acks == [
        {"type": kind, "ids": [reply]}
        for reply in ("out-2", "out-4", "out-5", "out-7")
        for kind in ("received", "seen")
    ]


async def test_status_never_moves_back_and_failed_is_final(sandbox: FakeSandbox, terminal: Terminal) -> None:
    read = sandbox.message("out", "Read already", status="read")
    failed = sandbox.message("out", "Undeliverable", status="failed")
    sandbox.history.extend([read, failed])
    chat = start_chat(sandbox, terminal)
    await terminal.wait_for(f"bot  {clock(failed['timestamp'])}  Undeliverable  ⚠ failed")

    await sandbox.push({"type": "status", "id": read["id"], "status": "delivered"})
    await sandbox.push({"type": "status", "id": failed["id"], "status": "read"})
    await sandbox.push({"type": "status", "id": "unknown", "status": "read"})
    await sandbox.push({"type": "error", "message": "Message too long"})
    await terminal.wait_for("error  Message too long")
    terminal.end()
    await chat

    assert terminal.shown[1:] == [
        f"bot  {clock(read['timestamp'])}  Read already  ✓✓ read",
        f"bot  {clock(failed['timestamp'])}  Undeliverable  ⚠ failed",
        "error  Message too long",
    ]
    assert sandbox.frames == []


async def test_piped_input_waits_for_the_confirmation_and_every_answer(
    sandbox: FakeSandbox, terminal: Terminal
) -> None:
    # The whole input is there, and over, before the chat even connects.
    terminal.type("count to three")
    terminal.end()
    await run_chat(sandbox.url, "15551234567", "Ada", terminal.lines(), terminal.emit, wait=1.0)

    # Each answer came only after the previous one was seen: all were waited for.
    bot_lines = [line.split("  ")[2] for line in terminal.shown if line.startswith("bot  ")]
    assert bot_lines == ["one", "two", "three"]
    assert terminal.shown[1] == f"you  {clock(T0 + 60)}  count to three"
    assert sandbox.frames[0] == {"type": "text", "text": "count to three", "ref": "1"}


async def test_a_piped_number_taps_a_button_of_the_history(sandbox: FakeSandbox, terminal: Terminal) -> None:
    menu = sandbox.message("out", "Pick one", status="read", buttons=BUTTONS)
    sandbox.history.append(menu)
    terminal.type("2")
    terminal.end()
    await run_chat(sandbox.url, "15551234567", "Ada", terminal.lines(), terminal.emit, wait=0.5)

    assert sandbox.frames[0] == {"type": "button", "id": "no", "title": "No", "context": menu["id"], "ref": "1"}
    assert any(line.endswith("  You chose No  ◷") for line in terminal.shown)


async def test_a_line_the_sandbox_never_confirms_is_a_chat_error(sandbox: FakeSandbox, terminal: Terminal) -> None:
    terminal.type("hello", "drop me")
    terminal.end()
    with pytest.raises(ChatError, match=r"^the sandbox never confirmed 1 line \('drop me'\): it may not have reached"):
        await run_chat(sandbox.url, "15551234567", "Ada", terminal.lines(), terminal.emit, wait=5, patience=0.2)
    assert [frame["text"] for frame in sandbox.frames if frame["type"] == "text"] == ["hello", "drop me"]


async def test_a_refused_line_is_a_chat_error_after_the_chat(sandbox: FakeSandbox, terminal: Terminal) -> None:
    chat = start_chat(sandbox, terminal)
    terminal.type("refuse me")
    await terminal.wait_for("error  not delivered: the inbox is full")
    terminal.type("hello")
    await terminal.wait_until(lambda: any("You said: hello" in line for line in terminal.shown))
    terminal.end()
    with pytest.raises(ChatError, match=r"^the sandbox refused 1 line \('refuse me'\)$"):
        await chat


async def test_a_server_closing_before_it_confirms_is_a_chat_error(sandbox: FakeSandbox, terminal: Terminal) -> None:
    terminal.type("hang up")
    terminal.end()
    with pytest.raises(ChatError, match=r"^the sandbox never confirmed 1 line \('hang up'\)"):
        await run_chat(sandbox.url, "15551234567", "Ada", terminal.lines(), terminal.emit, wait=5)
    assert terminal.shown[-1] == "* the sandbox closed the connection"


async def test_a_dropped_connection_reconnects_and_keeps_the_history(sandbox: FakeSandbox, terminal: Terminal) -> None:
    welcome = sandbox.message("out", "Welcome!", status="read")
    sandbox.history.append(welcome)
    chat = start_chat(sandbox, terminal, reconnect_first=0.05)
    await terminal.wait_until(lambda: len(terminal.shown) > 1)
    await sandbox.close()
    await terminal.wait_for("* reconnected")
    terminal.type("hi")
    await terminal.wait_until(lambda: any("You said: hi" in line for line in terminal.shown))
    terminal.end()
    await chat

    assert len(sandbox.connections) == 2
    assert terminal.shown[1:4] == [
        f"bot  {clock(welcome['timestamp'])}  Welcome!  ✓✓ read",
        "* connection lost; reconnecting in 0.05 s…",
        "* reconnected",
    ]
    # The history sent again on the new connection is not shown twice.
    assert sum("Welcome!" in line for line in terminal.shown) == 1


async def test_once_the_input_ended_a_closed_connection_ends_the_chat(sandbox: FakeSandbox, terminal: Terminal) -> None:
    terminal.type("hello")
    terminal.end()
    chat = start_chat(sandbox, terminal, wait=30)
    await terminal.wait_until(lambda: any("You said: hello" in line for line in terminal.shown))
    await sandbox.close()
    async with asyncio.timeout(5):
        await chat
    assert terminal.shown[-1] == "* the sandbox closed the connection"
    assert len(sandbox.connections) == 1


async def test_help_quit_and_slashes_are_the_chats_own(sandbox: FakeSandbox, terminal: Terminal) -> None:
    chat = start_chat(sandbox, terminal, wait=30)
    terminal.type("/help", "/nope", "//start")
    await terminal.wait_until(lambda: any("You said: /start" in line for line in terminal.shown))
    terminal.type("/quit", "never sent")
    async with asyncio.timeout(5):
        await chat

    assert terminal.shown[1:6] == [
        "* type a message and press Enter to send it; a button's number taps that button",
        "* /help  this help",
        "* /quit  leave the chat (so does Ctrl-D)",
        "* a text starting with / is sent with //, as in //start",
        "* unknown command /nope: /help lists them; send a text starting with / as //text",
    ]
    typed = [frame for frame in sandbox.frames if frame["type"] in ("text", "button")]
    assert typed == [{"type": "text", "text": "/start", "ref": "1"}]


async def test_a_reply_waiting_in_the_outbox_shows_why_then_is_sent(sandbox: FakeSandbox, terminal: Terminal) -> None:
    chat = start_chat(sandbox, terminal)
    await terminal.wait_until(lambda: len(terminal.shown) > 0)
    waiting = sandbox.message("out", "Later *today*", id="wahub.7")
    waiting["pending"] = {"reason": "pair rate limit", "retry_in": 3.2}
    await sandbox.push({"type": "pending", "message": waiting})
    waiting["pending"] = {"reason": "pair rate limit", "retry_in": 0.4}
    await sandbox.push({"type": "pending", "message": waiting})
    sent = {**waiting, "id": "sbx.out.1", "status": "sent"}
    del sent["pending"]
    await sandbox.push({"type": "message", "message": sent, "replaces": "wahub.7"})
    await terminal.wait_for("      ✓✓ read")
    terminal.end()
    await chat

    assert terminal.shown[1:] == [
        f"bot  {clock(waiting['timestamp'])}  Later today  ◷",
        "      ◷ waiting: pair rate limit, retrying in 4 s",
        "      ◷ waiting: pair rate limit, retrying in 1 s",
        "      ✓ sent",
        "      ✓✓ delivered",
        "      ✓✓ read",
    ]
    # Only the reply that reached the phone is acknowledged, under its real id.
    assert sandbox.frames == [{"type": "received", "ids": ["sbx.out.1"]}, {"type": "seen", "ids": ["sbx.out.1"]}]


async def test_a_pending_reply_that_failed_says_why(sandbox: FakeSandbox, terminal: Terminal) -> None:
    waiting = sandbox.message("out", "Offer", id="wahub.8", pending={"reason": "pacing", "retry_in": 0})
    sandbox.history.append(waiting)
    chat = start_chat(sandbox, terminal)
    await terminal.wait_for("      ◷ waiting: pacing")
    failed = {**waiting, "status": "failed", "error": "the 24-hour service window closed"}
    await sandbox.push({"type": "settled", "id": "wahub.8", "message": failed})
    await terminal.wait_for("      not sent: the 24-hour service window closed")
    terminal.end()
    await chat
    assert terminal.shown[-2:] == ["      ⚠ failed", "      not sent: the 24-hour service window closed"]
    assert sandbox.frames == []


class LiveTerminal(Terminal):
    """A terminal where lines can be rewritten: what is written raw is kept too."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[str] = []

    def write(self, text: str) -> None:
        self.written.append(text)
        self._changed.set()


async def test_on_a_terminal_the_status_changes_in_place_and_typed_lines_are_not_repeated(
    sandbox: FakeSandbox,
) -> None:
    live = LiveTerminal()
    screen = Screen(live.emit, write=live.write, color=False, size=lambda: os.terminal_size((80, 24)))
    chat = asyncio.create_task(run_chat(sandbox.url, "15551234567", "Ada", live.lines(), screen))
    await live.wait_until(lambda: len(live.shown) > 0)
    live.type("hi")
    await live.wait_until(lambda: any("✓✓ read" in text for text in live.written))
    live.end()
    await chat

    # The echo of the typed line is erased: the chat shows it once, as the sandbox took it.
    assert live.written[0] == "\x1b[1F\x1b[J"
    assert live.shown[1:] == [
        f"you  {clock(T0 + 60)}  hi",
        f"bot  {clock(T0 + 120)}  You said: hi  ◷",
        "  [1] Yes  [2] No",
    ]
    # Two lines up (the buttons are below), the reply's mark is rewritten, the cursor kept.
    reply = f"bot  {clock(T0 + 120)}  You said: hi"
    assert live.written[1:] == [f"\x1b7\x1b[2F\x1b[2K{reply}  {mark}\x1b8" for mark in ("✓", "✓✓", "✓✓ read")]


@pytest.mark.parametrize(
    ("text", "plain", "ansi"),
    [
        (
            "*bold* _italic_ ~strike~ `code`",
            "bold italic strike code",
            "\x1b[1mbold\x1b[0m \x1b[3mitalic\x1b[0m \x1b[9mstrike\x1b[0m \x1b[2mcode\x1b[0m",
        ),
        ("*_both_*", "both", "\x1b[1;3mboth\x1b[0m"),
        ("(*in brackets*)", "(in brackets)", "(\x1b[1min brackets\x1b[0m)"),
        ("2*3*4 and snake_case_name", "2*3*4 and snake_case_name", "2*3*4 and snake_case_name"),
        ("* not bold* and *not bold *", "* not bold* and *not bold *", "* not bold* and *not bold *"),
        ("*across\nlines*", "*across\nlines*", "*across\nlines*"),
        ("`*not bold in code*`", "*not bold in code*", "\x1b[2m*not bold in code*\x1b[0m"),
        ("**", "**", "**"),
        ("<b>html</b> *stays* text", "<b>html</b> stays text", "<b>html</b> \x1b[1mstays\x1b[0m text"),
    ],
)
def test_whatsapp_formatting_in_a_terminal(text: str, plain: str, ansi: str) -> None:
    assert "\n".join(whatsapp_lines(text, color=False)) == plain
    assert "\n".join(whatsapp_lines(text, color=True)) == ansi


def test_a_monospace_block_keeps_its_lines_and_the_markers_inside() -> None:
    text = "Try:\n```\n*x* = 1\ny = 2```\ndone"
    assert whatsapp_lines(text, color=False) == ["Try:", "*x* = 1", "y = 2", "done"]
    assert whatsapp_lines(text, color=True) == ["Try:", "\x1b[2m*x* = 1\x1b[0m", "\x1b[2my = 2\x1b[0m", "done"]


@pytest.mark.parametrize(
    ("tty", "env", "live", "color"),
    [(True, {}, True, True), (True, {"NO_COLOR": "1"}, True, False), (False, {}, False, False)],
)
def test_the_screen_is_live_and_in_colour_only_on_a_terminal(
    tty: bool, env: dict[str, str], live: bool, color: bool
) -> None:
    class Stream(io.StringIO):
        def isatty(self) -> bool:
            return tty

    stream = Stream()
    screen = Screen.for_terminal(stream, env)
    assert (screen.live, screen.color) == (live, color)
    screen.show(screen.paint("bot", "bot") + "  hi")
    assert stream.getvalue() == (
        "\r\x1b[2K\x1b[1;36mbot\x1b[0m  hi\n" if color else ("\r\x1b[2K" if live else "") + "bot  hi\n"
    )


async def test_an_unreachable_daemon_is_a_chat_error_naming_the_url(unused_tcp_port: int, terminal: Terminal) -> None:
    port = unused_tcp_port
    with pytest.raises(ChatError, match=rf"cannot reach the sandbox at ws://127\.0\.0\.1:{port}/sandbox/ws"):
        await run_chat(f"http://127.0.0.1:{port}", "15551234567", "Ada", terminal.lines(), terminal.emit)
    assert terminal.shown == []


async def test_a_daemon_without_the_sandbox_is_a_chat_error(aiohttp_server: AiohttpServer, terminal: Terminal) -> None:
    server = await aiohttp_server(web.Application())
    url = str(server.make_url("/"))
    with pytest.raises(ChatError, match=r"no sandbox at ws://.*/sandbox/ws \(HTTP 404\): enable the sandbox provider"):
        await run_chat(url, "15551234567", "Ada", terminal.lines(), terminal.emit)


@pytest.mark.parametrize(
    ("url", "user", "error"),
    [
        ("http://127.0.0.1:8080", "+15551234567", "must be a phone number of 6 to 15 digits"),
        ("http://127.0.0.1:8080", "12345", "must be a phone number of 6 to 15 digits"),
        ("127.0.0.1:8080", "15551234567", "is not the address of a wahub daemon"),
        ("ftp://example.com", "15551234567", "is not the address of a wahub daemon"),
    ],
)
async def test_bad_arguments_are_chat_errors(url: str, user: str, error: str, terminal: Terminal) -> None:
    with pytest.raises(ChatError, match=error):
        await run_chat(url, user, "Ada", terminal.lines(), terminal.emit)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:8080", "ws://127.0.0.1:8080/sandbox/ws?user=15551234567&name=Ada+L"),
        ("https://hub.example.com/wahub/", "wss://hub.example.com/wahub/sandbox/ws?user=15551234567&name=Ada+L"),
        ("ws://localhost:8080/?x=1", "ws://localhost:8080/sandbox/ws?user=15551234567&name=Ada+L"),
    ],
)
def test_sandbox_ws_url(url: str, expected: str) -> None:
    assert str(sandbox_ws_url(url, "15551234567", "Ada L")) == expected


async def test_stdin_lines_yields_lines_without_newlines() -> None:
    typed = io.StringIO("hello\r\n2\n\nlast line without newline")
    assert [line async for line in stdin_lines(typed)] == ["hello", "2", "", "last line without newline"]


@pytest.mark.parametrize("wait", ["soon", "-1", "nan", "3601"])
def test_wait_must_be_seconds_from_0_to_3600(wait: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["chat", "--wait", wait])
    assert exited.value.code == 2
    assert f"argument --wait: {wait!r} is not a number of seconds from 0 to 3600" in capsys.readouterr().err


class PseudoTerminal:
    """``wahub chat`` run as a process on a pseudo-terminal, as a person runs it."""

    def __init__(self, process: asyncio.subprocess.Process, master: int) -> None:
        self.process = process
        self.master = master
        self.output = b""
        self._changed = asyncio.Event()
        asyncio.get_running_loop().add_reader(master, self._read)

    @classmethod
    async def start(cls, url: str, env: dict[str, str]) -> PseudoTerminal:
        master, slave = pty.openpty()
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "wahub", "chat", "--url", url),
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env={**os.environ, "COLUMNS": "100", "LINES": "30", **env},
        )
        os.close(slave)
        return cls(process, master)

    def _read(self) -> None:
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # the process closed its end
            chunk = b""
        if not chunk:
            asyncio.get_running_loop().remove_reader(self.master)
        self.output += chunk
        self._changed.set()

    def type(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\n")

    async def wait_for(self, text: str) -> None:
        async with asyncio.timeout(20):
            while text.encode() not in self.output:
                await self._changed.wait()
                self._changed.clear()

    async def close(self) -> int:
        async with asyncio.timeout(20):
            code = await self.process.wait()
        asyncio.get_running_loop().remove_reader(self.master)
        os.close(self.master)
        return code


@pytest.mark.parametrize("no_color", [False, True], ids=["colour", "NO_COLOR"])
async def test_wahub_chat_at_a_terminal(sandbox: FakeSandbox, no_color: bool) -> None:
    chat = await PseudoTerminal.start(sandbox.url, {"NO_COLOR": "1"} if no_color else {})
    try:
        await chat.wait_for("/help for help, /quit to leave")
        chat.type("hi")
        await chat.wait_for("✓✓ read")
        chat.type("/help")
        await chat.wait_for("/quit  leave the chat")
        chat.type("/quit")
    finally:
        code = await chat.close()
    output = chat.output.decode()

    assert code == 0, output
    # The terminal's echo of "hi" is erased; the chat shows the line once, from the sandbox.
    assert "hi\r\n\x1b[1F\x1b[J" in output
    assert len(re.findall(r"you(?:\x1b\[0m)?  \d\d:\d\d  hi\r\n", output)) == 1
    # The reply's ticks change in place on its line (the cursor saved and restored).
    assert re.search(r"\x1b7\x1b\[2F\x1b\[2K.*You said: hi.*✓✓ read.*\x1b8", output)
    assert ("\x1b[1;36mbot\x1b[0m" in output) is not no_color
    assert ("\x1b[2m* connected" in output) is not no_color
    assert [frame["text"] for frame in sandbox.frames if frame["type"] == "text"] == ["hi"]
