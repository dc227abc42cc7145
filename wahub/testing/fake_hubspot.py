"""A fake of HubSpot's CRM v3 objects API (contacts, notes, tickets), on a
real socket, for the tests of wahub's ``hubspot`` backend and of CRM plugins.

It answers as HubSpot does: every request needs ``Authorization: Bearer
<token>`` (else 401 ``INVALID_AUTHENTICATION``); bodies are checked (known
property names only, required properties, a note body of at most 65,536
characters, association type ids, ticket pipelines and stages) and refused
with 400 ``VALIDATION_ERROR``; a second contact with the same value of a
unique property (``email``, plus whatever the test adds) is 409 ``CONFLICT``
with ``Existing ID: <id>`` in its message; a record that is not there is 404.
Search is eventually consistent as in HubSpot: a contact created or updated
is seen by ``/search`` only ``index_delay`` seconds later (by ``clock``)::

    hubspot = await FakeHubSpot(token="pat-test", index_delay=3600).start()
    hubspot.unique.add("phone")
    hubspot.fail_next(429, times=1, retry_after=10)
    entry = {"platform": "hubspot", "name": "hubspot", "token": "pat-test", "api_base": hubspot.url}
    ...
    [contact] = hubspot.contacts_with("phone", "+15551234567")
    assert "hi" in hubspot.notes_of(contact.id)[0].properties["hs_note_body"]
    await hubspot.close()

``fail_next`` answers the next requests with an error (429 with
``Retry-After`` and the ``X-HubSpot-RateLimit-*`` headers, 5xx, 401...);
``down`` answers every request 503. Every request is recorded, with its
answer's status, whatever it was.

The body of a 400 for an association to a record that does not exist is the
fake's own reading (HubSpot's exact text is not known); clients should not
depend on it.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from wahub.testing import close_fake, serve_on_loopback

__all__ = ["CONTACT_PROPERTIES", "MAX_NOTE_BODY", "FakeHubSpot", "HubSpotRecord", "Recorded"]

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
_SEARCH_OPERATORS = ("EQ", "NEQ", "IN", "HAS_PROPERTY", "NOT_HAS_PROPERTY")
#: The parsed JSON body of a request, as the middleware read it.
_BODY: web.RequestKey[Any] = web.RequestKey("fake_hubspot_body", object)
_RATE_LIMIT_HEADERS = {
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


@dataclass(frozen=True)
class Recorded:
    """One request as the fake received it, and the status it answered."""

    method: str
    path: str
    headers: dict[str, str]
    json: Any
    status: int


class Refused(Exception):
    """An error answer: ``category`` is None for the answers HubSpot sends without one (429, 5xx)."""

    def __init__(self, status: int, message: str, category: str | None = "VALIDATION_ERROR", **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.category, self.extra = status, message, category, extra


@dataclass
class FakeHubSpot:
    """See the module's docstring."""

    token: str = "pat-test-token"
    #: Seconds before search sees a created or updated contact.
    index_delay: float = 0.0
    clock: Callable[[], float] = time.time
    down: bool = False
    #: Contact properties no two contacts may share (409 CONFLICT).
    unique: set[str] = field(default_factory=lambda: {"email"})
    contacts: dict[str, HubSpotRecord] = field(default_factory=dict)
    notes: dict[str, HubSpotRecord] = field(default_factory=dict)
    tickets: dict[str, HubSpotRecord] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    #: Exceptions the fake raised while answering (answered 500): a test should see none.
    faults: list[Exception] = field(default_factory=list)
    url: str = ""
    _known: dict[str, set[str]] = field(
        default_factory=lambda: {
            "contacts": set(CONTACT_PROPERTIES),
            "notes": set(NOTE_PROPERTIES),
            "tickets": set(TICKET_PROPERTIES),
        }
    )
    _failures: list[tuple[int, float | None]] = field(default_factory=list)
    _next_id: int = 100
    _runner: web.AppRunner | None = None

    async def start(self) -> FakeHubSpot:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_post("/crm/v3/objects/contacts/search", self._search)
        app.router.add_post("/crm/v3/objects/{kind:contacts|notes|tickets}", self._create)
        app.router.add_get("/crm/v3/objects/{kind:contacts|notes|tickets}/{id}", self._read)
        app.router.add_patch("/crm/v3/objects/{kind:contacts|notes|tickets}/{id}", self._update)
        self._runner, self.url = await serve_on_loopback(app)
        return self

    @property
    def _stores(self) -> dict[str, dict[str, HubSpotRecord]]:
        return {"contacts": self.contacts, "notes": self.notes, "tickets": self.tickets}

    async def close(self) -> None:
        await close_fake(self._runner, None, set())

    # -- what a test sets up and reads ---------------------------------------------

    def register_property(self, kind: str, name: str) -> None:
        """Create a custom property ``name`` on ``kind`` (``contacts``, ``notes``, ``tickets``)."""
        self._known[kind].add(name)

    def fail_next(self, status: int, times: int = 1, retry_after: float | None = None) -> None:
        """Answer the next ``times`` requests with ``status`` (and ``Retry-After`` when given)."""
        self._failures.extend([(status, retry_after)] * times)

    def add_contact(self, **properties: str) -> HubSpotRecord:
        """A contact that was in HubSpot before the test, already searchable."""
        record = self._store(self.contacts, properties)
        record.index = [(self.clock(), dict(record.properties))]
        return record

    def archive_contact(self, contact_id: str) -> None:
        """Delete a contact as a HubSpot user would: it is 404 from then on."""
        self.contacts[contact_id].archived = True

    def contacts_with(self, name: str, value: str) -> list[HubSpotRecord]:
        """The live contacts whose property ``name`` is ``value`` (the store, not the lagging index)."""
        return [c for c in self.contacts.values() if not c.archived and c.properties.get(name) == value]

    def notes_of(self, contact_id: str) -> list[HubSpotRecord]:
        return _associated(self.notes, contact_id)

    def tickets_of(self, contact_id: str) -> list[HubSpotRecord]:
        return _associated(self.tickets, contact_id)

    def answered(self, status: int) -> list[Recorded]:
        return [r for r in self.requests if r.status == status]

    # -- the API -------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = ...
        try:
            response = await self._answer(request, handler, body)
        except Refused as refused:
            response = _error(refused)
        except web.HTTPException as exc:  # no such route
            response = _error(Refused(exc.status, f"Unable to route {request.method} request to {request.path}", None))
        except Exception as exc:  # noqa: BLE001 - a fault of the fake itself, kept for the test to see
            self.faults.append(exc)
            response = _error(Refused(500, f"the fake failed: {exc!r}", None))
        response.headers.update(_RATE_LIMIT_HEADERS)
        response.headers.setdefault("X-HubSpot-RateLimit-Remaining", "99")
        self.requests.append(Recorded(request.method, request.path, dict(request.headers), body, response.status))
        return response

    async def _answer(self, request: web.Request, handler: Any, body: Any) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            raise Refused(
                401,
                "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can "
                "find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
                "INVALID_AUTHENTICATION",
            )
        if self.down:
            raise Refused(503, "Service Unavailable", "SERVICE_UNAVAILABLE")
        if self._failures:
            status, retry_after = self._failures.pop(0)
            raise _failure(status, retry_after)
        if body is ...:
            raise Refused(400, "Invalid input JSON on line 1, column 1: Unexpected character")
        request[_BODY] = body
        response: web.StreamResponse = await handler(request)
        return response

    async def _create(self, request: web.Request) -> web.Response:
        kind, body = request.match_info["kind"], _object(request[_BODY])
        properties = self._checked_properties(kind, body.get("properties"), creating=True)
        associations = self._checked_associations(kind, body.get("associations", []))
        if kind == "contacts":
            self._check_unique(properties, None)
        record = self._store(self._stores[kind], properties)
        record.associations = associations
        record.index = [(self.clock() + self.index_delay, dict(record.properties))]
        return web.json_response(_shown(record, record.properties, None), status=201)

    async def _read(self, request: web.Request) -> web.Response:
        record = self._record(request)
        wanted = request.query.get("properties")  # comma-separated; HubSpot's few defaults without it
        return web.json_response(_shown(record, record.properties, wanted.split(",") if wanted else _DEFAULT_SHOWN))

    async def _update(self, request: web.Request) -> web.Response:
        record, kind = self._record(request), request.match_info["kind"]
        properties = self._checked_properties(kind, _object(request[_BODY]).get("properties"), creating=False)
        if kind == "contacts":
            self._check_unique(properties, record.id)
        record.properties.update(properties)
        record.updated_at = self.clock()
        record.index.append((record.updated_at + self.index_delay, dict(record.properties)))
        return web.json_response(_shown(record, record.properties, None))

    async def _search(self, request: web.Request) -> web.Response:
        body = _object(request[_BODY])
        groups = _filter_groups(body.get("filterGroups", []), self._known["contacts"])
        limit = body.get("limit", 10)
        if not isinstance(limit, int) or not 0 < limit <= 200:
            raise Refused(400, "limit must be between 1 and 200")
        wanted = body.get("properties") or _DEFAULT_SHOWN
        now, found = self.clock(), []
        for record in self.contacts.values():
            indexed = [props for visible, props in record.index if visible <= now]
            if not record.archived and indexed and (not groups or any(_matches(indexed[-1], g) for g in groups)):
                found.append((record, indexed[-1]))
        for sort in reversed(body.get("sorts") or []):
            name = sort.get("propertyName") if isinstance(sort, dict) else str(sort).lstrip("-")
            descending = (sort.get("direction") == "DESCENDING") if isinstance(sort, dict) else str(sort)[:1] == "-"
            found.sort(key=lambda pair: pair[1].get(str(name), ""), reverse=descending)
        results = [_shown(record, properties, wanted) for record, properties in found[:limit]]
        return web.json_response({"total": len(found), "results": results})

    # -- checks ----------------------------------------------------------------------

    def _record(self, request: web.Request) -> HubSpotRecord:
        record = self._stores[request.match_info["kind"]].get(request.match_info["id"])
        if record is None or record.archived:
            raise Refused(404, "resource not found", "OBJECT_NOT_FOUND")
        return record

    def _checked_properties(self, kind: str, properties: Any, *, creating: bool) -> dict[str, str]:
        if not isinstance(properties, dict):
            raise Refused(400, "Invalid input JSON: 'properties' must be an object of property names to values")
        checked = {name: _text(value) for name, value in properties.items()}
        problems = [self._property_problem(kind, name, checked[name], value) for name, value in properties.items()]
        required = {"notes": ("hs_timestamp",), "tickets": ("subject", "hs_pipeline", "hs_pipeline_stage")}
        problems += [
            _problem("REQUIRED", name, f"{name} is required")
            for name in required.get(kind, ())
            if creating and not checked.get(name)
        ]
        stage = checked.get("hs_pipeline_stage")
        if kind == "tickets" and stage and stage not in PIPELINES.get(checked.get("hs_pipeline", "0"), ()):
            problems.append(_problem("INVALID_OPTION", "hs_pipeline_stage", f"{stage} is not a stage of this pipeline"))
        if any(problems):
            raise Refused(400, f"Property values were not valid: {json.dumps([p for p in problems if p])}")
        return checked

    def _property_problem(self, kind: str, name: str, text: str, value: Any) -> dict[str, Any] | None:
        if name in READ_ONLY:
            return _problem("READ_ONLY_VALUE", name, f'Property "{name}" is a read only property')
        if name not in self._known[kind]:
            return _problem("PROPERTY_DOESNT_EXIST", name, f'Property "{name}" does not exist')
        if not isinstance(value, str | int | float | bool) and value is not None:
            return _problem("INVALID_PROPERTY_VALUE", name, f"{json.dumps(value)} is not a valid value for {name}")
        if name == "hs_language" and text and text not in LANGUAGES:
            return _problem("INVALID_OPTION", name, f"{text} was not one of the allowed options")
        if name == "hs_note_body" and len(text) > MAX_NOTE_BODY:
            return _problem("INVALID_STRING", name, f"{len(text)} characters is more than {MAX_NOTE_BODY}")
        if name == "hs_timestamp" and text and not _timestamp(text):
            return _problem("INVALID_DATETIME", name, f"{text} is not ISO 8601 nor milliseconds since the epoch")
        if name == "hs_pipeline" and text and text not in PIPELINES:
            return _problem("INVALID_OPTION", name, f"{text} is not a ticket pipeline")
        return None

    def _checked_associations(self, kind: str, associations: Any) -> list[tuple[str, str, int]]:
        if not isinstance(associations, list):
            raise Refused(400, "Invalid input JSON: 'associations' must be an array")
        checked: list[tuple[str, str, int]] = []
        for association in associations:
            to = association.get("to") if isinstance(association, dict) else None
            types = association.get("types") if isinstance(association, dict) else None
            if not isinstance(to, dict) or not isinstance(types, list) or not types:
                raise Refused(400, "each association needs 'to': {'id': ...} and a non-empty 'types'")
            for spec in types:
                category = spec.get("associationCategory") if isinstance(spec, dict) else None
                type_id = spec.get("associationTypeId") if isinstance(spec, dict) else None
                if category != "HUBSPOT_DEFINED" or type_id is None or type_id != TO_CONTACT.get(kind):
                    raise Refused(400, f"association type {category}/{type_id} is not valid from {kind} to contacts")
                contact = self.contacts.get(str(to.get("id")))
                if contact is None or contact.archived:
                    raise Refused(400, f"One or more associations are invalid: no contact {to.get('id')}")
                checked.append(("contacts", contact.id, type_id))
        return checked

    def _check_unique(self, properties: dict[str, str], own_id: str | None) -> None:
        for name in self.unique:
            value = properties.get(name)
            for other in self.contacts.values():
                if value and other.id != own_id and not other.archived and other.properties.get(name) == value:
                    raise Refused(409, f"Contact already exists. Existing ID: {other.id}", "CONFLICT")

    def _store(self, store: dict[str, HubSpotRecord], properties: dict[str, str]) -> HubSpotRecord:
        self._next_id += 1
        now = self.clock()
        record = HubSpotRecord(str(self._next_id), dict(properties), now, now)
        store[record.id] = record
        return record


_DEFAULT_SHOWN = ("createdate", "email", "firstname", "hs_object_id", "lastmodifieddate", "lastname")


def _shown(record: HubSpotRecord, properties: dict[str, str], wanted: Iterable[str] | None) -> dict[str, Any]:
    own = {
        "hs_object_id": record.id,
        "createdate": _iso(record.created_at),
        "lastmodifieddate": _iso(record.updated_at),
    }
    values = {**properties, **own}
    names = set(values) if wanted is None else {*wanted, *own}
    return {
        "id": record.id,
        "properties": {name: values.get(name) for name in sorted(names)},
        "createdAt": _iso(record.created_at),
        "updatedAt": _iso(record.updated_at),
        "archived": record.archived,
    }


def _filter_groups(groups: Any, known: set[str]) -> list[list[dict[str, Any]]]:
    if not isinstance(groups, list) or len(groups) > 5:
        raise Refused(400, "filterGroups must be an array of at most 5 filter groups")
    checked = []
    for group in groups:
        filters = group.get("filters") if isinstance(group, dict) else None
        if not isinstance(filters, list) or not filters or len(filters) > 10:
            raise Refused(400, "each filter group needs 'filters': 1 to 10 filters")
        for item in filters:
            if not isinstance(item, dict) or item.get("operator") not in _SEARCH_OPERATORS:
                raise Refused(400, f"each filter needs an 'operator', one of {', '.join(_SEARCH_OPERATORS)}")
            if item.get("propertyName") not in known | READ_ONLY:
                raise Refused(
                    400, f"There was a problem with the request: unknown property {item.get('propertyName')!r}"
                )
        checked.append(filters)
    if sum(len(filters) for filters in checked) > 25:
        raise Refused(400, "a search has at most 25 filters in all")
    return checked


def _matches(properties: dict[str, str], filters: list[dict[str, Any]]) -> bool:
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


def _associated(store: dict[str, HubSpotRecord], contact_id: str) -> list[HubSpotRecord]:
    return [r for r in store.values() if any(kind == "contacts" and to == contact_id for kind, to, _ in r.associations)]


def _problem(error: str, name: str, message: str) -> dict[str, Any]:
    return {"isValid": False, "message": message, "error": error, "name": name}


def _text(value: Any) -> str:
    return "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise Refused(400, "Invalid input JSON: expected an object")
    return body


def _timestamp(text: str) -> bool:
    if text.isdigit():
        return True
    try:
        dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _iso(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _failure(status: int, retry_after: float | None) -> Refused:
    extra = {"retry_after": retry_after} if retry_after is not None else {}
    if status == 429:
        message = "You have reached your ten_secondly_rolling limit."
        return Refused(429, message, None, errorType="RATE_LIMIT", policyName="TEN_SECONDLY_ROLLING", **extra)
    if status == 401:
        return Refused(401, "The access token is not valid.", "INVALID_AUTHENTICATION", **extra)
    category = {400: "VALIDATION_ERROR", 403: "MISSING_SCOPES", 404: "OBJECT_NOT_FOUND", 409: "CONFLICT"}.get(status)
    return Refused(status, "internal error" if status >= 500 else f"error {status}", category, **extra)


def _error(refused: Refused) -> web.Response:
    extra = dict(refused.extra)
    retry_after = extra.pop("retry_after", None)
    body = {"status": "error", "message": refused.message, "correlationId": str(uuid.uuid4()), **extra}
    if refused.category is not None:
        body["category"] = refused.category
    headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
    if refused.status == 429:
        headers["X-HubSpot-RateLimit-Remaining"] = "0"
    return web.json_response(body, status=refused.status, headers=headers)
