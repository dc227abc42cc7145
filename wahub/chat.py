"""Terminal client of the sandbox provider, driven by ``wahub chat``.

It speaks the ``/sandbox/ws`` protocol of the sandbox chat page, so a person can
talk to their bot from a shell. Nothing here prints or reads stdin on its own:
the CLI hands :func:`run_chat` the lines the person types (see
:func:`stdin_lines`) and a function that shows one line of output.

Output looks like::

    bot  12:03  Hello! How can I help?  ✓✓
      [1] Yes  [2] No
    you  12:04  1
          ✓✓ read

Typing a number from 1 to n taps that button of the latest bot message;
``/help`` and ``/quit`` are the chat's own commands; any other line is sent as
text. On a terminal a reply's status is updated in place on its own line, the
text is in colour (not with ``NO_COLOR``) with WhatsApp's *bold*, _italic_,
~strike~ and `code` rendered; elsewhere each status change is a line of its
own and the markers are removed. A reply waiting in the outbox shows why
(``◷ waiting: pair rate limit, retrying in 4 s``).

When the connection drops the chat reconnects, with a growing delay, and
shows only what it had not shown yet; once the input has ended a closed
connection ends the chat.

When the input ends (a piped ``echo hi | wahub chat``, or Ctrl-D), the chat
does not hang up on what it sent: it waits until the sandbox has confirmed
every line (``accepted``, matched by the ``ref`` each line carries), then shows
the bot's answers until none has come for a quiet period.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
from collections.abc import AsyncIterable, Callable, Mapping
from typing import Any

import aiohttp
from yarl import URL

from wahub import chat_text
from wahub.chat_text import Screen
from wahub.core.models import STATUS_RANK

_LOGGER = logging.getLogger(__name__)

Frame = dict[str, Any]
Emit = Callable[[str], None]

USER_PATTERN = re.compile(r"[0-9]{6,15}")
CONNECT_TIMEOUT = 10.0
HEARTBEAT = 30.0
#: Seconds the sandbox may go without confirming anything while lines wait for it.
CONFIRM_PATIENCE = 30.0
#: The longest wait for the bot's answers after the last confirmation (or ``wait``, if longer).
ANSWER_LIMIT = 60.0
#: The quiet period after piped input ends, in seconds (``wahub chat --wait``).
PIPED_WAIT = 3.0
#: Reconnection delays: the first, doubled after each failure up to the last.
RECONNECT_FIRST = 0.5
RECONNECT_MAX = 8.0
HELP = [
    "* type a message and press Enter to send it; a button's number taps that button",
    "* /help  this help",
    "* /quit  leave the chat (so does Ctrl-D)",
    "* a text starting with / is sent with //, as in //start",
]
_WS_SCHEMES = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}


class ChatError(Exception):
    """The sandbox chat could not start; the message says why and names the URL."""


def sandbox_ws_url(url: str, user: str, name: str) -> URL:
    """The WebSocket address of the sandbox below the daemon's base ``url``.

    ``http://host:8080`` becomes ``ws://host:8080/sandbox/ws?user=...&name=...``;
    a path prefix (a daemon behind a reverse proxy) is kept.
    """
    base = URL(url)
    scheme = _WS_SCHEMES.get(base.scheme)
    if scheme is None or not base.host:
        raise ChatError(
            f"{url!r} is not the address of a wahub daemon: use its base URL, for example http://127.0.0.1:8080"
        )
    path = base.path.rstrip("/") + "/sandbox/ws"
    return base.with_scheme(scheme).with_path(path).with_query({"user": user, "name": name})


async def run_chat(
    url: str,
    user: str,
    name: str,
    lines: AsyncIterable[str],
    output: Emit | Screen,
    *,
    wait: float = 0.0,
    patience: float = CONFIRM_PATIENCE,
    reconnect_first: float = RECONNECT_FIRST,
) -> None:
    """Chat with the bot as WhatsApp user ``user`` (digits only) named ``name``.

    Shows the history, then every new message and status change on
    ``output`` (a :class:`~wahub.chat_text.Screen`, or a function showing one
    plain line); sends each line of ``lines`` as text, or as a button tap when
    it is the number of a button of the latest bot message; ``/help`` and
    ``/quit`` are answered here. Acknowledges bot messages as received and seen.
    A dropped connection is opened again, after ``reconnect_first`` seconds,
    then twice as long after each failure, up to :data:`RECONNECT_MAX`.

    When ``lines`` ends, waits until the sandbox has confirmed every line sent
    (giving up once it confirms nothing for ``patience`` seconds), then until
    no new bot message or status has come for ``wait`` seconds (at most
    :data:`ANSWER_LIMIT` seconds, or ``wait`` if longer), and returns; it
    returns at once on ``/quit``, and when the server closes the connection
    after the input ended. Raises :class:`ChatError` when the sandbox cannot
    be reached at first or refuses a reconnection, or when a line sent was
    refused or never confirmed.
    """
    if not USER_PATTERN.fullmatch(user):
        raise ChatError(f"user {user!r} must be a phone number of 6 to 15 digits, without '+' or spaces")
    screen = output if isinstance(output, Screen) else Screen(output)
    link = _Link(sandbox_ws_url(url, user, name), reconnect_first)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        link.session = session
        try:
            await link.open()
        except (aiohttp.ClientError, OSError) as exc:
            reason = str(exc) or type(exc).__name__
            raise ChatError(f"cannot reach the sandbox at {link.shown}: {reason}; is `wahub run` running?") from exc
        screen.show(
            screen.paint(
                "note",
                f"* connected to {link.shown} as {user} ({name}); type a button's number to tap it, "
                "/help for help, /quit to leave",
            )
        )
        conversation = _Conversation(screen)
        try:
            await _converse(link, lines, conversation, wait, patience)
        finally:
            await link.close()
        problem = conversation.undelivered()
        if problem is not None:
            raise ChatError(problem)


def _refusal(url: URL, status: int) -> str:
    if status == 404:
        return f"no sandbox at {url} (HTTP 404): enable the sandbox provider in config.yaml"
    return f"the sandbox at {url} refused the connection (HTTP {status})"


class _Link:
    """The chat's connection to the sandbox, opened again when it drops."""

    def __init__(self, url: URL, first_delay: float) -> None:
        self.url = url
        self.shown = url.with_query(None)
        self.session: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.online = asyncio.Event()
        self._first_delay = first_delay

    async def open(self) -> None:
        """Connect; ChatError when the sandbox refuses, aiohttp's errors when it cannot be reached."""
        assert self.session is not None
        try:
            self.ws = await self.session.ws_connect(self.url, heartbeat=HEARTBEAT)
        except aiohttp.WSServerHandshakeError as exc:
            raise ChatError(_refusal(self.shown, exc.status)) from exc
        self.online.set()

    async def reopen(self, screen: Screen) -> None:
        """Connect again after a drop, waiting longer after each failure."""
        self.online.clear()
        delay = self._first_delay
        while True:
            screen.show(screen.paint("note", f"* connection lost; reconnecting in {delay:g} s…"))
            # Jitter keeps many clients from hammering a restarting daemon in step.
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            try:
                await self.open()
            except (aiohttp.ClientError, OSError) as exc:
                _LOGGER.debug("Reconnecting failed: %r", exc)
                delay = min(RECONNECT_MAX, delay * 2)
                continue
            screen.show(screen.paint("note", "* reconnected"))
            return

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()


async def _converse(
    link: _Link,
    lines: AsyncIterable[str],
    conversation: _Conversation,
    wait: float,
    patience: float,
) -> None:
    input_over = asyncio.Event()
    reader = asyncio.create_task(conversation.keep_reading(link, input_over), name="wahub-chat-read")
    writer = asyncio.create_task(conversation.write(link, lines), name="wahub-chat-write")
    tasks = [reader, writer]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if not reader.done() and writer.exception() is None and not conversation.quitting:
            input_over.set()
            settle = asyncio.create_task(conversation.settle(wait, patience), name="wahub-chat-settle")
            tasks.append(settle)
            await asyncio.wait([reader, settle], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in tasks:
        if not task.cancelled() and (error := task.exception()) is not None:
            raise error


async def _send(ws: aiohttp.ClientWebSocketResponse | None, frame: Frame) -> bool:
    """Send ``frame``; False when the connection is gone (the reader reports that)."""
    if ws is None or ws.closed:
        return False
    try:
        await ws.send_json(frame)
    except ConnectionResetError:
        return False
    return True


class _Conversation:
    """What the terminal has shown so far, and the frames it implies."""

    def __init__(self, screen: Screen) -> None:
        self._screen = screen
        self._statuses: dict[str, str] = {}
        self._texts: dict[str, str] = {}
        #: Per bot message: the number of its last text line on the screen, and that line without its mark.
        self._lines: dict[str, tuple[int, str]] = {}
        #: Per reply shown waiting in the outbox: the number of its "waiting" line.
        self._waits: dict[str, int] = {}
        #: The id a reply is sent under -> the id it was shown under while it waited.
        self._aliases: dict[str, str] = {}
        self._acknowledged: set[str] = set()
        self._last_shown: str | None = None
        # The latest bot message's id and button (id, title) pairs.
        self._buttons: tuple[str, list[tuple[str, str]]] | None = None
        self._history = asyncio.Event()
        # The lines sent and not yet confirmed, by the ref they were sent with.
        self._pending: dict[str, str] = {}
        self._refused: list[str] = []
        self._sent = 0
        self._confirmed = asyncio.Event()
        self._answered = asyncio.Event()
        self._last_news = 0.0
        self.quitting = False

    def _note(self, text: str, part: str = "note") -> None:
        self._screen.show(self._screen.paint(part, text))

    async def keep_reading(self, link: _Link, input_over: asyncio.Event) -> None:
        """Read the sandbox's frames, reconnecting after a drop until the input is over."""
        while True:
            await self.read(link.ws)
            if input_over.is_set() or self.quitting:
                self._note("* the sandbox closed the connection")
                return
            await link.reopen(self._screen)

    async def read(self, ws: aiohttp.ClientWebSocketResponse | None) -> None:
        if ws is None:
            return
        async for message in ws:
            if message.type is aiohttp.WSMsgType.ERROR:
                break
            if message.type is not aiohttp.WSMsgType.TEXT:
                continue
            try:
                frame = json.loads(message.data)
            except ValueError:
                _LOGGER.debug("Ignoring a frame that is not JSON: %.80s", message.data)
                continue
            if isinstance(frame, dict):
                for reply in self.handle(frame):
                    await _send(ws, reply)

    async def write(self, link: _Link, lines: AsyncIterable[str]) -> None:
        # A number taps a button of what is on the screen: the history comes first.
        await self._history.wait()
        async for line in lines:
            self._screen.typed(line)
            frame = self.frame_for(line)
            if frame is None:
                continue
            if frame["type"] == "quit":
                self.quitting = True
                return
            if frame["type"] == "local":
                continue
            if not link.online.is_set():
                self._note(f"* not connected: {chat_text.snippet(line.strip())!r} goes once reconnected")
                await link.online.wait()
            self._sent += 1
            ref = str(self._sent)
            self._pending[ref] = line.strip()
            await _send(link.ws, {**frame, "ref": ref})

    async def settle(self, wait: float, patience: float) -> None:
        """After the input ended: wait for the confirmation of every line, then for the answers."""
        loop = asyncio.get_running_loop()
        self._last_news = loop.time()
        while self._pending or not self._history.is_set():
            if not await _set_within(self._confirmed, patience):
                return
        limit = loop.time() + max(ANSWER_LIMIT, wait)
        while (remaining := min(self._last_news + wait, limit) - loop.time()) > 0:
            await _set_within(self._answered, remaining)

    def undelivered(self) -> str | None:
        """What became of the lines the sandbox did not take, or None when it took them all."""
        problems = []
        if self._refused:
            problems.append(f"the sandbox refused {chat_text.summary(self._refused)}")
        if self._pending:
            unconfirmed = chat_text.summary(list(self._pending.values()))
            problems.append(f"the sandbox never confirmed {unconfirmed}: it may not have reached the bot")
        return "; ".join(problems) or None

    def _news(self, event: asyncio.Event) -> None:
        self._last_news = asyncio.get_running_loop().time()
        event.set()

    def frame_for(self, line: str) -> Frame | None:
        """The frame a typed line stands for (``quit`` and ``local`` ones stay
        here), or None for a blank line."""
        text = line.strip()
        if not text:
            return None
        if text.startswith("/") and not text.startswith("//"):
            return self._command(text)
        if self._buttons is not None and re.fullmatch(r"[0-9]{1,2}", text):
            context, buttons = self._buttons
            if 1 <= int(text) <= len(buttons):
                button_id, title = buttons[int(text) - 1]
                return {"type": "button", "id": button_id, "title": title, "context": context}
        return {"type": "text", "text": text.removeprefix("/")}

    def _command(self, text: str) -> Frame:
        command = text.split()[0].lower()
        if command == "/quit":
            return {"type": "quit"}
        if command == "/help":
            for line in HELP:
                self._note(line)
        else:
            self._note(f"* unknown command {command}: /help lists them; send a text starting with / as //text")
        return {"type": "local"}

    def handle(self, frame: Mapping[str, Any]) -> list[Frame]:
        """Show what ``frame`` carries; return the acknowledgements to send."""
        kind = frame.get("type")
        if kind == "history":
            messages = [m for m in frame.get("messages") or [] if isinstance(m, Mapping)]
            for message in messages:
                self._take(message)
            self._history.set()
            self._news(self._confirmed)
            return self._acknowledgements(messages)
        if kind in ("message", "pending") and isinstance(frame.get("message"), Mapping):
            message = frame["message"]
            replaces = frame.get("replaces")
            if isinstance(replaces, str) and replaces in self._texts and str(message.get("id")) not in self._texts:
                self._alias(str(message.get("id")), replaces)
            if self._take(message) and message.get("direction") == "out":
                self._news(self._answered)
            return self._acknowledgements([message])
        if kind == "settled":
            return self._settled(str(frame.get("id")), frame.get("message"))
        if kind == "status":
            self._advance(str(frame.get("id")), str(frame.get("status")), frame.get("error"))
        elif kind == "accepted" and self._pending.pop(str(frame.get("ref")), None) is not None:
            self._news(self._confirmed)
        elif kind == "error":
            self._note(f"error  {frame.get('message', 'the sandbox reported an error')}", "error")
            if (line := self._pending.pop(str(frame.get("ref")), None)) is not None:
                self._refused.append(line)
                self._news(self._confirmed)
        return []

    def _take(self, message: Mapping[str, Any]) -> bool:
        """Show a message not shown yet (True), or bring one shown up to date."""
        message_id = self._aliases.get(str(message.get("id")), str(message.get("id")))
        if message_id not in self._texts:
            self._show(message)
            return True
        pending = message.get("pending")
        if isinstance(pending, Mapping) and self._statuses.get(message_id) == "queued":
            self._show_wait(message_id, pending)
        self._advance(str(message.get("id")), str(message.get("status")), message.get("error"))
        return False

    def _alias(self, sent_id: str, waiting_id: str) -> None:
        self._aliases[sent_id] = waiting_id
        number = self._waits.pop(waiting_id, None)
        if number is not None:
            # The reply shows under its waiting line: the line says it waited, and no longer does.
            self._screen.rewrite(number, self._screen.paint("status", f"{chat_text.STATUS_INDENT}waited in the outbox"))

    def _settled(self, waiting_id: str, message: Any) -> list[Frame]:
        if waiting_id not in self._texts:
            return self.handle({"type": "message", "message": message}) if isinstance(message, Mapping) else []
        if not isinstance(message, Mapping):
            self._note(f"{chat_text.STATUS_INDENT}withdrawn  ({chat_text.snippet(self._texts[waiting_id])})", "status")
            return []
        sent_id = str(message.get("id"))
        if sent_id != waiting_id and sent_id not in self._texts:
            self._alias(sent_id, waiting_id)
        self._advance(sent_id, str(message.get("status")), message.get("error"))
        return self._acknowledgements([message])

    def _show(self, message: Mapping[str, Any]) -> None:
        screen = self._screen
        message_id = str(message.get("id"))
        from_bot = message.get("direction") == "out"
        raw = str(message.get("text") or "")
        text = " ".join(chat_text.whatsapp_lines(raw, color=False)) if raw else ""
        self._texts[message_id] = text or f"({message.get('type', 'message')})"
        self._last_shown = message_id
        clock = chat_text.clock(message.get("timestamp"))
        who = screen.paint("bot" if from_bot else "you", "bot" if from_bot else "you")
        prefix = f"{who}  {clock}  "
        indent = " " * len(f"bot  {clock}  ")
        body = chat_text.whatsapp_lines(raw, color=screen.color) if raw else [f"({message.get('type', 'message')})"]
        status = chat_text.known_status(message.get("status"))
        numbers: list[int] = []
        for index, line in enumerate(body):
            shown = (prefix if index == 0 else indent) + line
            if from_bot and index == len(body) - 1:
                self._statuses[message_id] = status
                self._lines[message_id] = (len(numbers), shown)
                shown += "  " + self._mark(status)
            numbers.append(screen.show(shown))
        if from_bot:
            first, line = self._lines[message_id]
            self._lines[message_id] = (numbers[first], line)
            self._show_buttons(message_id, message.get("buttons"))
            pending = message.get("pending")
            if isinstance(pending, Mapping) and status == "queued":
                self._show_wait(message_id, pending)
            if status == "failed" and message.get("error"):
                self._note(f"{chat_text.STATUS_INDENT}not sent: {message['error']}", "failed")

    def _mark(self, status: str) -> str:
        part = {"read": "read", "failed": "failed"}.get(status, "status")
        return self._screen.paint(part, chat_text.message_mark(status))

    def _show_wait(self, message_id: str, pending: Mapping[str, Any]) -> None:
        line = self._screen.paint("status", f"{chat_text.STATUS_INDENT}{chat_text.waiting(pending)}")
        number = self._waits.get(message_id)
        if number is None or not self._screen.rewrite(number, line):
            self._waits[message_id] = self._screen.show(line)

    def _show_buttons(self, message_id: str, raw_buttons: Any) -> None:
        buttons = [
            (str(button.get("id")), str(button.get("title")))
            for button in raw_buttons or []
            if isinstance(button, Mapping)
        ]
        self._buttons = (message_id, buttons) if buttons else None
        if buttons:
            self._screen.show("  " + "  ".join(f"[{n}] {title}" for n, (_, title) in enumerate(buttons, 1)))

    def _advance(self, shown_id: str, status: str, error: Any = None) -> None:
        message_id = self._aliases.get(shown_id, shown_id)
        current = self._statuses.get(message_id)
        if current is None or status not in STATUS_RANK:
            return
        # Statuses only move forward and "failed" is final, as on the server.
        if current == "failed" or STATUS_RANK[status] <= STATUS_RANK[current]:
            return
        self._statuses[message_id] = status
        self._news(self._answered)
        number, line = self._lines[message_id]
        if not self._screen.rewrite(number, f"{line}  {self._mark(status)}"):
            shown = f"{chat_text.STATUS_INDENT}{chat_text.TICKS[status]} {status}"
            if message_id != self._last_shown:
                shown += f"  ({chat_text.snippet(self._texts[message_id])})"
            self._note(shown, {"read": "read", "failed": "failed"}.get(status, "status"))
        if status == "failed" and error:
            self._note(f"{chat_text.STATUS_INDENT}not sent: {error}", "failed")

    def _acknowledgements(self, messages: list[Mapping[str, Any]]) -> list[Frame]:
        received: list[str] = []
        seen: list[str] = []
        for message in messages:
            message_id = str(message.get("id"))
            status = self._statuses.get(self._aliases.get(message_id, message_id))
            if message.get("direction") != "out" or status is None or message_id in self._acknowledged:
                continue
            if message.get("pending"):
                continue  # still in the outbox: it has not reached the phone
            self._acknowledged.add(message_id)
            if STATUS_RANK[status] < STATUS_RANK["delivered"]:
                received.append(message_id)
            # A terminal shows a message as soon as it arrives: it is seen at once.
            if status not in ("read", "failed"):
                seen.append(message_id)
        frames: list[Frame] = []
        if received:
            frames.append({"type": "received", "ids": received})
        if seen:
            frames.append({"type": "seen", "ids": seen})
        return frames


async def _set_within(event: asyncio.Event, seconds: float) -> bool:
    """Whether ``event`` is set within ``seconds`` from now (it is cleared first)."""
    event.clear()
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True
