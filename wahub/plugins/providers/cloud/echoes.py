"""Coexistence echoes: the messages a person at the business sent from the
WhatsApp Business app on a number it shares with the Cloud API.

Meta reports them in the ``smb_message_echoes`` webhook field as
``value.message_echoes[]``: each item is shaped like a user's message, with
the same type objects, ``id`` and ``timestamp``, but ``from`` is the business
number and the user is named by ``to`` (the wa_id), ``to_user_id`` (the BSUID)
and ``to_parent_user_id``; ``contacts[]`` may describe the user as it does for
their own messages. 360dialog forwards the same change unchanged.

Pure functions, no I/O; ``wahub.plugins.providers.cloud.webhook`` calls them.
"""

from __future__ import annotations

from typing import Any

from wahub.core.models import EchoMessage
from wahub.plugins.providers.cloud.webhook_fields import message_content, required, seconds, user_identities

#: The webhook field carrying echoes, and the ``value`` key listing them.
ECHO_FIELD = "smb_message_echoes"
ECHO_ITEMS = "message_echoes"
#: How an echo names its user, each with the ``contacts[]`` key holding the same id:
#: by BSUID first, then by wa_id.
ECHO_USER_KEYS = (("to_user_id", "user_id"), ("to", "wa_id"))


def echo_message(
    provider: str, item: dict[str, Any], contact: dict[str, Any] | None, metadata: dict[str, Any] | None
) -> EchoMessage:
    """The ``EchoMessage`` of one ``message_echoes[]`` item.

    ``recipient`` is chosen as an inbound message's ``sender`` is: the user's
    BSUID when there is one, else their wa_id. Raises ValueError (or KeyError,
    TypeError) when the item lacks its id, type, time or user, or its type's
    object holds the wrong types: the caller keeps such an item unparsed.
    """
    wamid, kind = required(item, "id"), required(item, "type")
    timestamp = seconds(item.get("timestamp"))
    identities = user_identities(
        contact, bsuid=item.get("to_user_id"), wa_id=item.get("to"), parent_bsuid=item.get("to_parent_user_id")
    )
    recipient = identities.get("bsuid") or identities.get("wa_id")
    if not recipient:
        raise ValueError("the echo names no recipient")
    return EchoMessage(
        provider=provider,
        external_id=wamid,
        recipient=recipient,
        type=kind,
        content=message_content(item, kind),
        timestamp=timestamp,
        identities=identities,
        raw={"message": item, "contact": contact, "metadata": metadata},
    )
