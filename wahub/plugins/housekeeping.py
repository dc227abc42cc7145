"""Built-in periodic upkeep: old inbox rows and activity feed rows purged, quiet
conversations given back to the bot."""

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


async def purge_inbox(hub: Hub) -> None:
    now = time.time()
    purged = await hub.storage.purge_inbox(now - INBOX_RETENTION_SECONDS)
    if purged:
        _LOGGER.info("purged %d processed inbox events older than 8 days", purged)
    pruned = await hub.storage.activity.prune(now - ACTIVITY_RETENTION_SECONDS)
    if pruned:
        _LOGGER.info("pruned %d activity feed rows older than 2 days", pruned)


@hookimpl
def scheduled_jobs(hub: Hub) -> list[JobSpec]:
    return [
        JobSpec(id="wahub.purge_inbox", func=purge_inbox, trigger="interval", trigger_args={"hours": 1}),
        JobSpec(
            id="wahub.return_quiet_conversations",
            func=return_quiet_conversations,
            trigger="interval",
            trigger_args={"minutes": 1},
            at_start=True,
        ),
    ]
