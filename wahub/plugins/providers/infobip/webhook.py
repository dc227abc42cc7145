"""Infobip's WhatsApp webhook bodies, parsed into wahub's normalized events.

Pure functions, no I/O. Every body is ``{"results": [...]}``; each result is a
user's message (it has ``message`` and ``receivedAt``), a delivery report
(``status`` with its group) or a seen report (``seenAt``). Messages become
the Cloud API's shapes (``{"text": {"body": ...}}``...), so the rest of wahub
reads them as it reads Meta's. A result wahub cannot read becomes an
``UnsupportedEvent`` keeping it whole, so nothing is dropped.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from typing import Any

from wahub.core.errors import WebhookError
from wahub.core.inbound.webhook_json import read_json
from wahub.core.models import Event, InboundMessage, StatusEvent, UnsupportedEvent
from wahub.plugins.providers.cloud.webhook_fields import text_id

#: Infobip's media types, as the Cloud API's (a voice note is audio with ``voice``).
_MEDIA = {"IMAGE": "image", "DOCUMENT": "document", "AUDIO": "audio", "VOICE": "audio", "VIDEO": "video"}
_MEDIA["STICKER"] = "sticker"
#: Reply-button and list taps: Infobip's documentation and captured payloads name them both ways.
_BUTTON_REPLIES = frozenset({"INTERACTIVE_BUTTON_REPLY", "BUTTON_REPLY"})
_LIST_REPLIES = frozenset({"INTERACTIVE_LIST_REPLY", "LIST_REPLY"})
#: Delivery report status groups, by name and by id, as wahub's statuses.
_GROUPS = {"PENDING": "sent", "UNDELIVERABLE": "failed", "DELIVERED": "delivered", "EXPIRED": "failed"}
_GROUPS["REJECTED"] = "failed"
_GROUP_IDS = {1: "PENDING", 2: "UNDELIVERABLE", 3: "DELIVERED", 4: "EXPIRED", 5: "REJECTED"}
#: The longest media id (the file's URL) wahub stores.
_MAX_MEDIA_ID = 256
_CAMEL = re.compile(r"(?<=[a-z0-9])([A-Z])")


def address(value: Any) -> str | None:
    """A user's number as digits (``whatsapp:+1555...`` and ``+1555...`` give ``1555...``);
    None when it is not a phone number."""
    text = text_id(value)
    if text is None:
        return None
    digits = text.removeprefix("whatsapp:").removeprefix("+")
    return digits if digits.isdigit() else None


def snake_case(value: Any) -> Any:
    """Infobip's camelCase keys (``firstName``) as the Cloud API's (``first_name``), all the way down."""
    if isinstance(value, dict):
        return {_CAMEL.sub(r"_\1", key).lower(): snake_case(item) for key, item in value.items()}
    if isinstance(value, list):
        return [snake_case(item) for item in value]
    return value


def received_at(value: Any) -> float:
    """Infobip's time (``2025-01-01T10:10:00.000+0000``) as Unix seconds; 0.0 when absent or unreadable."""
    if not isinstance(value, str):
        return 0.0
    for pattern in ("%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%dT%H:%M:%S%z"):
        try:
            return dt.datetime.strptime(value, pattern).timestamp()
        except ValueError:
            continue
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return 0.0
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)).timestamp()


def parse_infobip_webhook(body: bytes, *, provider: str) -> list[Event]:
    """The events of an Infobip webhook body received by ``provider``."""
    data = read_json(body)
    if not isinstance(data, dict):
        raise WebhookError(f"body is a JSON {type(data).__name__}, not an object")
    results = data.get("results")
    if not isinstance(results, list):
        raise WebhookError("'results' is missing or not a list")
    events: list[Event] = []
    for item in results:
        try:
            if not isinstance(item, dict):
                raise TypeError("a result is not an object")
            events.append(_result(provider, item))
        except (KeyError, TypeError, ValueError):
            events.append(unparsed(provider, item))
    return events


def _result(provider: str, item: dict[str, Any]) -> Event:
    if isinstance(item.get("message"), dict):
        return _message(provider, item)
    if isinstance(item.get("status"), dict):
        return _delivery(provider, item)
    if item.get("seenAt") is not None:
        return _seen(provider, item)
    return unparsed(provider, item)


def _message(provider: str, item: dict[str, Any]) -> Event:
    external_id = _required(item, "messageId")
    message: dict[str, Any] = item["message"]
    kind, content = _content(message)
    if kind is None:
        return UnsupportedEvent(provider, f"{external_id}:unsupported", raw=item, timestamp=_time(item))
    contact = item["contact"] if isinstance(item.get("contact"), dict) else {}
    identities = {
        "bsuid": text_id(contact.get("userId")),
        "wa_id": address(item.get("from")) or address(contact.get("phoneNumber")),
        "username": text_id(contact.get("username")),
        "parent_bsuid": text_id(contact.get("parentUserId")),
    }
    found = {key: value for key, value in identities.items() if value}
    sender = found.get("bsuid") or found.get("wa_id")
    if sender is None:
        raise ValueError("the message names no sender")
    context = _context(message, item)
    if context is not None:
        content["context"] = {"id": context}
    if isinstance(message.get("referral"), dict):
        content["referral"] = snake_case(message["referral"])
    return InboundMessage(
        provider=provider,
        external_id=external_id,
        sender=sender,
        type=kind,
        content=content,
        timestamp=_time(item),
        sender_name=text_id(contact.get("name")),
        context_id=context,
        raw=item,
        identities=found,
    )


def _content(message: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """The Cloud API type and content of an Infobip message; ``(None, {})`` for a type wahub does not read."""
    kind = message.get("type")
    if kind == "TEXT":
        return "text", {"text": {"body": _text(message, "text")}}
    if kind in _MEDIA:
        return _media(kind, message)
    if kind == "LOCATION":
        location = {key: message[key] for key in ("latitude", "longitude", "name", "address", "url") if key in message}
        if not all(isinstance(location.get(key), (int, float)) for key in ("latitude", "longitude")):
            raise ValueError("a location without coordinates")
        return "location", {"location": location}
    if kind == "CONTACT":
        contacts = message.get("contacts")
        if not isinstance(contacts, list):
            raise ValueError("a contact message without contacts")
        return "contacts", {"contacts": snake_case(contacts)}
    if kind in _BUTTON_REPLIES or kind in _LIST_REPLIES:
        return "interactive", {"interactive": _reply(kind, message)}
    if kind == "BUTTON":  # a template's quick-reply button
        payload = text_id(message.get("payload")) or _text(message, "text")
        return "button", {"button": {"payload": payload, "text": _text(message, "text")}}
    if kind == "ORDER":
        order = snake_case({key: value for key, value in message.items() if key != "type"})
        return "order", {"order": order}
    return None, {}


def _media(kind: str, message: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    canonical = _MEDIA[kind]
    url = _required(message, "url")
    if len(url) > _MAX_MEDIA_ID:
        raise ValueError("the media URL is longer than a media id wahub stores")
    media: dict[str, Any] = {"id": url}
    for key in ("caption", "filename", "mimeType"):
        if isinstance(message.get(key), str):
            media["mime_type" if key == "mimeType" else key] = message[key]
    if kind == "VOICE":
        media["voice"] = True
    return canonical, {canonical: media}


def _reply(kind: str, message: dict[str, Any]) -> dict[str, Any]:
    reply_id = text_id(message.get("id")) or text_id(message.get("payload"))
    if reply_id is None:
        raise ValueError("a reply without the id of what was tapped")
    reply: dict[str, Any] = {"id": reply_id, "title": _text(message, "title")}
    if kind in _LIST_REPLIES:
        if isinstance(message.get("description"), str):
            reply["description"] = message["description"]
        return {"type": "list_reply", "list_reply": reply}
    return {"type": "button_reply", "button_reply": reply}


def _context(message: dict[str, Any], item: dict[str, Any]) -> str | None:
    """The id of the message this one answers: its ``context`` (read by either
    name of its id), else the ``pairedMessageId`` of a tapped reply."""
    context = message.get("context")
    if isinstance(context, dict):
        found = text_id(context.get("id")) or text_id(context.get("messageId"))
        if found:
            return found
    return text_id(item.get("pairedMessageId"))


def _delivery(provider: str, item: dict[str, Any]) -> StatusEvent:
    message_id = _required(item, "messageId")
    status: dict[str, Any] = item["status"]
    group = status.get("groupName") or _GROUP_IDS.get(status.get("groupId"))  # type: ignore[arg-type]
    shared = _GROUPS.get(str(group))
    if shared is None:
        raise ValueError(f"unknown status group {group!r}")
    error = item["error"] if isinstance(item.get("error"), dict) else {}
    code = title = None
    if shared == "failed":
        named = text_id(error.get("name"))
        code = named if named and named != "NO_ERROR" else str(group)
        title = text_id(error.get("description")) or text_id(status.get("description"))
    return StatusEvent(
        provider=provider,
        external_id=f"{message_id}:{shared}",
        message_id=message_id,
        status=shared,
        timestamp=received_at(item.get("doneAt")) or received_at(item.get("sentAt")),
        recipient=address(item.get("to")),
        error_code=code,
        error_title=title,
        raw=item,
    )


def _seen(provider: str, item: dict[str, Any]) -> StatusEvent:
    message_id = _required(item, "messageId")
    return StatusEvent(
        provider=provider,
        external_id=f"{message_id}:read",
        message_id=message_id,
        status="read",
        timestamp=received_at(item.get("seenAt")),
        recipient=address(item.get("to")),
        raw=item,
    )


def unparsed(provider: str, item: Any) -> UnsupportedEvent:
    """A result wahub could not read, kept whole; a retried delivery gives the same id."""
    digest = hashlib.sha256(json.dumps(item, sort_keys=True, default=repr).encode()).hexdigest()
    raw = item if isinstance(item, dict) else {"item": item}
    return UnsupportedEvent(provider, f"unparsed:{digest}", raw=raw, timestamp=0.0)


def _time(item: dict[str, Any]) -> float:
    return received_at(item.get("receivedAt"))


def _required(item: dict[str, Any], key: str) -> str:
    found = text_id(item.get(key))
    if found is None:
        raise ValueError(f"{key!r} is missing or empty")
    return found


def _text(item: dict[str, Any], key: str) -> str:
    value = item.get(key)
    if not isinstance(value, str):
        raise ValueError(f"{key!r} is missing or not text")
    return value
