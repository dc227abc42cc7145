"""What Zendesk sends to wahub: its signed webhooks, and the agents' replies
they announce (see ``wahub.plugins.crm.zendesk`` for the other direction).

Zendesk signs every webhook request: ``X-Zendesk-Webhook-Signature`` is
``base64(HMAC-SHA256(signing secret, TIMESTAMP + BODY))`` with the
``X-Zendesk-Webhook-Signature-Timestamp`` header as TIMESTAMP (ISO 8601, such
as ``2026-12-01T09:30:00Z``; unix seconds are read too). A request without
both headers, with a signature that does not match, or stamped more than five
minutes from now is answered 401 and nothing is done.

The admin points one webhook at ``POST /crm/<name>/webhook`` and connects it
to two triggers, whose JSON bodies name only the event and the ticket::

    {"type": "comment", "ticket_id": "{{ticket.id}}"}
    {"type": "solved", "ticket_id": "{{ticket.id}}"}

(other keys are allowed and ignored). Whatever the type, wahub reads the
ticket and its latest 100 comments itself and sends every public comment by
an agent (not by the requester, not by the API user, not one wahub added
for a user's message) that it did not send before, oldest first; the ids it sent are kept with the ticket's link. A
webhook replayed, duplicated, or lost (the next one catches up) therefore
changes nothing, and neither does one a trigger fires for a comment wahub
added itself (a trigger without the "not via the API" condition). A
ticket found solved or closed then resolves the wahub conversation and
unlinks the ticket; a ``solved`` webhook for a ticket open again by the time
it is read does nothing.

Outside the user's 24-hour window an agent's text cannot be sent: when the
ticket's template field names a template (see ``template_choice``) that
template goes instead, and a private note says so; when it does not, or when
wahub refuses the send for any reason, a private note on the ticket says why.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import re
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from wahub.core.crm import CRMBackend
from wahub.core.errors import BodyRefused, DeliveryFailed, SendRefused
from wahub.core.hub import Hub
from wahub.core.models import Conversation
from wahub.plugins.crm.desk import TemplateChoice, agent_reply, resolve
from wahub.plugins.crm.signing import SignatureScheme, iso_or_unix_seconds

_LOGGER = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Zendesk-Webhook-Signature"
TIMESTAMP_HEADER = "X-Zendesk-Webhook-Signature-Timestamp"
#: The webhook bodies' ``type`` values.
NOTICE_TYPES = ("comment", "solved")
#: The link of a conversation (local id) to its ticket; its data keeps the
#: requester's id and the last message added as a comment.
TICKET = "ticket"
#: The link of a ticket (local id: the ticket's id) to its conversation; its
#: data keeps the ids of the comments already sent to the user.
REPLIES = "ticket_replies"
#: Ticket statuses after which the conversation is resolved.
DONE_STATUSES = ("solved", "closed")
#: The last line of each comment wahub adds for a user's message: the message's id.
_MARKER = re.compile(r"\[wahub message (\d{1,18})\]\s*$")
_TEMPLATE_NAME = re.compile(r"^[a-z0-9_]{1,512}$")
_LANGUAGE = re.compile(r"^[A-Za-z]{2,3}([_-][A-Za-z0-9]{2,8})*$")


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature Zendesk sends for ``body`` stamped ``timestamp``."""
    message = timestamp.encode("utf-8", "surrogateescape") + body
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()


#: How Zendesk signs its webhooks (see the module's docstring).
SIGNATURE = SignatureScheme(
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    sign,
    read_timestamp=iso_or_unix_seconds,
    secret_hint="check the entry's webhook_secret: the webhook's signing secret in Zendesk",
)


@dataclass(frozen=True)
class Notice:
    """A webhook's news: something happened (``type``) on ticket ``ticket_id``."""

    type: str
    ticket_id: int


def read_notice(data: Any) -> Notice:
    """The notice in a webhook's JSON body; ``BodyRefused`` names what is wrong with it."""
    if not isinstance(data, dict):
        raise BodyRefused('expected a JSON object such as {"type": "comment", "ticket_id": "{{ticket.id}}"}')
    kind, ticket = data.get("type"), data.get("ticket_id")
    if kind not in NOTICE_TYPES:
        raise BodyRefused(f"'type' must be one of {', '.join(NOTICE_TYPES)}, got {kind!r}")
    if isinstance(ticket, str) and ticket.strip().isascii() and ticket.strip().isdigit():
        ticket = int(ticket.strip())
    if not isinstance(ticket, int) or isinstance(ticket, bool) or ticket <= 0:
        raise BodyRefused(f"'ticket_id' must be a ticket's id (the placeholder {{{{ticket.id}}}}), got {ticket!r}")
    return Notice(kind, ticket)


def marked(body: str, message_id: int) -> str:
    """A comment's ``body`` for wahub's message ``message_id``, with its marker line."""
    return f"{body}\n\n[wahub message {message_id}]"


def marked_message(comment: Mapping[str, Any]) -> int | None:
    """The wahub message a comment was added for (its marker line), None if it is no such comment."""
    for key in ("body", "plain_body"):
        found = _MARKER.search(str(comment.get(key) or ""))
        if found is not None:
            return int(found.group(1))
    return None


def template_choice(value: str, *, language: str) -> TemplateChoice:
    """The template an agent names in the ticket's template field:
    ``name``, ``name:language`` or either followed by the body parameters,
    each after a ``|`` (``order_update:pt_BR|Ana|#4411``). Without a
    language, ``language`` (the contact's). ``ValueError`` says what is wrong."""
    head, *parameters = value.split("|")
    name, _, chosen = head.strip().partition(":")
    name, chosen = name.strip(), chosen.strip()
    if not _TEMPLATE_NAME.match(name):
        raise ValueError(f"{name!r} is not a template name (lowercase letters, digits and _)")
    if chosen and not _LANGUAGE.match(chosen):
        raise ValueError(f"{chosen!r} is not a language code (such as en or pt_BR)")
    texts = [parameter.strip() for parameter in parameters]
    if any(not text for text in texts):
        raise ValueError("a template parameter is empty (write each after a |, as in name:en|first|second)")
    return TemplateChoice(name, chosen or language, tuple(texts))


def field_value(ticket: Mapping[str, Any], field_id: int) -> str | None:
    """The text of the ticket's custom field ``field_id``, None when unset."""
    for field in ticket.get("custom_fields") or ():
        if isinstance(field, dict) and field.get("id") == field_id:
            value = field.get("value")
            return value.strip() or None if isinstance(value, str) else None
    return None


class TicketAPI(Protocol):
    """What the webhook needs of Zendesk's API (``ZendeskAPI`` is one); each
    call raises ``DeliveryFailed`` when Zendesk cannot answer."""

    async def ticket(self, ticket_id: int) -> dict[str, Any]: ...

    async def latest_comments(self, ticket_id: int) -> list[dict[str, Any]]: ...

    async def add_comment(self, ticket_id: int, body: str, *, public: bool, author_id: int | None = None) -> None: ...

    async def api_user_id(self) -> int: ...


class ReplySync:
    """Sends a ticket's new agent replies to its WhatsApp user and resolves
    the conversation once the ticket is solved (see the module's docstring)."""

    def __init__(self, backend: CRMBackend, hub: Hub, api: TicketAPI, template_field: int | None) -> None:
        self.backend = backend
        self.hub = hub
        self.api = api
        self.template_field = template_field
        # One sync of a ticket at a time here: two webhooks at once would both note one refusal.
        self._locks: weakref.WeakValueDictionary[int, asyncio.Lock] = weakref.WeakValueDictionary()

    async def sync(self, notice: Notice) -> dict[str, Any]:
        """Act on ``notice``; what was done, for the webhook's answer."""
        lock = self._locks.setdefault(notice.ticket_id, asyncio.Lock())
        async with lock:
            return await self._sync(notice)

    async def _sync(self, notice: Notice) -> dict[str, Any]:
        ticket_id, name = notice.ticket_id, self.backend.name
        conversation_id = await self.backend.linked_to(TICKET, str(ticket_id))
        if conversation_id is None:
            return {"ignored": f"ticket {ticket_id} is not linked to an open wahub conversation"}
        try:
            ticket = await self.api.ticket(ticket_id)
        except DeliveryFailed as exc:
            if exc.status != 404:
                raise
            await self.unlink(int(conversation_id), ticket_id)
            return {"ignored": f"ticket {ticket_id} no longer exists in Zendesk"}
        conversation = await self.hub.storage.conversations.get(int(conversation_id))
        if conversation is None:
            await self.unlink(int(conversation_id), ticket_id)
            return {"ignored": f"conversation {conversation_id} no longer exists in wahub"}
        sent = await self._send_replies(ticket, conversation)
        if sent is None:
            return {"ignored": f"ticket {ticket_id} was unlinked from its conversation meanwhile"}
        answer: dict[str, Any] = {"ticket_id": ticket_id, "conversation_id": conversation.id, "replies": sent}
        if ticket.get("status") in DONE_STATUSES:
            reason = f"ticket {ticket_id} {ticket['status']} in Zendesk"
            await resolve(self.hub, conversation.id, actor=f"zendesk:{name}", reason=reason)
            await self.unlink(conversation.id, ticket_id)
            answer["resolved"] = True
        return answer

    async def unlink(self, conversation_id: int, ticket_id: int) -> None:
        """Forget the ticket: its conversation's link first, then what was sent from it."""
        deliveries = self.hub.storage.deliveries
        await deliveries.unlink(self.backend.name, TICKET, conversation_id)
        await deliveries.unlink(self.backend.name, REPLIES, ticket_id)

    async def _send_replies(self, ticket: Mapping[str, Any], conversation: Conversation) -> int | None:
        """Send the ticket's public agent comments not sent before; how many
        went, None when the ticket was unlinked meanwhile (a resolve in wahub)."""
        ticket_id = int(ticket["id"])
        comments = await self.api.latest_comments(ticket_id)
        not_agents = {ticket.get("requester_id"), await self.api.api_user_id()}
        found = await self.hub.storage.deliveries.linked(self.backend.name, REPLIES, ticket_id)
        # Unlinking takes the ticket's link, then what it sent: still linked now, what was read is whole.
        if await self.backend.linked_to(TICKET, str(ticket_id)) != str(conversation.id):
            return None
        done = {int(comment_id) for comment_id in ((found[1] or {}).get("sent", []) if found else [])}
        sent = 0
        for comment in comments:
            if (
                comment["id"] in done
                or not comment.get("public")
                or comment.get("type", "Comment") != "Comment"
                or comment.get("author_id") in not_agents
                or marked_message(comment) is not None  # a user's message wahub added
            ):
                continue
            sent += await self._reply(ticket, conversation, comment)
            done.add(comment["id"])
            # Only ids still among the latest comments can be met again.
            window = [c["id"] for c in comments if c["id"] in done]
            await self.backend.link(REPLIES, ticket_id, str(conversation.id), data={"sent": window})
        return sent

    async def _reply(self, ticket: Mapping[str, Any], conversation: Conversation, comment: Mapping[str, Any]) -> int:
        """Send one agent comment (or the chosen template); 1 when it went, else 0 after a private note."""
        ticket_id = int(ticket["id"])
        text = str(comment.get("plain_body") or comment.get("body") or "").strip()
        if not text:
            await self._note(ticket_id, "This reply has no text: nothing was sent to the WhatsApp user.")
            return 0
        template, problem = None, ""
        chosen = field_value(ticket, self.template_field) if self.template_field is not None else None
        if chosen is not None:
            try:
                template = template_choice(
                    chosen, language=conversation.language or self.hub.config["wahub"]["language"]
                )
            except ValueError as exc:
                problem = f" The template field could not be read: {exc}."
        actor = f"zendesk:{self.backend.name}"
        try:
            message_id = await agent_reply(
                self.hub, conversation, text, idempotency_key=f"{actor}:{comment['id']}", template=template, actor=actor
            )
        except SendRefused as exc:
            _LOGGER.info("a reply on ticket %d was not sent: %s", ticket_id, exc.reason)
            await self._note(ticket_id, f"Not sent to the WhatsApp user ({exc.reason}): {exc}.{problem}")
            return 0
        row = await self.hub.storage.messages.get(message_id)
        if template is not None and row is not None and row["type"] == "template":
            await self._note(
                ticket_id,
                f"The WhatsApp user's 24-hour window is closed: the template {template.name} "
                f"({template.language}) was sent instead of this reply.",
            )
        return 1

    async def _note(self, ticket_id: int, text: str) -> None:
        try:
            await self.api.add_comment(ticket_id, text, public=False)
        except DeliveryFailed as exc:
            if exc.status != 422:  # a closed ticket takes no note; any other failure is tried again
                raise
