"""The ``hubspot`` crm: backend: WhatsApp contacts as HubSpot contacts, their
conversations as notes (and tickets) on them, through HubSpot's CRM v3 API
with a private app's access token. Configuration::

    crm:
      - platform: hubspot
        name: hubspot
        token: !secret hubspot_token          # the private app's access token
        note_on_resolve: true                 # a resolved conversation's transcript as a note
        note_on_handoff: false                # the transcript so far as a note when a person is asked for
        ticket_on_handoff: false              # and a ticket, in this pipeline and stage
        ticket_pipeline: "0"
        ticket_stage: "1"
        opt_out_property: whatsapp_opted_out  # a contact property set to "true"/"false" (none by default)
        properties:                           # set on the contacts wahub creates
          lifecyclestage: lead

A contact is found by phone (``phone`` or ``mobilephone``, as ``+15551234567``
or ``15551234567``) or created, once, and remembered as a link: HubSpot's
search sees a new contact only seconds later, so the link, not the search,
keeps a second message (or a restart) from creating it twice. A contact known
only by its WhatsApp user id (no phone number) is not synced.

Notes and tickets are remembered the same way, keyed by the ownership change
that caused them, so a retry finds what an earlier try created. A crash
between HubSpot's answer and that record makes the retry create it again: the
one case that duplicates.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import urlsplit

import aiohttp
import voluptuous as vol

from wahub import hookimpl
from wahub.core.config.validators import ExplainedInvalid
from wahub.core.crm import (
    CRM_SCHEMA_BASE,
    CRMBackend,
    CRMContact,
    CRMConversation,
    CRMHost,
    TranscriptLine,
    http_failure,
    render_transcript,
)
from wahub.core.errors import DeliveryFailed
from wahub.core.models import IntegrationEvent

__all__ = ["HubSpotBackend"]

_LOGGER = logging.getLogger(__name__)

DEFAULT_API_BASE = "https://api.hubapi.com"
#: The most characters HubSpot keeps in a note's body, or in a ticket's content.
MAX_BODY = 65536
#: HUBSPOT_DEFINED association types: note to contact, ticket to contact.
NOTE_TO_CONTACT, TICKET_TO_CONTACT = 202, 16
#: Contact properties wahub writes from the contact itself.
OWN_PROPERTIES = ("phone", "mobilephone", "firstname", "lastname", "hs_language")
_PROPERTY_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_EXISTING_ID = re.compile(r"Existing ID: (\d+)")


def _api_base(value: Any) -> str:
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ExplainedInvalid(f"expected HubSpot's API address, such as {DEFAULT_API_BASE}, not {value!r}")
    return str(value).rstrip("/")


def _property_name(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _PROPERTY_NAME.match(value):
        raise ExplainedInvalid(f"expected a property's internal name (lowercase letters, digits and _), not {value!r}")
    if value in OWN_PROPERTIES:
        raise ExplainedInvalid(f"{value} is written from the WhatsApp contact; choose another property")
    return str(value)


def _static_properties(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise ExplainedInvalid("expected contact property names and values, such as {lifecyclestage: lead}")
    properties: dict[str, str] = {}
    problems: list[vol.Invalid] = []
    for name, item in value.items():
        try:
            key = str(_property_name(name))
            if isinstance(item, bool):
                properties[key] = "true" if item else "false"
            elif isinstance(item, str | int | float):
                properties[key] = str(item)
            else:
                raise ExplainedInvalid(f"expected a text, a number, or true or false, not {item!r}")
        except vol.Invalid as exc:
            problems.append(ExplainedInvalid(exc.msg, path=[name]))
    if problems:
        raise vol.MultipleInvalid(problems)
    return properties


_ID = vol.All(vol.Any(str, int), vol.Coerce(str), vol.Length(min=1))


@dataclass(frozen=True)
class _Answer:
    status: int
    body: dict[str, Any]
    text: str
    headers: Mapping[str, str]


class HubSpotBackend(CRMBackend):
    """HubSpot CRM; see the module's docstring."""

    PLATFORM: ClassVar[str] = "hubspot"
    CONFIG_SCHEMA: ClassVar[vol.Schema] = CRM_SCHEMA_BASE.extend(
        {
            vol.Required("token"): vol.All(str, vol.Length(min=1)),
            vol.Optional("api_base", default=DEFAULT_API_BASE): _api_base,
            vol.Optional("note_on_resolve", default=True): vol.Boolean(),
            vol.Optional("note_on_handoff", default=False): vol.Boolean(),
            vol.Optional("ticket_on_handoff", default=False): vol.Boolean(),
            vol.Optional("ticket_pipeline", default="0"): _ID,
            vol.Optional("ticket_stage", default="1"): _ID,
            vol.Optional("opt_out_property"): _property_name,
            vol.Optional("properties", default=dict): _static_properties,
        }
    )
    EVENTS: ClassVar[tuple[str, ...]] = (
        "message.received",
        "conversation.queued",
        "conversation.resolved",
        "contact.*",
    )

    def __init__(self, host: CRMHost, config: Mapping[str, Any]) -> None:
        super().__init__(host, config)
        self.api_base: str = config.get("api_base", DEFAULT_API_BASE)
        self._auth_failing = False
        self._skipped: set[int] = set()

    async def deliver(self, event: IntegrationEvent) -> None:
        """As the base class does, but a hand-off or a resolve also carries its
        change's id: the key of the notes and tickets it makes."""
        if event.type in ("conversation.queued", "conversation.resolved"):
            if not event.data.get("contact"):
                return
            conversation, change_id = CRMConversation.from_event(event), str(event.data["change"]["id"])
            if event.type == "conversation.queued":
                await self.on_handoff(conversation, change_id=change_id)
            else:
                await self.log_conversation(conversation, change_id=change_id)
            return
        await super().deliver(event)

    # -- contacts ----------------------------------------------------------------------

    async def upsert_contact(self, contact: CRMContact, *, event: IntegrationEvent | None = None) -> None:
        """Update the linked HubSpot contact with what ``event`` changed; find
        (by phone) or create it when not linked yet."""
        if contact.phone is None:
            if contact.id not in self._skipped:
                self._skipped.add(contact.id)
                _LOGGER.info(
                    "crm %s: contact %d is not synced: it is known only by its WhatsApp user id, "
                    "and HubSpot contacts are matched by phone number",
                    self.name,
                    contact.id,
                )
            return
        changes = self._changes(contact, event)
        hubspot_id = await self.linked("contact", contact.id)
        if hubspot_id is not None:
            if not changes or await self._update(hubspot_id, changes):
                return
            await self.host.storage.deliveries.unlink(self.name, "contact", contact.id)
            _LOGGER.info("crm %s: HubSpot contact %s is gone; finding or creating it again", self.name, hubspot_id)
        await self._find_or_create(contact, changes)

    async def _find_or_create(self, contact: CRMContact, changes: dict[str, str]) -> str:
        assert contact.phone is not None
        found = await self._search(contact.phone)
        if found is None:
            hubspot_id, created = await self._create({**self._new_properties(contact), **changes})
            if created:
                await self.link("contact", contact.id, hubspot_id)
                return hubspot_id
            found = await self._read(hubspot_id)
        hubspot_id = str(found["id"])
        await self.link("contact", contact.id, hubspot_id)
        # A contact HubSpot had already keeps its own name and language; only blanks are filled in.
        have, names = found.get("properties") or {}, ("firstname", "lastname")
        ours = {key: value for key, value in _contact_properties(contact).items() if value}
        missing = {key: value for key, value in ours.items() if key not in names and not have.get(key)}
        if not any(have.get(key) for key in names):
            missing.update({key: value for key, value in ours.items() if key in names})
        if (missing or changes) and not await self._update(hubspot_id, {**missing, **changes}):
            raise DeliveryFailed(f"HubSpot contact {hubspot_id} was deleted while being linked; trying again")
        return hubspot_id

    def _changes(self, contact: CRMContact, event: IntegrationEvent | None) -> dict[str, str]:
        """The contact properties an event sets."""
        if event is None:
            return {}
        if event.type in ("contact.opted_out", "contact.opted_in"):
            name = self.config.get("opt_out_property")
            return {name: "true" if event.type == "contact.opted_out" else "false"} if name else {}
        changed = set(event.data.get("changed") or ()) if event.type == "contact.updated" else set()
        written = _contact_properties(contact)
        wanted = ({"firstname", "lastname"} if changed & {"name", "import"} else set()) | (
            {"hs_language"} if changed & {"language", "import"} else set()
        )
        return {key: value for key, value in written.items() if key in wanted}

    def _new_properties(self, contact: CRMContact) -> dict[str, str]:
        properties = {key: value for key, value in _contact_properties(contact).items() if value}
        return {**properties, **self.config.get("properties", {})}

    async def _contact_for(self, contact: CRMContact) -> str | None:
        """The HubSpot id of the contact, upserted first when not linked; None when it cannot be synced."""
        hubspot_id = await self.linked("contact", contact.id)
        if hubspot_id is None:
            await self.upsert_contact(contact)
            hubspot_id = await self.linked("contact", contact.id)
        return hubspot_id

    # -- notes and tickets -------------------------------------------------------------------

    async def log_conversation(self, conversation: CRMConversation, *, change_id: str | None = None) -> None:
        """The resolved conversation's transcript as notes on the contact."""
        if not self.config.get("note_on_resolve", True):
            return
        heading = f"WhatsApp conversation resolved by {conversation.actor}"
        lines = await self._span(conversation, change_id)
        await self._add_notes(conversation, f"resolved:{change_id or conversation.at}", heading, lines)

    async def on_handoff(self, conversation: CRMConversation, *, change_id: str | None = None) -> None:
        """The transcript so far as notes and/or a ticket, as configured."""
        note, ticket = self.config.get("note_on_handoff", False), self.config.get("ticket_on_handoff", False)
        if not note and not ticket:
            return
        key = f"handoff:{change_id or conversation.at}"
        heading = "WhatsApp: a person was asked for" + (f" ({conversation.reason})" if conversation.reason else "")
        lines = await self._span(conversation, change_id)
        if note:
            await self._add_notes(conversation, key, heading, lines)
        if ticket and await self.linked("ticket", key) is None:
            contact_id = await self._contact_for(conversation.contact)
            if contact_id is None:
                return
            contact = conversation.contact
            properties = {
                "subject": f"WhatsApp conversation with {contact.name or _masked(contact.phone or contact.address)}",
                "content": _ticket_content(heading, lines, contact.name),
                "hs_pipeline": self.config.get("ticket_pipeline", "0"),
                "hs_pipeline_stage": self.config.get("ticket_stage", "1"),
            }
            ticket_id = await self._create_associated("tickets", properties, contact, contact_id, TICKET_TO_CONTACT)
            await self.link("ticket", key, ticket_id)

    async def _span(self, conversation: CRMConversation, change_id: str | None) -> list[TranscriptLine]:
        """The messages from the resolve before this change up to this change."""
        changes = await self.host.storage.conversations.events(conversation.id)
        mine = next((change for change in changes if str(change.id) == change_id), None)
        if mine is None or mine.id is None:
            return await self.transcript(conversation.id)
        since = max((c.at for c in changes if c.change == "resolved" and (c.id or 0) < mine.id), default=0.0)
        return [line for line in await self.transcript(conversation.id, since=since) if line.at <= mine.at]

    async def _add_notes(
        self, conversation: CRMConversation, key: str, heading: str, lines: list[TranscriptLine]
    ) -> None:
        bodies = note_bodies(heading, lines, contact_name=conversation.contact.name)
        todo = [
            (f"{key}:{n}", body) for n, body in enumerate(bodies, 1) if await self.linked("note", f"{key}:{n}") is None
        ]
        if not todo:
            return
        contact_id = await self._contact_for(conversation.contact)
        if contact_id is None:
            return
        at = int(dt.datetime.fromisoformat(conversation.at.replace("Z", "+00:00")).timestamp() * 1000)
        for local_id, body in todo:
            properties = {"hs_timestamp": str(at), "hs_note_body": body}
            note_id = await self._create_associated(
                "notes", properties, conversation.contact, contact_id, NOTE_TO_CONTACT
            )
            await self.link("note", local_id, note_id)

    async def _create_associated(
        self, kind: str, properties: dict[str, str], contact: CRMContact, contact_id: str, type_id: int
    ) -> str:
        """Create a note or ticket on the contact; a contact deleted in HubSpot is found or created again once."""
        answer = await self._post_associated(kind, properties, contact_id, type_id)
        if answer.status >= 300 and not await self._exists(contact_id):
            await self.host.storage.deliveries.unlink(self.name, "contact", contact.id)
            _LOGGER.info("crm %s: HubSpot contact %s is gone; finding or creating it again", self.name, contact_id)
            found = await self._contact_for(contact)
            if found is not None:
                answer = await self._post_associated(kind, properties, found, type_id)
        if answer.status >= 300:
            raise self._failure(answer, f"creating {kind}")
        return str(answer.body["id"])

    async def _post_associated(self, kind: str, properties: dict[str, str], contact_id: str, type_id: int) -> _Answer:
        association = {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": type_id}
        body = {"properties": properties, "associations": [{"to": {"id": contact_id}, "types": [association]}]}
        return await self._call("POST", f"/crm/v3/objects/{kind}", f"creating {kind}", body, expect=(400, 404))

    # -- HubSpot's API ---------------------------------------------------------------------

    async def _search(self, phone: str) -> dict[str, Any] | None:
        values = (phone, phone.lstrip("+"))
        groups = [
            {"filters": [{"propertyName": name, "operator": "EQ", "value": value}]}
            for name in ("phone", "mobilephone")
            for value in values
        ]
        body = {
            "filterGroups": groups,
            "properties": list(OWN_PROPERTIES),
            "sorts": [{"propertyName": "createdate", "direction": "ASCENDING"}],
            "limit": 1,
        }
        answer = await self._call("POST", "/crm/v3/objects/contacts/search", "searching a contact", body)
        results = answer.body.get("results") or []
        return results[0] if results and isinstance(results[0], dict) else None

    async def _create(self, properties: dict[str, str]) -> tuple[str, bool]:
        """The new contact's id and True; the existing one's and False when HubSpot says it exists (409)."""
        answer = await self._write("POST", "/crm/v3/objects/contacts", properties, "creating a contact", expect=(409,))
        if answer.status != 409:
            return str(answer.body["id"]), True
        existing = _EXISTING_ID.search(str(answer.body.get("message", "")))
        if existing is None:
            raise self._failure(answer, "creating a contact")
        return existing.group(1), False

    async def _read(self, hubspot_id: str) -> dict[str, Any]:
        path = f"/crm/v3/objects/contacts/{hubspot_id}?properties={','.join(OWN_PROPERTIES)}"
        answer = await self._call("GET", path, "reading a contact", expect=(404,))
        if answer.status == 404:
            raise DeliveryFailed(f"HubSpot named contact {hubspot_id} as existing, then did not find it; trying again")
        return answer.body

    async def _exists(self, hubspot_id: str) -> bool:
        answer = await self._call("GET", f"/crm/v3/objects/contacts/{hubspot_id}", "reading a contact", expect=(404,))
        return answer.status != 404

    async def _update(self, hubspot_id: str, properties: dict[str, str]) -> bool:
        """False when HubSpot has no such contact (any more)."""
        path = f"/crm/v3/objects/contacts/{hubspot_id}"
        answer = await self._write("PATCH", path, properties, "updating a contact", expect=(404,))
        return answer.status != 404

    async def _write(
        self, method: str, path: str, properties: dict[str, str], what: str, *, expect: tuple[int, ...] = ()
    ) -> _Answer:
        """Write contact properties; a language HubSpot does not offer is tried
        as its primary language (``pt`` for ``pt-pt``), then left out."""
        properties = dict(properties)
        while True:
            answer = await self._call(method, path, what, {"properties": properties}, expect=(*expect, 400))
            if answer.status != 400:
                return answer
            refused = properties.pop("hs_language", None)
            if not refused or "hs_language" not in answer.text:
                raise self._failure(answer, what)
            if "-" in refused:
                properties["hs_language"] = refused.split("-")[0]
            _LOGGER.info(
                "crm %s: HubSpot offers no language %r; %s",
                self.name,
                refused,
                f"trying {properties['hs_language']!r}" if "hs_language" in properties else "leaving it out",
            )

    async def _call(
        self, method: str, path: str, what: str, body: Any = None, *, expect: tuple[int, ...] = ()
    ) -> _Answer:
        """One request; a 2xx answer, or one of ``expect``, is returned, any other raises ``DeliveryFailed``."""
        headers = {"Authorization": f"Bearer {self.config['token']}"}
        try:
            async with self.host.http.request(method, self.api_base + path, json=body, headers=headers) as response:
                text, status, answer_headers = await response.text(), response.status, response.headers
        except aiohttp.ClientError as exc:
            raise DeliveryFailed(f"HubSpot cannot be reached ({what}): {exc or type(exc).__name__}") from exc
        try:
            parsed = json.loads(text) if text else {}
        except ValueError:
            parsed = {}
        answer = _Answer(status, parsed if isinstance(parsed, dict) else {}, text, answer_headers)
        if status < 300 and self._auth_failing:
            self._auth_failing = False
            _LOGGER.info("crm %s: HubSpot takes the token again", self.name)
        if status < 300 or status in expect:
            return answer
        raise self._failure(answer, what)

    def _failure(self, answer: _Answer, what: str) -> DeliveryFailed:
        """What an error answer means, in HubSpot's words (its category and message)."""
        category = answer.body.get("category") or answer.body.get("errorType")
        message = str(answer.body.get("message") or answer.text[:300])
        said = f"{category}: {message}" if category else message
        if answer.status in (401, 403):
            fix = (
                f"set the `token` of crm entry {self.name!r} to a service key or a private app's access token"
                if answer.status == 401
                else "give the key the scopes listed in docs/integrations/hubspot.md"
            )
            reason = f"HubSpot refused the token while {what} (HTTP {answer.status}, {said}): {fix}"
            if not self._auth_failing:
                self._auth_failing = True
                _LOGGER.error("crm %s: %s; deliveries wait and are retried", self.name, reason)
            return DeliveryFailed(reason, status=answer.status)
        return http_failure(answer.status, said, answer.headers, what=f"HubSpot ({what})")


def _contact_properties(contact: CRMContact) -> dict[str, str]:
    """``phone``, ``firstname``/``lastname`` (first word, the rest) and ``hs_language``, as far as known."""
    properties = {"phone": contact.phone or ""}
    if contact.name and contact.name.strip():
        first, _, rest = contact.name.strip().partition(" ")
        properties.update(firstname=first, lastname=rest.strip())
    if contact.language:
        properties["hs_language"] = contact.language.lower()
    return properties


def note_bodies(heading: str, lines: Iterable[TranscriptLine], *, contact_name: str | None) -> list[str]:
    """A transcript as note bodies (HTML paragraphs, a message each) of at most
    65,536 characters each, in order; the heading opens each, with ``part n of m``."""
    paragraphs = [_paragraph(render_transcript([line], contact_name=contact_name)) for line in lines]
    heading = html.escape(heading[:1000], quote=False)
    limit = MAX_BODY - len(heading) - 64  # room for the heading's markup and "(part n of m)"
    chunks: list[list[str]] = [[]]
    size = 0
    for paragraph in paragraphs or ["<p>(no messages)</p>"]:
        if len(paragraph) > limit:  # never for a WhatsApp message (4,096 characters at most)
            paragraph = paragraph[: limit - 8] + "…</p>"
        if chunks[-1] and size + len(paragraph) > limit:
            chunks.append([])
            size = 0
        chunks[-1].append(paragraph)
        size += len(paragraph)
    total = len(chunks)
    return [
        f"<p><strong>{heading}{f' (part {n} of {total})' if total > 1 else ''}</strong></p>" + "".join(chunk)
        for n, chunk in enumerate(chunks, 1)
    ]


def _paragraph(text: str) -> str:
    return "<p>" + html.escape(text, quote=False).replace("\n", "<br>") + "</p>"


def _ticket_content(heading: str, lines: list[TranscriptLine], contact_name: str | None) -> str:
    """The ticket's text: the heading and the transcript, the latest messages kept when it is too long."""
    content = f"{heading}\n\n{render_transcript(lines, contact_name=contact_name) or '(no messages)'}"
    if len(content) <= MAX_BODY:
        return content
    cut = "[earlier messages left out]\n"
    return cut + content[-(MAX_BODY - len(cut)) :]


def _masked(address: str) -> str:
    return "…" + address[-4:]


@hookimpl
def register_crm_backends() -> Iterable[type[CRMBackend]]:
    return [HubSpotBackend]
