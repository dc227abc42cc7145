"""What a helpdesk's agent does in wahub: a reply sent to the WhatsApp user
as a person's message (free text inside the 24-hour window; outside it only
the template the agent chose), and resolving the conversation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from wahub.core.conversations.ownership import change_owner
from wahub.core.errors import SendRefused
from wahub.core.hub import Hub
from wahub.core.models import Conversation, OutgoingMessage, Owner
from wahub.core.policy.checks import Origin, window_open


@dataclass(frozen=True)
class TemplateChoice:
    """A template an agent chose for a user whose window is closed: its name,
    language, and body parameters in order."""

    name: str
    language: str
    parameters: Sequence[str] = ()

    def message(self, to: str) -> OutgoingMessage:
        components = (
            [{"type": "body", "parameters": [{"type": "text", "text": text} for text in self.parameters]}]
            if self.parameters
            else []
        )
        template = {"name": self.name, "language": {"code": self.language}, "components": components}
        return OutgoingMessage(to=to, type="template", content={"template": template})


async def agent_reply(
    hub: Hub,
    conversation: Conversation,
    text: str,
    *,
    idempotency_key: str,
    template: TemplateChoice | None = None,
    actor: str = "helpdesk",
) -> int:
    """Queue an agent's ``text`` to the conversation's user and return the
    message's id; outside the window ``template`` goes instead, else
    ``SendRefused("window_closed")``. The same ``idempotency_key`` (the
    helpdesk's id of the reply) never sends twice. A conversation the bot
    still had is handed to a person by ``actor`` first, so the bot falls
    silent while the agent answers (a resolve gives it back)."""
    existing = await hub.storage.messages.find_by_key(idempotency_key)
    if existing is not None:  # this reply was sent before (a webhook delivered twice)
        return existing
    page = await hub.storage.conversations.list(only=conversation.id, limit=1)
    last_inbound = page.items[0]["last_inbound_at"] if page.items else None
    now = hub.clock.time()
    origin: Origin
    if window_open(last_inbound, now):
        message, origin = OutgoingMessage.text(conversation.address, text), "reply"
    elif template is not None:
        message, origin = template.message(conversation.address), "business"
    else:
        raise SendRefused(
            "window_closed",
            "the user last wrote more than 24 hours ago: only a template can be sent (choose one on the ticket)",
        )
    message_id = await hub.send(message, provider=conversation.provider, idempotency_key=idempotency_key, origin=origin)
    if conversation.owner == Owner.BOT:
        await change_owner(hub, conversation.id, "queued", actor=actor, reason=f"{actor} answered")
    await hub.storage.conversations.note_human(conversation.id, now)
    return message_id


async def resolve(hub: Hub, conversation_id: int, *, actor: str, reason: str) -> bool:
    """Resolve the conversation (back to the bot); False when it was not with a person."""
    return await change_owner(hub, conversation_id, "resolved", actor=actor, reason=reason) is not None
