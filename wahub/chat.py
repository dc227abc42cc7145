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

Typing a number from 1 to n taps that button of the latest bot message; any
other line is sent as text.

When the input ends (a piped ``echo hi | wahub chat``, or Ctrl-D), the chat
does not hang up on what it sent: it waits until the sandbox has confirmed
every line (``accepted``, matched by the ``ref`` each line carries), then shows
the bot's answers until none has come for a quiet period.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterable, Callable, Mapping
from typing import Any

import aiohttp
from yarl import URL

from wahub import chat_text
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
    emit: Emit,
    *,
    wait: float = 0.0,
    patience: float = CONFIRM_PATIENCE,
) -> None:
    """Chat with the bot as WhatsApp user ``user`` (digits only) named ``name``.

    Shows the history, then every new message and status change through
    ``emit``; sends each line of ``lines`` as text, or as a button tap when it
    is the number of a button of the latest bot message; acknowledges bot
    messages as received and seen.

    When ``lines`` ends, waits until the sandbox has confirmed every line sent
    (giving up once it confirms nothing for ``patience`` seconds), then until
    no new bot message has come for ``wait`` seconds (at most
    :data:`ANSWER_LIMIT` seconds, or ``wait`` if longer), and returns. It also
    returns when the server closes the connection. Raises :class:`ChatError`
    when the sandbox cannot be reached, or when a line sent was refused or
    never confirmed.
    """
    if not USER_PATTERN.fullmatch(user):
        raise ChatError(f"user {user!r} must be a phone number of 6 to 15 digits, without '+' or spaces")
    ws_url = sandbox_ws_url(url, user, name)
    shown_url = ws_url.with_query(None)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        try:
            ws = await session.ws_connect(ws_url, heartbeat=HEARTBEAT)
        except aiohttp.WSServerHandshakeError as exc:
            raise ChatError(_refusal(shown_url, exc.status)) from exc
        except (aiohttp.ClientError, OSError) as exc:
            reason = str(exc) or type(exc).__name__
            raise ChatError(f"cannot reach the sandbox at {shown_url}: {reason}; is `wahub run` running?") from exc
        async with ws:
            emit(f"* connected to {shown_url} as {user} ({name}); type a button's number to tap it")
            conversation = _Conversation(emit)
            await _converse(ws, lines, conversation, wait, patience)
        problem = conversation.undelivered()
        if problem is not None:
            raise ChatError(problem)


def _refusal(url: URL, status: int) -> str:
    if status == 404:
        return f"no sandbox at {url} (HTTP 404): enable the sandbox provider in config.yaml"
    return f"the sandbox at {url} refused the connection (HTTP {status})"


async def _converse(
    ws: aiohttp.ClientWebSocketResponse,
    lines: AsyncIterable[str],
    conversation: _Conversation,
    wait: float,
    patience: float,
) -> None:
    reader = asyncio.create_task(conversation.read(ws), name="wahub-chat-read")
    writer = asyncio.create_task(conversation.write(ws, lines), name="wahub-chat-write")
    tasks = [reader, writer]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if not reader.done() and writer.exception() is None:
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


async def _send(ws: aiohttp.ClientWebSocketResponse, frame: Frame) -> bool:
    """Send ``frame``; False when the connection is gone (the reader reports that)."""
    try:
        await ws.send_json(frame)
    except ConnectionResetError:
        return False
    return True


class _Conversation:
    """What the terminal has shown so far, and the frames it implies."""

    def __init__(self, emit: Emit) -> None:
        self._emit = emit
        self._statuses: dict[str, str] = {}
        self._texts: dict[str, str] = {}
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

    async def read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
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
        self._emit("* the sandbox closed the connection")

    async def write(self, ws: aiohttp.ClientWebSocketResponse, lines: AsyncIterable[str]) -> None:
        # A number taps a button of what is on the screen: the history comes first.
        await self._history.wait()
        async for line in lines:
            frame = self.frame_for(line)
            if frame is None:
                continue
            if ws.closed:
                return
            self._sent += 1
            ref = str(self._sent)
            self._pending[ref] = line.strip()
            if not await _send(ws, {**frame, "ref": ref}):
                return

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
        """The frame a typed line stands for, or None for a blank line."""
        text = line.strip()
        if not text:
            return None
        if self._buttons is not None and re.fullmatch(r"[0-9]{1,2}", text):
            context, buttons = self._buttons
            if 1 <= int(text) <= len(buttons):
                button_id, title = buttons[int(text) - 1]
                return {"type": "button", "id": button_id, "title": title, "context": context}
        return {"type": "text", "text": text}

    def handle(self, frame: Mapping[str, Any]) -> list[Frame]:
        """Show what ``frame`` carries; return the acknowledgements to send."""
        kind = frame.get("type")
        if kind == "history":
            messages = [m for m in frame.get("messages") or [] if isinstance(m, Mapping)]
            for message in messages:
                self._show(message)
            self._history.set()
            self._news(self._confirmed)
            return self._acknowledgements(messages)
        if kind == "message" and isinstance(frame.get("message"), Mapping):
            message = frame["message"]
            if str(message.get("id")) in self._texts:
                self._advance(str(message.get("id")), str(message.get("status")))
            else:
                self._show(message)
                if message.get("direction") == "out":
                    self._news(self._answered)
            return self._acknowledgements([message])
        if kind == "status":
            self._advance(str(frame.get("id")), str(frame.get("status")))
        elif kind == "accepted" and self._pending.pop(str(frame.get("ref")), None) is not None:
            self._news(self._confirmed)
        elif kind == "error":
            self._emit(f"error  {frame.get('message', 'the sandbox reported an error')}")
            if (line := self._pending.pop(str(frame.get("ref")), None)) is not None:
                self._refused.append(line)
                self._news(self._confirmed)
        return []

    def _show(self, message: Mapping[str, Any]) -> None:
        message_id = str(message.get("id"))
        from_bot = message.get("direction") == "out"
        text = str(message.get("text") or f"({message.get('type', 'message')})")
        self._texts[message_id] = text
        self._last_shown = message_id
        prefix = f"{'bot' if from_bot else 'you'}  {chat_text.clock(message.get('timestamp'))}  "
        body = text.split("\n")
        if from_bot:
            status = chat_text.known_status(message.get("status"))
            self._statuses[message_id] = status
            body[-1] += f"  {chat_text.message_mark(status)}"
        self._emit(prefix + body[0])
        for continuation in body[1:]:
            self._emit(" " * len(prefix) + continuation)
        if from_bot:
            self._show_buttons(message_id, message.get("buttons"))

    def _show_buttons(self, message_id: str, raw_buttons: Any) -> None:
        buttons = [
            (str(button.get("id")), str(button.get("title")))
            for button in raw_buttons or []
            if isinstance(button, Mapping)
        ]
        self._buttons = (message_id, buttons) if buttons else None
        if buttons:
            self._emit("  " + "  ".join(f"[{n}] {title}" for n, (_, title) in enumerate(buttons, 1)))

    def _advance(self, message_id: str, status: str) -> None:
        current = self._statuses.get(message_id)
        if current is None or status not in STATUS_RANK:
            return
        # Statuses only move forward and "failed" is final, as on the server.
        if current == "failed" or STATUS_RANK[status] <= STATUS_RANK[current]:
            return
        self._statuses[message_id] = status
        line = f"{chat_text.STATUS_INDENT}{chat_text.TICKS[status]} {status}"
        if message_id != self._last_shown:
            line += f"  ({chat_text.snippet(self._texts[message_id])})"
        self._emit(line)

    def _acknowledgements(self, messages: list[Mapping[str, Any]]) -> list[Frame]:
        received: list[str] = []
        seen: list[str] = []
        for message in messages:
            message_id = str(message.get("id"))
            status = self._statuses.get(message_id)
            if message.get("direction") != "out" or status is None or message_id in self._acknowledged:
                continue
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
