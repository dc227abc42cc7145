"""The JSON Schemas of what the REST API answers, shared by its modules and
named once in the OpenAPI document (``SHARED``).

Times are unix seconds (numbers). Rows the API shows keep nullable columns as
``null``, so each such field allows it.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

TIME: Schema = {"type": "number", "description": "Unix seconds"}
MAYBE_TIME: Schema = {"type": ["number", "null"], "description": "Unix seconds, or null"}
ID: Schema = {"type": "integer", "minimum": 1}
TEXT: Schema = {"type": "string"}
MAYBE_TEXT: Schema = {"type": ["string", "null"]}
#: The cursor of the next page (its ``after`` or ``before``), null on the last page.
NEXT: Schema = {"type": ["integer", "null"], "minimum": 1, "description": "The next page's cursor, null at the end"}


def page_of(key: str, item: Schema) -> Schema:
    """A page of a listing: ``{key: [item...], "next": cursor|null}``."""
    return {
        "type": "object",
        "required": [key, "next"],
        "properties": {key: {"type": "array", "items": item}, "next": NEXT},
    }


def obj(required: list[str], **properties: Schema) -> Schema:
    """An object with ``properties``, ``required`` of them always there (more may come in later versions)."""
    return {"type": "object", "required": required, "properties": properties}


FAILURE: Schema = {
    "type": ["object", "null"],
    "description": "Why a message failed or was refused, null when it did not",
    "required": ["code", "message"],
    "properties": {"code": TEXT, "message": MAYBE_TEXT},
}

STATUS_EVENT = obj(
    ["status", "timestamp"],
    status=TEXT,
    timestamp=TIME,
    error_code=MAYBE_TEXT,
    error_title=MAYBE_TEXT,
    pricing_category=MAYBE_TEXT,
    implied={"type": "boolean", "description": "True for a 'sent' that a later status implies"},
)

_MESSAGE_FIELDS: dict[str, Schema] = {
    "id": ID,
    "direction": {"enum": ["in", "out"]},
    "to": {"type": "string", "description": "The recipient (direction out)"},
    "from": {"type": "string", "description": "The sender (direction in)"},
    "type": TEXT,
    "status": TEXT,
    "provider_message_id": MAYBE_TEXT,
    "error": FAILURE,
    "statuses": {"type": "array", "items": STATUS_EVENT},
    "message": {"type": ["object", "null"], "description": "The canonical message"},
    "created_at": TIME,
    "updated_at": TIME,
}
_MESSAGE_REQUIRED = ["id", "direction", "type", "status", "error", "statuses", "created_at", "updated_at"]

MESSAGE = obj(
    [*_MESSAGE_REQUIRED, "provider", "attempts"],
    **_MESSAGE_FIELDS,
    provider=TEXT,
    attempts={"type": "integer", "minimum": 0},
)
CONVERSATION_MESSAGE = obj(
    [*_MESSAGE_REQUIRED, "origin"],
    **_MESSAGE_FIELDS,
    origin={"type": ["string", "null"], "description": "Who wrote it: contact, bot, ai, operator, business..."},
)

CONSENT_STATE = obj(
    ["all", "marketing"],
    all={"type": ["string", "null"], "description": "opt_in, opt_out or null (nothing recorded)"},
    marketing={"type": ["string", "null"], "description": "opt_in, opt_out or null (nothing recorded)"},
)

CONSENT_EVENT = obj(
    ["action", "scope", "source", "evidence", "occurred_at"],
    provider=TEXT,
    address=TEXT,
    action={"enum": ["opt_in", "opt_out"]},
    scope={"enum": ["all", "marketing"]},
    source=TEXT,
    evidence={"description": "What proves it: a form, a message, the API call"},
    event_key=MAYBE_TEXT,
    occurred_at=TIME,
    created_at=TIME,
)

CONTACT = obj(
    ["id", "provider", "address", "name", "language", "tags", "timezone", "created_at", "updated_at"],
    id=ID,
    provider=TEXT,
    address=TEXT,
    name=MAYBE_TEXT,
    language={"type": ["string", "null"], "description": "BCP 47; null when not known yet"},
    language_source={"type": ["string", "null"], "description": "set or detected"},
    tags={"type": "array", "items": TEXT},
    timezone={"type": ["string", "null"], "description": "IANA name; null: wahub.timezone applies"},
    created_at=TIME,
    updated_at=TIME,
)

CONTACT_DETAIL: Schema = {
    "allOf": [
        CONTACT,
        obj(
            ["identities", "consent", "conversations"],
            identities={"type": "array", "items": obj(["kind", "value"], kind=TEXT, value=TEXT)},
            consent=CONSENT_STATE,
            conversations={"type": "array", "items": ID, "description": "The contact's conversations' ids"},
        ),
    ]
}

CONVERSATION = obj(
    ["id", "provider", "contact", "owner", "assignee", "updated_at", "window_open"],
    id=ID,
    provider=TEXT,
    contact=obj(["id", "address"], id=ID, address=TEXT, name=MAYBE_TEXT, language=MAYBE_TEXT),
    owner={"enum": ["bot", "queued", "assigned", "phone"]},
    assignee=MAYBE_TEXT,
    owner_changed_at=MAYBE_TIME,
    updated_at=TIME,
    last_inbound_at=MAYBE_TIME,
    window_open_until=MAYBE_TIME,
    window_open={"type": "boolean", "description": "Whether the 24-hour service window is open"},
)

OWNERSHIP_EVENT = obj(
    ["change", "from", "to", "actor", "at"],
    change=TEXT,
    **{"from": TEXT, "to": TEXT},
    actor=TEXT,
    reason=MAYBE_TEXT,
    assignee=MAYBE_TEXT,
    at=TIME,
)

CONVERSATION_WITH_EVENTS: Schema = {
    "allOf": [CONVERSATION, obj(["events"], events={"type": "array", "items": OWNERSHIP_EVENT})]
}

#: The shapes the document names under ``components/schemas``.
SHARED: dict[str, Schema] = {
    "Message": MESSAGE,
    "ConversationMessage": CONVERSATION_MESSAGE,
    "StatusEvent": STATUS_EVENT,
    "ConsentState": CONSENT_STATE,
    "ConsentEvent": CONSENT_EVENT,
    "Contact": CONTACT,
    "ContactDetail": CONTACT_DETAIL,
    "Conversation": CONVERSATION,
    "OwnershipEvent": OWNERSHIP_EVENT,
    "ConversationWithEvents": CONVERSATION_WITH_EVENTS,
}
