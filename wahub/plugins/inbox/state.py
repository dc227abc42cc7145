"""The inbox's per-daemon object, kept in ``hub.state["inbox"]``; every module
of the inbox takes it. (The live feed keeps its own, see ``live.live_of``.)"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from wahub.core.hub import Hub


@dataclass
class Inbox:
    hub: Hub
    #: The validated ``inbox:`` section.
    config: Mapping[str, Any]


def inbox_of(hub: Hub) -> Inbox:
    """The daemon's inbox, made on first use."""
    inbox = hub.state.get("inbox")
    if inbox is None:
        inbox = hub.state["inbox"] = Inbox(hub, hub.config["inbox"])
    assert isinstance(inbox, Inbox)
    return inbox
