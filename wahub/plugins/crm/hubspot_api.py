"""The calls wahub's ``hubspot`` backend makes to HubSpot's CRM v3 API
(``wahub.plugins.crm.hubspot`` decides when): contacts searched, created,
upserted by a unique property, read and updated, and notes and tickets
created on a contact. Each raises ``DeliveryFailed`` when HubSpot cannot
answer, in HubSpot's words (its error category and message), with the fix
for a refused token.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

import aiohttp

from wahub.core.crm import Answer, http_failure, request_json
from wahub.core.errors import DeliveryFailed

__all__ = ["DEFAULT_API_BASE", "NOTE_TO_CONTACT", "OWN_PROPERTIES", "TICKET_TO_CONTACT", "HubSpotAPI"]

_LOGGER = logging.getLogger(__name__)

DEFAULT_API_BASE = "https://api.hubapi.com"
#: HUBSPOT_DEFINED association types: note to contact, ticket to contact.
NOTE_TO_CONTACT, TICKET_TO_CONTACT = 202, 16
#: Contact properties wahub writes from the contact itself.
OWN_PROPERTIES = ("phone", "mobilephone", "firstname", "lastname", "hs_language")
_EXISTING_ID = re.compile(r"Existing ID: (\d+)")
#: Every status an answer may have: ``call`` sorts them itself, in HubSpot's words.
_ANY_STATUS = tuple(range(300, 600))


class HubSpotAPI:
    """HubSpot's CRM API with one entry's token (see the module's docstring)."""

    def __init__(self, http: aiohttp.ClientSession, *, api_base: str, token: str, entry: str) -> None:
        self.http = http
        self.api_base = api_base
        self.entry = entry
        self._headers = {"Authorization": f"Bearer {token}"}
        self._auth_failing = False

    # -- contacts --------------------------------------------------------------------

    async def search_contact(self, phone: str, *, also: tuple[str, ...] = ()) -> dict[str, Any] | None:
        """The oldest contact whose ``phone`` or ``mobilephone`` is ``phone`` (with
        or without its ``+``), with wahub's properties and ``also``; None if none
        is found (HubSpot's search sees a new contact only seconds later)."""
        values = (phone, phone.lstrip("+"))
        groups = [
            {"filters": [{"propertyName": name, "operator": "EQ", "value": value}]}
            for name in ("phone", "mobilephone")
            for value in values
        ]
        body = {
            "filterGroups": groups,
            "properties": [*OWN_PROPERTIES, *also],
            "sorts": [{"propertyName": "createdate", "direction": "ASCENDING"}],
            "limit": 1,
        }
        answer = await self.call("POST", "/crm/v3/objects/contacts/search", "searching a contact", body)
        results = answer.body.get("results") or []
        return results[0] if results and isinstance(results[0], dict) else None

    async def create_contact(self, properties: dict[str, str]) -> tuple[str, bool]:
        """The new contact's id and True; the existing one's and False when HubSpot says it exists (409)."""
        answer = await self._write(
            "POST",
            "/crm/v3/objects/contacts",
            properties,
            "creating a contact",
            lambda props: {"properties": props},
            expect=(409,),
        )
        return self._written_id(answer, "creating a contact", lambda body: body)

    async def upsert_contact(self, id_property: str, key: str, properties: dict[str, str]) -> tuple[str, bool]:
        """The id of the contact whose unique ``id_property`` is ``key``, created
        or updated with ``properties``, and True; the id of another contact and
        False when one of its unique properties has a value given (409). Sent
        again, it finds the contact the first call made."""

        def body_of(props: dict[str, str]) -> dict[str, Any]:
            return {"inputs": [{"idProperty": id_property, "id": key, "properties": props}]}

        path, what = "/crm/v3/objects/contacts/batch/upsert", "upserting a contact"
        answer = await self._write("POST", path, properties, what, body_of, expect=(409,))

        def result(body: dict[str, Any]) -> dict[str, Any]:
            results = body.get("results") or []
            return results[0] if results and isinstance(results[0], dict) else {}

        return self._written_id(answer, what, result)

    def _written_id(
        self, answer: Answer, what: str, result: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> tuple[str, bool]:
        if answer.status != 409:
            written = result(answer.body)
            if not written.get("id"):
                raise DeliveryFailed(f"HubSpot ({what}) answered {answer.status} without an id: {answer.text[:300]}")
            return str(written["id"]), True
        existing = _EXISTING_ID.search(str(answer.body.get("message", "")))
        if existing is None:
            raise self.failure(answer, what)
        return existing.group(1), False

    async def read_contact(self, hubspot_id: str, *, also: tuple[str, ...] = ()) -> dict[str, Any]:
        path = f"/crm/v3/objects/contacts/{hubspot_id}?properties={','.join((*OWN_PROPERTIES, *also))}"
        answer = await self.call("GET", path, "reading a contact", expect=(404,))
        if answer.status == 404:
            raise DeliveryFailed(f"HubSpot named contact {hubspot_id} as existing, then did not find it; trying again")
        return answer.body

    async def contact_exists(self, hubspot_id: str) -> bool:
        answer = await self.call("GET", f"/crm/v3/objects/contacts/{hubspot_id}", "reading a contact", expect=(404,))
        return answer.status != 404

    async def update_contact(self, hubspot_id: str, properties: dict[str, str]) -> bool:
        """False when HubSpot has no such contact (any more)."""
        path = f"/crm/v3/objects/contacts/{hubspot_id}"
        answer = await self._write(
            "PATCH", path, properties, "updating a contact", lambda props: {"properties": props}, expect=(404,)
        )
        return answer.status != 404

    async def _write(
        self,
        method: str,
        path: str,
        properties: dict[str, str],
        what: str,
        body_of: Callable[[dict[str, str]], Any],
        *,
        expect: tuple[int, ...] = (),
    ) -> Answer:
        """Write contact properties; a language HubSpot does not offer is tried
        as its primary language (``pt`` for ``pt-pt``), then left out."""
        properties = dict(properties)
        while True:
            answer = await self.call(method, path, what, body_of(properties), expect=(*expect, 400))
            if answer.status != 400:
                return answer
            refused = properties.pop("hs_language", None)
            if not refused or "hs_language" not in answer.text:
                raise self.failure(answer, what)
            if "-" in refused:
                properties["hs_language"] = refused.split("-")[0]
            _LOGGER.info(
                "crm %s: HubSpot offers no language %r; %s",
                self.entry,
                refused,
                f"trying {properties['hs_language']!r}" if "hs_language" in properties else "leaving it out",
            )

    # -- notes and tickets -------------------------------------------------------------

    async def create_associated(self, kind: str, properties: dict[str, str], contact_id: str, type_id: int) -> Answer:
        """Create a note or ticket (``kind``: ``notes``, ``tickets``) on the contact;
        a 400 or 404 (the contact may be gone) is returned for the caller to sort out."""
        association = {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": type_id}
        body = {"properties": properties, "associations": [{"to": {"id": contact_id}, "types": [association]}]}
        return await self.call("POST", f"/crm/v3/objects/{kind}", f"creating {kind}", body, expect=(400, 404))

    # -- any call ------------------------------------------------------------------------

    async def call(
        self, method: str, path: str, what: str, body: Any = None, *, expect: tuple[int, ...] = ()
    ) -> Answer:
        """One request; a 2xx answer, or one of ``expect``, is returned, any other raises ``DeliveryFailed``."""
        answer = await request_json(
            self.http,
            method,
            self.api_base + path,
            what=f"HubSpot ({what})",
            headers=self._headers,
            json=body,
            expect=_ANY_STATUS,
        )
        ok = 200 <= answer.status < 300
        if ok and self._auth_failing:
            self._auth_failing = False
            _LOGGER.info("crm %s: HubSpot takes the token again", self.entry)
        if ok or answer.status in expect:
            return answer
        raise self.failure(answer, what)

    def failure(self, answer: Answer, what: str) -> DeliveryFailed:
        """What an error answer means, in HubSpot's words (its category and message)."""
        category = answer.body.get("category") or answer.body.get("errorType")
        message = str(answer.body.get("message") or answer.text[:300])
        said = f"{category}: {message}" if category else message
        if answer.status in (401, 403):
            fix = (
                f"set the `token` of crm entry {self.entry!r} to a service key or a private app's access token"
                if answer.status == 401
                else "give the key the scopes listed in docs/integrations/hubspot.md"
            )
            reason = f"HubSpot refused the token while {what} (HTTP {answer.status}, {said}): {fix}"
            if not self._auth_failing:
                self._auth_failing = True
                _LOGGER.error("crm %s: %s; deliveries wait and are retried", self.entry, reason)
            return DeliveryFailed(reason, status=answer.status)
        return http_failure(answer.status, said, answer.headers, what=f"HubSpot ({what})")
