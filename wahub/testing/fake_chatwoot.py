"""A fake Chatwoot, on a real socket: the Application API calls wahub's
``chatwoot`` backend makes, and the signed inbox webhooks Chatwoot sends back.

Like Chatwoot, it fires a signed ``message_created`` webhook for every
message created, those posted through the API included (the echo a backend
must recognise), ``conversation_created`` for a new conversation and
``conversation_status_changed`` (after an ``activity`` message) when a
status changes. Each webhook is delivered, and answered, before the API call
that caused it is: the echo always overtakes the answer to the post::

    chatwoot = await FakeChatwoot().start()
    entry = {"platform": "chatwoot", "name": "cw", "api_base": chatwoot.url,
             "account_id": chatwoot.account_id, "inbox_id": chatwoot.inbox_id,
             "token": chatwoot.token, "webhook_secret": chatwoot.webhook_secret}
    ...
    chatwoot.webhook_url = f"{daemon.url}/crm/cw/webhook"
    await chatwoot.agent_reply(conversation_id, "Hello from an agent")
    await chatwoot.resolve(conversation_id)
    chatwoot.fail_next(429, times=2, retry_after=30)
    await chatwoot.close()

Checked as Chatwoot does: the ``api_access_token`` header (401), the
account (401), bodies (the inbox exists and is an API channel, phone numbers
in E.164, a phone or identifier already taken is a 422, a message needs
content and a known ``message_type``...). The API answers ``message_type``
as a number (0 incoming, 1 outgoing, 2 activity), webhooks as a word.
``down`` answers every request 503; ``fail_next`` the next ones with a
status (and ``Retry-After``), before or, with ``processed``, after carrying
them out (an answer lost on the way). Every request and every webhook
delivery is recorded.

Served under ``/api/v1/accounts/{account_id}``: ``POST /contacts``, ``GET
/contacts/search?q=``, ``POST /contacts/{id}/contact_inboxes``, ``POST
/conversations``, ``GET|POST /conversations/{id}/messages`` (the list is
the latest 20) and ``POST /conversations/{id}/toggle_status``.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from wahub.testing import close_fake, serve_on_loopback

__all__ = ["AGENT", "FakeChatwoot", "Recorded", "WebhookDelivery", "chatwoot_signature"]

#: The agent whose replies ``agent_reply`` writes.
AGENT: Mapping[str, Any] = {"id": 7, "name": "Ana Agent", "available_name": "Ana Agent", "type": "user"}
#: The user whose access token the API calls carry.
API_USER: Mapping[str, Any] = {"id": 1, "name": "wahub", "available_name": "wahub", "type": "user"}
MESSAGE_TYPES = ("incoming", "outgoing", "activity", "template")
STATUSES = ("open", "resolved", "pending", "snoozed")
_E164 = re.compile(r"^\+[1-9]\d{1,14}$")
_PREFIX = "/api/v1/accounts/{account}"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def chatwoot_signature(secret: str, timestamp: str, body: bytes) -> str:
    """``X-Chatwoot-Signature``: ``sha256=`` and the hex HMAC-SHA256 of ``"{timestamp}.{body}"``."""
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


@dataclass
class Recorded:
    """One API request as the fake received it (``json`` None when the body was not JSON)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any


@dataclass
class WebhookDelivery:
    """One webhook delivery: its id (reused by ``redeliver``), body, and the
    status wahub answered (None when it could not be reached)."""

    id: str
    event: str
    body: bytes
    status: int | None = None
    answer: Any = None


@dataclass
class FakeChatwoot:
    """See the module's docstring."""

    token: str = "cw-access-token-0123456789"
    account_id: int = 1
    webhook_secret: str = "cw-webhook-secret-0123456789"
    #: Inbox id -> channel type; wahub's backend needs an API channel.
    inboxes: dict[int, str] = field(default_factory=lambda: {1: "Channel::Api", 2: "Channel::WebWidget"})
    inbox_id: int = 1
    #: Where webhooks go (the daemon's ``/crm/<name>/webhook``); none are sent while None.
    webhook_url: str | None = None
    down: bool = False
    url: str = ""
    requests: list[Recorded] = field(default_factory=list)
    deliveries: list[WebhookDelivery] = field(default_factory=list)
    contacts: dict[int, dict[str, Any]] = field(default_factory=dict)
    contact_inboxes: list[dict[str, Any]] = field(default_factory=list)
    conversations: dict[int, dict[str, Any]] = field(default_factory=dict)
    messages: dict[int, dict[str, Any]] = field(default_factory=dict)
    _faults: list[tuple[int, float | None, bool]] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(101))
    _runner: web.AppRunner | None = None
    _session: aiohttp.ClientSession | None = None

    @property
    def api_base(self) -> str:
        return self.url

    async def start(self) -> FakeChatwoot:
        app = web.Application(middlewares=[self._gate])
        app.router.add_post(f"{_PREFIX}/contacts", self._create_contact)
        app.router.add_get(f"{_PREFIX}/contacts/search", self._search_contacts)
        app.router.add_post(f"{_PREFIX}/contacts/{{contact}}/contact_inboxes", self._create_contact_inbox)
        app.router.add_post(f"{_PREFIX}/conversations", self._create_conversation)
        app.router.add_get(f"{_PREFIX}/conversations/{{conversation}}/messages", self._list_messages)
        app.router.add_post(f"{_PREFIX}/conversations/{{conversation}}/messages", self._create_message)
        app.router.add_post(f"{_PREFIX}/conversations/{{conversation}}/toggle_status", self._toggle_status)
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        self._runner, self.url = await serve_on_loopback(app)
        return self

    async def close(self) -> None:
        await close_fake(self._runner, self._session, set())

    def fail_next(
        self, status: int, times: int = 1, retry_after: float | None = None, *, processed: bool = False
    ) -> None:
        """Answer the next ``times`` API requests with ``status`` (and ``Retry-After``);
        with ``processed`` each is carried out first, its answer lost (a proxy's 502, say)."""
        self._faults.extend([(status, retry_after, processed)] * times)

    # -- what a test reads and does -------------------------------------------------

    def messages_in(self, conversation_id: int, *, activity: bool = False) -> list[dict[str, Any]]:
        """The conversation's messages, oldest first (``activity`` ones only if asked)."""
        return [
            message
            for message in self.messages.values()
            if message["conversation_id"] == conversation_id and (activity or message["message_type"] != "activity")
        ]

    def conversation_of(self, phone: str) -> dict[str, Any] | None:
        """The latest conversation of the contact with ``phone`` (E.164)."""
        found = [c for c in self.conversations.values() if self.contacts[c["contact_id"]].get("phone_number") == phone]
        return found[-1] if found else None

    async def agent_reply(
        self,
        conversation_id: int,
        content: str,
        *,
        private: bool = False,
        sender: Mapping[str, Any] | None = AGENT,
        attachments: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """An agent writes in the conversation (``sender=None``: a message
        without a sender, as the business phone's arrive); its webhook is
        answered before this returns."""
        return await self._add_message(
            self.conversations[conversation_id], content, "outgoing", private, {}, sender, attachments or []
        )

    async def resolve(self, conversation_id: int) -> None:
        """An agent resolves the conversation."""
        await self._set_status(self.conversations[conversation_id], "resolved", AGENT)

    async def deliver_webhook(
        self, event: str, payload: Mapping[str, Any], *, delivery_id: str | None = None
    ) -> WebhookDelivery:
        """Send a signed webhook now (a new delivery, or a retry of ``delivery_id``)."""
        body = json.dumps({"event": event, **payload}).encode()
        delivery = WebhookDelivery(delivery_id or str(uuid.uuid4()), event, body)
        self.deliveries.append(delivery)
        if self.webhook_url is None or self._session is None:
            return delivery
        stamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "X-Chatwoot-Signature": chatwoot_signature(self.webhook_secret, stamp, body),
            "X-Chatwoot-Timestamp": stamp,
            "X-Chatwoot-Delivery": delivery.id,
        }
        try:
            async with self._session.post(self.webhook_url, data=body, headers=headers) as response:
                delivery.status = response.status
                delivery.answer = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            pass
        return delivery

    async def redeliver(self, delivery: WebhookDelivery) -> WebhookDelivery:
        """Deliver ``delivery`` again, as a retry does: same id and body, signed anew."""
        return await self.deliver_webhook(delivery.event, json.loads(delivery.body), delivery_id=delivery.id)

    # -- the API --------------------------------------------------------------------

    @web.middleware
    async def _gate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        self.requests.append(Recorded(request.method, request.path, dict(request.query), dict(request.headers), body))
        if self.down:
            return web.Response(status=503, text="Service Unavailable")
        fault = self._faults.pop(0) if self._faults else None
        if fault is not None and not fault[2]:
            return _fault(*fault[:2])
        if request.headers.get("api_access_token") != self.token:
            return web.json_response({"error": "Invalid Access Token"}, status=401)
        if request.match_info.http_exception is not None:
            return _not_found()
        if request.match_info.get("account") != str(self.account_id):
            return web.json_response({"error": "You are not authorized to access this account"}, status=401)
        if request.method == "POST" and not isinstance(body, dict):
            return _invalid("the body must be a JSON object")
        answer = await handler(request)
        return answer if fault is None else _fault(*fault[:2])

    async def _create_contact(self, request: web.Request) -> web.Response:
        body = await request.json()
        inbox_id, phone, identifier = body.get("inbox_id"), body.get("phone_number"), body.get("identifier")
        problem = self._inbox_problem(inbox_id) if inbox_id is not None else None
        if problem is not None:
            return problem
        if phone is not None and (not isinstance(phone, str) or not _E164.match(phone)):
            return _invalid("Phone number should be in e164 format", "phone_number")
        if phone is not None and any(c.get("phone_number") == phone for c in self.contacts.values()):
            return _invalid("Phone number has already been taken", "phone_number")
        if identifier is not None and any(c.get("identifier") == identifier for c in self.contacts.values()):
            return _invalid("Identifier has already been taken", "identifier")
        number = next(self._ids)
        contact = {"id": number, "name": body.get("name") or "", "phone_number": phone, "email": None}
        contact["identifier"] = identifier
        self.contacts[number] = contact
        contact_inbox = (
            None if inbox_id is None else self._contact_inbox_json(self._add_contact_inbox(contact, inbox_id))
        )
        return web.json_response({"payload": {"contact": self._contact_json(contact), "contact_inbox": contact_inbox}})

    async def _search_contacts(self, request: web.Request) -> web.Response:
        query = request.query.get("q", "").lower()
        found = [
            self._contact_json(contact)
            for contact in self.contacts.values()
            if query
            and any(query in str(contact.get(key) or "").lower() for key in ("name", "phone_number", "identifier"))
        ]
        return web.json_response({"meta": {"count": len(found), "current_page": 1}, "payload": found})

    async def _create_contact_inbox(self, request: web.Request) -> web.Response:
        contact = self.contacts.get(_int(request.match_info["contact"]))
        if contact is None:
            return _not_found()
        inbox_id = (await request.json()).get("inbox_id")
        problem = self._inbox_problem(inbox_id)
        if problem is not None:
            return problem
        return web.json_response(self._contact_inbox_json(self._add_contact_inbox(contact, inbox_id)))

    async def _create_conversation(self, request: web.Request) -> web.Response:
        body = await request.json()
        inbox_id, source_id = body.get("inbox_id"), body.get("source_id")
        problem = self._inbox_problem(inbox_id)
        if problem is not None:
            return problem
        contact_inbox = next(
            (ci for ci in self.contact_inboxes if ci["source_id"] == source_id and ci["inbox_id"] == inbox_id), None
        )
        if contact_inbox is None:
            return _invalid("source_id is not a contact inbox of this inbox", "source_id")
        if body.get("contact_id") is not None and body["contact_id"] != contact_inbox["contact_id"]:
            return (
                _not_found() if body["contact_id"] not in self.contacts else _invalid("contact_id is not its contact")
            )
        status = body.get("status", "open")
        if status not in STATUSES:
            return _invalid(f"'{status}' is not a valid status", "status")
        conversation = {
            "id": next(self._ids),
            "inbox_id": inbox_id,
            "contact_id": contact_inbox["contact_id"],
            "source_id": source_id,
            "status": status,
        }
        self.conversations[conversation["id"]] = conversation
        await self.deliver_webhook("conversation_created", self._conversation_json(conversation))
        return web.json_response(self._conversation_json(conversation))

    async def _list_messages(self, request: web.Request) -> web.Response:
        conversation = self.conversations.get(_int(request.match_info["conversation"]))
        if conversation is None:
            return _not_found()
        latest = self.messages_in(conversation["id"], activity=True)[-20:]
        meta = {"contact": self._contact_json(self.contacts[conversation["contact_id"]])}
        return web.json_response({"meta": meta, "payload": [self._message_json(m) for m in latest]})

    async def _create_message(self, request: web.Request) -> web.Response:
        conversation = self.conversations.get(_int(request.match_info["conversation"]))
        if conversation is None:
            return _not_found()
        body = await request.json()
        content, kind = body.get("content"), body.get("message_type", "outgoing")
        if not isinstance(content, str) or not content.strip():
            return _invalid("Content can't be blank", "content")
        if kind not in ("incoming", "outgoing"):
            return _invalid(f"'{kind}' is not a valid message_type", "message_type")
        if not isinstance(body.get("private", False), bool):
            return _invalid("private must be true or false", "private")
        attributes = body.get("content_attributes", {})
        if not isinstance(attributes, dict):
            return _invalid("content_attributes must be an object", "content_attributes")
        contact = self.contacts[conversation["contact_id"]]
        sender = {**self._contact_json(contact), "type": "contact"} if kind == "incoming" else API_USER
        message = await self._add_message(
            conversation, content, kind, body.get("private", False), attributes, sender, []
        )
        return web.json_response(self._message_json(message))

    async def _toggle_status(self, request: web.Request) -> web.Response:
        conversation = self.conversations.get(_int(request.match_info["conversation"]))
        if conversation is None:
            return _not_found()
        status = (await request.json()).get("status")
        if status is None:  # no status toggles between open and resolved
            status = "open" if conversation["status"] == "resolved" else "resolved"
        if status not in STATUSES:
            return _invalid(f"'{status}' is not a valid status", "status")
        await self._set_status(conversation, status, API_USER)
        payload = {"success": True, "current_status": status, "conversation_id": conversation["id"]}
        return web.json_response({"meta": {}, "payload": payload})

    # -- what Chatwoot keeps ----------------------------------------------------------

    def _inbox_problem(self, inbox_id: Any) -> web.Response | None:
        if inbox_id not in self.inboxes:
            return _not_found()
        if self.inboxes[inbox_id] != "Channel::Api":
            return _invalid(f"inbox {inbox_id} is a {self.inboxes[inbox_id]} inbox, not an API channel", "inbox_id")
        return None

    def _add_contact_inbox(self, contact: dict[str, Any], inbox_id: int) -> dict[str, Any]:
        contact_inbox = {"source_id": str(uuid.uuid4()), "contact_id": contact["id"], "inbox_id": inbox_id}
        self.contact_inboxes.append(contact_inbox)
        return contact_inbox

    async def _add_message(
        self,
        conversation: dict[str, Any],
        content: str,
        kind: str,
        private: bool,
        attributes: dict[str, Any],
        sender: Mapping[str, Any] | None,
        attachments: list[dict[str, Any]],
    ) -> dict[str, Any]:
        message = {
            "id": next(self._ids),
            "conversation_id": conversation["id"],
            "content": content,
            "message_type": kind,
            "private": private,
            "content_attributes": attributes,
            "sender": None if sender is None else dict(sender),
            "attachments": attachments,
            "created_at": int(time.time()),
        }
        self.messages[message["id"]] = message
        webhook = {
            **self._message_json(message),
            "message_type": kind,
            "conversation": self._conversation_json(conversation),
            "account": {"id": self.account_id, "name": "Padaria Sol"},
            "inbox": {"id": conversation["inbox_id"], "name": "WhatsApp (wahub)"},
        }
        await self.deliver_webhook("message_created", webhook)
        return message

    async def _set_status(self, conversation: dict[str, Any], status: str, by: Mapping[str, Any]) -> None:
        previous = conversation["status"]
        if previous == status:
            return
        conversation["status"] = status
        await self._add_message(
            conversation, f"Conversation was marked {status} by {by['name']}", "activity", False, {}, None, []
        )
        changed = [{"status": {"previous_value": previous, "current_value": status}}]
        await self.deliver_webhook(
            "conversation_status_changed", {**self._conversation_json(conversation), "changed_attributes": changed}
        )

    def _contact_json(self, contact: Mapping[str, Any]) -> dict[str, Any]:
        inboxes = [self._contact_inbox_json(ci) for ci in self.contact_inboxes if ci["contact_id"] == contact["id"]]
        return {**contact, "contact_inboxes": inboxes}

    def _contact_inbox_json(self, contact_inbox: Mapping[str, Any]) -> dict[str, Any]:
        inbox = {"id": contact_inbox["inbox_id"], "channel_type": self.inboxes[contact_inbox["inbox_id"]]}
        return {"source_id": contact_inbox["source_id"], "inbox": inbox}

    def _conversation_json(self, conversation: Mapping[str, Any]) -> dict[str, Any]:
        contact = self.contacts[conversation["contact_id"]]
        return {
            "id": conversation["id"],
            "account_id": self.account_id,
            "inbox_id": conversation["inbox_id"],
            "status": conversation["status"],
            "contact_inbox": {"source_id": conversation["source_id"]},
            "meta": {"sender": {**self._contact_json(contact), "type": "contact"}},
        }

    def _message_json(self, message: Mapping[str, Any]) -> dict[str, Any]:
        conversation = self.conversations[message["conversation_id"]]
        return {
            **message,
            "message_type": MESSAGE_TYPES.index(message["message_type"]),
            "inbox_id": conversation["inbox_id"],
            "content_type": "text",
            "status": "sent",
            "source_id": None,
        }


def _fault(status: int, retry_after: float | None) -> web.Response:
    headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
    return web.json_response({"error": f"HTTP {status}"}, status=status, headers=headers)


def _invalid(message: str, attribute: str | None = None) -> web.Response:
    return web.json_response({"message": message, "attributes": [attribute] if attribute else []}, status=422)


def _not_found() -> web.Response:
    return web.json_response({"error": "Resource could not be found"}, status=404)


def _int(value: str) -> int:
    return int(value) if value.isdigit() else -1
