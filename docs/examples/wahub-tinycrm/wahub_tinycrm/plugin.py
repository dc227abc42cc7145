"""wahub plugin: keeps a small CRM's contacts and conversation notes in step with WhatsApp.

The CRM has a REST API with a bearer key: ``PUT /contacts/by-phone/{phone}``
creates or updates a contact and returns ``{"id"}``; ``PUT
/contacts/{id}/notes/{key}`` writes the note ``key``. Both are idempotent,
which is what a CRM backend's calls must be: a delivery that ran but was not
recorded (a crash, a timeout) runs again.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import voluptuous as vol

import wahub
from wahub.core.crm import (
    CRM_SCHEMA_BASE,
    CRMBackend,
    CRMContact,
    CRMConversation,
    http_failure,
    render_transcript,
)
from wahub.core.errors import DeliveryFailed
from wahub.core.models import IntegrationEvent


class TinyCRM(CRMBackend):
    PLATFORM = "tinycrm"
    CONFIG_SCHEMA = CRM_SCHEMA_BASE.extend(
        {
            vol.Required("url"): vol.Url(),
            vol.Required("api_key"): vol.All(str, vol.Length(min=8)),
        }
    )
    # What it takes when its crm: entry sets no `events:`.
    EVENTS = ("message.received", "contact.*", "conversation.resolved")

    async def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        url = self.config["url"].rstrip("/") + path
        headers = {"Authorization": f"Bearer {self.config['api_key']}"}
        try:
            async with self.host.http.put(url, json=body, headers=headers) as response:
                if response.status >= 400:
                    # 429 and 5xx are retried (after Retry-After), 410 disables, other 4xx give up.
                    raise http_failure(response.status, await response.text(), response.headers, what="the CRM")
                answer: dict[str, Any] = await response.json()
                return answer
        except aiohttp.ClientError as exc:
            raise DeliveryFailed(f"the CRM is unreachable: {exc!r}") from exc

    async def upsert_contact(self, contact: CRMContact, *, event: IntegrationEvent | None = None) -> None:
        if contact.phone is None:
            return  # known only by a WhatsApp username: nothing to key the CRM's contact by
        body: dict[str, Any] = {"name": contact.name, "language": contact.language, "tags": list(contact.tags)}
        if event is not None and event.type == "contact.opted_out":
            body["whatsapp_opt_out"] = True
        elif event is not None and event.type == "contact.opted_in":
            body["whatsapp_opt_out"] = False
        answer = await self._call(f"/contacts/by-phone/{contact.phone}", body)
        # Linked: the base class upserts on a contact's first message only, and the
        # CRM's id shows among the contact's ids (`crm:<entry name>`).
        await self.link("contact", contact.id, str(answer["id"]))

    async def log_conversation(self, conversation: CRMConversation) -> None:
        remote = await self.linked("contact", conversation.contact.id)
        if remote is None:
            await self.upsert_contact(conversation.contact)
            remote = await self.linked("contact", conversation.contact.id)
        if remote is None:
            return
        lines = await self.transcript(conversation.id)
        text = render_transcript(lines, contact_name=conversation.contact.name)
        # One note per resolve, keyed by the conversation and the time it was resolved.
        await self._call(f"/contacts/{remote}/notes/wahub-{conversation.id}-{conversation.at}", {"text": text})


@wahub.hookimpl
def register_crm_backends() -> list[type[CRMBackend]]:
    return [TinyCRM]
