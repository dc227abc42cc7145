"""The ``chatwoot`` crm: backend: Chatwoot as an external inbox of wahub's
WhatsApp conversations.

Every WhatsApp conversation is mirrored in one conversation of a Chatwoot
API channel inbox: what the user writes is posted as ``incoming``, what the
business sends (the bot, operators in wahub's own inbox, the business app)
as ``outgoing``, so agents read the whole conversation. An agent's reply in
Chatwoot reaches wahub through the inbox's signed webhook (see
``wahub.plugins.crm.chatwoot_webhook``) and goes to the user as a person's
reply; resolving on either side resolves on the other.

Records are linked (``CRMBackend.link``): ``contact`` (wahub contact ->
Chatwoot contact, with the contact inbox's ``source_id``), ``conversation``
(wahub conversation -> Chatwoot conversation, with the status wahub last
knew) and ``message`` (wahub message -> Chatwoot message). Every message
wahub posts carries ``content_attributes.wahub_message_id``, which is how
its webhook echo is recognised even before the post has returned; it is
also written by the token's own user, a second sign of wahub's messages.

A Chatwoot conversation that was resolved is reopened (``toggle_status``)
when the user writes again, so one WhatsApp conversation stays one Chatwoot
conversation with its whole history.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import voluptuous as vol
from aiohttp import web
from yarl import URL

from wahub import hookimpl
from wahub.core.config.validators import ExplainedInvalid
from wahub.core.crm import CRM_SCHEMA_BASE, CRMBackend, CRMContact, CRMHost, CRMMessage, request_json
from wahub.core.errors import DeliveryFailed
from wahub.core.hub import Hub
from wahub.core.models import IntegrationEvent
from wahub.plugins.crm.chatwoot_webhook import WAHUB_MESSAGE_ID, WebhookReceiver

_LOGGER = logging.getLogger(__name__)

#: Media types posted as a line naming the type, then the caption.
MEDIA_TYPES = frozenset({"image", "video", "audio", "document", "sticker"})


def _base_url(value: Any) -> str:
    url = URL(value) if isinstance(value, str) else None
    if url is None or url.scheme not in ("http", "https") or not url.host or url.query_string:
        raise ExplainedInvalid(f"expected Chatwoot's base URL, such as https://app.chatwoot.com, not {value!r}")
    return str(value).rstrip("/")


def _positive_id(value: Any) -> int:
    if isinstance(value, str) and value.isascii() and value.isdigit():  # from !env_var
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ExplainedInvalid(f"expected a Chatwoot id (a whole number of 1 or more), not {value!r}")
    return value


_SECRET = vol.All(str, vol.Length(min=1, msg="must not be empty"))


class ChatwootBackend(CRMBackend):
    """See the module's docstring."""

    PLATFORM = "chatwoot"
    CONFIG_SCHEMA: ClassVar[vol.Schema] = CRM_SCHEMA_BASE.extend(
        {
            vol.Required("api_base"): _base_url,
            vol.Required("account_id"): _positive_id,
            # The API channel inbox the conversations are mirrored in.
            vol.Required("inbox_id"): _positive_id,
            # An access token (a user's, from Profile settings) with access to the inbox.
            vol.Required("token"): _SECRET,
            # The inbox webhook's secret: webhooks not signed with it are refused.
            vol.Required("webhook_secret"): _SECRET,
            # Post what the business sends (bot, operators, business app) as outgoing messages.
            vol.Optional("post_bot_replies", default=True): bool,
            # Resolving the conversation in Chatwoot gives it back to the bot in wahub.
            vol.Optional("resolve_in_wahub", default=True): bool,
        }
    )
    EVENTS = ("message.received", "message.sent", "conversation.resolved")

    def __init__(self, host: CRMHost, config: Mapping[str, Any]) -> None:
        super().__init__(host, config)
        self.account_url = f"{config['api_base']}/api/v1/accounts/{config['account_id']}"
        self.inbox_id: int = config["inbox_id"]
        self.actor = f"chatwoot:{self.name}"
        self.receiver = WebhookReceiver(self)
        self._own_user_id: int | None = None
        self._profile_read = asyncio.Lock()

    @property
    def hub(self) -> Hub:
        if not isinstance(self.host, Hub):
            raise TypeError("the chatwoot backend runs inside the daemon's hub")
        return self.host

    def routes(self) -> Iterable[Any]:
        return [web.post(f"/crm/{self.name}/webhook", self.receiver.handle)]

    async def deliver(self, event: IntegrationEvent) -> None:
        if event.type == "conversation.resolved":
            conversation = event.data["conversation"]
            if event.data["change"]["actor"] != self.actor:  # not the echo of a resolve from Chatwoot
                await self.set_status(int(conversation["id"]), "resolved")
            return
        if event.type not in ("message.received", "message.sent") or not event.data.get("contact"):
            return
        message = CRMMessage.from_event(event)
        if message.conversation_id is None:
            return
        if message.direction == "in":
            await self._mirror(message, "incoming", retried=event.attempt > 0)
        elif self.config["post_bot_replies"] and not await self._from_chatwoot(message.id):
            await self._mirror(message, "outgoing", retried=event.attempt > 0)

    # -- mirroring messages ---------------------------------------------------------

    async def _from_chatwoot(self, message_id: int) -> bool:
        """Whether the message is an agent's reply from Chatwoot (sent by the
        webhook with this entry's idempotency key), or was posted already."""
        if await self.linked("message", message_id) is not None:
            return True
        row = await self.hub.storage.messages.get(message_id)
        key = (row or {}).get("idempotency_key") or ""
        return str(key).startswith(f"{self.actor}:")

    async def _mirror(self, message: CRMMessage, message_type: str, *, retried: bool) -> None:
        """Post ``message`` once in its Chatwoot conversation (made if needed)."""
        if await self.linked("message", message.id) is not None:
            return
        assert message.conversation_id is not None
        reopen = message_type == "incoming"  # the user writing again; the business's messages leave it resolved
        conversation_id = await self._conversation(message.contact, message.conversation_id, reopen=reopen)
        posted = await self._posted_before(conversation_id, message.id) if retried else None
        if posted is None:
            body = {
                "content": chatwoot_content(message),
                "message_type": message_type,
                "private": False,
                "content_attributes": {WAHUB_MESSAGE_ID: message.id},
            }
            try:
                answer = await self.api("POST", f"/conversations/{conversation_id}/messages", body)
            except DeliveryFailed as exc:
                if exc.status != 404:
                    raise
                # The conversation was deleted in Chatwoot: the next attempt opens another.
                await self.hub.storage.deliveries.unlink(self.name, "conversation", message.conversation_id)
                raise DeliveryFailed(f"{exc.reason} (its conversation is gone; opening another)") from exc
            posted = str(answer["id"])
        await self.link("message", message.id, posted)

    async def _posted_before(self, conversation_id: str, message_id: int) -> str | None:
        """The Chatwoot id of the message if an earlier attempt posted it
        (its answer lost), among the conversation's latest messages."""
        try:
            answer = await self.api("GET", f"/conversations/{conversation_id}/messages")
        except DeliveryFailed:
            return None  # post it: a duplicate is better than a lost message
        for item in answer.get("payload") or ():
            attributes = item.get("content_attributes")
            if isinstance(attributes, dict) and str(attributes.get(WAHUB_MESSAGE_ID)) == str(message_id):
                return str(item["id"])
        return None

    async def _conversation(self, contact: CRMContact, conversation_id: int, *, reopen: bool) -> str:
        """The Chatwoot conversation of wahub's ``conversation_id``: opened if
        there is none, with ``reopen`` reopened if it was resolved."""
        storage = self.hub.storage.deliveries
        found = await storage.linked(self.name, "conversation", conversation_id)
        if found is not None:
            remote, data = found
            if reopen and (data or {}).get("status") == "resolved":
                await self.set_status(conversation_id, "open")
            return remote
        contact_id, source_id = await self._contact(contact)
        body = {"source_id": source_id, "inbox_id": self.inbox_id, "contact_id": int(contact_id), "status": "open"}
        try:
            answer = await self.api("POST", "/conversations", body)
        except DeliveryFailed as exc:
            if exc.status != 404:
                raise
            # The contact was deleted in Chatwoot: the next attempt makes it again.
            await storage.unlink(self.name, "contact", contact.id)
            raise DeliveryFailed(f"{exc.reason} (its contact is gone; making it again)") from exc
        remote = str(answer["id"])
        await self.link("conversation", conversation_id, remote, data={"status": "open"})
        return remote

    async def _contact(self, contact: CRMContact) -> tuple[str, str]:
        """The Chatwoot contact of ``contact`` and its ``source_id`` in the inbox, made if needed."""
        found = await self.hub.storage.deliveries.linked(self.name, "contact", contact.id)
        if found is not None and (found[1] or {}).get("inbox_id") == self.inbox_id:
            return found[0], found[1]["source_id"]
        identifier = f"wahub:{contact.id}"
        body: dict[str, Any] = {
            "inbox_id": self.inbox_id,
            "name": contact.name or contact.phone or identifier,
            "identifier": identifier,
        }
        if contact.phone:
            body["phone_number"] = contact.phone
        try:
            answer = (await self.api("POST", "/contacts", body))["payload"]
            remote = str(answer["contact"]["id"])
            source_id = (answer.get("contact_inbox") or {}).get("source_id")
        except DeliveryFailed as exc:
            if exc.status != 422 or "taken" not in exc.reason:
                raise
            # The phone (or identifier) is taken: the contact exists, made earlier or by someone else.
            remote, source_id = await self._existing_contact(contact, identifier, exc)
        if not source_id:
            answer = await self.api("POST", f"/contacts/{remote}/contact_inboxes", {"inbox_id": self.inbox_id})
            source_id = str(answer["source_id"])
        await self.link("contact", contact.id, remote, data={"source_id": source_id, "inbox_id": self.inbox_id})
        return remote, str(source_id)

    async def _existing_contact(
        self, contact: CRMContact, identifier: str, refusal: DeliveryFailed
    ) -> tuple[str, str | None]:
        query = contact.phone or identifier
        answer = await self.api("GET", "/contacts/search", params={"q": query})
        candidates = [item for item in answer.get("payload") or () if isinstance(item, dict)]
        chosen = next((item for item in candidates if item.get("identifier") == identifier), None) or next(
            (item for item in candidates if contact.phone and item.get("phone_number") == contact.phone), None
        )
        if chosen is None:
            raise DeliveryFailed(f"{refusal.reason}; and no contact matches it", status=422, permanent=True)
        for contact_inbox in chosen.get("contact_inboxes") or ():
            if (contact_inbox.get("inbox") or {}).get("id") == self.inbox_id and contact_inbox.get("source_id"):
                return str(chosen["id"]), str(contact_inbox["source_id"])
        return str(chosen["id"]), None

    # -- conversations --------------------------------------------------------------

    async def set_status(self, conversation_id: int, status: str) -> None:
        """Set the Chatwoot conversation of wahub's ``conversation_id`` to
        ``status`` (``open`` or ``resolved``); nothing if it has none."""
        found = await self.hub.storage.deliveries.linked(self.name, "conversation", conversation_id)
        if found is None:
            return
        remote, data = found
        # Noted first, so the status webhook this causes is known as wahub's own.
        await self.link("conversation", conversation_id, remote, data={**(data or {}), "status": status})
        await self.api("POST", f"/conversations/{remote}/toggle_status", {"status": status})

    async def post_note(self, conversation_id: str, text: str, *, about: str) -> str:
        """Post a private note (agents only) in a Chatwoot conversation; returns its id."""
        body = {
            "content": text,
            "message_type": "outgoing",
            "private": True,
            "content_attributes": {"wahub_note_about": about},
        }
        answer = await self.api("POST", f"/conversations/{conversation_id}/messages", body)
        return str(answer["id"])

    # -- the API ------------------------------------------------------------------

    async def api(
        self, method: str, path: str, body: Mapping[str, Any] | None = None, *, params: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        """Call Chatwoot's Application API at the account's ``path``; its JSON
        answer (``{}`` when it is not an object), or ``DeliveryFailed`` saying what went wrong."""
        answer = await request_json(
            self.hub.http,
            method,
            self.account_url + path,
            what=f"Chatwoot ({method} {path})",
            headers={"api_access_token": self.config["token"]},
            json=body,
            params=params,
        )
        return answer.body

    async def own_user_id(self) -> int:
        """The id of the Chatwoot user the token belongs to, whose name wahub posts in (read once)."""
        async with self._profile_read:  # one read, however many webhooks wait for it
            if self._own_user_id is None:
                self._own_user_id = await self._read_own_user_id()
        return self._own_user_id

    async def _read_own_user_id(self) -> int:
        answer = await request_json(
            self.hub.http,
            "GET",
            f"{self.config['api_base']}/api/v1/profile",
            what="Chatwoot (GET /api/v1/profile)",
            headers={"api_access_token": self.config["token"]},
        )
        user_id = answer.body.get("id")
        if not isinstance(user_id, int) or isinstance(user_id, bool):
            raise DeliveryFailed(f"Chatwoot answered GET /api/v1/profile without a user id: {answer.text[:200]}")
        return user_id


def chatwoot_content(message: CRMMessage) -> str:
    """The text an agent reads for ``message``: its text; a media message as
    ``[image] caption``; a location as ``[location] name (latitude, longitude)``."""
    text = message.text.strip()
    if message.type in MEDIA_TYPES:
        return f"[{message.type}] {text}".rstrip()
    if message.type == "location":
        place = message.body.get("location") or {}
        words = [str(place[key]) for key in ("name", "address") if place.get(key)]
        return " ".join(["[location]", *words, f"({place.get('latitude')}, {place.get('longitude')})"])
    if message.type == "reaction":
        return f"[reaction] {(message.body.get('reaction') or {}).get('emoji', '')}".rstrip()
    return text or f"[{message.type}]"


@hookimpl
def register_crm_backends() -> list[type[CRMBackend]]:
    return [ChatwootBackend]
