"""Round-robin assignment of queued conversations to operators whose page is
open, and the alerts (Apprise) about queued conversations nobody took."""

from __future__ import annotations

from wahub.core.hub import Hub
from wahub.core.models import Conversation, OwnershipChange
from wahub.hookspecs import JobSpec
from wahub.plugins.inbox.state import Inbox


def jobs(hub: Hub) -> list[JobSpec]:
    return []


async def on_change(inbox: Inbox, conversation: Conversation, change: OwnershipChange) -> None:
    return None
