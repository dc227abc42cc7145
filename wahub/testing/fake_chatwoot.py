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

Checked as Chatwoot does, in its order: the ``api_access_token`` header
(401), the account (401), then bodies (the inbox exists and is an API
channel, phone numbers in E.164, a phone or identifier already taken is a
422, a message needs content and a known ``message_type``...). The API
answers ``message_type`` as a number (0 incoming, 1 outgoing, 2 activity),
webhooks as a word. Messages posted through the API as ``outgoing`` are
sent by the token's user (``API_USER``, also ``GET /api/v1/profile``).
``down`` answers every request 503; ``fail_next`` the next ones with a
status (and ``Retry-After``), once they passed the token check, before or,
with ``processed``, after carrying them out (an answer lost on the way).
Every request and every webhook delivery is recorded. Agents' actions and
the webhooks are in ``wahub.testing.fake_chatwoot_agent``.

Served: ``GET /api/v1/profile`` and, under
``/api/v1/accounts/{account_id}``, ``POST /contacts``, ``GET
/contacts/search?q=``, ``POST /contacts/{id}/contact_inboxes``, ``POST
/conversations``, ``GET|POST /conversations/{id}/messages`` (the list is
the latest 20) and ``POST /conversations/{id}/toggle_status``.
"""

from __future__ import annotations

import itertools
import json
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from wahub.testing import close_fake, serve_on_loopback
from wahub.testing.fake_chatwoot_agent import (
    AGENT,
    API_USER,
    MESSAGE_TYPES,
    ChatwootAgentSide,
    WebhookDelivery,
    chatwoot_signature,
)
from wahub.testing.fake_faults import Fault, Faults

__all__ = ["AGENT", "FakeChatwoot", "Recorded", "WebhookDelivery", "chatwoot_signature"]

STATUSES = ("open", "resolved", "pending", "snoozed")
_E164 = re.compile(r"^\+[1-9]\d{1,14}$")
_PREFIX = "/api/v1/accounts/{account}"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Recorded:
    """One API request as the fake received it (``json`` None when the body was not JSON)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any


@dataclass
class FakeChatwoot(ChatwootAgentSide):
    """See the module's docstring."""

    token: str = "cw-access-token-0123456789"
    account_id: int = 1
    webhook_secret: str = "cw-webhook-secret-0123456789"
    #: Inbox id -> channel type; wahub's backend needs an API channel.
    inboxes: dict[int, str] = field(default_factory=lambda: {1: "Channel::Api", 2: "Channel::WebWidget"})
    inbox_id: int = 1
    #: Where webhooks go (the daemon's ``/crm/<name>/webhook``); none are sent while None.
    webhook_url: str | None = None
    #: False: ``message_created`` webhooks carry no ``content_attributes``.
    webhook_content_attributes: bool = True
    down: bool = False
    url: str = ""
    requests: list[Recorded] = field(default_factory=list)
    deliveries: list[WebhookDelivery] = field(default_factory=list)
    contacts: dict[int, dict[str, Any]] = field(default_factory=dict)
    contact_inboxes: list[dict[str, Any]] = field(default_factory=list)
    conversations: dict[int, dict[str, Any]] = field(default_factory=dict)
    messages: dict[int, dict[str, Any]] = field(default_factory=dict)
    _faults: Faults = field(default_factory=Faults)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(101))
    _runner: web.AppRunner | None = None
    _session: aiohttp.ClientSession | None = None

    @property
    def api_base(self) -> str:
        return self.url

    async def start(self) -> FakeChatwoot:
        app = web.Application(middlewares=[self._gate])
        app.router.add_get("/api/v1/profile", self._profile)
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
        self._faults.add(Fault(status, retry_after, applied=processed), times)

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

    # -- the API --------------------------------------------------------------------

    @web.middleware
    async def _gate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        self.requests.append(Recorded(request.method, request.path, dict(request.query), dict(request.headers), body))
        if self.down:  # the proxy in front answers, whoever asks
            return web.Response(status=503, text="Service Unavailable")
        # Chatwoot authenticates first: a rate limit or a fault is met only with a valid token.
        if request.headers.get("api_access_token") != self.token:
            return web.json_response({"error": "Invalid Access Token"}, status=401)
        if request.match_info.http_exception is not None:
            return _not_found()
        account = request.match_info.get("account")
        if account is not None and account != str(self.account_id):
            return web.json_response({"error": "You are not authorized to access this account"}, status=401)
        fault = self._faults.take(request.method, request.path)
        if fault is not None and not fault.applied:
            return _fault(fault.status, fault.retry_after)
        if request.method == "POST" and not isinstance(body, dict):
            return _invalid("the body must be a JSON object")
        answer = await handler(request)
        return answer if fault is None else _fault(fault.status, fault.retry_after)

    async def _profile(self, request: web.Request) -> web.Response:
        accounts = [{"id": self.account_id, "name": "Padaria Sol", "role": "administrator"}]
        return web.json_response({**API_USER, "email": "wahub@example.com", "accounts": accounts})

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
