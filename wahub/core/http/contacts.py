"""The REST API's contacts by id: searching them, one with its ids, consent and
conversations, and what a person may set on one.

- ``GET /api/v1/contacts?q=``: by id, those whose name, address or any id
  (phone number, wa_id, BSUID, username) contains ``q``;
  ``{"contacts": [...], "next": cursor|null}``.
- ``GET /api/v1/contacts/{id}``: the contact with ``identities``, ``consent``,
  ``conversations`` (their ids) and ``sync``: where its events stand with each
  ``crm:`` entry that has any, and the entry's id of the contact.
- ``PATCH /api/v1/contacts/{id}``: ``name``, ``language`` (BCP 47), ``tags``,
  ``timezone``; null clears one. Answers like the GET.
"""

from __future__ import annotations

import re
from typing import Any

import voluptuous as vol
from aiohttp import web

from wahub.core.config.validators import language_code, timezone_name
from wahub.core.http.api_io import MAX_INT, error, error_text, json_body, json_response, path_id
from wahub.core.http.api_query import check_known, cursor, page_limit, search_text
from wahub.core.http.api_schemas import CONTACT, CONTACT_DETAIL, MAYBE_TEXT, MAYBE_TIME, Schema, obj, page_of
from wahub.core.http.openapi import PAGE_AFTER, PAGE_LIMIT, Answer, Operation, Param, errors
from wahub.core.hub import HUB_KEY, Hub
from wahub.core.storage.policy import consent_state

#: What a PATCH may set; a contact's provider and address are the provider's.
EDITABLE = ("name", "language", "tags", "timezone")
MAX_NAME, MAX_TAG, MAX_TAGS = 256, 64, 50

# A phone number as people write it: digits with spaces, dashes, dots, brackets, a leading plus.
_PHONE = re.compile(r"\+?[\d\s().-]*\d[\d\s().-]*")


def _search_terms(query: str) -> str:
    """What to look for: a phone number as the digits its ids are stored with."""
    if _PHONE.fullmatch(query):
        return re.sub(r"\D", "", query)
    return query


async def list_contacts(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    check_known(request, ("q", "limit", "after"))
    query = search_text(request, "q")
    items, next_after = await hub.storage.contacts.search(
        _search_terms(query) if query else None, after=cursor(request, "after"), limit=page_limit(request)
    )
    return json_response({"contacts": items, "next": next_after})


async def _contact(hub: Hub, contact_id: int) -> dict[str, Any] | None:
    """The contact with its ids, its consent and its conversations' ids; None when unknown."""
    contact = await hub.storage.contacts.get(contact_id)
    if contact is None:
        return None
    state = consent_state(await hub.storage.policy.ledger(contact["provider"], contact["address"]))
    page = await hub.storage.conversations.list(contact_id=contact_id)
    return {
        **contact,
        "consent": {"all": state.all, "marketing": state.marketing},
        "conversations": [row["id"] for row in page.items],
        "sync": await sync_state(hub, contact_id),
    }


async def sync_state(hub: Hub, contact_id: int) -> list[dict[str, Any]]:
    """Per ``crm:`` entry that has deliveries of the contact or an id for it
    (by name): its deliveries pending and failed, the last delivered, the
    oldest pending one's last error and next attempt, the entry's id of the
    contact (``remote_id``, None before it has one), and whether the entry is
    disabled (nothing is tried until it is enabled)."""
    states = {row["endpoint"]: row for row in await hub.storage.deliveries.sync_state(contact_id)}
    remote = await hub.storage.deliveries.links("contact", contact_id)
    found = []
    for name in sorted(set(states) | set(remote)):
        state = states.get(name, {})
        backend = hub.crm.get(name)
        found.append(
            {
                "endpoint": name,
                "platform": None if backend is None else backend.PLATFORM,
                "pending": state.get("pending", 0),
                "failed": state.get("failed", 0),
                "delivered_at": state.get("delivered_at"),
                "last_error": state.get("last_error"),
                "next_attempt_at": state.get("next_attempt_at"),
                "remote_id": remote.get(name),
                "disabled": await hub.storage.deliveries.disabled(name) is not None,
            }
        )
    return found


async def get_contact(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    contact_id = path_id(request, what="contact")
    check_known(request, ())
    found = await _contact(hub, contact_id)
    if found is None:
        return error(404, "not_found", f"no contact {contact_id}")
    return json_response(found)


def _invalid(message: str) -> web.HTTPUnprocessableEntity:
    return web.HTTPUnprocessableEntity(text=error_text("invalid_contact", message), content_type="application/json")


def _name(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_NAME or not value.isprintable():
        raise _invalid(f"name must be 1 to {MAX_NAME} printable characters, or null to forget it")
    return value.strip()


def _tags(value: Any) -> list[str]:
    if value is None:
        return []
    problem = f"tags must be a list of at most {MAX_TAGS} labels of 1 to {MAX_TAG} printable characters"
    if not isinstance(value, list) or len(value) > MAX_TAGS:
        raise _invalid(f"{problem} (or null for none)")
    for tag in value:
        if not isinstance(tag, str) or not tag.strip() or len(tag) > MAX_TAG or not tag.isprintable():
            shown = repr(tag[:40]) if isinstance(tag, str) else f"a {type(tag).__name__}"
            raise _invalid(f"{problem}; got {shown}")
    return list(dict.fromkeys(tag.strip() for tag in value))  # each label once, in the order given


def contact_changes(body: Any) -> dict[str, Any]:
    """The columns a PATCH body sets, validated."""
    if not isinstance(body, dict):
        raise _invalid(f"the body must be a JSON object with any of {', '.join(EDITABLE)}")
    unknown = sorted(set(body) - set(EDITABLE))
    if unknown:
        names = ", ".join(repr(key[:40]) for key in unknown)
        raise _invalid(f"unknown key {names}: a contact's {', '.join(EDITABLE)} may be set")
    changes: dict[str, Any] = {}
    if "name" in body:
        changes["name"] = _name(body["name"])
    if "tags" in body:
        changes["tags"] = _tags(body["tags"])
    if "language" in body:
        try:
            changes["language"] = None if body["language"] is None else language_code(body["language"])
        except vol.Invalid as exc:
            raise _invalid(f"language: {exc.msg}, or null to forget it") from None
    if "timezone" in body:
        try:
            changes["timezone"] = None if body["timezone"] is None else timezone_name(body["timezone"])
        except Exception as exc:  # noqa: BLE001 - voluptuous.Invalid, reported to the client
            raise _invalid(f"timezone: {exc}") from None
    return changes


async def update_contact(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    contact_id = path_id(request, what="contact")
    changes = contact_changes(await json_body(request))
    contact = await hub.storage.contacts.get(contact_id)
    if contact is None:
        return error(404, "not_found", f"no contact {contact_id}")
    if "timezone" in changes:
        await hub.storage.policy.set_timezone(contact["provider"], contact["address"], changes.pop("timezone"))
    if changes:
        await hub.storage.contacts.update(contact_id, changes)
    found = await _contact(hub, contact_id)
    assert found is not None  # contacts are never deleted
    return json_response(found)


_ID = Param("id", {"type": "integer", "minimum": 1, "maximum": MAX_INT}, "The contact's id", where="path", example=1)

CHANGES: Schema = {
    "type": "object",
    "properties": {
        "name": {"type": ["string", "null"], "minLength": 1, "maxLength": MAX_NAME},
        "language": {"type": ["string", "null"], "description": "BCP 47, such as en or pt-BR"},
        "tags": {
            "type": ["array", "null"],
            "maxItems": MAX_TAGS,
            "items": {"type": "string", "minLength": 1, "maxLength": MAX_TAG},
        },
        "timezone": {"type": ["string", "null"], "description": "IANA name, such as Europe/Lisbon"},
    },
    "additionalProperties": False,
    "description": "null clears a field",
}


_COUNT: Schema = {"type": "integer", "minimum": 0}
SYNC = obj(
    [
        "endpoint",
        "platform",
        "pending",
        "failed",
        "delivered_at",
        "last_error",
        "next_attempt_at",
        "remote_id",
        "disabled",
    ],
    endpoint={"type": "string", "description": "The crm: entry's name"},
    platform={"type": ["string", "null"], "description": "The entry's platform; null once it is not configured"},
    pending={**_COUNT, "description": "The contact's events waiting to reach the entry"},
    failed={**_COUNT, "description": "The contact's events the entry was given up on (replay them)"},
    delivered_at={**MAYBE_TIME, "description": "When the last of the contact's events reached it"},
    last_error={**MAYBE_TEXT, "description": "Why the oldest pending event failed last, null when it has not"},
    next_attempt_at={**MAYBE_TIME, "description": "When the oldest pending event is tried next"},
    remote_id={**MAYBE_TEXT, "description": "The entry's id of the contact, null when it has none"},
    disabled={"type": "boolean", "description": "The entry answered 410 Gone: nothing is tried until it is enabled"},
)
#: The contact as the GET and the PATCH answer it.
CONTACT_WITH_SYNC: Schema = {
    "allOf": [
        CONTACT_DETAIL,
        obj(["sync"], sync={"type": "array", "items": SYNC, "description": "Per crm: entry that has something"}),
    ]
}


def operations() -> list[Operation]:
    return [
        Operation(
            "GET",
            "/api/v1/contacts",
            list_contacts,
            "Contacts by id, found by name, address or any id",
            "contacts",
            {200: Answer("A page of contacts", page_of("contacts", CONTACT)), **errors(400, 401)},
            params=[
                Param("q", {"type": "string", "maxLength": 128}, "Text in the name, the address or any id"),
                PAGE_LIMIT,
                PAGE_AFTER,
            ],
        ),
        Operation(
            "GET",
            "/api/v1/contacts/{id}",
            get_contact,
            "A contact with its ids, consent, conversations and sync state",
            "contacts",
            {200: Answer("The contact", CONTACT_WITH_SYNC), **errors(400, 401, 404)},
            params=[_ID],
        ),
        Operation(
            "PATCH",
            "/api/v1/contacts/{id}",
            update_contact,
            "Set a contact's name, language, tags or time zone",
            "contacts",
            {200: Answer("The contact after the change", CONTACT_WITH_SYNC), **errors(400, 401, 404, 413, 422)},
            body=CHANGES,
            body_error="invalid_contact",
            handler_checks_body=True,
            params=[_ID],
        ),
    ]
