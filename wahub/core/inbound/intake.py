"""Durable webhook intake: screen parsed events and commit them to the inbox.

One writer task commits the inbox. Each commit takes every event queued while
the previous commit ran, so a burst shares one transaction (and one fsync)
without any fixed timer adding latency to a lone webhook.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import sqlalchemy as sa
from aiohttp import web

from wahub.core.errors import IntakeClosed
from wahub.core.hub import HUB_KEY, Hub
from wahub.core.inbound.webhook_json import storable_problem
from wahub.core.models import EchoMessage, Event, InboundMessage, event_to_json
from wahub.core.storage.schema import (
    consent_events,
    contact_identities,
    contacts,
    messages,
    status_events,
)
from wahub.core.work.lifecycle import within_grace

_LOGGER = logging.getLogger(__name__)


#: Average requests per commit from which intake counts as busy.
BUSY_BATCH = 4.0
BUSY_HOLD_SECONDS = 0.5
#: How long a failed inbox commit keeps /readyz at 503 when no commit succeeds after it.
FAILING_HOLD_SECONDS = 60.0


#: Longest contact key the inbox stores (its column's size).
MAX_KEY_LENGTH = 256
#: Longest event id: the inbox keeps 256 characters, and the keys derived from an
#: id (``reply:<provider>:<id>:<n>``, ``preference:<provider>:<id>``) must fit too.
MAX_EVENT_ID_LENGTH = 160
#: Event fields holding JSON objects.
_OBJECT_FIELDS = ("content", "raw", "data", "identities")


def _length(column: sa.Column[Any]) -> int:
    length: int = column.type.length  # type: ignore[attr-defined]
    return length


#: Event fields that must be text (or None), by event kind, with the size of the
#: column each is stored in: a value the column cannot take is refused here
#: rather than by the database while the event is processed.
_TEXT_FIELDS: dict[str, dict[str, int | None]] = {
    "message": {
        "sender": _length(contacts.c.address),
        "type": _length(messages.c.type),
        "sender_name": _length(contacts.c.name),
        "context_id": _length(messages.c.provider_message_id),
    },
    "echo": {
        "recipient": _length(contacts.c.address),
        "type": _length(messages.c.type),
    },
    "status": {
        "message_id": _length(status_events.c.provider_message_id),
        "status": _length(status_events.c.status),
        "recipient": _length(contacts.c.address),
        "error_code": _length(status_events.c.error_code),
        "error_title": None,
        "pricing_category": _length(status_events.c.pricing_category),
    },
    "preference": {"user": _length(consent_events.c.address), "category": None, "value": None, "detail": None},
    "account": {"field": None, "event": None},
}
_IDENTITY_KIND, _IDENTITY_VALUE = _length(contact_identities.c.kind), _length(contact_identities.c.value)


def event_problem(event: Event, payload: dict[str, Any]) -> str | None:
    """Why ``event`` (whose JSON form is ``payload``) cannot be stored and
    processed, or None: an id, key or field too long for its column or not
    text, a time that is not a finite number, or a value no database takes
    (see ``storable_problem``)."""
    if not isinstance(event.external_id, str) or not event.external_id:
        return "the event id is missing or not text"
    if len(event.external_id) > MAX_EVENT_ID_LENGTH:
        return f"the event id is longer than {MAX_EVENT_ID_LENGTH} characters"
    if len(event.contact_key) > MAX_KEY_LENGTH:
        who = "recipient" if event.kind == "echo" else "sender"
        return f"the {who} is longer than {MAX_KEY_LENGTH - len(event.provider) - 1} characters"
    if isinstance(event.timestamp, bool) or not isinstance(event.timestamp, (int, float)):
        return "the event time is not a number"
    if not math.isfinite(event.timestamp):
        return "the event time is not a finite number"
    for name, length in _TEXT_FIELDS.get(event.kind, {}).items():
        value = getattr(event, name)
        if value is not None and not isinstance(value, str):
            return f"{name} is a {type(value).__name__}, not text"
        if value is not None and length is not None and len(value) > length:
            return f"{name} is longer than {length} characters"
    for name in _OBJECT_FIELDS:
        if not isinstance(getattr(event, name, {}), dict):
            return f"{name} is not an object"
    if isinstance(event, (InboundMessage, EchoMessage)):
        problem = _identity_problem(event.identities, "sender" if isinstance(event, InboundMessage) else "recipient")
        if problem is not None:
            return problem
    return storable_problem(payload)


def _identity_problem(identities: dict[str, str], whose: str) -> str | None:
    """Why a message's ids of its user (``whose``: sender or recipient) cannot
    be stored as contact identities, or None."""
    # Typed as text, yet made by a plugin's parser from a webhook: checked all the same.
    pairs: list[tuple[object, object]] = list(identities.items())
    for kind, value in pairs:
        if not isinstance(kind, str) or not isinstance(value, str):
            return f"a {whose} identity is not text"
        if len(kind) > _IDENTITY_KIND or len(value) > _IDENTITY_VALUE:
            return f"a {whose} identity is longer than {_IDENTITY_VALUE} characters"
    return None


def screen(event: Event) -> tuple[dict[str, Any] | None, str | None]:
    """The inbox row of ``event``, or None and why it cannot be stored."""
    payload = event_to_json(event)
    problem = event_problem(event, payload)
    if problem is not None:
        return None, problem
    row = {
        "provider": event.provider,
        "external_id": event.external_id,
        "kind": event.kind,
        "contact_key": event.contact_key,
        "payload": payload,
    }
    return row, None


class InboxWriter:
    """The single writer of the inbox (group commit)."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._queue: asyncio.Queue[tuple[list[dict[str, Any]], asyncio.Future[None]]] = asyncio.Queue()
        self.closed = False
        self._batch_average = 0.0
        self._last_commit = 0.0
        #: When the latest commit failed, while no commit has succeeded since.
        self._failed_at: float | None = None

    @property
    def busy(self) -> bool:
        """Whether webhooks arrive faster than one commit at a time: then each
        commit carries several requests. Calibrates itself to the disk's speed."""
        recent = time.monotonic() - self._last_commit < BUSY_HOLD_SECONDS
        return recent and self._batch_average >= BUSY_BATCH

    def stuck_reason(self) -> str | None:
        """``intake_commits_failing`` while webhooks cannot be stored (their
        requests get 503): the latest commit failed, less than
        ``FAILING_HOLD_SECONDS`` ago, and none succeeded since; else None."""
        failed_at = self._failed_at
        if failed_at is not None and time.monotonic() - failed_at < FAILING_HOLD_SECONDS:
            return "intake_commits_failing"
        return None

    async def submit(self, rows: list[dict[str, Any]]) -> None:
        """Queue ``rows`` for the next commit and wait until it is durable."""
        if self.closed:
            raise IntakeClosed
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((rows, future))
        return await future

    async def run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._commit(batch)
            self._batch_average += (len(batch) - self._batch_average) * 0.2
            self._last_commit = time.monotonic()
            for _ in batch:
                self._queue.task_done()

    async def _commit(self, batch: Sequence[tuple[list[dict[str, Any]], asyncio.Future[None]]]) -> None:
        rows = [row for request_rows, _ in batch for row in request_rows]
        try:
            new = await self.hub.storage.insert_inbox(rows)
        except Exception as exc:
            if len(batch) > 1:
                # One request's bad event must not fail the others: commit each alone.
                for request in batch:
                    await self._commit([request])
                return
            _LOGGER.exception("inbox commit of %d events failed", len(rows))
            self._failed_at = time.monotonic()
            if not batch[0][1].done():
                batch[0][1].set_exception(exc)
            return
        self._failed_at = None
        self.hub.metrics.inbox_commit_batch.observe(len(batch))
        if new < len(rows):
            self.hub.metrics.webhook_duplicates.inc(len(rows) - new)
        for _, future in batch:
            if not future.done():
                future.set_result(None)
        self.hub.inbox_ready.set()

    async def close(self) -> None:
        """Refuse new webhooks and wait until everything queued is committed."""
        self.closed = True
        await self._queue.join()


INTAKE_KEY = web.AppKey("intake", InboxWriter)


async def intake_ctx(app: web.Application) -> AsyncIterator[None]:
    hub = app[HUB_KEY]
    writer = InboxWriter(hub)
    app[INTAKE_KEY] = writer
    hub.intake_busy = lambda: writer.busy
    hub.intake_stuck = writer.stuck_reason
    task = asyncio.create_task(writer.run(), name="wahub-inbox-writer")
    yield
    # Requests whose webhooks were not stored were not answered 200, so providers deliver them again.
    await within_grace(
        "intake",
        writer.close(),
        on_timeout_message="webhooks still waiting for a commit at shutdown were not stored",
        logger=_LOGGER,
    )
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
