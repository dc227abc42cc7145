"""The Cloud API's message request bodies: a canonical message as
``POST /messages`` takes it, and the same body sent to a phone number instead
of a business-scoped user id."""

from __future__ import annotations

import copy
import re
from typing import Any

from wahub.core.models import OutgoingMessage

#: A business-scoped user id: country code, a dot, digits (``US.1349...``, ``US.ENT.1181...``).
_BSUID = re.compile(r"^[A-Z]{2}\.[A-Z0-9.]+$")


def render(message: OutgoingMessage) -> dict[str, Any]:
    """The Cloud API request body of ``message``.

    A business-scoped user id (BSUID) goes in ``recipient`` instead of ``to``;
    phone numbers, wa_ids and group ids go in ``to``.
    """
    if message.type == "mark_read":
        receipt = message.content["mark_read"]
        body: dict[str, Any] = {"messaging_product": "whatsapp", "status": "read", "message_id": receipt["message_id"]}
        if receipt.get("typing_indicator"):
            body["typing_indicator"] = {"type": "text"}
        return body
    recipient_type = message.content.get("recipient_type", "individual")
    body = {
        "messaging_product": "whatsapp",
        "recipient_type": recipient_type,
        ("recipient" if recipient_type != "group" and _BSUID.match(message.to) else "to"): message.to,
        "type": message.type,
        # A copy: sending replaces wahub's media ids with the provider's.
        message.type: copy.deepcopy(message.content[message.type]),
    }
    if "biz_opaque_callback_data" in message.content:
        body["biz_opaque_callback_data"] = message.content["biz_opaque_callback_data"]
    if message.context_id:
        body["context"] = {"message_id": message.context_id}
    return body


def by_phone(body: dict[str, Any], phone: str) -> dict[str, Any]:
    """``body`` sent to ``phone`` (in ``to``) instead of a BSUID (in ``recipient``)."""
    readdressed = {key: value for key, value in body.items() if key != "recipient"}
    return {"messaging_product": body["messaging_product"], "to": phone, **readdressed}
