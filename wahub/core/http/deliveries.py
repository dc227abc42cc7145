"""The REST API's deliveries: the integration events each ``crm:`` entry was
given (or is still to be given), replaying them, and the entries themselves.

- ``GET /api/v1/deliveries``: newest first, filtered by ``endpoint`` (an
  entry's name), ``state`` (``pending``, ``delivered``, ``failed``) and
  ``contact_id``, a page at a time; ``{"deliveries": [...], "next": cursor|null}``.
- ``GET /api/v1/deliveries/{id}``: one delivery with its ``payload`` (the
  event as the entry gets it: ``{"type", "timestamp", "data"}``).
- ``POST /api/v1/deliveries/retry``: ``{"ids": [...]}`` (whatever their
  state) or ``{"failed": true, "endpoint"?}`` (every failed one, of that
  entry): made pending, due at once with a fresh retry schedule;
  ``{"retried": [ids]}``. Unknown ids are a 404 naming them, and then nothing
  is retried.
- ``GET /api/v1/crm``: every entry with its platform, its ``events`` filter,
  its deliveries counted by state and whether it is ``disabled`` (a 410
  disables an entry), and entries that are no longer configured but still
  have deliveries (``"configured": false``).
- ``POST /api/v1/crm/{name}/enable``: deliver to a disabled entry again, its
  pending deliveries at once.

An entry name that is not known is a 404 ``unknown_endpoint`` that lists the
entries.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from wahub.core.http.api_io import MAX_INT, error, json_response, path_id, path_text
from wahub.core.http.api_query import check_known, cursor, page_limit, positive_id, refuse, single
from wahub.core.http.api_schemas import ID, MAYBE_TEXT, MAYBE_TIME, NEXT, TEXT, TIME, Schema, obj
from wahub.core.http.openapi import PAGE_AFTER, PAGE_LIMIT, Answer, Operation, Param, body_of, errors
from wahub.core.hub import HUB_KEY, Hub
from wahub.core.storage.deliveries import STATES

#: Most ids one retry may name.
MAX_RETRY_IDS = 200
_BODY_ERROR = "invalid_retry"
#: The columns a delivery shows, in this order (the payload only when it is one).
SHOWN = (
    "id",
    "endpoint",
    "event_id",
    "type",
    "contact_id",
    "state",
    "attempts",
    "last_status",
    "last_error",
    "next_attempt_at",
    "created_at",
    "first_failed_at",
    "finished_at",
)


def shown(row: dict[str, Any], *, payload: bool = False) -> dict[str, Any]:
    """A deliveries row as the API (and ``wahub deliveries``) shows it."""
    found = {key: row[key] for key in SHOWN}
    if payload:
        found["payload"] = row["payload"]
    return found


async def entries(hub: Hub) -> list[dict[str, Any]]:
    """The ``crm:`` entries in configuration order, then the names that are no
    longer configured but still have deliveries: each with its counts and state."""
    stored = await hub.storage.deliveries.endpoints()
    found = []
    for entry in hub.config.get("crm", ()):
        name = entry["name"]
        backend = hub.crm.get(name)
        events = list(backend.events) if backend is not None else list(entry.get("events") or ())
        found.append(_entry(name, entry["platform"], events, stored.pop(name, None), configured=True))
    for name in sorted(stored):
        found.append(_entry(name, None, [], stored[name], configured=False))
    return found


def _entry(
    name: str, platform: str | None, events: list[str], stored: dict[str, Any] | None, *, configured: bool
) -> dict[str, Any]:
    stored = stored or {"disabled": None}
    return {
        "name": name,
        "platform": platform,
        "configured": configured,
        "events": events,
        "counts": {state: int(stored.get(state, 0)) for state in STATES},
        "disabled": stored["disabled"],
    }


def unknown_endpoint(name: str, known: list[str]) -> web.Response:
    listed = ", ".join(known) if known else "none: add one under crm: in the configuration"
    return error(404, "unknown_endpoint", f"no crm: entry named {name[:64]!r} (the entries: {listed})")


def _configured(hub: Hub) -> list[str]:
    return [entry["name"] for entry in hub.config.get("crm", ())]


async def list_deliveries(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    check_known(request, ("endpoint", "state", "contact_id", "limit", "after"))
    endpoint = single(request, "endpoint")
    state = single(request, "state")
    if state is not None and state not in STATES:
        raise refuse("invalid_parameter", "state", f"state must be one of {', '.join(STATES)}; got {state[:40]!r}")
    contact_id = positive_id(request, "contact_id")
    limit, after = page_limit(request), cursor(request, "after")
    if endpoint is not None:
        known = [entry["name"] for entry in await entries(hub)]
        if endpoint not in known:
            return unknown_endpoint(endpoint, known)
    rows, next_after = await hub.storage.deliveries.listing(
        endpoint=endpoint, state=state, contact_id=contact_id, after=after, limit=limit
    )
    return json_response({"deliveries": [shown(row) for row in rows], "next": next_after})


async def get_delivery(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    delivery_id = path_id(request, what="delivery")
    check_known(request, ())
    row = await hub.storage.deliveries.get(delivery_id)
    if row is None:
        return error(404, "not_found", f"no delivery {delivery_id}")
    return json_response(shown(row, payload=True))


async def retry_deliveries(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    body = body_of(request)
    if ("ids" in body) == ("failed" in body):
        return error(422, _BODY_ERROR, '$: give "ids", or "failed": true (with an optional "endpoint")', field="$")
    if "endpoint" in body and "ids" in body:
        return error(422, _BODY_ERROR, '$.endpoint: an endpoint goes with "failed", not with "ids"', field="$.endpoint")
    now = hub.clock.time()
    if "ids" in body:
        ids = list(dict.fromkeys(body["ids"]))
        missing = [delivery_id for delivery_id in ids if await hub.storage.deliveries.get(delivery_id) is None]
        if missing:
            return error(404, "not_found", f"no delivery {', '.join(map(str, missing[:20]))}: nothing was retried")
        retried = await hub.storage.deliveries.replay(ids=ids, now=now)
    else:
        endpoint = body.get("endpoint")
        if endpoint is not None and endpoint not in _configured(hub):
            return unknown_endpoint(endpoint, _configured(hub))
        retried = await hub.storage.deliveries.replay(endpoint=endpoint, now=now)
    return json_response({"retried": retried})


async def list_entries(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    check_known(request, ())
    return json_response({"entries": await entries(hub)})


async def enable_entry(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    name = path_text(request, "name")
    if name not in _configured(hub):
        return unknown_endpoint(name, _configured(hub))
    was_disabled = await hub.storage.deliveries.enable(name, now=hub.clock.time())
    hub.storage.db.on_deliveries()  # the deliverers look now, not at their next poll
    [entry] = [entry for entry in await entries(hub) if entry["name"] == name]
    return json_response({**entry, "was_disabled": was_disabled})


DELIVERY = obj(
    list(SHOWN),
    id=ID,
    endpoint={"type": "string", "description": "The crm: entry it goes to"},
    event_id={"type": "string", "description": "evt_...: the same for every entry and attempt"},
    type={"type": "string", "description": "message.received, conversation.queued, contact.updated..."},
    contact_id={"type": ["integer", "null"], "minimum": 1},
    state={"enum": list(STATES)},
    attempts={"type": "integer", "minimum": 0},
    last_status={"type": ["integer", "null"], "description": "The entry's last HTTP status, when it answered"},
    last_error={**MAYBE_TEXT, "description": "Why the last attempt failed"},
    next_attempt_at={**MAYBE_TIME, "description": "When a pending delivery is tried next"},
    created_at=TIME,
    first_failed_at=MAYBE_TIME,
    finished_at={**MAYBE_TIME, "description": "When it was delivered or given up"},
)
DELIVERY_WITH_PAYLOAD: Schema = {
    "allOf": [
        DELIVERY,
        obj(
            ["payload"],
            payload=obj(
                ["type", "timestamp", "data"],
                type=TEXT,
                timestamp={"type": "string", "description": "ISO 8601, UTC"},
                data={"type": "object"},
            ),
        ),
    ]
}
DISABLED: Schema = {
    "type": ["object", "null"],
    "description": "Since when and why the entry takes no deliveries (it answered 410 Gone); null while enabled",
    "required": ["at", "reason"],
    "properties": {"at": TIME, "reason": MAYBE_TEXT},
}
ENTRY = obj(
    ["name", "platform", "configured", "events", "counts", "disabled"],
    name=TEXT,
    platform={"type": ["string", "null"], "description": "null for an entry no longer in the configuration"},
    configured={"type": "boolean", "description": "false: removed from the configuration, deliveries left"},
    events={"type": "array", "items": TEXT, "description": "The event types it takes (globs)"},
    counts=obj(
        list(STATES),
        **{state: {"type": "integer", "minimum": 0} for state in STATES},
    ),
    disabled=DISABLED,
)
RETRY_BODY: Schema = {
    "type": "object",
    "description": 'Either "ids", or "failed": true with an optional "endpoint"',
    "examples": [{"ids": [1]}, {"failed": True, "endpoint": "hubspot"}],
    "properties": {
        "ids": {"type": "array", "items": {**ID, "maximum": MAX_INT}, "minItems": 1, "maxItems": MAX_RETRY_IDS},
        "failed": {"const": True, "description": "every failed delivery (of endpoint)"},
        "endpoint": {"type": "string", "minLength": 1, "maxLength": 64, "description": "a crm: entry's name"},
    },
    "additionalProperties": False,
}
_NAME = Param("name", {"type": "string", "minLength": 1, "maxLength": 64}, "The crm: entry's name", where="path")
_ID = Param("id", {**ID, "maximum": MAX_INT}, "The delivery's id", where="path", example=1)


def operations() -> list[Operation]:
    tag = "deliveries"
    listing = obj(["deliveries", "next"], deliveries={"type": "array", "items": DELIVERY}, next=NEXT)
    return [
        Operation(
            "GET",
            "/api/v1/deliveries",
            list_deliveries,
            "Deliveries of events to the crm: entries, newest first",
            tag,
            {200: Answer("A page of deliveries", listing), **errors(400, 401, 404)},
            params=[
                Param("endpoint", {"type": "string", "minLength": 1, "maxLength": 64}, "Only this crm: entry's"),
                Param("state", {"enum": list(STATES)}, "Only those in this state"),
                Param("contact_id", {**ID, "maximum": MAX_INT}, "Only this contact's"),
                PAGE_LIMIT,
                PAGE_AFTER,
            ],
        ),
        Operation(
            "GET",
            "/api/v1/deliveries/{id}",
            get_delivery,
            "A delivery with the event it carries",
            tag,
            {200: Answer("The delivery", DELIVERY_WITH_PAYLOAD), **errors(400, 401, 404)},
            params=[_ID],
        ),
        Operation(
            "POST",
            "/api/v1/deliveries/retry",
            retry_deliveries,
            "Deliver again, at once",
            tag,
            {
                200: Answer("The ids made pending", obj(["retried"], retried={"type": "array", "items": ID})),
                **errors(400, 401, 404, 413, 422),
            },
            description="Named deliveries whatever their state, or every failed one (of an entry), "
            "with a fresh retry schedule.",
            body=RETRY_BODY,
            body_error=_BODY_ERROR,
        ),
        Operation(
            "GET",
            "/api/v1/crm",
            list_entries,
            "The crm: entries, their deliveries counted and whether each is disabled",
            tag,
            {
                200: Answer("Every entry", obj(["entries"], entries={"type": "array", "items": ENTRY})),
                **errors(400, 401),
            },
        ),
        Operation(
            "POST",
            "/api/v1/crm/{name}/enable",
            enable_entry,
            "Deliver to an entry a 410 disabled again",
            tag,
            {
                200: Answer(
                    "The entry, enabled; was_disabled says whether it was disabled",
                    {"allOf": [ENTRY, obj(["was_disabled"], was_disabled={"type": "boolean"})]},
                ),
                **errors(401, 404),
            },
            params=[_NAME],
        ),
    ]
