"""Replies to a sandbox user that wait in the outbox, shown to them as pending.

A real phone shows nothing of a message its business has not sent yet; the
sandbox shows it, with why it waits (the pair rate limit, a retry after a
failed send, quiet hours), so a person trying their bot knows the answer is on
its way. While a chat page is open, the user's queued replies are read from
the ``messages`` table every ``POLL_SECONDS``: a new or changed one is pushed
as a ``pending`` frame, one that left the queue without the sandbox sending it
(it failed, or another replica sent it) as a ``settled`` frame. A reply the
sandbox itself sends replaces its pending bubble at once (``replaces``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from wahub.core.hub import Hub
from wahub.core.models import MessageStatus, OutgoingMessage
from wahub.core.storage.schema import contacts, messages
from wahub.plugins.providers.sandbox.frames import frame_message

_LOGGER = logging.getLogger(__name__)

#: How often the queued replies of the users with an open chat are read.
POLL_SECONDS = 0.5

Push = Callable[[str, dict[str, Any]], Awaitable[None]]


@dataclass
class Waiting:
    """A queued reply the user has been shown as pending."""

    message: OutgoingMessage
    #: The reason and due time last shown, to push only what changed.
    shown: tuple[str, int]
    #: The provider id the sandbox sent it under, once it did.
    sent_as: str | None = None


def wait_reason(hub: Hub, provider_name: str, row: Mapping[str, Any], now: float) -> dict[str, Any]:
    """Why the queued ``row`` has not been sent, and in how many seconds it is due:
    ``{"reason": "pair rate limit", "retry_in": 4.2}``."""
    due = row.get("next_attempt_at") or now
    retry_in = max(0.0, float(due) - now)
    provider = hub.providers.get(provider_name)
    if row.get("error_reason"):
        reason = f"the last try failed ({row['error_reason']})"
    elif provider is not None and provider.paused:
        reason = f"sending is paused: {provider.paused}"
    elif retry_in > 0 and hub.policy.quiet_end(
        now, row.get("timezone"), origin=row.get("origin") or "business", kind=str(row.get("type"))
    ):
        reason = "the contact's quiet hours"
    elif retry_in > 0 and provider is not None and provider.config.get("pair_limit"):
        reason = "pair rate limit"
    elif retry_in > 0:
        reason = "pacing"
    else:
        reason = "in the outbox, about to be sent"
    return {"reason": reason, "retry_in": round(retry_in, 1)}


class PendingReplies:
    """The pending replies of one sandbox provider's connected users."""

    def __init__(self, hub: Hub, provider_name: str, push: Push) -> None:
        self.hub = hub
        self.provider_name = provider_name
        self._push = push
        self.waiting: dict[str, dict[int, Waiting]] = {}
        self._task: asyncio.Task[None] | None = None

    def shown_row(self, row: Mapping[str, Any], now: float) -> dict[str, Any]:
        """A stored message as the chat shows it: a queued reply with its wait
        reason (``pending``), a failed one with its error."""
        shown = frame_message(row)
        if row["direction"] == "out" and row["status"] == MessageStatus.QUEUED:
            shown["pending"] = wait_reason(self.hub, self.provider_name, row, now)
        elif row["status"] == MessageStatus.FAILED and row.get("error_reason"):
            shown["error"] = row["error_reason"]
        return shown

    def watch(self, user: str, history: Sequence[Mapping[str, Any]], users: Callable[[], set[str]]) -> None:
        """Remember the queued replies ``history`` showed ``user``, and keep
        polling while any user in ``users()`` has a chat open."""
        known = self.waiting.setdefault(user, {})
        now = self.hub.clock.time()
        for row in history:
            if row["direction"] == "out" and row["status"] == MessageStatus.QUEUED and row["id"] not in known:
                known[row["id"]] = Waiting(OutgoingMessage.from_json(row["body"]), self._shown_key(row, now))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(users), name=f"wahub-sandbox-pending-{self.provider_name}")

    def sent(self, message: OutgoingMessage, provider_id: str) -> str | None:
        """The shown id (``wahub.<id>``) of the pending reply ``message`` is, now
        sent as ``provider_id``; None when the user was not shown it pending."""
        for row_id, waiting in sorted(self.waiting.get(message.to, {}).items()):
            if waiting.sent_as is None and waiting.message == message:
                waiting.sent_as = provider_id
                return f"wahub.{row_id}"
        return None

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self, users: Callable[[], set[str]]) -> None:
        while connected := users():
            for user in list(self.waiting):
                if user not in connected:
                    del self.waiting[user]
            for user in connected:
                try:
                    await self.poll(user)
                except Exception as exc:  # noqa: BLE001 - a database hiccup only delays the pending bubbles
                    _LOGGER.warning("could not read the queued replies of a sandbox user: %r", exc)
            await asyncio.sleep(POLL_SECONDS)

    async def poll(self, user: str) -> None:
        """Push what changed in ``user``'s queued replies since the last poll."""
        known = self.waiting.setdefault(user, {})
        now = self.hub.clock.time()
        rows = {row["id"]: row for row in await self._rows(user, list(known))}
        for row_id in [row_id for row_id in known if row_id not in rows]:
            del known[row_id]  # deleted (history erased): its bubble goes too
            await self._push(user, {"type": "settled", "id": f"wahub.{row_id}", "message": None})
        for row_id, row in rows.items():
            waiting = known.get(row_id)
            if row["status"] != MessageStatus.QUEUED:
                if waiting is not None:
                    del known[row_id]
                    if waiting.sent_as is None:
                        frame = {"type": "settled", "id": f"wahub.{row_id}", "message": self.shown_row(row, now)}
                        await self._push(user, frame)
                continue
            key = self._shown_key(row, now)
            if waiting is None and (row["lease_until"] or 0) > time.time():  # leases are on the wall clock
                continue  # claimed by the dispatcher: being sent this moment
            if waiting is None:
                known[row_id] = Waiting(OutgoingMessage.from_json(row["body"]), key)
            elif waiting.sent_as is not None or waiting.shown == key:
                continue
            else:
                waiting.shown = key
            await self._push(user, {"type": "pending", "message": self.shown_row(row, now)})

    def _shown_key(self, row: Mapping[str, Any], now: float) -> tuple[str, int]:
        pending = wait_reason(self.hub, self.provider_name, row, now)
        return pending["reason"], round(row.get("next_attempt_at") or 0)

    async def _rows(self, user: str, known: list[int]) -> list[dict[str, Any]]:
        """``user``'s queued replies, and the rows of ``known`` whatever their status."""
        wanted = messages.c.status == MessageStatus.QUEUED
        if known:
            wanted = sa.or_(wanted, messages.c.id.in_(known))
        query = (
            sa.select(messages, contacts.c.timezone)
            .select_from(messages.outerjoin(contacts, contacts.c.id == messages.c.contact_id))
            .where(
                messages.c.provider == self.provider_name,
                messages.c.address == user,
                messages.c.direction == "out",
                wanted,
            )
            .order_by(messages.c.id)
        )
        async with self.hub.storage.engine.connect() as conn:
            return [dict(row._mapping) for row in (await conn.execute(query)).all()]
