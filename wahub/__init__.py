"""wahub: a self-hosted WhatsApp integration hub."""

import pluggy

from wahub.core.models import (
    InboundMessage,
    OutgoingMessage,
    PreferenceEvent,
    SendResult,
    StatusEvent,
    UnsupportedEvent,
)
from wahub.hookspecs import Answer, JobSpec, Route, Turn

__version__ = "0.1.0"

#: Decorator for plugin hook implementations: ``@wahub.hookimpl``.
hookimpl = pluggy.HookimplMarker("wahub")

__all__ = [
    "Answer",
    "InboundMessage",
    "JobSpec",
    "OutgoingMessage",
    "PreferenceEvent",
    "Route",
    "SendResult",
    "StatusEvent",
    "Turn",
    "UnsupportedEvent",
    "__version__",
    "hookimpl",
]
