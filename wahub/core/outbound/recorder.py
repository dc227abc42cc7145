"""The recorder of sends: stores the provider ids of sent messages.

One writer commits whatever finished while its last commit ran, so a sent
message stays unrecorded only for the length of one commit. While the
database is unreachable the writer keeps its ids and tries again until they
are stored; the dispatcher keeps the leases of those messages meanwhile, so a
message the provider accepted is not claimed, nor sent, again.
"""

from __future__ import annotations

import asyncio
import logging

from wahub.core.hub import Hub
from wahub.core.models import SendResult
from wahub.core.storage.leases import database_unreachable
from wahub.core.storage.outbox import Learnt, OutboxRow
from wahub.core.work.backoff import backoff

_LOGGER = logging.getLogger(__name__)

#: Tries to store provider ids when the database answers with an error (an unreachable one is tried without end).
RECORD_ATTEMPTS = 6
#: Pause between tries to store provider ids: 0.5 s, then the longest, 1 s.
RECORD_RETRY_BASE = 0.25
RECORD_RETRY_SECONDS = 1.0


#: A send to store: the message's id, its provider and the provider's id of it.
Sent = tuple[int, str, str]


class Recorder:
    """Stores provider ids of sent messages, committing whatever finished while the last commit ran."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._pending: list[tuple[Sent, Learnt | None, asyncio.Future[str | None]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def record(self, row: OutboxRow, result: SendResult) -> str | None:
        """Store the id, and the recipient's ids the answer reported; returns the
        error code when a ``failed`` status had already arrived."""
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        learnt = (row.message.to, result.identities) if result.identities else None
        self._pending.append(((row.id, row.provider, result.provider_message_id), learnt, future))
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="wahub-send-recorder")
        return await future

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            self._wake.clear()
            sent = [entry for entry, _learnt, _future in batch]
            learnt = {entry[0]: ids for entry, ids, _future in batch if ids is not None}
            try:
                failed = await self._store(sent, learnt)
            except Exception as exc:  # noqa: BLE001 - handed to the senders
                for _sent, _learnt, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for entry, _learnt, future in batch:
                if not future.done():
                    future.set_result(failed.get(entry[0]))

    async def _store(self, sent: list[Sent], learnt: dict[int, Learnt]) -> dict[int, str | None]:
        refused = attempt = 0
        while True:
            attempt += 1
            try:
                failed = await self.hub.storage.outbox.mark_sent(sent, learnt)
            except Exception as exc:
                refused += not database_unreachable(exc, from_storage=True)
                if refused >= RECORD_ATTEMPTS:
                    raise
                if attempt == 1:
                    _LOGGER.warning("storing %d sends failed (%r); trying again until it works", len(sent), exc)
                await asyncio.sleep(backoff(attempt, base=RECORD_RETRY_BASE, cap=RECORD_RETRY_SECONDS))
                continue
            if attempt > 1:
                _LOGGER.info("stored %d sends after %d tries", len(sent), attempt)
            return failed
