"""Changing who owns a conversation, and telling the plugins.

Every change goes through ``change_owner``: stored with who, why and when
(``storage.conversations``), counted, then announced to the
``conversation_changed`` observers. A conversation a person owns (or was
asked for) in which nobody has written for ``conversations.return_to_bot_after``
seconds goes back to the bot (``return_quiet_conversations``, a scheduled job).
"""

from __future__ import annotations

import logging

from wahub.core.hub import Hub
from wahub.core.models import Conversation, Owner, OwnershipChange
from wahub.core.plugins import call_hook
from wahub.core.storage.conversations import Transition

_LOGGER = logging.getLogger(__name__)


async def change_owner(
    hub: Hub,
    conversation_id: int,
    change: str,
    *,
    actor: str,
    reason: str,
    assignee: str | None = None,
    event_key: str | None = None,
    quiet_before: float | None = None,
    only_from: frozenset[Owner] | None = None,
    held_by: str | None = None,
) -> OwnershipChange | None:
    """Apply ``change`` (``queued``, ``assigned``, ``released``, ``resolved``,
    ``phone``) and announce it; None when the current owner does not allow it
    (or is not one of ``only_from``, or it is not assigned to ``held_by``, or,
    with ``quiet_before``, a person was active since then)."""
    transition = Transition(change, actor, reason, assignee, event_key, quiet_before, only_from, held_by)
    result = await hub.storage.conversations.change_owner(conversation_id, transition, now=hub.clock.time())
    if result is None:
        return None
    await announce(hub, *result)
    return result[1]


async def announce(hub: Hub, conversation: Conversation, change: OwnershipChange) -> None:
    """Count a stored change and call the ``conversation_changed`` observers."""
    _LOGGER.info(
        "conversation %d: %s -> %s (%s by %s)",
        conversation.id,
        change.from_owner,
        change.to_owner,
        change.change,
        change.actor,
    )
    hub.metrics.ownership_changes.labels(change.change, change.actor.split(":", 1)[0]).inc()
    await call_hook(hub, "conversation_changed", hub=hub, conversation=conversation, change=change)


async def return_quiet_conversations(hub: Hub) -> None:
    """Give back to the bot every conversation in which no person wrote for
    ``conversations.return_to_bot_after`` seconds (never, when it is null)."""
    after = hub.config["conversations"]["return_to_bot_after"]
    if after is None:
        return
    reason = f"no person wrote for {after / 3600:g} h"
    before, last = hub.clock.time() - after, 0
    while ids := await hub.storage.conversations.quiet_since(before, after=last):
        for conversation_id in ids:
            # Checked again under the row's lock: a person who just took it keeps it.
            await change_owner(hub, conversation_id, "resolved", actor="system", reason=reason, quiet_before=before)
        last = ids[-1]
