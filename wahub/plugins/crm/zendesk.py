"""The Zendesk helpdesk (``platform: zendesk``): a conversation handed to a
person becomes a Zendesk ticket, and the agents answer the WhatsApp user
from Zendesk.

- A hand-off (``conversation.queued``) opens one ticket: the contact becomes
  its requester (a Zendesk user created or updated by the external id
  ``wahub:<contact id>``) and the session's transcript (since the resolve
  before the hand-off, up to it) its first, private comment. The ticket's
  external id ``wahub:conversation:<id>:<change id>`` is looked up before
  creating, so a retry after a lost answer finds the ticket it made.
- While the ticket is linked, what the user writes (``message.received``) and
  the transcript does not hold is added as public comments by the requester,
  each ending with the line ``[wahub message <id>]``. The last message added
  is remembered; a delivery tried again after a failure, or after a try cut
  off half-way (noted before the call), first looks for its line among the
  ticket's latest 100 comments, so a comment whose answer was lost is not
  added twice. A ticket that takes no more comments (closed, or at
  Zendesk's 5,000) gets a follow-up ticket.
- Resolving the conversation in wahub (``conversation.resolved``, not caused
  by Zendesk itself) solves the ticket with a private note and unlinks it.
- Agents' replies and solves come back through Zendesk's webhook: see
  ``wahub.plugins.crm.zendesk_webhook``.

Every call goes to ``https://<subdomain>.zendesk.com/api/v2`` (``api_base``
replaces the host) with ``Authorization: Basic base64("<email>/token:<api_token>")``.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, cast

import aiohttp
import voluptuous as vol
from aiohttp import web

from wahub import hookimpl
from wahub.core.config.validators import ExplainedInvalid
from wahub.core.crm import (
    CRM_SCHEMA_BASE,
    CRMBackend,
    CRMContact,
    CRMConversation,
    CRMHost,
    CRMMessage,
    render_transcript,
    request_json,
)
from wahub.core.errors import BodyRefused, DeliveryFailed
from wahub.core.http.api_io import error, json_response
from wahub.core.hub import Hub
from wahub.core.models import IntegrationEvent
from wahub.plugins.crm.signing import signed_json
from wahub.plugins.crm.zendesk_webhook import (
    DONE_STATUSES,
    REPLIES,
    SIGNATURE,
    TICKET,
    ReplySync,
    marked,
    marked_message,
    read_notice,
)

_LOGGER = logging.getLogger(__name__)

#: Longest transcript put in a ticket's first comment (Zendesk's limit is 64 KB).
MAX_TRANSCRIPT = 60_000
#: Seconds a webhook may take at most (Zendesk gives up after 10).
WEBHOOK_SECONDS = 9.0


def _api_base(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        raise ExplainedInvalid("expected the API's base URL, such as https://example.zendesk.com")
    return value.rstrip("/")


def _needs_a_host(entry: dict[str, Any]) -> dict[str, Any]:
    if "subdomain" not in entry and "api_base" not in entry:
        raise vol.RequiredFieldInvalid(
            "required key 'subdomain' is missing (the <subdomain> of https://<subdomain>.zendesk.com)",
            path=["subdomain"],
        )
    return entry


CONFIG_SCHEMA = vol.Schema(
    vol.All(
        CRM_SCHEMA_BASE.extend(
            {
                vol.Optional("subdomain"): vol.All(
                    str, vol.Match(r"^[a-z0-9][a-z0-9-]*$", msg="expected the <subdomain> of <subdomain>.zendesk.com")
                ),
                vol.Optional("api_base"): _api_base,
                # The agent or admin whose API token this is (Admin Center > Apps and integrations > APIs).
                vol.Required("email"): vol.All(str, vol.Match(r"^[^@\s]+@[^@\s]+$", msg="expected an e-mail address")),
                vol.Required("api_token"): vol.All(str, vol.Length(min=1)),
                # The signing secret of the Zendesk webhook pointed at /crm/<name>/webhook.
                vol.Required("webhook_secret"): vol.All(str, vol.Length(min=1)),
                # The id of the ticket field where an agent names a template for a closed window.
                vol.Optional("template_field"): vol.All(vol.Coerce(int), vol.Range(min=1)),
                vol.Optional("tags", default=lambda: ["whatsapp"]): [vol.All(str, vol.Match(r"^\S+$"))],
            }
        ),
        _needs_a_host,
    )
)


class ZendeskAPI:
    """The calls wahub makes to Zendesk's Support API; each raises
    ``DeliveryFailed`` (see ``wahub.core.crm.request_json``) when Zendesk cannot answer."""

    def __init__(self, http: aiohttp.ClientSession, config: Mapping[str, Any]) -> None:
        self.http = http
        self.base = config.get("api_base") or f"https://{config['subdomain']}.zendesk.com"
        login = f"{config['email']}/token:{config['api_token']}".encode()
        self.headers = {"Authorization": "Basic " + base64.b64encode(login).decode(), "Accept": "application/json"}
        self._me: int | None = None

    async def call(
        self, method: str, path: str, *, body: Any = None, params: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        """Zendesk's JSON answer to one call (``{}`` when it is not a JSON object)."""
        what = f"Zendesk ({method} {path})"
        answer = await request_json(
            self.http, method, self.base + path, what=what, headers=self.headers, json=body, params=params
        )
        return answer.body

    async def api_user_id(self) -> int:
        """The id of the user the token belongs to."""
        if self._me is None:
            self._me = int(_part(await self.call("GET", "/api/v2/users/me.json"), "user")["id"])
        return self._me

    async def upsert_user(self, contact: CRMContact) -> int:
        """The Zendesk user of ``contact`` (external id ``wahub:<id>``), created or updated."""
        user: dict[str, Any] = {
            "name": contact.name or contact.phone or f"WhatsApp user {contact.id}",
            "external_id": f"wahub:{contact.id}",
        }
        if contact.phone:
            user["phone"] = contact.phone
        answer = await self.call("POST", "/api/v2/users/create_or_update.json", body={"user": user})
        return int(_part(answer, "user")["id"])

    async def find_ticket(self, external_id: str) -> dict[str, Any] | None:
        answer = await self.call("GET", "/api/v2/tickets.json", params={"external_id": external_id})
        tickets = [ticket for ticket in answer.get("tickets") or [] if isinstance(ticket, dict)]
        return dict(tickets[0]) if tickets else None

    async def create_ticket(self, ticket: Mapping[str, Any]) -> dict[str, Any]:
        """The ticket made of ``ticket``, found by its ``external_id`` if an earlier try made it."""
        found = await self.find_ticket(ticket["external_id"])
        if found is not None:
            return found
        return _part(await self.call("POST", "/api/v2/tickets.json", body={"ticket": ticket}), "ticket")

    async def ticket(self, ticket_id: int) -> dict[str, Any]:
        return _part(await self.call("GET", f"/api/v2/tickets/{ticket_id}.json"), "ticket")

    async def update_ticket(self, ticket_id: int, changes: Mapping[str, Any]) -> None:
        await self.call("PUT", f"/api/v2/tickets/{ticket_id}.json", body={"ticket": changes})

    async def add_comment(self, ticket_id: int, body: str, *, public: bool, author_id: int | None = None) -> None:
        """Add a comment by updating the ticket (Zendesk has no call that creates one)."""
        comment: dict[str, Any] = {"body": body, "public": public}
        if author_id is not None:
            comment["author_id"] = author_id
        await self.update_ticket(ticket_id, {"comment": comment})

    async def latest_comments(self, ticket_id: int) -> list[dict[str, Any]]:
        """The ticket's latest 100 comments, oldest first."""
        params = {"sort_order": "desc", "per_page": "100"}
        answer = await self.call("GET", f"/api/v2/tickets/{ticket_id}/comments.json", params=params)
        comments = [dict(comment) for comment in answer.get("comments") or [] if isinstance(comment, dict)]
        return comments[::-1]


def _part(answer: Mapping[str, Any], key: str) -> dict[str, Any]:
    """The object ``answer[key]``; ``DeliveryFailed`` when Zendesk answered without it."""
    value = answer.get(key)
    if not isinstance(value, dict) or "id" not in value:
        raise DeliveryFailed(f"Zendesk answered without the {key!r} it should have: {str(answer)[:200]}")
    return dict(value)


class ZendeskBackend(CRMBackend):
    """See the module's docstring."""

    PLATFORM: ClassVar[str] = "zendesk"
    CONFIG_SCHEMA: ClassVar[vol.Schema] = CONFIG_SCHEMA
    EVENTS: ClassVar[tuple[str, ...]] = ("message.received", "conversation.queued", "conversation.resolved")

    def __init__(self, host: CRMHost, config: Mapping[str, Any]) -> None:
        super().__init__(host, config)
        self._api: ZendeskAPI | None = None
        self._replies: ReplySync | None = None

    @property
    def hub(self) -> Hub:
        return cast(Hub, self.host)

    @property
    def api(self) -> ZendeskAPI:
        # Made on first use: the daemon's HTTP client opens after the backends are made.
        if self._api is None:
            self._api = ZendeskAPI(self.host.http, self.config)
        return self._api

    @property
    def replies(self) -> ReplySync:
        if self._replies is None:
            self._replies = ReplySync(self, self.hub, self.api, self.config.get("template_field"))
        return self._replies

    def routes(self) -> Iterable[Any]:
        return [web.post(f"/crm/{self.name}/webhook", self.webhook)]

    async def deliver(self, event: IntegrationEvent) -> None:
        """As the base class does; a user's message delivered again after a
        failed try is first looked for among the ticket's comments."""
        if event.type == "message.received" and event.data.get("contact"):
            await self._add_message(CRMMessage.from_event(event), retried=event.attempt > 0)
        else:
            await super().deliver(event)

    # -- wahub to Zendesk ------------------------------------------------------------

    async def on_handoff(self, conversation: CRMConversation) -> None:
        """The hand-off's ticket, unless the conversation has one already."""
        if await self.linked(TICKET, conversation.id) is not None:
            return
        contact = conversation.contact
        requester_id = await self.api.upsert_user(contact)
        await self.link("contact", contact.id, str(requester_id))
        lines = await self.session_transcript(conversation)
        # Read after the transcript: a message stored since is beyond ``upto``, so a
        # comment; one at or below it is a comment only if it is later than the transcript.
        upto = await self._latest_message_id(conversation.id)
        transcript = _clipped(render_transcript(lines, contact_name=contact.name)) or "(no messages)"
        reason = f" ({conversation.reason})" if conversation.reason else ""
        ticket = await self.api.create_ticket(
            {
                "subject": f"WhatsApp: {_display_name(contact)}",
                "comment": {"body": f"Handed over on WhatsApp{reason}.\n\n{transcript}", "public": False},
                "requester_id": requester_id,
                "external_id": f"wahub:conversation:{conversation.id}:{conversation.change_id}",
                "tags": list(self.config["tags"]),
            }
        )
        _LOGGER.info("conversation %d is Zendesk ticket %s", conversation.id, ticket["id"])
        data = {
            "requester_id": requester_id,
            "upto": upto,
            "transcript_until": max((line.at for line in lines), default=0.0),
            "last_message_id": None,
        }
        await self.link(TICKET, conversation.id, str(ticket["id"]), data=data)

    async def on_message(self, message: CRMMessage) -> None:
        """A message the user wrote while the conversation has a ticket, as the requester's public comment."""
        await self._add_message(message, retried=False)

    async def _add_message(self, message: CRMMessage, *, retried: bool) -> None:
        if message.direction != "in" or message.conversation_id is None:
            return
        found = await self.host.storage.deliveries.linked(self.name, TICKET, message.conversation_id)
        if found is None:
            return
        ticket_id, data = int(found[0]), dict(found[1] or {})
        if message.id <= int(data.get("last_message_id") or 0) or await self._in_transcript(message, data):
            return
        body = message.text.strip()
        if message.type not in ("text", "button", "interactive"):  # media: its kind, then its caption
            body = f"[{message.type}] {body}".strip()
        body = marked(body or f"[{message.type}]", message.id)
        requester_id = int(data["requester_id"])
        # A try that failed, or was cut off, may have added it before its answer was lost.
        if not ((retried or data.get("adding") == message.id) and await self._added_before(ticket_id, message.id)):
            await self.link(TICKET, message.conversation_id, str(ticket_id), data={**data, "adding": message.id})
            try:
                await self.api.add_comment(ticket_id, body, public=True, author_id=requester_id)
            except DeliveryFailed as exc:
                if exc.status != 422:
                    raise
                ticket_id = await self._follow_up(ticket_id, message, body, requester_id)
        data.update(last_message_id=message.id, adding=None)
        await self.link(TICKET, message.conversation_id, str(ticket_id), data=data)

    async def _in_transcript(self, message: CRMMessage, data: Mapping[str, Any]) -> bool:
        """Whether the ticket's first comment, its transcript, has ``message``."""
        if message.id > int(data.get("upto") or 0):
            return False
        until = data.get("transcript_until")
        if until is None:  # a ticket opened before transcripts were bounded: all it had then
            return True
        row = await self.host.storage.messages.get(message.id)
        return row is not None and float(row["created_at"]) <= float(until)

    async def _added_before(self, ticket_id: int, message_id: int) -> bool:
        """Whether a comment among the ticket's latest is marked as ``message_id``'s."""
        try:
            comments = await self.api.latest_comments(ticket_id)
        except DeliveryFailed as exc:
            if exc.status == 404:
                return False
            raise
        return any(marked_message(comment) == message_id for comment in comments)

    async def _follow_up(self, closed_id: int, message: CRMMessage, body: str, requester_id: int) -> int:
        """A new ticket for ``message`` after ticket ``closed_id`` refused it (closed, or full)."""
        assert message.conversation_id is not None
        ticket: dict[str, Any] = {
            "subject": f"WhatsApp: {_display_name(message.contact)} (follow-up of #{closed_id})",
            "comment": {"body": body, "public": True, "author_id": requester_id},
            "requester_id": requester_id,
            "external_id": f"wahub:conversation:{message.conversation_id}:message:{message.id}",
            "tags": list(self.config["tags"]),
        }
        if (await self.api.ticket(closed_id)).get("status") == "closed":  # Zendesk links follow-ups of closed ones only
            ticket["via_followup_source_id"] = closed_id
        ticket = await self.api.create_ticket(ticket)
        await self.host.storage.deliveries.unlink(self.name, REPLIES, closed_id)
        _LOGGER.info(
            "ticket %d takes no comments; conversation %d continues on ticket %s",
            closed_id,
            message.conversation_id,
            ticket["id"],
        )
        return int(ticket["id"])

    async def log_conversation(self, conversation: CRMConversation) -> None:
        """Resolved in wahub: solve the ticket with a private note, and unlink it."""
        found = await self.linked(TICKET, conversation.id)
        if found is None:
            return
        ticket_id = int(found)
        if conversation.actor != f"zendesk:{self.name}":  # Zendesk solved it: nothing to tell it
            await self._solve(ticket_id, conversation)
        await self.replies.unlink(conversation.id, ticket_id)

    async def _solve(self, ticket_id: int, conversation: CRMConversation) -> None:
        try:
            ticket = await self.api.ticket(ticket_id)
        except DeliveryFailed as exc:
            if exc.status == 404:
                return
            raise
        if ticket.get("status") in DONE_STATUSES:
            return
        reason = f": {conversation.reason}" if conversation.reason else ""
        changes = {
            "status": "solved",
            "comment": {"body": f"Resolved in wahub by {conversation.actor}{reason}.", "public": False},
            # Zendesk solves only assigned tickets; nobody took this one.
            "assignee_id": ticket.get("assignee_id") or await self.api.api_user_id(),
        }
        try:
            await self.api.update_ticket(ticket_id, changes)
        except DeliveryFailed as exc:
            if exc.status != 422:  # closed meanwhile: nothing left to solve
                raise

    async def _latest_message_id(self, conversation_id: int) -> int:
        page = await self.host.storage.conversations.messages(conversation_id, limit=1)
        return int(page.items[0]["id"]) if page.items else 0

    # -- Zendesk to wahub ------------------------------------------------------------

    async def webhook(self, request: web.Request) -> web.Response:
        """``POST /crm/<name>/webhook``: a signed notice from a Zendesk trigger."""
        data = await signed_json(request, SIGNATURE, str(self.config["webhook_secret"]), entry=self.name)
        try:
            notice = read_notice(data)
        except BodyRefused as exc:
            return error(400, "invalid_body", str(exc))
        try:
            async with asyncio.timeout(min(float(self.config["timeout"]), WEBHOOK_SECONDS)):
                done = await self.replies.sync(notice)
        except DeliveryFailed as exc:
            _LOGGER.warning("ticket %d could not be read from Zendesk: %s", notice.ticket_id, exc.reason)
            answer = error(503, "zendesk_unavailable", exc.reason)
        except TimeoutError:
            answer = error(503, "zendesk_unavailable", "Zendesk did not answer in time")
        else:
            return json_response(done)
        answer.headers["Retry-After"] = "10"
        return answer


def _display_name(contact: CRMContact) -> str:
    return contact.name or contact.phone or f"contact {contact.id}"


def _clipped(text: str) -> str:
    """``text``, its start left out if it is longer than a ticket comment may be."""
    if len(text) <= MAX_TRANSCRIPT:
        return text
    return "[earlier messages left out]\n" + text[-MAX_TRANSCRIPT:].split("\n", 1)[-1]


@hookimpl
def register_crm_backends() -> list[type[CRMBackend]]:
    return [ZendeskBackend]
