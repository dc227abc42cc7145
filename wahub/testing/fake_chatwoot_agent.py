"""The agents' and the webhooks' side of the fake Chatwoot
(``wahub.testing.fake_chatwoot``): what an agent does in a conversation,
and the signed webhooks Chatwoot sends for every message and status change,
each delivered, and answered, before whatever caused it returns.

Webhooks are signed as Chatwoot signs them (``X-Chatwoot-Signature``,
``X-Chatwoot-Timestamp``, ``X-Chatwoot-Delivery``); ``deliver_webhook``
sends any event, ``redeliver`` one again as Chatwoot's retries do. With
``webhook_content_attributes`` off, ``message_created`` webhooks leave the
messages' ``content_attributes`` out, as a Chatwoot that drops them would.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

__all__ = ["AGENT", "API_USER", "MESSAGE_TYPES", "ChatwootAgentSide", "WebhookDelivery", "chatwoot_signature"]

MESSAGE_TYPES = ("incoming", "outgoing", "activity", "template")
#: The agent whose replies ``agent_reply`` writes.
AGENT: Mapping[str, Any] = {"id": 7, "name": "Ana Agent", "available_name": "Ana Agent", "type": "user"}
#: The user whose access token the API calls carry.
API_USER: Mapping[str, Any] = {"id": 1, "name": "wahub", "available_name": "wahub", "type": "user"}


def chatwoot_signature(secret: str, timestamp: str, body: bytes) -> str:
    """``X-Chatwoot-Signature``: ``sha256=`` and the hex HMAC-SHA256 of ``"{timestamp}.{body}"``."""
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


@dataclass
class WebhookDelivery:
    """One webhook delivery: its id (reused by ``redeliver``), body, and the
    status wahub answered (None when it could not be reached)."""

    id: str
    event: str
    body: bytes
    status: int | None = None
    answer: Any = None


class ChatwootAgentSide:
    """Agents' actions and the webhooks, for ``FakeChatwoot`` (which holds what they use)."""

    account_id: int
    webhook_secret: str
    webhook_url: str | None
    webhook_content_attributes: bool
    conversations: dict[int, dict[str, Any]]
    messages: dict[int, dict[str, Any]]
    deliveries: list[WebhookDelivery]
    _ids: itertools.count[int]
    _session: aiohttp.ClientSession | None
    #: How the API shows a message and a conversation (``FakeChatwoot``'s methods).
    _message_json: Callable[[Mapping[str, Any]], dict[str, Any]]
    _conversation_json: Callable[[Mapping[str, Any]], dict[str, Any]]

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
            "message_type": kind,  # a word in webhooks, a number in the API
            "conversation": self._conversation_json(conversation),
            "account": {"id": self.account_id, "name": "Padaria Sol"},
            "inbox": {"id": conversation["inbox_id"], "name": "WhatsApp (wahub)"},
        }
        if not self.webhook_content_attributes:
            del webhook["content_attributes"]
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
