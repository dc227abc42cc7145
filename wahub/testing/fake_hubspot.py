"""A fake of HubSpot's CRM v3 objects API (contacts, notes, tickets), on a
real socket, for the tests of wahub's ``hubspot`` backend and of CRM plugins.

It answers as HubSpot does: every request needs ``Authorization: Bearer
<token>`` (else 401 ``INVALID_AUTHENTICATION``); bodies are checked (known
property names only, required properties, a note body of at most 65,536
characters, association type ids, ticket pipelines and stages) and refused
with 400 ``VALIDATION_ERROR``; a second contact with the same value of a
unique property (``email``, plus whatever the test adds) is 409 ``CONFLICT``
with ``Existing ID: <id>`` in its message; a record that is not there is 404.
``POST /crm/v3/objects/contacts/batch/upsert`` creates or updates contacts
by a unique property (``idProperty``: one of ``unique``, e.g. a custom
property registered with ``unique=True``) and answers 200
``{"status": "COMPLETE", "results": [{"id", "new", ...}]}``. Search is
eventually consistent as in HubSpot: a contact created or updated is seen by
``/search`` only ``index_delay`` seconds later (by ``clock``)::

    hubspot = await FakeHubSpot(token="pat-test", index_delay=3600).start()
    hubspot.unique.add("phone")
    hubspot.fail_next(429, times=1, retry_after=10)
    entry = {"platform": "hubspot", "name": "hubspot", "token": "pat-test", "api_base": hubspot.url}
    ...
    [contact] = hubspot.contacts_with("phone", "+15551234567")
    assert "hi" in hubspot.notes_of(contact.id)[0].properties["hs_note_body"]
    await hubspot.close()

``fail_next`` answers the next requests with an error (429 with
``Retry-After`` and the ``X-HubSpot-RateLimit-*`` headers, 5xx, 401...),
with ``applied`` after carrying them out (an answer lost on the way);
``hang_next`` carries the next request out and then keeps its answer until
the fake closes (a client's time-out); ``down`` answers every request 503.
Every request is recorded, with its answer's status, whatever it was.

The body of a 400 for an association to a record that does not exist is the
fake's own reading (HubSpot's exact text is not known); clients should not
depend on it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from wahub.testing import close_fake, serve_on_loopback
from wahub.testing.fake_faults import Fault, Faults, InjectsFaults
from wahub.testing.fake_hubspot_shapes import (
    CONTACT_PROPERTIES,
    DEFAULT_SHOWN,
    LANGUAGES,
    MAX_NOTE_BODY,
    NOTE_PROPERTIES,
    PIPELINES,
    RATE_LIMIT_HEADERS,
    READ_ONLY,
    TICKET_PROPERTIES,
    TO_CONTACT,
    HubSpotRecord,
    Refused,
    an_object,
    as_text,
    associated,
    error_answer,
    filter_groups,
    injected_failure,
    is_timestamp,
    iso,
    matches,
    problem,
    shown,
)

__all__ = ["CONTACT_PROPERTIES", "MAX_NOTE_BODY", "FakeHubSpot", "HubSpotRecord", "Recorded"]

#: The parsed JSON body of a request, as the middleware read it.
_BODY: web.RequestKey[Any] = web.RequestKey("fake_hubspot_body", object)


@dataclass(frozen=True)
class Recorded:
    """One request as the fake received it, and the status it answered."""

    method: str
    path: str
    headers: dict[str, str]
    json: Any
    status: int


@dataclass
class FakeHubSpot(InjectsFaults):
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
    _faults: Faults = field(default_factory=Faults)
    _next_id: int = 100
    _runner: web.AppRunner | None = None
    _closing: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> FakeHubSpot:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_post("/crm/v3/objects/contacts/search", self._search)
        app.router.add_post("/crm/v3/objects/contacts/batch/upsert", self._upsert)
        app.router.add_post("/crm/v3/objects/{kind:contacts|notes|tickets}", self._create)
        app.router.add_get("/crm/v3/objects/{kind:contacts|notes|tickets}/{id}", self._read)
        app.router.add_patch("/crm/v3/objects/{kind:contacts|notes|tickets}/{id}", self._update)
        self._runner, self.url = await serve_on_loopback(app)
        return self

    @property
    def _stores(self) -> dict[str, dict[str, HubSpotRecord]]:
        return {"contacts": self.contacts, "notes": self.notes, "tickets": self.tickets}

    async def close(self) -> None:
        self._closing.set()
        await close_fake(self._runner, None, set())

    # -- what a test sets up and reads ---------------------------------------------

    def register_property(self, kind: str, name: str, *, unique: bool = False) -> None:
        """Create a custom property ``name`` on ``kind`` (``contacts``, ``notes``,
        ``tickets``); a ``unique`` contact property takes no value twice."""
        self._known[kind].add(name)
        if unique and kind == "contacts":
            self.unique.add(name)

    def hang_next(self, *, match: str | None = None) -> None:
        """Carry out the next request (matched as by ``fail_next``), then keep its answer until the fake closes."""
        self._faults.add(Fault(504, None, applied=True, hang=True, match=match))

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
        return associated(self.notes, contact_id)

    def tickets_of(self, contact_id: str) -> list[HubSpotRecord]:
        return associated(self.tickets, contact_id)

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
            response = error_answer(refused)
        except web.HTTPException as exc:  # no such route
            response = error_answer(
                Refused(exc.status, f"Unable to route {request.method} request to {request.path}", None)
            )
        except Exception as exc:  # noqa: BLE001 - a fault of the fake itself, kept for the test to see
            self.faults.append(exc)
            response = error_answer(Refused(500, f"the fake failed: {exc!r}", None))
        response.headers.update(RATE_LIMIT_HEADERS)
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
        failure = self._faults.take(request.method, request.path)
        if failure is not None and not failure.applied:
            raise injected_failure(failure.status, failure.retry_after)
        if body is ...:
            raise Refused(400, "Invalid input JSON on line 1, column 1: Unexpected character")
        request[_BODY] = body
        response: web.StreamResponse = await handler(request)
        if failure is None:
            return response
        if failure.hang:
            await self._closing.wait()
        raise injected_failure(failure.status, failure.retry_after)

    async def _create(self, request: web.Request) -> web.Response:
        kind, body = request.match_info["kind"], an_object(request[_BODY])
        properties = self._checked_properties(kind, body.get("properties"), creating=True)
        associations = self._checked_associations(kind, body.get("associations", []))
        if kind == "contacts":
            self._check_unique(properties, None)
        record = self._store(self._stores[kind], properties)
        record.associations = associations
        record.index = [(self.clock() + self.index_delay, dict(record.properties))]
        return web.json_response(shown(record, record.properties, None), status=201)

    async def _upsert(self, request: web.Request) -> web.Response:
        inputs = an_object(request[_BODY]).get("inputs")
        if not isinstance(inputs, list) or not 1 <= len(inputs) <= 100:
            raise Refused(400, "inputs must be an array of 1 to 100 objects")
        checked = []
        for item in inputs:
            item = an_object(item)
            id_property, key = item.get("idProperty"), item.get("id")
            if id_property not in self.unique:
                raise Refused(400, f"{id_property!r} is not a unique identifier property of contacts")
            if not isinstance(key, str) or not key:
                raise Refused(400, "each input needs an 'id': the value of its idProperty")
            properties = self._checked_properties("contacts", item.get("properties"), creating=True)
            checked.append((str(id_property), key, {**properties, str(id_property): key}))
        results = []
        for id_property, key, properties in checked:
            record = next(iter(self.contacts_with(id_property, key)), None)
            self._check_unique(properties, None if record is None else record.id)
            new = record is None
            if record is None:
                record = self._store(self.contacts, properties)
                record.index = [(self.clock() + self.index_delay, dict(record.properties))]
            else:
                record.properties.update(properties)
                record.updated_at = self.clock()
                record.index.append((record.updated_at + self.index_delay, dict(record.properties)))
            results.append({**shown(record, record.properties, None), "new": new})
        now = iso(self.clock())
        return web.json_response({"status": "COMPLETE", "results": results, "startedAt": now, "completedAt": now})

    async def _read(self, request: web.Request) -> web.Response:
        record = self._record(request)
        wanted = request.query.get("properties")  # comma-separated; HubSpot's few defaults without it
        return web.json_response(shown(record, record.properties, wanted.split(",") if wanted else DEFAULT_SHOWN))

    async def _update(self, request: web.Request) -> web.Response:
        record, kind = self._record(request), request.match_info["kind"]
        properties = self._checked_properties(kind, an_object(request[_BODY]).get("properties"), creating=False)
        if kind == "contacts":
            self._check_unique(properties, record.id)
        record.properties.update(properties)
        record.updated_at = self.clock()
        record.index.append((record.updated_at + self.index_delay, dict(record.properties)))
        return web.json_response(shown(record, record.properties, None))

    async def _search(self, request: web.Request) -> web.Response:
        body = an_object(request[_BODY])
        groups = filter_groups(body.get("filterGroups", []), self._known["contacts"])
        limit = body.get("limit", 10)
        if not isinstance(limit, int) or not 0 < limit <= 200:
            raise Refused(400, "limit must be between 1 and 200")
        wanted = body.get("properties") or DEFAULT_SHOWN
        now, found = self.clock(), []
        for record in self.contacts.values():
            indexed = [props for visible, props in record.index if visible <= now]
            if not record.archived and indexed and (not groups or any(matches(indexed[-1], g) for g in groups)):
                found.append((record, indexed[-1]))
        for sort in reversed(body.get("sorts") or []):
            name = sort.get("propertyName") if isinstance(sort, dict) else str(sort).lstrip("-")
            descending = (sort.get("direction") == "DESCENDING") if isinstance(sort, dict) else str(sort)[:1] == "-"
            found.sort(key=lambda pair: pair[1].get(str(name), ""), reverse=descending)
        results = [shown(record, properties, wanted) for record, properties in found[:limit]]
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
        checked = {name: as_text(value) for name, value in properties.items()}
        problems = [self._property_problem(kind, name, checked[name], value) for name, value in properties.items()]
        required = {"notes": ("hs_timestamp",), "tickets": ("subject", "hs_pipeline", "hs_pipeline_stage")}
        problems += [
            problem("REQUIRED", name, f"{name} is required")
            for name in required.get(kind, ())
            if creating and not checked.get(name)
        ]
        stage = checked.get("hs_pipeline_stage")
        if kind == "tickets" and stage and stage not in PIPELINES.get(checked.get("hs_pipeline", "0"), ()):
            problems.append(problem("INVALID_OPTION", "hs_pipeline_stage", f"{stage} is not a stage of this pipeline"))
        if any(problems):
            raise Refused(400, f"Property values were not valid: {json.dumps([p for p in problems if p])}")
        return checked

    def _property_problem(self, kind: str, name: str, text: str, value: Any) -> dict[str, Any] | None:
        if name in READ_ONLY:
            return problem("READ_ONLY_VALUE", name, f'Property "{name}" is a read only property')
        if name not in self._known[kind]:
            return problem("PROPERTY_DOESNT_EXIST", name, f'Property "{name}" does not exist')
        if not isinstance(value, str | int | float | bool) and value is not None:
            return problem("INVALID_PROPERTY_VALUE", name, f"{json.dumps(value)} is not a valid value for {name}")
        if name == "hs_language" and text and text not in LANGUAGES:
            return problem("INVALID_OPTION", name, f"{text} was not one of the allowed options")
        if name == "hs_note_body" and len(text) > MAX_NOTE_BODY:
            return problem("INVALID_STRING", name, f"{len(text)} characters is more than {MAX_NOTE_BODY}")
        if name == "hs_timestamp" and text and not is_timestamp(text):
            return problem("INVALID_DATETIME", name, f"{text} is not ISO 8601 nor milliseconds since the epoch")
        if name == "hs_pipeline" and text and text not in PIPELINES:
            return problem("INVALID_OPTION", name, f"{text} is not a ticket pipeline")
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
