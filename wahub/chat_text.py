"""How ``wahub chat`` shows a conversation in a terminal, and reads its input."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections.abc import AsyncIterator
from typing import Any, TextIO

from wahub.core.models import STATUS_RANK

_LOGGER = logging.getLogger(__name__)

#: Indent of status lines, under the clock of the message lines.
STATUS_INDENT = " " * 6
TICKS = {"queued": "◷", "sent": "✓", "delivered": "✓✓", "read": "✓✓", "failed": "⚠"}


def summary(lines: list[str]) -> str:
    shown = ", ".join(repr(snippet(line)) for line in lines[:3])
    more = f" and {len(lines) - 3} more" if len(lines) > 3 else ""
    return f"{len(lines)} line{'s' if len(lines) > 1 else ''} ({shown}{more})"


def known_status(status: Any) -> str:
    return status if isinstance(status, str) and status in STATUS_RANK else "queued"


def message_mark(status: str) -> str:
    # Delivered and read share the double tick; plain text has no blue, so say it.
    return f"{TICKS[status]} {status}" if status in ("read", "failed") else TICKS[status]


def clock(timestamp: Any) -> str:
    try:
        return time.strftime("%H:%M", time.localtime(float(timestamp)))
    except (TypeError, ValueError, OverflowError, OSError):
        return "--:--"


def snippet(text: str, width: int = 30) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


# -- WhatsApp formatting -------------------------------------------------------
#
# The same rules as wahub/web/shared/whatsapp.js, which renders them on the
# pages: *bold*, _italic_, ~strikethrough~, `inline code` and ```monospace```
# blocks. A marker opens at the start of the text, or after a space or
# punctuation, when a non-space follows it; it closes before the end, a space
# or punctuation, after a non-space, on the same line. Markers nest, except
# inside code.

#: Marker -> style, and each style's ANSI on / off codes (off codes that do not undo another style).
_MARKS = {"*": "bold", "_": "italic", "~": "strike", "`": "code"}
_ANSI = {"bold": "1", "italic": "3", "strike": "9", "code": "2", "pre": "2"}
_FENCE = "```"
_SPACES = frozenset(" \t\n\r\u00a0")

#: A run of text and the styles it is shown in.
Span = tuple[str, frozenset[str]]


def _edge(ch: str | None) -> bool:
    """The text's edge, a space, or punctuation: not a letter or digit."""
    # whatsapp.js reads UTF-16 code units, where half of an astral character is no letter.
    return ch is None or ch in _SPACES or ord(ch) > 0xFFFF or not ch.isalnum()


def _at(text: str, index: int) -> str | None:
    return text[index] if 0 <= index < len(text) else None


def _closing(text: str, mark: str, start: int) -> int:
    for j in range(start, len(text)):
        ch = text[j]
        if ch == "\n":
            return -1
        if ch == mark and j > start and text[j - 1] not in _SPACES and _edge(_at(text, j + 1)):
            return j
    return -1


def _inline(text: str, styles: frozenset[str], into: list[Span]) -> None:
    plain = ""
    i = 0
    while i < len(text):
        ch = text[i]
        style = _MARKS.get(ch)
        following = _at(text, i + 1)
        if style and _edge(_at(text, i - 1)) and following is not None and following not in _SPACES:
            end = _closing(text, ch, i + 1)
            if end > i + 1:
                if plain:
                    into.append((plain, styles))
                    plain = ""
                inner = text[i + 1 : end]
                if style == "code":
                    into.append((inner, styles | {style}))
                else:
                    _inline(inner, styles | {style}, into)
                i = end + 1
                continue
        plain += ch
        i += 1
    if plain:
        into.append((plain, styles))


def whatsapp_spans(text: str) -> list[Span]:
    """``text`` as WhatsApp shows it: runs of text without their markers, each
    with its styles (``bold``, ``italic``, ``strike``, ``code``, ``pre``)."""
    spans: list[Span] = []
    rest = text
    while True:
        start = rest.find(_FENCE)
        end = -1 if start < 0 else rest.find(_FENCE, start + len(_FENCE))
        if start < 0 or end < 0:
            _inline(rest, frozenset(), spans)
            return spans
        _inline(rest[:start], frozenset(), spans)
        block = rest[start + len(_FENCE) : end].removeprefix("\n")
        if block:
            spans.append((block, frozenset({"pre"})))
        rest = rest[end + len(_FENCE) :]


def whatsapp_lines(text: str, *, color: bool) -> list[str]:
    """The lines of ``text`` as a terminal shows them: with ANSI bold, italic,
    strikethrough and dim (code) when ``color``, else the plain text with the
    markers removed. Each line ends with its styles turned off."""
    lines: list[str] = [""]
    for run, styles in whatsapp_spans(text):
        on = "\x1b[" + ";".join(sorted(_ANSI[s] for s in styles)) + "m" if color and styles else ""
        off = "\x1b[0m" if on else ""
        for number, part in enumerate(run.split("\n")):
            if number:
                lines.append("")
            if part:
                lines[-1] += on + part + off
    return lines


async def stdin_lines(stream: TextIO | None = None) -> AsyncIterator[str]:
    """Yield the lines of ``stream`` (default: stdin) without their newline.

    Reads on a daemon thread rather than the loop's default executor: that
    executor is joined when ``asyncio.run`` ends, so a pending ``readline``
    would keep the process alive after the server closed the chat.
    """
    source = sys.stdin if stream is None else stream
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    def deliver(line: str | None) -> bool:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, line)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            return False
        return True

    def pump() -> None:
        try:
            for line in iter(source.readline, ""):
                if not deliver(line):
                    return
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            _LOGGER.debug("Stopped reading input: %s", exc)
        deliver(None)

    threading.Thread(target=pump, name="wahub-chat-stdin", daemon=True).start()
    while (line := await queue.get()) is not None:
        yield line.rstrip("\r\n")
