"""The simulated phone's receipts, posted after a visible delay.

A real phone answers a message with ``delivered`` as it arrives and ``read``
once the person opened the chat; done at once, the sandbox's ticks would jump
straight to read. The page (or ``wahub chat``) sends its ``received`` and
``seen`` frames as soon as it can, and the sandbox posts their status webhooks
``delivered_after`` and ``read_after`` seconds later; a read waits for the
delivered receipt of the same message, so the ticks always go in order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from wahub.core.errors import WebhookError

_LOGGER = logging.getLogger(__name__)

Post = Callable[[str, list[dict[str, Any]]], Awaitable[None]]


class DelayedReceipts:
    def __init__(self, post: Post, delivered_after: float, read_after: float) -> None:
        self._post = post
        self._delays = {"delivered": delivered_after, "read": read_after}
        # The delivered receipts waiting for their delay, by message id.
        self._delivering: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def post(self, base_url: str, events: list[dict[str, Any]]) -> None:
        """Post the status ``events`` (all ``delivered`` or all ``read``) to the
        webhook at ``base_url`` once their delay has passed; at once without one
        (then a failure raises, for the client to hear of it)."""
        if not events:
            return
        status = events[0]["status"]
        delay = self._delays[status]
        before = [] if status == "delivered" else [t for e in events if (t := self._delivering.get(e["message_id"]))]
        if not delay and not before:
            await self._post(base_url, events)
            return
        task = asyncio.create_task(self._later(base_url, events, delay, before), name=f"wahub-sandbox-{status}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if status == "delivered":
            for event in events:
                self._delivering[event["message_id"]] = task
            task.add_done_callback(lambda done: self._forget(events, done))

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _forget(self, events: list[dict[str, Any]], task: asyncio.Task[None]) -> None:
        for event in events:
            if self._delivering.get(event["message_id"]) is task:
                del self._delivering[event["message_id"]]

    async def _later(
        self, base_url: str, events: list[dict[str, Any]], delay: float, before: list[asyncio.Task[None]]
    ) -> None:
        await asyncio.sleep(delay)
        if before:
            await asyncio.wait(before)  # a read never shows before its delivered
        stamped = [{**event, "timestamp": time.time()} for event in events]
        try:
            await self._post(base_url, stamped)
        except (WebhookError, OSError) as exc:
            _LOGGER.warning("sandbox could not deliver its receipts to its webhook: %s", exc)
