"""Bird's Notifications API webhooks, parsed into wahub's normalized events.

Pure functions, no I/O: the provider calls ``parse_bird_webhook`` on a body
whose signature it has checked. A webhook is one event, ``{"service",
"event", "payload"}``:

- ``whatsapp.inbound``: a user's message, the Channels API message in
  ``payload`` (``sender.contact`` with the ``+E164`` number and
  ``annotations.name``, ``body`` of type text, image, file or location,
  ``parts[].platformReference`` = the wamid, ``meta.extraInformation.whatsappbsuid``);
- ``whatsapp.outbound``: the status of a message the business sent
  (``payload.id`` is the id the send answered, ``payload.status`` Bird's word);
- ``whatsapp.interaction``: a read report (``opened``/``read``) of a sent message.

Addresses are kept as digits (``+31612345678`` -> ``31612345678``), the
Cloud API's wa_id, so a number's history and consent survive a move between
providers. Anything else, and an item that cannot be read, becomes an
``UnsupportedEvent`` that keeps the whole body.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from wahub.core.errors import WebhookError
from wahub.core.inbound.webhook_json import read_json
from wahub.core.models import Event, InboundMessage, StatusEvent, UnsupportedEvent

#: Bird's status words in the shared ones; others are kept as Bird says them
#: (they do not move a message: the shared order knows only these).
STATUS_WORDS = {
    "sent": "sent",
    "delivered": "delivered",
    "read": "read",
    "sending_failed": "failed",
    "delivery_failed": "failed",
    "failed": "failed",
    "rejected": "failed",
}
#: Interaction types that say the user read the message.
READ_INTERACTIONS = frozenset({"opened", "read"})
_LONGEST_MEDIA_URL = 256  # the column the provider's media id is stored in


def parse_bird_webhook(body: bytes, *, default: str, channels: Mapping[str, str]) -> list[Event]:
    """The events of a Bird webhook body. ``default`` is the provider that
    received it; ``channels`` maps a channel id to its provider (entries
    sharing one subscription's signing key)."""
    data = read_json(body)
    if not isinstance(data, dict):
        raise WebhookError(f"body is a JSON {type(data).__name__}, not an object")
    event, payload = data.get("event"), data.get("payload")
    if not isinstance(event, str) or not event:
        raise WebhookError("'event' is missing or not text")
    if not isinstance(payload, dict):
        raise WebhookError("'payload' is missing or not an object")
    channel = payload.get("channelId")
    provider = channels.get(channel, default) if isinstance(channel, str) else default
    platform, _, kind = event.partition(".")
    try:
        if data.get("service", "channels") == "channels" and platform == "whatsapp":
            if kind == "inbound":
                return [_inbound(provider, payload)]
            if kind == "outbound":
                return [_status(provider, payload)]
            if kind == "interaction" and str(payload.get("type", "")).lower() in READ_INTERACTIONS:
                return [_read(provider, payload)]
    except (KeyError, TypeError, ValueError):
        return [_unsupported(provider, f"unparsed:{event}", data)]
    return [_unsupported(provider, event, data)]


def _inbound(provider: str, payload: dict[str, Any]) -> Event:
    message_id = _text(payload, "id")
    identities = _identities(payload)
    sender = identities.get("bsuid") or identities.get("wa_id")
    if not sender:
        raise ValueError("the message names no sender")
    body = payload.get("body")
    converted = _content(body) if isinstance(body, dict) else None
    if converted is None:
        return _unsupported(provider, "whatsapp.inbound", {"payload": payload})
    kind, content = converted
    reply_to = payload.get("replyTo")
    context_id = _optional(reply_to, "id") if isinstance(reply_to, dict) else None
    if context_id:
        content["context"] = {"id": context_id}
    contact = payload["sender"]["contact"]
    annotations = contact.get("annotations") if isinstance(contact.get("annotations"), dict) else {}
    return InboundMessage(
        provider=provider,
        external_id=message_id,
        sender=sender,
        type=kind,
        content=content,
        timestamp=_when(payload),
        sender_name=_optional(annotations, "name"),
        context_id=context_id,
        raw={"payload": payload, "wamid": _wamid(payload)},
        identities=identities,
    )


def _identities(payload: dict[str, Any]) -> dict[str, str]:
    """The user's ids: the phone number as digits (``wa_id``) and the BSUID."""
    contact = payload["sender"]["contact"]
    found: dict[str, str] = {}
    if str(contact.get("identifierKey", "phonenumber")) == "phonenumber":
        digits = digits_of(_optional(contact, "identifierValue") or "")
        if digits:
            found["wa_id"] = digits
    meta = payload.get("meta")
    extra = meta.get("extraInformation") if isinstance(meta, dict) else None
    bsuid = _optional(extra, "whatsappbsuid") if isinstance(extra, dict) else None
    if bsuid:
        found["bsuid"] = bsuid
    return found


def digits_of(number: str) -> str | None:
    """``+31612345678`` (or ``whatsapp:+...``) as ``31612345678``; None when it is no phone number."""
    digits = number.removeprefix("whatsapp:").strip().removeprefix("+")
    return digits if digits.isascii() and digits.isdigit() and 5 <= len(digits) <= 20 else None


def _content(body: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """A Bird message body as a canonical type and content; None for a type wahub does not read."""
    kind = body.get("type")
    inner = body.get(kind) if isinstance(kind, str) else None
    if not isinstance(inner, dict):
        return None
    if kind == "text":
        tap = _postback(inner.get("actions"))
        if tap is not None:
            reply = {"id": tap["payload"], "title": tap.get("text") or inner.get("text") or tap["payload"]}
            return "interactive", {"interactive": {"type": "button_reply", "button_reply": reply}}
        return "text", {"text": {"body": _text(inner, "text")}}
    if kind == "image":
        image = _first(inner, "images")
        caption = _optional(inner, "text") or _optional(image, "altText")
        return "image", {"image": _media(image, caption=caption)}
    if kind == "file":
        file = _first(inner, "files")
        mime_type = _optional(file, "contentType") or "application/octet-stream"
        media_kind = media_kind_of(mime_type)
        media = _media(file, caption=_optional(inner, "text"), mime_type=mime_type)
        if media_kind == "document" and _optional(file, "filename"):
            media["filename"] = _optional(file, "filename")
        return media_kind, {media_kind: media}
    if kind == "location":
        return "location", {"location": _location(inner)}
    return None


def media_kind_of(mime_type: str) -> str:
    """The canonical media type of a file Bird sends as ``file`` (audio, video and stickers too)."""
    main = mime_type.split(";")[0].strip().lower()
    if main.startswith("audio/"):
        return "audio"
    if main.startswith("video/"):
        return "video"
    if main == "image/webp":
        return "sticker"
    if main.startswith("image/"):
        return "image"
    return "document"


def _postback(actions: Any) -> dict[str, Any] | None:
    """The tapped postback (a reply button, list row or template quick reply), if the text carries one."""
    for action in actions if isinstance(actions, list) else ():
        postback = action.get("postback") if isinstance(action, dict) else None
        if isinstance(postback, dict) and _optional(postback, "payload"):
            return postback
    return None


def _first(inner: dict[str, Any], key: str) -> dict[str, Any]:
    items = inner.get(key)
    if not isinstance(items, list) or not items or not isinstance(items[0], dict):
        raise ValueError(f"{key} is missing or empty")
    first: dict[str, Any] = items[0]
    return first


def _media(item: dict[str, Any], *, caption: str | None, mime_type: str | None = None) -> dict[str, Any]:
    url = _text(item, "mediaUrl")
    if len(url) > _LONGEST_MEDIA_URL:
        raise ValueError("mediaUrl is too long to keep as the file's id")
    media: dict[str, Any] = {"id": url}
    if mime_type:
        media["mime_type"] = mime_type
    if caption:
        media["caption"] = caption
    return media


def _location(inner: dict[str, Any]) -> dict[str, Any]:
    coordinates = inner["coordinates"]
    latitude, longitude = coordinates["latitude"], coordinates["longitude"]
    for value in (latitude, longitude):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError("coordinates are not numbers")
    location: dict[str, Any] = {"latitude": latitude, "longitude": longitude}
    found = inner.get("location")
    place: dict[str, Any] = found if isinstance(found, dict) else {}
    for ours, birds in (("name", "label"), ("address", "address")):
        if _optional(place, birds):
            location[ours] = place[birds]
    return location


def _status(provider: str, payload: dict[str, Any]) -> StatusEvent:
    message_id, said = _text(payload, "id"), _text(payload, "status")
    code, title = _failure(payload)
    status = STATUS_WORDS.get(said, said)
    return StatusEvent(
        provider=provider,
        external_id=f"{message_id}:{said}",
        message_id=message_id,
        status=status,
        timestamp=_when(payload),
        recipient=_recipient(payload),
        error_code=code if status == "failed" else None,
        error_title=title if status == "failed" else None,
        raw={"payload": payload, "wamid": _wamid(payload)},
    )


def _read(provider: str, payload: dict[str, Any]) -> StatusEvent:
    message_id = _text(payload, "messageId")
    return StatusEvent(
        provider=provider,
        external_id=f"{message_id}:read",
        message_id=message_id,
        status="read",
        timestamp=_when(payload),
        raw={"payload": payload},
    )


def _failure(payload: dict[str, Any]) -> tuple[str | None, str | None]:
    """A failed message's code (WhatsApp's, which Bird passes on in
    ``failure.source.code``, else Bird's ``failure.code``) and its reason."""
    found = payload.get("failure")
    failure: dict[str, Any] = found if isinstance(found, dict) else {}
    source = failure["source"] if isinstance(failure.get("source"), dict) else {}
    code = _code(source.get("code")) or _code(failure.get("code"))
    title = _optional(failure, "description") or _optional(payload, "reason")
    return code, title


def _recipient(payload: dict[str, Any]) -> str | None:
    receiver = payload.get("receiver")
    contacts = receiver.get("contacts") if isinstance(receiver, dict) else None
    first = contacts[0] if isinstance(contacts, list) and contacts and isinstance(contacts[0], dict) else {}
    return digits_of(_optional(first, "identifierValue") or "")


def _wamid(payload: dict[str, Any]) -> str | None:
    parts = payload.get("parts")
    for part in parts if isinstance(parts, list) else ():
        reference = _optional(part, "platformReference") if isinstance(part, dict) else None
        if reference:
            return reference
    return None


def _when(payload: dict[str, Any]) -> float:
    """The event's time from ``lastStatusAt``, ``updatedAt`` or ``createdAt`` (ISO 8601)."""
    for key in ("lastStatusAt", "updatedAt", "createdAt"):
        value = payload.get(key)
        if isinstance(value, str) and value:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                raise ValueError(f"{key} {value!r} has no time zone")
            return moment.timestamp()
    raise ValueError("the event has no time")


def _text(item: dict[str, Any], key: str) -> str:
    value = _optional(item, key)
    if value is None:
        raise ValueError(f"{key!r} is missing or empty")
    return value


def _optional(item: Any, key: str) -> str | None:
    value = item.get(key) if isinstance(item, dict) else None
    return value if isinstance(value, str) and value else None


def _code(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    return value if isinstance(value, str) and value else None


def _unsupported(provider: str, what: str, data: dict[str, Any]) -> UnsupportedEvent:
    digest = hashlib.sha256(json.dumps(data, sort_keys=True, default=repr).encode()).hexdigest()
    return UnsupportedEvent(provider=provider, external_id=f"{what}:{digest}", raw=data, timestamp=0.0)
