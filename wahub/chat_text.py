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
