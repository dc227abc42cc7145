"""The Chatwoot inbox webhook, ``POST /crm/<name>/webhook``: agents' replies
and resolves, coming back to wahub.

Chatwoot signs each delivery: ``X-Chatwoot-Signature: sha256=<hex
HMAC-SHA256(secret, "{timestamp}.{body}")>`` with ``X-Chatwoot-Timestamp``
(unix seconds) and ``X-Chatwoot-Delivery`` (a UUID its retries reuse). A
delivery without a valid signature, or signed more than five minutes away
from now, is answered 401 and nothing is done.

``message_created`` fires for every message of the inbox, those wahub posted
included, so only an agent's public ``outgoing`` message is sent to the user;
wahub's own are recognised by their ``content_attributes.wahub_message_id``
(there even when the webhook overtakes the answer to wahub's post), by their
link, or, should a Chatwoot leave the attributes out of its webhooks, by
their sender: the user whose token wahub posts with (``GET /api/v1/profile``,
read once), so agents must not reply as that user. A message without a
sender (the business phone's, in some set-ups) is never sent back.
``conversation_status_changed`` to ``resolved`` resolves the wahub
conversation, unless wahub resolved it first.

A webhook that needs Chatwoot's API while it cannot answer is answered 503
with ``Retry-After``, for Chatwoot to deliver it again.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Mapping
from typing import Any, Protocol

from aiohttp import web

from wahub.core.errors import DeliveryFailed, SendRefused
from wahub.core.http.api_io import error, json_response
from wahub.core.hub import Hub
from wahub.plugins.crm.desk import agent_reply, resolve
from wahub.plugins.crm.signing import SignatureScheme, signed_json, unix_seconds

_LOGGER = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Chatwoot-Signature"
TIMESTAMP_HEADER = "X-Chatwoot-Timestamp"
DELIVERY_HEADER = "X-Chatwoot-Delivery"
#: The content attribute that marks a message wahub posted (its wahub message id).
WAHUB_MESSAGE_ID = "wahub_message_id"
#: ``message_type`` as webhooks spell it (a word) and as the API answers it (a number).
MESSAGE_TYPES: Mapping[object, str] = {
    "incoming": "incoming",
    "outgoing": "outgoing",
    "activity": "activity",
    "template": "template",
    0: "incoming",
    1: "outgoing",
    2: "activity",
    3: "template",
}


class ChatwootEntry(Protocol):
    """What the receiver uses of its backend (``ChatwootBackend``)."""

    name: str
    actor: str
    inbox_id: int
    config: Mapping[str, Any]

    @property
    def hub(self) -> Hub: ...

    async def link(self, kind: str, local_id: str | int, remote_id: str, *, data: Any = None) -> None: ...

    async def linked(self, kind: str, local_id: str | int) -> str | None: ...

    async def linked_to(self, kind: str, remote_id: str) -> str | None: ...

    async def post_note(self, conversation_id: str, text: str, *, about: str) -> str: ...

    async def own_user_id(self) -> int: ...


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Chatwoot-Signature`` of ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


#: How Chatwoot signs its webhooks (see the module's docstring).
SIGNATURE = SignatureScheme(
    SIGNATURE_HEADER, TIMESTAMP_HEADER, sign, read_timestamp=unix_seconds, normalise=lambda given: given.strip().lower()
)


class WebhookReceiver:
    """Handles one entry's webhook deliveries (see the module's docstring)."""

    def __init__(self, entry: ChatwootEntry) -> None:
        self.entry = entry
        self._told_no_sender = False
        self._told_own_user = False

    async def handle(self, request: web.Request) -> web.Response:
        payload = await signed_json(request, SIGNATURE, self.entry.config["webhook_secret"], entry=self.entry.name)
        if not isinstance(payload, dict):
            return error(400, "invalid_body", "the body must be a JSON object")
        event = payload.get("event")
        try:
            if event == "message_created":
                outcome = await self.message_created(payload)
            elif event == "conversation_status_changed":
                outcome = await self.status_changed(payload)
            else:
                outcome = f"ignored: {event!r} is not an event wahub takes"
        except DeliveryFailed as exc:
            _LOGGER.warning("%s: a webhook could not be handled: %s", self.entry.name, exc.reason)
            answer = error(503, "chatwoot_unavailable", exc.reason)
            answer.headers["Retry-After"] = "10"
            return answer
        _LOGGER.debug("%s webhook %s (%s): %s", self.entry.name, request.headers.get(DELIVERY_HEADER), event, outcome)
        return json_response({"ok": True, "outcome": outcome})

    async def message_created(self, payload: Mapping[str, Any]) -> str:
        """Send an agent's public reply to the user; anything else is left alone."""
        if payload.get("private") is True:
            return "ignored: a private note"
        spelled = payload.get("message_type")
        known = isinstance(spelled, str | int) and not isinstance(spelled, bool)
        kind = MESSAGE_TYPES.get(spelled, "unknown") if known else "unknown"
        if kind != "outgoing":
            return f"ignored: an {kind} message"
        if WAHUB_MESSAGE_ID in content_attributes(payload):
            return "ignored: a message wahub posted"
        message_id = payload.get("id")
        if not isinstance(message_id, int | str) or isinstance(message_id, bool):
            return "ignored: the message has no id"
        if await self.entry.linked_to("message", str(message_id)) is not None:
            return "ignored: a message wahub knows (posted or sent already)"
        sender = payload.get("sender")
        if not isinstance(sender, dict):
            if not self._told_no_sender:
                self._told_no_sender = True
                _LOGGER.info(
                    "%s: outgoing messages without a sender (the business phone's) are not sent", self.entry.name
                )
            return "ignored: a message without a sender"
        if sender.get("type") == "user" and sender.get("id") == await self.entry.own_user_id():
            if not self._told_own_user:
                self._told_own_user = True
                _LOGGER.info(
                    "%s: outgoing messages by the token's own Chatwoot user (id %s) are wahub's and not sent; "
                    "agents reply as other users",
                    self.entry.name,
                    sender.get("id"),
                )
            return "ignored: a message by the token's own user (wahub's)"
        conversation = payload.get("conversation") or {}
        remote = conversation.get("id") if isinstance(conversation, dict) else None
        inbox = conversation.get("inbox_id") if isinstance(conversation, dict) else None
        if remote is None or (inbox is not None and inbox != self.entry.inbox_id):
            return "ignored: not a conversation of the entry's inbox"
        return await self._send(str(remote), str(message_id), payload)

    async def _send(self, remote: str, message_id: str, payload: Mapping[str, Any]) -> str:
        hub = self.entry.hub
        local = await self.entry.linked_to("conversation", remote)
        conversation = None if local is None else await hub.storage.conversations.get(int(local))
        if conversation is None:
            return "ignored: not a conversation wahub mirrors"
        content = payload.get("content")
        if not isinstance(content, str) or not content.strip():
            await self._note(remote, message_id, "Not sent to WhatsApp: wahub sends agents' text only.")
            return "refused: no text"
        try:
            sent = await agent_reply(
                hub, conversation, content, idempotency_key=f"{self.entry.actor}:{message_id}", actor=self.entry.actor
            )
        except SendRefused as exc:
            await self._note(remote, message_id, f"Not sent to WhatsApp ({exc.reason}): {exc}")
            return f"refused: {exc.reason}"
        await self.entry.link("message", sent, message_id)
        if payload.get("attachments"):
            await self._note(remote, message_id, "Only the text went to WhatsApp: attachments are not sent.")
        return "sent"

    async def _note(self, remote: str, message_id: str, text: str) -> None:
        """Tell the agents in a private note, once per message of theirs."""
        if await self.entry.linked("note", message_id) is not None:
            return
        try:
            note = await self.entry.post_note(remote, text, about=message_id)
        except DeliveryFailed as exc:
            _LOGGER.warning("%s: could not post a note in conversation %s: %s", self.entry.name, remote, exc.reason)
            return
        await self.entry.link("note", message_id, note)

    async def status_changed(self, payload: Mapping[str, Any]) -> str:
        """Note the conversation's status; a resolve in Chatwoot resolves it in wahub."""
        remote, status = payload.get("id"), payload.get("status")
        if remote is None or not isinstance(status, str):
            return "ignored: no conversation id or status"
        storage = self.entry.hub.storage.deliveries
        local = await self.entry.linked_to("conversation", str(remote))
        found = None if local is None else await storage.linked(self.entry.name, "conversation", local)
        if local is None or found is None:
            return "ignored: not a conversation wahub mirrors"
        known = (found[1] or {}).get("status")
        await self.entry.link("conversation", local, str(remote), data={**(found[1] or {}), "status": status})
        if status != "resolved" or known == "resolved" or not self.entry.config["resolve_in_wahub"]:
            return f"noted: {status}"
        done = await resolve(self.entry.hub, int(local), actor=self.entry.actor, reason="resolved in Chatwoot")
        return "resolved" if done else "noted: it was with the bot already"


def content_attributes(payload: Mapping[str, Any]) -> Mapping[str, Any]:
    """A message's ``content_attributes`` (some versions send them as JSON text)."""
    attributes = payload.get("content_attributes")
    if isinstance(attributes, str):
        try:
            attributes = json.loads(attributes)
        except ValueError:
            return {}
    return attributes if isinstance(attributes, dict) else {}
