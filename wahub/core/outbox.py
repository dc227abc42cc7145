"""The dispatcher: sends queued messages through their provider.

Every send is a ``messages`` row first; the dispatcher claims due rows with a
lease, calls the provider, and stores the provider's message id. A failure the
provider calls retryable is tried again with exponential backoff and jitter
until the message's validity period ends; any other failure is final and keeps
the provider's code and reason.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import defaultdict
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from wahub.core.hub import HUB_KEY, SHUTDOWN_GRACE, Hub
from wahub.core.plugins import call_hook, report_exception
from wahub.core.provider import ProviderError
from wahub.core.storage_messages import OutboxRow

_LOGGER = logging.getLogger(__name__)

BATCH = 32
LEASE_SECONDS = 60.0
POLL_SECONDS = 1.0
#: Tries to store a provider's id for a sent message (over about 15 s) before leaving it to the lease.
RECORD_ATTEMPTS = 6
#: A message still unsent this long after it was queued fails instead of retrying.
VALIDITY_SECONDS = 24 * 3600.0


def backoff(attempt: int) -> float:
    """Seconds before attempt ``attempt + 1``: exponential, capped at 10 minutes, with jitter."""
    base = min(2.0 ** (attempt - 1), 600.0)
    return base * random.uniform(0.5, 1.0)


class Dispatcher:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._stopping = False

    async def run(self) -> None:
        wake = self.hub.outbox_ready
        while not self._stopping:
            wake.clear()
            try:
                rows = await self.hub.storage.messages.claim_outbox(BATCH, LEASE_SECONDS)
            except Exception as exc:
                _LOGGER.exception("cannot claim queued messages; trying again")
                report_exception(self.hub, exc, {"loop": "dispatcher"})
                rows = []
            # One recipient's messages go out in order; recipients in parallel.
            by_recipient: defaultdict[tuple[str, str], list[OutboxRow]] = defaultdict(list)
            for row in rows:
                by_recipient[row.provider, row.message.to].append(row)
            await asyncio.gather(*map(self._send_in_order, by_recipient.values()))
            if len(rows) < BATCH:
                try:
                    async with asyncio.timeout(POLL_SECONDS):
                        await wake.wait()
                except TimeoutError:
                    pass

    def stop(self) -> None:
        self._stopping = True
        self.hub.outbox_ready.set()

    async def _send_in_order(self, rows: list[OutboxRow]) -> None:
        for row in rows:
            try:
                await self._send(row)
            except Exception as exc:  # noqa: BLE001 - the other recipients' sends go on
                # The row stays leased and is sent again when the lease ends.
                _LOGGER.error("recording the send of message %d failed: %r", row.id, exc)
                report_exception(self.hub, exc, {"message_id": row.id, "provider": row.provider})

    async def _send(self, row: OutboxRow) -> None:
        hub = self.hub
        provider = hub.providers.get(row.provider)
        if provider is None:
            await self._fail(row, "unknown_provider", f"provider {row.provider!r} is no longer configured")
            return
        try:
            result = await provider.send(row.message)
        except ProviderError as exc:
            await self._failed_attempt(row, exc.code, str(exc), retryable=exc.retryable)
            return
        except (aiohttp.ClientError, TimeoutError) as exc:
            await self._failed_attempt(row, "network", f"{type(exc).__name__}: {exc}", retryable=True)
            return
        except Exception as exc:
            _LOGGER.exception("provider %s raised while sending message %d", row.provider, row.id)
            report_exception(hub, exc, {"message_id": row.id, "provider": row.provider})
            await self._failed_attempt(row, "provider_error", f"{type(exc).__name__}: {exc}", retryable=True)
            return
        await self._record_sent(row, result.provider_message_id)
        hub.metrics.sends.labels(row.provider, "sent", "").inc()
        await call_hook(hub, "outbound_message", hub=hub, message=row.message, result=result)

    async def _record_sent(self, row: OutboxRow, provider_message_id: str) -> None:
        """Store the provider's id, retrying a failing database for a while: the
        message is out, and giving up here would send it again after the lease."""
        for attempt in range(1, RECORD_ATTEMPTS + 1):
            try:
                await self.hub.storage.messages.mark_sent(row.id, provider_message_id)
                return
            except Exception:
                if attempt == RECORD_ATTEMPTS:
                    raise
                _LOGGER.warning("storing the send of message %d failed (attempt %d); retrying", row.id, attempt)
                await asyncio.sleep(0.25 * 2**attempt)

    async def _failed_attempt(self, row: OutboxRow, code: str | None, reason: str, *, retryable: bool) -> None:
        retry_at = time.time() + backoff(row.attempts)
        if retryable and retry_at < row.created_at + VALIDITY_SECONDS:
            _LOGGER.warning(
                "send of message %d failed (%s), retrying in %.0f s", row.id, reason, retry_at - time.time()
            )
            self.hub.metrics.sends.labels(row.provider, "retry", code or "").inc()
            await self.hub.storage.messages.reschedule(row.id, retry_at=retry_at, error_code=code, reason=reason)
            return
        await self._fail(row, code, reason)

    async def _fail(self, row: OutboxRow, code: str | None, reason: str) -> None:
        _LOGGER.error("message %d failed: %s", row.id, reason)
        self.hub.metrics.sends.labels(row.provider, "failed", code or "").inc()
        await self.hub.storage.messages.mark_failed(row.id, error_code=code, reason=reason)


async def dispatcher_ctx(app: web.Application) -> AsyncIterator[None]:
    hub = app[HUB_KEY]
    if hub.storage.is_sqlite:
        released = await hub.storage.messages.release_outbox_claims()
        if released:
            _LOGGER.warning("%d sends were in flight at the last shutdown; sending them again", released)
    dispatcher = Dispatcher(hub)
    task = asyncio.create_task(dispatcher.run(), name="wahub-dispatcher")
    yield
    dispatcher.stop()
    try:
        async with asyncio.timeout(SHUTDOWN_GRACE["sends"]):
            await task
    except TimeoutError:
        _LOGGER.warning("sends still in flight at shutdown are retried at the next start")
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
