"""Built-in periodic upkeep: old inbox rows, activity feed rows and finished
deliveries to the ``crm:`` entries purged, quiet conversations given back to
the bot."""

from __future__ import annotations

import logging
import time

from wahub import hookimpl
from wahub.core.conversations.ownership import return_quiet_conversations
from wahub.core.hub import Hub
from wahub.hookspecs import JobSpec

_LOGGER = logging.getLogger(__name__)

#: Finished inbox rows are kept this long so a provider's late redelivery
#: (Meta retries for up to 7 days) is still recognised as a duplicate.
INBOX_RETENTION_SECONDS = 8 * 24 * 3600

#: The inbox page's live feed is kept this long: a page that was away longer reloads.
ACTIVITY_RETENTION_SECONDS = 2 * 24 * 3600

#: Deliveries to the ``crm:`` entries are kept this long once delivered (to
#: look one up or replay it) and, once given up, this long (to replay them
#: after an outage of the other side). Pending ones are never purged.
DELIVERED_RETENTION_SECONDS = 7 * 24 * 3600
FAILED_RETENTION_SECONDS = 30 * 24 * 3600


async def purge_inbox(hub: Hub) -> None:
    now = time.time()
    purged = await hub.storage.purge_inbox(now - INBOX_RETENTION_SECONDS)
    if purged:
        _LOGGER.info("purged %d processed inbox events older than 8 days", purged)
    pruned = await hub.storage.activity.prune(now - ACTIVITY_RETENTION_SECONDS)
    if pruned:
        _LOGGER.info("pruned %d activity feed rows older than 2 days", pruned)


async def prune_deliveries(hub: Hub) -> None:
    now = hub.clock.time()
    pruned = await hub.storage.deliveries.prune(
        delivered_before=now - DELIVERED_RETENTION_SECONDS, failed_before=now - FAILED_RETENTION_SECONDS
    )
    if pruned:
        _LOGGER.info("pruned %d deliveries delivered over 7 days or given up over 30 days ago", pruned)


@hookimpl
def scheduled_jobs(hub: Hub) -> list[JobSpec]:
    return [
        JobSpec(id="wahub.purge_inbox", func=purge_inbox, trigger="interval", trigger_args={"hours": 1}),
        JobSpec(id="wahub.prune_deliveries", func=prune_deliveries, trigger="interval", trigger_args={"hours": 1}),
        JobSpec(
            id="wahub.return_quiet_conversations",
            func=return_quiet_conversations,
            trigger="interval",
            trigger_args={"minutes": 1},
            at_start=True,
        ),
    ]
