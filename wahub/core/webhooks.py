"""Durable webhook intake: verify, parse, commit to the inbox, then answer 200.

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

from aiohttp import web

from wahub.core.hub import HUB_KEY, SHUTDOWN_GRACE, Hub
from wahub.core.models import Event, event_to_json
from wahub.core.provider import WebhookError

_LOGGER = logging.getLogger(__name__)

# The only headers kept with a quarantined body: enough to diagnose it, never a credential.
_QUARANTINE_HEADERS = ("content-type", "content-length", "content-encoding", "user-agent")


#: Average requests per commit from which intake counts as busy.
BUSY_BATCH = 4.0
BUSY_HOLD_SECONDS = 0.5


class IntakeClosed(Exception):
    """The daemon is shutting down and takes no more webhooks."""


#: Longest event id and contact key the inbox stores (its columns' size).
MAX_KEY_LENGTH = 256


def event_row(event: Event) -> dict[str, Any]:
    """The inbox row of ``event``; raises WebhookError for values no database would take."""
    if len(event.external_id) > MAX_KEY_LENGTH or len(event.contact_key) > MAX_KEY_LENGTH:
        raise WebhookError(f"event id or sender longer than {MAX_KEY_LENGTH} characters")
    if not math.isfinite(event.timestamp):
        raise WebhookError(f"event timestamp {event.timestamp!r} is not a finite number")
    payload = event_to_json(event)
    return {
        "provider": event.provider,
        "external_id": event.external_id,
        "kind": event.kind,
        "contact_key": event.contact_key,
        "payload": payload,
    }


class InboxWriter:
    """The single writer of the inbox (group commit)."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._queue: asyncio.Queue[tuple[list[dict[str, Any]], asyncio.Future[None]]] = asyncio.Queue()
        self.closed = False
        self._batch_average = 0.0
        self._last_commit = 0.0

    @property
    def busy(self) -> bool:
        """Whether webhooks arrive faster than one commit at a time: then each
        commit carries several requests. Calibrates itself to the disk's speed."""
        recent = time.monotonic() - self._last_commit < BUSY_HOLD_SECONDS
        return recent and self._batch_average >= BUSY_BATCH

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
            if not batch[0][1].done():
                batch[0][1].set_exception(exc)
            return
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
    task = asyncio.create_task(writer.run(), name="wahub-inbox-writer")
    yield
    try:
        async with asyncio.timeout(SHUTDOWN_GRACE["intake"]):
            await writer.close()
    except TimeoutError:
        # Their requests were not answered 200, so providers deliver them again.
        _LOGGER.warning("webhooks still waiting for a commit at shutdown were not stored")
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def _shutting_down() -> web.Response:
    return _error(503, "shutting_down", "wahub is restarting; deliver this webhook again")


async def webhook_get(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB_KEY]
    provider = hub.providers.get(request.match_info["provider_name"])
    if provider is None:
        return _error(404, "unknown_provider", f"no provider named {request.match_info['provider_name']!r}")
    return await provider.handle_webhook_get(request)


async def webhook_post(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter()
    hub = request.app[HUB_KEY]
    name = request.match_info["provider_name"]
    provider = hub.providers.get(name)
    if provider is None:
        return _error(404, "unknown_provider", f"no provider named {name!r}")
    outcome = "500"  # stays so when _receive raises
    try:
        response = await _receive(request, hub, name)
        outcome = str(response.status)
        return response
    finally:
        metrics = hub.metrics
        metrics.child(metrics.webhook_requests, name, outcome).inc()
        metrics.child(metrics.webhook_latency, name).observe(time.perf_counter() - started)


async def _receive(request: web.Request, hub: Hub, name: str) -> web.Response:
    provider = hub.providers[name]
    writer = request.app[INTAKE_KEY]
    if writer.closed:
        return _shutting_down()
    body = await request.read()
    if not provider.verify_signature(request.headers, body):
        _LOGGER.warning("webhook for %s refused: bad or missing signature", name)
        return _error(401, "invalid_signature", "the webhook signature does not match")
    try:
        events = provider.parse_webhook(body)
        rows = [event_row(event) for event in events]
    except Exception as exc:  # a parser's bug is an unparsable body too: keep it, answer 400
        headers = {
            k: v for k, v in request.headers.items() if k.lower() in _QUARANTINE_HEADERS or "signature" in k.lower()
        }
        if not isinstance(exc, WebhookError):
            _LOGGER.exception("provider %s failed to parse a webhook", name)
        await hub.storage.quarantine(name, str(exc), headers, body)
        _LOGGER.warning("webhook for %s quarantined: %s", name, exc)
        return _error(400, "unparsable_webhook", str(exc))
    if events:
        try:
            await writer.submit(rows)
        except IntakeClosed:
            return _shutting_down()
        except Exception:  # noqa: BLE001 - the provider will redeliver
            return _error(503, "storage_unavailable", "the event could not be stored; deliver it again")
        for event in events:
            hub.metrics.child(hub.metrics.webhook_events, name, event.kind).inc()
    return web.json_response({"ok": True, "events": len(events)})


def webhook_routes() -> list[web.RouteDef]:
    return [
        web.get("/webhooks/{provider_name}", webhook_get),
        web.post("/webhooks/{provider_name}", webhook_post),
    ]
