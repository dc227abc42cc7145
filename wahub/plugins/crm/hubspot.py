"""The ``hubspot`` crm: backend: WhatsApp contacts as HubSpot contacts, their
conversations as notes (and tickets) on them, through HubSpot's CRM v3 API
(``wahub.plugins.crm.hubspot_api``) with a service key or a private app's
access token. Configuration::

    crm:
      - platform: hubspot
        name: hubspot
        token: !secret hubspot_token          # the service key or access token
        note_on_resolve: true                 # a resolved conversation's transcript as a note
        note_on_handoff: false                # the transcript so far as a note when a person is asked for
        ticket_on_handoff: false              # and a ticket, in this pipeline and stage
        ticket_pipeline: "0"
        ticket_stage: "1"
        id_property: wahub_contact_id         # a unique contact property: contacts are upserted by it
        opt_out_property: whatsapp_opted_out  # a contact property set to "true"/"false" (none by default)
        properties:                           # set on the contacts wahub creates
          lifecyclestage: lead

A contact is found by phone (``phone`` or ``mobilephone``, as ``+15551234567``
or ``15551234567``) or created, and remembered as a link: HubSpot's search
sees a new contact only seconds later, so the link, not the search, keeps a
second message (or a restart) from creating it twice. A contact known only
by its WhatsApp user id (no phone number) is not synced.

A create whose answer is lost (a time-out, a proxy's 502, a crash) is tried
again, and search may not see the contact it made yet. With ``id_property``
(the internal name of a custom contact property with unique values, which
the admin creates) contacts are written with HubSpot's upsert by that
property, wahub's contact id as its value, so the retry finds the contact the
lost call made. Without it the retry creates a second contact, unless one of
HubSpot's unique properties (an email) makes it answer 409, naming the first.

Notes and tickets are remembered as links too, keyed by the ownership change
that caused them, so a retry or a replay finds what an earlier try created.
One whose answer was lost is created again by the retry (HubSpot has no key
to create them by).
"""

from __future__ import annotations

import datetime as dt
import html
import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar
from urllib.parse import urlsplit

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
    render_transcript,
)
from wahub.core.errors import DeliveryFailed
from wahub.core.models import IntegrationEvent
from wahub.plugins.crm.hubspot_api import (
    DEFAULT_API_BASE,
    NOTE_TO_CONTACT,
    OWN_PROPERTIES,
    TICKET_TO_CONTACT,
    HubSpotAPI,
)

__all__ = ["HubSpotBackend"]

_LOGGER = logging.getLogger(__name__)

#: The most characters HubSpot keeps in a note's body, or in a ticket's content.
MAX_BODY = 65536
_PROPERTY_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


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
            # A unique contact property the admin made: contacts are upserted by it, wahub's id as its value.
            vol.Optional("id_property"): _property_name,
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
        self.id_property: str | None = config.get("id_property")
        self._api: HubSpotAPI | None = None
        self._skipped: set[int] = set()

    @property
    def api(self) -> HubSpotAPI:
        # Made on first use: the daemon's HTTP client opens after the backends are made.
        if self._api is None:
            self._api = HubSpotAPI(
                self.host.http,
                api_base=self.config.get("api_base", DEFAULT_API_BASE),
                token=self.config["token"],
                entry=self.name,
            )
        return self._api

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
            if not changes or await self.api.update_contact(hubspot_id, changes):
                return
            await self.host.storage.deliveries.unlink(self.name, "contact", contact.id)
            _LOGGER.info("crm %s: HubSpot contact %s is gone; finding or creating it again", self.name, hubspot_id)
        await self._find_or_create(contact, changes)

    async def _find_or_create(self, contact: CRMContact, changes: dict[str, str]) -> str:
        assert contact.phone is not None
        also = (self.id_property,) if self.id_property else ()
        found = await self.api.search_contact(contact.phone, also=also)
        if found is None:
            hubspot_id, written = await self._create({**self._new_properties(contact), **changes}, contact)
            if written:
                await self.link("contact", contact.id, hubspot_id)
                return hubspot_id
            found = await self.api.read_contact(hubspot_id, also=also)
        hubspot_id = str(found["id"])
        await self.link("contact", contact.id, hubspot_id)
        # A contact HubSpot had already keeps its own name and language; only blanks are filled in.
        have, names = found.get("properties") or {}, ("firstname", "lastname")
        ours = {key: value for key, value in _contact_properties(contact).items() if value}
        if self.id_property:
            ours[self.id_property] = str(contact.id)
        missing = {key: value for key, value in ours.items() if key not in names and not have.get(key)}
        if not any(have.get(key) for key in names):
            missing.update({key: value for key, value in ours.items() if key in names})
        if (missing or changes) and not await self.api.update_contact(hubspot_id, {**missing, **changes}):
            raise DeliveryFailed(f"HubSpot contact {hubspot_id} was deleted while being linked; trying again")
        return hubspot_id

    async def _create(self, properties: dict[str, str], contact: CRMContact) -> tuple[str, bool]:
        """A new contact with ``properties``: its id and True; the id of one a
        unique property of which has a value given, and False. Upserted by
        ``id_property`` when there is one, so a retry after a lost answer finds
        the contact the first try made; without it, a retry while HubSpot's
        search still lags makes a second contact."""
        if self.id_property:
            return await self.api.upsert_contact(self.id_property, str(contact.id), properties)
        return await self.api.create_contact(properties)

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

    async def log_conversation(self, conversation: CRMConversation) -> None:
        """The resolved conversation's transcript as notes on the contact."""
        if not self.config.get("note_on_resolve", True):
            return
        heading = f"WhatsApp conversation resolved by {conversation.actor}"
        lines = await self.session_transcript(conversation)
        await self._add_notes(conversation, f"resolved:{conversation.change_id}", heading, lines)

    async def on_handoff(self, conversation: CRMConversation) -> None:
        """The transcript so far as notes and/or a ticket, as configured."""
        note, ticket = self.config.get("note_on_handoff", False), self.config.get("ticket_on_handoff", False)
        if not note and not ticket:
            return
        key = f"handoff:{conversation.change_id}"
        heading = "WhatsApp: a person was asked for" + (f" ({conversation.reason})" if conversation.reason else "")
        lines = await self.session_transcript(conversation)
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
        answer = await self.api.create_associated(kind, properties, contact_id, type_id)
        if answer.status >= 300 and not await self.api.contact_exists(contact_id):
            await self.host.storage.deliveries.unlink(self.name, "contact", contact.id)
            _LOGGER.info("crm %s: HubSpot contact %s is gone; finding or creating it again", self.name, contact_id)
            found = await self._contact_for(contact)
            if found is not None:
                answer = await self.api.create_associated(kind, properties, found, type_id)
        if answer.status >= 300:
            raise self.api.failure(answer, f"creating {kind}")
        if not answer.body.get("id"):
            raise DeliveryFailed(f"HubSpot (creating {kind}) answered {answer.status} without an id")
        return str(answer.body["id"])


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
