"""Vonage Messages API v1 webhooks, parsed into wahub's normalized events.

Pure functions, no I/O. Vonage posts one flat JSON object per callback: an
inbound message (``message_type`` and the object of that type) to the
application's inbound URL, a status (``status``) to its status URL; wahub
takes both at one webhook URL. A message becomes an ``InboundMessage`` in the
Cloud API's shapes, a status a ``StatusEvent`` in the shared words
(submitted: sent; delivered; read; rejected and undeliverable: failed with
Vonage's code). Each event belongs to the entry of the business number it
names. Another channel's callback, a type wahub does not read, or an
object it cannot read becomes an ``UnsupportedEvent`` kept whole; only a body
that is not a JSON object raises ``WebhookError``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from wahub.core.errors import WebhookError
from wahub.core.inbound.webhook_json import read_json
from wahub.core.models import Event, InboundMessage, StatusEvent, UnsupportedEvent
from wahub.plugins.providers.vonage.errors import error_code

Json = dict[str, Any]

#: Vonage's statuses in the shared words.
STATUSES = {
    "submitted": "sent",
    "delivered": "delivered",
    "read": "read",
    "rejected": "failed",
    "undeliverable": "failed",
}
#: The longest message id kept (stored ids hold 256 characters, with room for a status).
MAX_ID = 128
_DIGITS = re.compile(r"^\+?(\d{5,20})$", re.ASCII)


def parse_vonage_webhook(body: bytes, *, provider: str, numbers: Mapping[str, str] | None = None) -> list[Event]:
    """The events of one Vonage callback received by ``provider``.

    A Vonage application calls one URL for all its numbers: an event belongs to
    ``numbers[<business number>]`` (the message's ``to``, the status's
    ``from``), and to ``provider`` when the number is not listed."""
    data = read_json(body)
    if not isinstance(data, dict):
        raise WebhookError(f"body is a JSON {type(data).__name__}, not an object")
    business = _digits(data.get("from") if "status" in data and "message_type" not in data else data.get("to"))
    provider = (numbers or {}).get(business or "", provider)
    if data.get("channel", "whatsapp") != "whatsapp":
        return [_unsupported(provider, data, "channel")]
    try:
        if "status" in data and "message_type" not in data:
            return [_status(provider, data)]
        if "message_type" in data:
            return [_message(provider, data)]
    except (AttributeError, KeyError, TypeError, ValueError):  # an object wahub cannot read: kept whole
        return [_unsupported(provider, data, "unparsed")]
    return [_unsupported(provider, data, "unknown")]


# -- statuses -------------------------------------------------------------------


def _status(provider: str, data: Json) -> Event:
    message_id, status = _message_uuid(data), _required(data, "status")
    shared = STATUSES.get(status)
    if shared is None:
        return _unsupported(provider, data, f"status:{status}")
    error = data["error"] if isinstance(data.get("error"), dict) else {}
    whatsapp = data["whatsapp"] if isinstance(data.get("whatsapp"), dict) else {}
    pricing = whatsapp["pricing"] if isinstance(whatsapp.get("pricing"), dict) else {}
    return StatusEvent(
        provider=provider,
        external_id=f"{message_id}:{status}",
        message_id=message_id,
        status=shared,
        timestamp=seconds(data.get("timestamp")),
        recipient=_recipient(data, whatsapp),
        error_code=error_code(error) if shared == "failed" and error else None,
        error_title=(_text(error.get("detail")) or _text(error.get("title"))) if error else None,
        pricing_category=_text(pricing.get("category")),
        raw=data,
    )


def _recipient(data: Json, whatsapp: Json) -> str | None:
    """The user a status is about: their number (digits) first, as a message's sender key is."""
    recipient = whatsapp["recipient"] if isinstance(whatsapp.get("recipient"), dict) else {}
    return _digits(data.get("to")) or _digits(recipient.get("wa_id")) or _text(recipient.get("user_id"))


# -- messages -------------------------------------------------------------------


def _message(provider: str, data: Json) -> Event:
    message_id, kind = _message_uuid(data), _required(data, "message_type")
    reader = _CONTENT.get(kind)
    if reader is None:  # unsupported, or a type wahub does not read yet
        return _unsupported(provider, data, f"message:{kind}")
    canonical, content = reader(data)
    identities = user_identities(data)
    sender = identities.get("bsuid") or identities.get("wa_id")
    if not sender:
        raise ValueError("the message names no sender")
    context = data["context"] if isinstance(data.get("context"), dict) else None
    if context is not None:
        content["context"] = {
            key: value
            for key, value in (("id", _text(context.get("message_uuid"))), ("from", _text(context.get("message_from"))))
            if value
        }
    whatsapp = data["whatsapp"] if isinstance(data.get("whatsapp"), dict) else {}
    if isinstance(whatsapp.get("referral"), dict):
        content["referral"] = whatsapp["referral"]
    profile = data["profile"] if isinstance(data.get("profile"), dict) else {}
    return InboundMessage(
        provider=provider,
        external_id=message_id,
        sender=sender,
        type=canonical,
        content=content,
        timestamp=seconds(data.get("timestamp")),
        sender_name=_text(profile.get("name")),
        context_id=_text(context.get("message_uuid")) if context else None,
        raw=data,
        identities=identities,
    )


def user_identities(data: Json) -> Json:
    """The sender's ids by kind: ``wa_id`` (the ``from`` number as digits),
    ``bsuid`` and ``parent_bsuid`` (a ``from`` that is no number, or the
    ``whatsapp.sender``/``profile`` ids where Vonage gives them), ``username``."""
    profile = data["profile"] if isinstance(data.get("profile"), dict) else {}
    whatsapp = data["whatsapp"] if isinstance(data.get("whatsapp"), dict) else {}
    sender = whatsapp["sender"] if isinstance(whatsapp.get("sender"), dict) else {}
    given = _text(data.get("from"))
    found = {
        "wa_id": _digits(given) or _digits(sender.get("wa_id")),
        "bsuid": (None if _digits(given) else given) or _text(sender.get("user_id")) or _text(profile.get("user_id")),
        "parent_bsuid": _text(sender.get("parent_user_id")) or _text(profile.get("parent_user_id")),
        "username": _text(profile.get("username")),
    }
    return {key: value for key, value in found.items() if value}


def _text_content(data: Json) -> tuple[str, Json]:
    text = data["text"]
    if not isinstance(text, str):
        raise TypeError("text is not a string")
    return "text", {"text": {"body": text}}


def _media_content(kind: str, canonical: str) -> Callable[[Json], tuple[str, Json]]:
    def read(data: Json) -> tuple[str, Json]:
        media = data[kind]
        url = media["url"] if isinstance(media, dict) else None
        if not isinstance(url, str) or not url or len(url) > 256:
            raise ValueError(f"{kind}.url is missing or not a URL wahub keeps")
        # The URL is the file's id: download_media fetches it with the credentials.
        body: Json = {"id": url, "url": url}
        for key, name in (("caption", "caption"), ("name", "filename")):
            if _text(media.get(key)):
                body[name] = media[key]
        return canonical, {canonical: body}

    return read


def _location_content(data: Json) -> tuple[str, Json]:
    location = data["location"]
    latitude, longitude = _number(location["lat"]), _number(location["long"])
    body: Json = {"latitude": latitude, "longitude": longitude}
    body.update({key: location[key] for key in ("name", "address", "url") if _text(location.get(key))})
    return "location", {"location": body}


def _reply_content(data: Json) -> tuple[str, Json]:
    """A tapped reply button or list row; only a row has a description."""
    reply = data["reply"]
    item = {"id": _required(reply, "id"), "title": str(reply.get("title") or "")}
    if _text(reply.get("description")):
        item["description"] = reply["description"]
        return "interactive", {"interactive": {"type": "list_reply", "list_reply": item}}
    return "interactive", {"interactive": {"type": "button_reply", "button_reply": item}}


def _button_content(data: Json) -> tuple[str, Json]:
    """A template's quick reply button, in Meta's ``button`` shape."""
    button = data["button"]
    return "button", {"button": {"payload": str(button.get("payload") or ""), "text": str(button.get("text") or "")}}


def _order_content(data: Json) -> tuple[str, Json]:
    order = data["order"]
    if not isinstance(order, dict):
        raise TypeError("order is not an object")
    return "order", {"order": order}


def _reaction_content(data: Json) -> tuple[str, Json]:
    reaction = data["reaction"]
    context = data["context"] if isinstance(data.get("context"), dict) else {}
    emoji = "" if reaction.get("action") == "unreact" else str(reaction.get("emoji") or "")
    return "reaction", {"reaction": {"message_id": _required(context, "message_uuid"), "emoji": emoji}}


_CONTENT: dict[str, Callable[[Json], tuple[str, Json]]] = {
    "text": _text_content,
    "image": _media_content("image", "image"),
    "audio": _media_content("audio", "audio"),
    "video": _media_content("video", "video"),
    "file": _media_content("file", "document"),
    "sticker": _media_content("sticker", "sticker"),
    "location": _location_content,
    "reply": _reply_content,
    "button": _button_content,
    "order": _order_content,
    "reaction": _reaction_content,
}


# -- readers --------------------------------------------------------------------


def seconds(value: Any) -> float:
    """A Vonage time (ISO 8601, ``2025-02-03T12:14:25Z``; or Unix seconds) as Unix seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0:
        return float(value)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"timestamp {value!r} is not a time")
    text = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        number = float(text)
        if not math.isfinite(number):
            raise ValueError(f"timestamp {value!r} is out of range")
        return number
    moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def _number(value: Any) -> float:
    if isinstance(value, bool):
        raise TypeError("a coordinate is not a boolean")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError("a coordinate is not finite")
    return number


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return value or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _required(item: Any, key: str) -> str:
    found = _text(item.get(key)) if isinstance(item, dict) else None
    if found is None:
        raise ValueError(f"{key!r} is missing or empty")
    return found


def _message_uuid(data: Json) -> str:
    """The callback's ``message_uuid`` (Vonage's are 36 characters; wahub keeps up to 128)."""
    found = _required(data, "message_uuid")
    if len(found) > MAX_ID:
        raise ValueError("message_uuid is too long")
    return found


def _digits(value: Any) -> str | None:
    """A phone number as digits (E.164 without ``+``), or None for anything else."""
    match = _DIGITS.match(value.strip()) if isinstance(value, str) else None
    return match.group(1) if match else None


def _unsupported(provider: str, data: Json, why: str) -> UnsupportedEvent:
    """A callback wahub does not read, kept whole; its id is stable across retries."""
    known = _text(data.get("message_uuid"))
    digest = hashlib.sha256(json.dumps(data, sort_keys=True, default=repr).encode()).hexdigest()
    try:
        timestamp = seconds(data.get("timestamp"))
    except ValueError:
        timestamp = 0.0
    return UnsupportedEvent(
        provider=provider,
        external_id=f"{why[:64]}:{(known or '')[:MAX_ID] or digest}",
        raw={"reason": why, "body": data},
        timestamp=timestamp,
    )
