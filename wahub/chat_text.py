"""How ``wahub chat`` shows a conversation in a terminal, and reads its input."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import shutil
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
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


# -- the screen ------------------------------------------------------------------

_ANSI_CODE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]|\x1b[78]")
#: Colours of the parts of a line (ANSI SGR codes).
PAINTS = {
    "bot": "1;36",
    "you": "1;32",
    "note": "2",
    "status": "2",
    "read": "34",
    "failed": "31",
    "error": "1;31",
}


def visible_length(text: str) -> int:
    return len(_ANSI_CODE.sub("", text))


class Screen:
    """Where ``wahub chat`` shows the conversation, one line at a time.

    On a live terminal (``write`` given) it can also rewrite a line shown
    earlier, in place, as long as it is still on the screen, and erase what
    the terminal echoed of a typed line. ``color`` paints the parts of lines
    and renders WhatsApp formatting in ANSI; without it lines are plain text.
    """

    def __init__(
        self,
        emit: Callable[[str], None],
        *,
        write: Callable[[str], None] | None = None,
        color: bool = False,
        size: Callable[[], os.terminal_size] | None = None,
    ) -> None:
        self._emit = emit
        self._write = write
        self.color = color
        self._size = size or (lambda: shutil.get_terminal_size())
        #: Screen rows shown so far, and the row each line starts on.
        self._rows = 0
        self._starts: list[int] = []

    @classmethod
    def for_terminal(cls, stream: TextIO | None = None, env: Mapping[str, str] | None = None) -> Screen:
        """A screen on ``stream`` (default: stdout): live and in colour on a
        terminal, colourless when ``NO_COLOR`` is set; plain lines elsewhere."""
        out = sys.stdout if stream is None else stream
        live = out.isatty()

        def write(text: str) -> None:
            out.write(text)
            out.flush()

        def emit(line: str) -> None:
            # On a terminal, a half-typed line is cleared first, so the output starts on its own line.
            write(("\r\x1b[2K" if live else "") + line + "\n")

        no_color = bool((os.environ if env is None else env).get("NO_COLOR"))
        return cls(emit, write=write if live else None, color=live and not no_color)

    @property
    def live(self) -> bool:
        return self._write is not None

    def paint(self, part: str, text: str) -> str:
        return f"\x1b[{PAINTS[part]}m{text}\x1b[0m" if self.color and text else text

    def show(self, line: str) -> int:
        """Show ``line``; returns its number, for ``rewrite``."""
        self._starts.append(self._rows)
        self._rows += self._height(line)
        self._emit(line)
        return len(self._starts) - 1

    def rewrite(self, number: int, line: str) -> bool:
        """Show ``line`` in place of line ``number`` (of the same height); False
        when that cannot be done (not a live terminal, or the line scrolled away)."""
        if self._write is None or not 0 <= number < len(self._starts):
            return False
        up = self._rows - self._starts[number]
        if up >= self._size().lines - 1 or self._height(line) != self._row_count(number):
            return False
        # Save the cursor (and what is being typed), go up, rewrite, come back.
        self._write(f"\x1b7\x1b[{up}F\x1b[2K{line}\x1b8")
        return True

    def typed(self, line: str) -> None:
        """Erase what the terminal echoed of ``line`` the person just typed: the
        chat shows it itself, once the sandbox has it."""
        if self._write is not None:
            self._write(f"\x1b[{self._height(line)}F\x1b[J")

    def _row_count(self, number: int) -> int:
        end = self._starts[number + 1] if number + 1 < len(self._starts) else self._rows
        return end - self._starts[number]

    def _height(self, line: str) -> int:
        width = max(1, self._size().columns)
        return max(1, -(-visible_length(line) // width))


def waiting(pending: Mapping[str, Any]) -> str:
    """A reply's wait in the outbox in words: ``◷ waiting: pair rate limit, retrying in 4 s``."""
    text = f"{TICKS['queued']} waiting: {pending.get('reason') or 'queued to be sent'}"
    try:
        seconds = math.ceil(float(pending.get("retry_in") or 0))
    except (TypeError, ValueError, OverflowError):
        seconds = 0
    return f"{text}, retrying in {seconds} s" if seconds > 0 else text
