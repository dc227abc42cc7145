"""The bot's turn: the messages of a burst answered once, only while the bot
owns the conversation.

A turn starts from the latest message of a burst (the inbox worker waits
``conversations.debounce_seconds`` for more). While a person owns the
conversation, or was asked for, or answered from the business app, no route
is asked at all and the messages are marked seen. Otherwise the turn reads
the owner version, asks the routes, and hands the replies to
``Storage.finish_with_replies`` with that version: if the owner changed while
the route worked (a person took over during a slow AI call), the replies are
kept as dropped (``owner_changed``) instead of queued.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from wahub.core.conversations.ownership import announce
from wahub.core.errors import SendRefused
from wahub.core.hub import Hub
from wahub.core.models import Conversation, InboundMessage, OutgoingMessage, Owner
from wahub.core.privacy import mask_address
from wahub.core.storage.conversations import TurnEnd, TurnStart
from wahub.core.storage.inbox import InboxRow
from wahub.core.storage.messages import InboundRecord, Refusal
from wahub.core.storage.policy import ContactContext
from wahub.hookspecs import Answer, Turn

_LOGGER = logging.getLogger(__name__)

#: At most this many messages of a burst go into one turn.
MAX_TURN_MESSAGES = 20
#: How sure detection must be to give a contact a language, and to change one
#: it detected before: a short "hi menu" must not turn an English speaker Spanish.
FIRST_DETECTION, CHANGED_DETECTION = 0.6, 0.9


async def take_turn(hub: Hub, row: InboxRow, message: InboundMessage, record: InboundRecord) -> None:
    """Answer the turn that ``message`` ends (or mark it seen, when a person owns
    the conversation), finishing its inbox row in the same transaction."""
    start = await hub.storage.conversations.turn_start(
        record.conversation_id, record.message_id, limit=MAX_TURN_MESSAGES
    )
    owned = start.owned
    # A person owns it, or a later turn answered this message already (it ran
    # again after giving up, or came again after its inbox row was purged).
    covered = owned.answered_through is not None and owned.answered_through >= record.message_id
    if owned.owner != Owner.BOT or covered:
        await hub.storage.finish_with_replies(
            row, message, [], **_ids(record), now=hub.clock.time(), answered_through=record.message_id
        )
        hub.metrics.bot_turns.labels("-", "silent").inc()
        return
    turn = await _turn(hub, message, record, start, first_contact=owned.answered_through is None)
    route = hub.pm.hook.route_message(hub=hub, message=message)
    answer = await route.respond(hub, turn) if route is not None else Answer()
    if not isinstance(answer, Answer):
        answer = Answer(list(answer))
    handoff = (answer.actor, answer.handoff) if answer.handoff else None
    finished = await hub.storage.finish_with_replies(
        row,
        message,
        await checked_replies(hub, message, answer.replies, dataclasses.replace(start.contact, language=turn.language)),
        **_ids(record),
        now=hub.clock.time(),
        turn=TurnEnd(owned.version, record.message_id, handoff),
    )
    handler = route.handler if route is not None else "-"
    if finished.dropped:
        _LOGGER.info(
            "conversation %d: the bot's answer was dropped, a person took over meanwhile", record.conversation_id
        )
    outcome = "dropped" if finished.dropped else "handoff" if handoff else "answered" if answer.replies else "silent"
    hub.metrics.bot_turns.labels(handler, outcome).inc()
    if finished.created:
        hub.outbox_ready.set()
    if finished.change is not None:
        await announce(hub, *finished.change)


def _ids(record: InboundRecord) -> dict[str, Any]:
    return {"contact_id": record.contact_id, "conversation_id": record.conversation_id}


async def _turn(
    hub: Hub, message: InboundMessage, record: InboundRecord, start: TurnStart, *, first_contact: bool
) -> Turn:
    earlier = tuple(_inbound(message, row) for row in start.messages if row["id"] != record.message_id)
    conversation = start.conversation
    messages = (*earlier, message)
    language = await _language(hub, conversation, messages)
    conversation = dataclasses.replace(conversation, language=language)
    return Turn(messages, conversation, language, first_contact=first_contact)


def _inbound(latest: InboundMessage, row: dict[str, Any]) -> InboundMessage:
    """An earlier stored message of the burst, as the routes see messages."""
    body = dict(row["body"])
    kind = str(body.pop("type", row["type"]))
    return InboundMessage(
        provider=latest.provider,
        external_id=str(row["provider_message_id"]),
        sender=latest.sender,
        type=kind,
        content=body,
        timestamp=float(row["created_at"]),
        sender_name=latest.sender_name,
        identities=latest.identities,
    )


async def _language(hub: Hub, conversation: Conversation, messages: tuple[InboundMessage, ...]) -> str:
    """The contact's language: as set by a person, else detected from the turn's
    texts (and kept), else the one detected before, else ``wahub.language``."""
    language = conversation.language
    if not conversation.language_set:
        text = " ".join(message.text() for message in messages)
        detected = hub.detect_language(text, CHANGED_DETECTION if language else FIRST_DETECTION)
        if detected is not None and detected != language:
            await hub.storage.contacts.detected_language(conversation.contact_id, detected)
            language = detected
    return language or str(hub.config["wahub"]["language"])


async def checked_replies(
    hub: Hub, message: InboundMessage, replies: list[OutgoingMessage], sender: ContactContext | None = None
) -> list[OutgoingMessage | Refusal]:
    """The replies as the policy adapts them; a refused reply becomes a
    ``Refusal``, kept in the history as a failed message with its reason.
    ``sender`` is the message's sender as the policy sees it, if just read."""
    provider = hub.providers.get(message.provider)
    if provider is None:
        return list(replies)
    checked: list[OutgoingMessage | Refusal] = []
    for reply in replies:
        try:
            contact = sender if reply.to == message.sender else None
            checked.append((await hub.policy.check(provider, reply, origin="reply", contact=contact)).message)
        except SendRefused as exc:
            # The reason's text names the contact's number: it goes into the stored row, not the log.
            _LOGGER.warning(
                "reply to %s from %s refused (%s): kept as a failed message",
                message.external_id,
                mask_address(message.sender),
                exc.reason,
            )
            hub.metrics.send_refusals.labels(provider.name, exc.reason).inc()
            checked.append(Refusal(reply, exc.reason, str(exc)))
    return checked
