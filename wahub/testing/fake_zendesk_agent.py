"""The agents' and the triggers' side of the fake Zendesk
(``wahub.testing.fake_zendesk``): what an agent does on a ticket, and the
signed webhooks Zendesk's triggers post about it.

``ZendeskAgentSide`` is a part of ``FakeZendesk``: ``agent_reply`` and
``solve`` do what an agent does, then post what the triggers of
docs/integrations/zendesk.md post, signed as Zendesk signs
(``X-Zendesk-Webhook-Signature`` and its timestamp); ``post_webhook`` sends
any body, signed or not. With ``notify_api_comments`` the comment trigger
also fires, in the background as Zendesk's do, for the comments added
through the API (a trigger left without its "Update via is not Web service
(API)" condition): wahub must send none of them back. Every webhook's
answer is kept in ``webhooks``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

__all__ = ["COMMENT_LIMIT", "WebhookAnswer", "ZendeskAgentSide", "signed_headers", "zendesk_time"]

#: Comments a ticket takes at most.
COMMENT_LIMIT = 5000


def zendesk_time() -> str:
    """Now, as Zendesk writes times."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def signed_headers(secret: str, body: bytes, *, timestamp: str | None = None) -> dict[str, str]:
    """The headers Zendesk signs a webhook ``body`` with (stamped now unless ``timestamp``)."""
    stamp = timestamp or dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    digest = hmac.new(secret.encode(), stamp.encode() + body, hashlib.sha256).digest()
    return {
        "X-Zendesk-Webhook-Signature": base64.b64encode(digest).decode(),
        "X-Zendesk-Webhook-Signature-Timestamp": stamp,
        "Content-Type": "application/json",
    }


class _AddComment(Protocol):
    def __call__(self, ticket_id: int, body: str, *, public: bool, author_id: int) -> dict[str, Any]:
        """Store a comment by ``author_id`` on the ticket and return it."""


@dataclass(frozen=True)
class WebhookAnswer:
    """What wahub answered a webhook."""

    status: int
    body: Any
    raw: bytes
    headers: dict[str, str]


class ZendeskAgentSide:
    """Agents' actions and triggers' webhooks, for ``FakeZendesk`` (which holds what they use)."""

    webhook_secret: str
    webhook_url: str | None
    notify_api_comments: bool
    agent: int
    tickets: dict[int, dict[str, Any]]
    comments: dict[int, list[dict[str, Any]]]
    webhooks: list[WebhookAnswer]
    _http: aiohttp.ClientSession | None
    _tasks: set[asyncio.Task[None]]

    #: Store a comment on a ticket and return it (``FakeZendesk._comment``).
    _comment: _AddComment

    def public_comments(self, ticket_id: int) -> list[dict[str, Any]]:
        return [comment for comment in self.comments[ticket_id] if comment["public"]]

    def private_comments(self, ticket_id: int) -> list[dict[str, Any]]:
        return [comment for comment in self.comments[ticket_id] if not comment["public"]]

    def set_field(self, ticket_id: int, field_id: int, value: Any) -> None:
        """Set a custom field of the ticket, as an agent does in the ticket's form."""
        fields = [f for f in self.tickets[ticket_id]["custom_fields"] if f["id"] != field_id]
        self.tickets[ticket_id]["custom_fields"] = [*fields, {"id": field_id, "value": value}]

    def set_status(self, ticket_id: int, status: str) -> None:
        """Change the status without a webhook (an automation closing a ticket, say)."""
        self.tickets[ticket_id]["status"] = status

    def fill(self, ticket_id: int, count: int = COMMENT_LIMIT) -> None:
        """Give the ticket private comments until it has ``count``."""
        while len(self.comments[ticket_id]) < count:
            self._comment(ticket_id, "filler", public=False, author_id=self.agent)

    async def agent_reply(
        self, ticket_id: int, body: str, *, public: bool = True, author_id: int | None = None, notify: bool = True
    ) -> int:
        """An agent's comment (``agent`` unless ``author_id``); the ticket is then
        open and assigned to them. With ``notify`` the comment trigger's webhook is posted."""
        author = author_id or self.agent
        comment = self._comment(ticket_id, body, public=public, author_id=author)
        ticket = self.tickets[ticket_id]
        ticket["assignee_id"] = ticket["assignee_id"] or author
        ticket["status"] = "open" if ticket["status"] == "new" else ticket["status"]
        if notify:
            await self.post_webhook({"type": "comment", "ticket_id": str(ticket_id)})
        return int(comment["id"])

    async def solve(self, ticket_id: int, *, notify: bool = True) -> None:
        """An agent solves the ticket; with ``notify`` the solved trigger's webhook is posted."""
        ticket = self.tickets[ticket_id]
        ticket.update(status="solved", assignee_id=ticket["assignee_id"] or self.agent, updated_at=zendesk_time())
        if notify:
            await self.post_webhook({"type": "solved", "ticket_id": str(ticket_id)})

    async def post_webhook(
        self,
        body: Mapping[str, Any] | bytes,
        *,
        secret: str | None = None,
        timestamp: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> WebhookAnswer:
        """Post ``body`` to ``webhook_url``, signed with ``secret`` (the webhook's
        own by default) stamped ``timestamp`` (now), or with exactly ``headers``."""
        assert self._http is not None and self.webhook_url, "start the fake and set webhook_url first"
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        sent = (
            dict(headers)
            if headers is not None
            else signed_headers(secret or self.webhook_secret, raw, timestamp=timestamp)
        )
        async with self._http.post(self.webhook_url, data=raw, headers=sent) as response:
            text = await response.read()
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = None
            answer = WebhookAnswer(response.status, parsed, raw, sent)
        self.webhooks.append(answer)
        return answer

    async def resend_last_webhook(self) -> WebhookAnswer:
        """Post the last webhook again, byte for byte (a retry, or a duplicate invocation)."""
        last = self.webhooks[-1]
        return await self.post_webhook(last.raw, headers=last.headers)

    def api_commented(self, ticket_id: int) -> None:
        """A comment was added through the API: with ``notify_api_comments``, the
        comment trigger's webhook is posted in the background, as Zendesk's
        triggers run after the update they react to."""
        if not self.notify_api_comments or not self.webhook_url:
            return
        task = asyncio.get_running_loop().create_task(self._post_later(ticket_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post_later(self, ticket_id: int) -> None:
        with contextlib.suppress(aiohttp.ClientError):  # the daemon stopped meanwhile
            await self.post_webhook({"type": "comment", "ticket_id": str(ticket_id)})
