"""What the fake HubSpot (``wahub.testing.fake_hubspot``) knows of HubSpot's
CRM objects: the properties it takes, the stored records, the search filters,
and the JSON shapes of records and of error answers."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

MAX_NOTE_BODY = 65536
#: Properties HubSpot sets itself: read, never written.
READ_ONLY = frozenset({"hs_object_id", "createdate", "lastmodifieddate"})
CONTACT_PROPERTIES = frozenset(
    {"email", "firstname", "lastname", "phone", "mobilephone", "hs_language", "company", "jobtitle", "website"}
    | {"address", "city", "state", "zip", "country", "lifecyclestage", "hs_lead_status", "hubspot_owner_id"}
)
NOTE_PROPERTIES = frozenset({"hs_timestamp", "hs_note_body", "hubspot_owner_id", "hs_attachment_ids"})
TICKET_PROPERTIES = frozenset(
    {"subject", "content", "hs_pipeline", "hs_pipeline_stage", "hs_ticket_priority", "hs_ticket_category"}
    | {"hubspot_owner_id", "source_type"}
)
#: A part of HubSpot's ``hs_language`` options (lowercase codes).
LANGUAGES = frozenset(
    {"ar", "cs", "da", "de", "el", "en", "en-gb", "en-us", "es", "es-mx", "fi", "fr", "fr-ca", "he-il", "hi"}
    | {"hu", "id", "it", "ja", "ko", "nl", "no", "pl", "pt", "pt-br", "ro", "ru", "sv", "th", "tr", "uk", "zh-cn"}
)
#: The default ticket pipeline ``0`` and its stages (new, waiting on contact, waiting on us, closed).
PIPELINES = {"0": frozenset({"1", "2", "3", "4"})}
#: The HUBSPOT_DEFINED association type from each object to a contact.
TO_CONTACT = {"notes": 202, "tickets": 16}
#: The search operators the fake implements (HubSpot has more: GT, LT, BETWEEN, CONTAINS_TOKEN...).
SEARCH_OPERATORS = ("EQ", "NEQ", "IN", "HAS_PROPERTY", "NOT_HAS_PROPERTY")
RATE_LIMIT_HEADERS = {
    "X-HubSpot-RateLimit-Daily": "250000",
    "X-HubSpot-RateLimit-Daily-Remaining": "249000",
    "X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
    "X-HubSpot-RateLimit-Max": "100",
    "X-HubSpot-RateLimit-Secondly": "10",
}


@dataclass
class HubSpotRecord:
    """A stored contact, note or ticket: its properties as written, its
    associations (``(object type, id, association type id)``), and what the
    search index holds: ``(visible from, properties)``, newest last."""

    id: str
    properties: dict[str, str]
    created_at: float
    updated_at: float
    associations: list[tuple[str, str, int]] = field(default_factory=list)
    archived: bool = False
    index: list[tuple[float, dict[str, str]]] = field(default_factory=list)


class Refused(Exception):
    """An error answer: ``category`` is None for the answers HubSpot sends without one (429, 5xx)."""

    def __init__(self, status: int, message: str, category: str | None = "VALIDATION_ERROR", **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.category, self.extra = status, message, category, extra


DEFAULT_SHOWN = ("createdate", "email", "firstname", "hs_object_id", "lastmodifieddate", "lastname")


def shown(record: HubSpotRecord, properties: dict[str, str], wanted: Iterable[str] | None) -> dict[str, Any]:
    own = {
        "hs_object_id": record.id,
        "createdate": iso(record.created_at),
        "lastmodifieddate": iso(record.updated_at),
    }
    values = {**properties, **own}
    names = set(values) if wanted is None else {*wanted, *own}
    return {
        "id": record.id,
        "properties": {name: values.get(name) for name in sorted(names)},
        "createdAt": iso(record.created_at),
        "updatedAt": iso(record.updated_at),
        "archived": record.archived,
    }


def filter_groups(groups: Any, known: set[str]) -> list[list[dict[str, Any]]]:
    if not isinstance(groups, list) or len(groups) > 5:
        raise Refused(400, "filterGroups must be an array of at most 5 filter groups")
    checked = []
    for group in groups:
        filters = group.get("filters") if isinstance(group, dict) else None
        if not isinstance(filters, list) or not filters or len(filters) > 10:
            raise Refused(400, "each filter group needs 'filters': 1 to 10 filters")
        for item in filters:
            if not isinstance(item, dict) or item.get("operator") not in SEARCH_OPERATORS:
                raise Refused(400, f"each filter needs an 'operator', one of {', '.join(SEARCH_OPERATORS)}")
            if item.get("propertyName") not in known | READ_ONLY:
                raise Refused(
                    400, f"There was a problem with the request: unknown property {item.get('propertyName')!r}"
                )
        checked.append(filters)
    if sum(len(filters) for filters in checked) > 25:
        raise Refused(400, "a search has at most 25 filters in all")
    return checked


def matches(properties: dict[str, str], filters: list[dict[str, Any]]) -> bool:
    for item in filters:
        have, operator = (properties.get(item["propertyName"]) or "").lower(), item["operator"]
        values = [str(v).lower() for v in item.get("values", [])] or [str(item.get("value", "")).lower()]
        matched = {
            "EQ": have == values[0],
            "NEQ": have != values[0],
            "IN": have in values,
            "HAS_PROPERTY": bool(have),
            "NOT_HAS_PROPERTY": not have,
        }[operator]
        if not matched:
            return False
    return True


def associated(store: dict[str, HubSpotRecord], contact_id: str) -> list[HubSpotRecord]:
    return [r for r in store.values() if any(kind == "contacts" and to == contact_id for kind, to, _ in r.associations)]


def problem(error: str, name: str, message: str) -> dict[str, Any]:
    return {"isValid": False, "message": message, "error": error, "name": name}


def as_text(value: Any) -> str:
    return "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def an_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise Refused(400, "Invalid input JSON: expected an object")
    return body


def is_timestamp(text: str) -> bool:
    if text.isdigit():
        return True
    try:
        dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def iso(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def injected_failure(status: int, retry_after: float | None) -> Refused:
    extra = {"retry_after": retry_after} if retry_after is not None else {}
    if status == 429:
        message = "You have reached your ten_secondly_rolling limit."
        return Refused(429, message, None, errorType="RATE_LIMIT", policyName="TEN_SECONDLY_ROLLING", **extra)
    if status == 401:
        return Refused(401, "The access token is not valid.", "INVALID_AUTHENTICATION", **extra)
    category = {400: "VALIDATION_ERROR", 403: "MISSING_SCOPES", 404: "OBJECT_NOT_FOUND", 409: "CONFLICT"}.get(status)
    return Refused(status, "internal error" if status >= 500 else f"error {status}", category, **extra)


def error_answer(refused: Refused) -> web.Response:
    extra = dict(refused.extra)
    retry_after = extra.pop("retry_after", None)
    body = {"status": "error", "message": refused.message, "correlationId": str(uuid.uuid4()), **extra}
    if refused.category is not None:
        body["category"] = refused.category
    headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
    if refused.status == 429:
        headers["X-HubSpot-RateLimit-Remaining"] = "0"
    return web.json_response(body, status=refused.status, headers=headers)
