"""Sandbox webhook bodies (see ``wahub.plugins.providers.sandbox.provider``), parsed
into wahub's normalized events. Pure functions, no I/O; the test kit's fake
provider speaks the same format.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from wahub.core.errors import WebhookError
from wahub.core.inbound.webhook_json import read_json
from wahub.core.models import EchoMessage, Event, InboundMessage, PreferenceEvent, StatusEvent, UnsupportedEvent


def parse_events(provider: str, body: bytes) -> list[Event]:
    """The events of a sandbox-format webhook body (also spoken by the test kit's fake provider).

    An event wahub cannot read (a missing id, a list where text belongs) is kept
    as an ``UnsupportedEvent`` with the id ``unparsed:<sha256 of the event>``;
    only a body that is not the sandbox's format at all raises ``WebhookError``.
    """
    data = read_json(body)
    if not isinstance(data, dict) or data.get("object") != "wahub_sandbox" or not isinstance(data.get("events"), list):
        raise WebhookError("expected an object with 'object': 'wahub_sandbox' and an 'events' list")
    return [_parse_event(provider, item) for item in data["events"]]


def _parse_event(provider: str, item: Any) -> Event:
    try:
        if not isinstance(item, dict):
            raise ValueError("the event is not an object")
        kind = item.get("type")
        parse = _PARSERS.get(kind) if isinstance(kind, str) else None
        if parse is not None:
            return parse(provider, item)
    except (KeyError, TypeError, ValueError):
        return UnsupportedEvent(provider=provider, external_id="unparsed:" + _digest(item), raw={"item": item})
    external_id = _id(item.get("id")) or _digest(item)
    return UnsupportedEvent(provider=provider, external_id=external_id, raw=item)


def _message_event(provider: str, item: dict[str, Any]) -> Event:
    message = item["message"]
    kind = _text(message["type"])
    context = message.get("context")
    if context is not None and not isinstance(context, dict):
        raise ValueError("'context' is not an object")
    return InboundMessage(
        provider=provider,
        external_id=_required_id(item, "id"),
        sender=_required_id(item, "from"),
        type=kind,
        content={kind: _object(message[kind])},
        timestamp=_seconds(item["timestamp"]),
        sender_name=_optional_text(item, "name"),
        context_id=_optional_text(context or {}, "id"),
        raw=item,
    )


def _echo_event(provider: str, item: dict[str, Any]) -> Event:
    """What the business sent the user ``to`` from its phone (a coexistence echo)."""
    message = item["message"]
    kind = _text(message["type"])
    content = {kind: _object(message[kind])}
    if message.get("context") is not None:
        content["context"] = _object(message["context"])
    return EchoMessage(
        provider=provider,
        external_id=_required_id(item, "id"),
        recipient=_required_id(item, "to"),
        type=kind,
        content=content,
        timestamp=_seconds(item["timestamp"]),
        raw=item,
    )


def _status_event(provider: str, item: dict[str, Any]) -> Event:
    errors = item.get("errors") or [{}]
    error = errors[0] if isinstance(errors, list) else None
    if not isinstance(error, dict):
        raise ValueError("'errors' is not a list of objects")
    code = error.get("code")
    if code is not None and _id(code) is None:
        raise ValueError("the error code is not an id")
    return StatusEvent(
        provider=provider,
        external_id=_required_id(item, "id"),
        message_id=_required_id(item, "message_id"),
        status=_text(item["status"]),
        timestamp=_seconds(item["timestamp"]),
        recipient=_optional_text(item, "recipient"),
        error_code=_id(code),
        error_title=_optional_text(error, "title"),
        pricing_category=_optional_text(item, "pricing_category"),
        raw=item,
    )


def _preference_event(provider: str, item: dict[str, Any]) -> Event:
    return PreferenceEvent(
        provider=provider,
        external_id=_required_id(item, "id"),
        user=_required_id(item, "user"),
        category=_optional_text(item, "category") or "marketing_messages",
        value=_text(item["value"]),
        timestamp=_seconds(item["timestamp"]),
        detail=_optional_text(item, "detail"),
        raw=item,
    )


_PARSERS: dict[str, Callable[[str, dict[str, Any]], Event]] = {
    "message": _message_event,
    "echo": _echo_event,
    "status": _status_event,
    "preference": _preference_event,
}


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected text, got {type(value).__name__}")
    return value


def _optional_text(item: dict[str, Any], key: str) -> str | None:
    value = item.get(key)
    return None if value is None else _text(value)


def _id(value: Any) -> str | None:
    """An id as text (ids may arrive as numbers), or None."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _required_id(item: dict[str, Any], key: str) -> str:
    found = _id(item[key])
    if found is None:
        raise ValueError(f"{key!r} is not an id")
    return found


def _object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError("the message body is not an object")
    return value


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("the timestamp is not a number")
    return float(value)


def _digest(item: Any) -> str:
    # repr stands for read_json's markers; ASCII escapes keep any text encodable.
    return hashlib.sha256(json.dumps(item, sort_keys=True, default=repr).encode()).hexdigest()
