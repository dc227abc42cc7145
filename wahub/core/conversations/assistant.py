"""Asking an AI backend to answer a turn.

The request carries the turn's texts, the earlier history with owner changes
as dated notes, the contact's language and the plugins' tools
(``ai_tools``). The answer's text is turned into WhatsApp formatting and
split to WhatsApp's limits; a backend that raises counts as a failed turn
(the router then sends its default reply), never as a crash of the row.
"""

from __future__ import annotations

import logging

from wahub.core.ai import AIAnswer, AIRequest, AITool
from wahub.core.conversations.formatting import split_text, whatsapp_text
from wahub.core.conversations.history import history_entries
from wahub.core.hub import Hub
from wahub.core.models import OutgoingMessage
from wahub.core.plugins import report_exception
from wahub.hookspecs import Answer, Turn

_LOGGER = logging.getLogger(__name__)

#: Earlier messages read for a request; a backend keeps as many as it is configured to.
HISTORY_MESSAGES = 50


async def ask_assistant(hub: Hub, turn: Turn, name: str) -> Answer:
    """The answer of the AI backend ``name`` to ``turn``, as replies and an optional hand-off."""
    backend = hub.ai[name]
    request = await build_request(hub, turn)
    try:
        result = await backend.reply(request)
    except Exception as exc:  # noqa: BLE001 - a failed turn, answered by the router's default reply
        _LOGGER.warning("AI backend %r failed on conversation %d: %r", name, turn.conversation.id, exc)
        report_exception(hub, exc, {"ai": name, "conversation_id": turn.conversation.id})
        result = AIAnswer(failed=f"{type(exc).__name__}: {exc}")
    if result.failed:
        _LOGGER.info("AI backend %r gave no answer on conversation %d: %s", name, turn.conversation.id, result.failed)
    parts = split_text(whatsapp_text(result.text)) if result.text else []
    replies = [OutgoingMessage.text(turn.message.sender, part) for part in parts]
    return Answer(replies, handoff=result.handoff, actor=f"ai:{result.answered_by or name}")


async def build_request(hub: Hub, turn: Turn) -> AIRequest:
    conversation = turn.conversation
    rows, changes = await hub.storage.conversations.history(
        conversation.id, leave_out=[message.external_id for message in turn.messages], limit=HISTORY_MESSAGES
    )
    tools: list[AITool] = [tool for offered in hub.pm.hook.ai_tools(hub=hub) for tool in offered or ()]
    return AIRequest(
        conversation_id=conversation.id,
        contact=conversation.address,
        contact_name=conversation.contact_name,
        language=turn.language,
        messages=[text for text in (message.text() or f"[{message.type}]" for message in turn.messages) if text],
        history=history_entries(rows, changes),
        tools=tools,
        now=hub.clock.time(),
    )
