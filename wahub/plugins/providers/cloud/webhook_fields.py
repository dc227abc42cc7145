"""What the Cloud API webhook reader accepts: the account fields it reads,
their headline, the types and lengths it stores, the readers of ids and times,
and what a message item (a user's message or a business echo) holds: the
user's ids and the content of its type."""

from __future__ import annotations

import math
from typing import Any

#: Template and account webhook fields, read into ``AccountEvent``s.
ACCOUNT_FIELDS = frozenset(
    {
        "message_template_status_update",
        "template_category_update",
        "message_template_quality_update",
        "message_template_components_update",
        "account_update",
        "phone_number_quality_update",
        "phone_number_name_update",
        "business_capability_update",
        "account_alerts",
        "account_review_update",
    }
)

#: The value key holding an account field's headline when it has no ``event``.
_HEADLINE_KEYS = {
    "template_category_update": "new_category",
    "message_template_quality_update": "new_quality_score",
}

#: Text an account change may carry where wahub reads it, with its longest length
#: (the size of the template column it is stored in; None: any). Another type or a
#: longer text makes the change unreadable: it is kept as an unsupported event.
_ACCOUNT_TEXT: dict[str, int | None] = {
    "event": None,
    "current_limit": None,
    "message_template_name": 512,
    "message_template_language": 16,
    "message_template_category": 32,
    "new_category": 32,
    "new_quality_score": 16,
}
#: Template fields whose headline is stored as the template's status, category or quality.
_TEMPLATE_HEADLINE_LENGTH = {
    "message_template_status_update": 32,
    "template_category_update": 32,
    "message_template_quality_update": 16,
}

#: Text a message type's object may carry where wahub reads it (media files are
#: stored with their name, type and checksum), with its longest length.
_MEDIA_TEXT = {"id": 256, "mime_type": 128, "sha256": 128, "filename": 256, "caption": None}
_MEDIA_TYPES = frozenset({"image", "audio", "video", "document", "sticker"})

#: Message-level keys copied into a message's ``content`` next to the type's object.
_CONTENT_EXTRAS = ("context", "referral", "errors", "identity")


def account_readable(field: str, value: dict[str, Any]) -> bool:
    """Whether an account change holds the types (and lengths) wahub reads it with."""
    for key, longest in _ACCOUNT_TEXT.items():
        found = value.get(key)
        if found is not None and (not isinstance(found, str) or (longest is not None and len(found) > longest)):
            return False
    template_id = value.get("message_template_id")
    if template_id is not None and text_id(template_id) is None:
        return False
    longest = _TEMPLATE_HEADLINE_LENGTH.get(field)
    return longest is None or len(headline(field, value)) <= longest


def check_body(kind: str, body: Any) -> None:
    """Raise ValueError when a message type's object holds the wrong types where wahub reads it."""
    if kind in _MEDIA_TYPES and isinstance(body, dict):
        for key, longest in _MEDIA_TEXT.items():
            found = body.get(key)
            if found is not None and (not isinstance(found, str) or (longest is not None and len(found) > longest)):
                raise ValueError(f"{kind}.{key} is not text")
    if kind == "interactive" and isinstance(body, dict):
        chosen = body.get("type")
        if chosen is not None and not isinstance(chosen, str):
            raise ValueError("interactive.type is not text")


def headline(field: str, value: dict[str, Any]) -> str:
    """An account field's headline: its ``event``, else what changed."""
    if value.get("event") is not None:
        return str(value["event"])
    if field == "message_template_components_update":
        return "COMPONENTS_UPDATED"
    key = _HEADLINE_KEYS.get(field)
    return str(value[key]) if key and value.get(key) is not None else ""


def text_id(value: Any) -> str | None:
    """A non-empty id or label as a string (ids sometimes arrive as numbers), else None."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def required(item: dict[str, Any], key: str) -> str:
    found = text_id(item.get(key))
    if found is None:
        raise ValueError(f"{key!r} is missing or empty")
    return found


def seconds(value: Any) -> float:
    """A Unix time in seconds (the Cloud API sends strings, sometimes numbers)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"timestamp {value!r} is not a number")
    try:
        seconds = float(value)
    except OverflowError as exc:
        raise ValueError(f"timestamp {value!r} is out of range") from exc
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"timestamp {value!r} is out of range")
    return seconds


def seconds_or_zero(value: Any) -> float:
    try:
        return seconds(value)
    except ValueError:
        return 0.0


def user_identities(
    contact: dict[str, Any] | None, *, bsuid: Any, wa_id: Any, parent_bsuid: Any = None
) -> dict[str, str]:
    """The user's ids by kind (``bsuid``, ``wa_id``, ``username``, ``parent_bsuid``):
    those the message item names (given here), else its ``contacts[]`` item's."""
    person = contact or {}
    profile = person["profile"] if isinstance(person.get("profile"), dict) else {}
    found = {
        "bsuid": text_id(bsuid) or text_id(person.get("user_id")),
        "wa_id": text_id(wa_id) or text_id(person.get("wa_id")),
        "username": text_id(profile.get("username")),
        "parent_bsuid": text_id(parent_bsuid) or text_id(person.get("parent_user_id")),
    }
    return {key: found_id for key, found_id in found.items() if found_id}


def message_content(item: dict[str, Any], kind: str) -> dict[str, Any]:
    """A message item's content in the Cloud API shape: ``{kind: <its object>}``
    and the message-level keys beside it (``context``, ``referral``...).
    Raises ValueError when the type's object holds the wrong types where wahub reads it."""
    body = item.get(kind)
    if body is None:
        body = {}
    check_body(kind, body)
    if kind == "reaction" and isinstance(body, dict) and body.get("emoji") is None:
        body = {**body, "emoji": ""}  # a removed reaction
    content: dict[str, Any] = {kind: body}
    content.update({key: item[key] for key in _CONTENT_EXTRAS if key in item and key != kind})
    return content
