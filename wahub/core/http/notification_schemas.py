"""The JSON Schemas of the notifications endpoints: what a request may hold
(``REQUEST``, its ``PARAMETERS``, also read by reminders) and what each answer
carries, shared by their validation and the OpenAPI document."""

from __future__ import annotations

from wahub.core.http.api_schemas import MAYBE_TIME, Schema
from wahub.core.storage.campaigns import MAX_RECIPIENTS

_TEXT: Schema = {"type": "string", "minLength": 1, "maxLength": 1024}
PARAMETERS: Schema = {
    "type": "object",
    "description": '"1", "2"...: positional body parameters; other names: named ones; '
    '"header": a text or a media object ({"image": {"link": ...}}); "buttons": index -> text or payload',
    "propertyNames": {"pattern": "^([0-9]+|[a-z][a-z0-9_]*)$"},
    "properties": {
        "header": {
            "oneOf": [
                _TEXT,
                {
                    "type": "object",
                    "minProperties": 1,
                    "maxProperties": 1,
                    "propertyNames": {"enum": ["image", "video", "document", "location"]},
                    "additionalProperties": {"type": "object"},
                },
            ]
        },
        "buttons": {
            "type": "object",
            "propertyNames": {"pattern": "^[0-9]$"},
            "additionalProperties": _TEXT,
        },
    },
    "additionalProperties": {"oneOf": [_TEXT, {"type": "number"}]},
}
_ADDRESS: Schema = {"type": "string", "minLength": 1, "maxLength": 128}
REQUEST: Schema = {
    "type": "object",
    "required": ["template"],
    "additionalProperties": False,
    "properties": {
        "template": {"type": "string", "minLength": 1, "maxLength": 512},
        "language": {"type": "string", "minLength": 2, "maxLength": 16},
        "to": {"type": "array", "minItems": 1, "maxItems": MAX_RECIPIENTS, "items": _ADDRESS},
        "segment": {
            "type": "object",
            "required": ["tags"],
            "additionalProperties": False,
            "properties": {
                "tags": {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1, "maxLength": 64}},
                "timezone": {"type": "string", "minLength": 1, "maxLength": 64},
            },
        },
        "parameters": PARAMETERS,
        "per_recipient": {"type": "object", "additionalProperties": PARAMETERS},
        "send_at": {"type": "string", "description": "ISO 8601 with an offset, e.g. 2026-12-24T09:00:00+01:00"},
        "dry_run": {"type": "boolean"},
        "provider": {"type": "string", "minLength": 1, "maxLength": 64},
    },
}
_COUNT = {"type": "integer", "minimum": 0}
_REFUSED: Schema = {"type": "object", "additionalProperties": _COUNT, "description": "reason -> recipients"}
CREATED: Schema = {
    "type": "object",
    "required": ["id", "state", "recipients", "refused", "preview"],
    "properties": {
        "id": {"type": ["integer", "null"]},
        "state": {"enum": ["scheduled", "expanding", "queued", "cancelled"]},
        "recipients": _COUNT,
        "refused": {**_REFUSED, "type": ["object", "null"]},
        "preview": {
            "enum": ["exact", "deferred", "stored"],
            "description": "exact: refused counted now; deferred: a large audience, refused null (see the GET); "
            "stored: a replay, refused counts what writing refused so far",
        },
    },
}
SUMMARY: Schema = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "state": {"enum": ["scheduled", "expanding", "queued", "cancelled"]},
        "template": {"type": ["string", "null"]},
        "language": {"type": ["string", "null"]},
        "source": {"type": "string"},
        "recipients": _COUNT,
        "refused": _REFUSED,
        "send_at": MAYBE_TIME,
        "created_at": {"type": "number"},
        "expanded_at": MAYBE_TIME,
        "cancelled_at": MAYBE_TIME,
    },
}
DETAIL: Schema = {
    "type": "object",
    "properties": {
        **SUMMARY["properties"],
        "written": _COUNT,
        "counts": {
            "type": "object",
            "properties": {
                "queued": _COUNT,
                "sent": _COUNT,
                "delivered": _COUNT,
                "read": _COUNT,
                "failed": {"type": "object", "additionalProperties": _COUNT, "description": "error code -> messages"},
                "cancelled": _COUNT,
            },
        },
    },
}
LISTING: Schema = {
    "type": "object",
    "properties": {"notifications": {"type": "array", "items": SUMMARY}, "next": {"type": ["integer", "null"]}},
}
