"""The steps of one inbox event, chosen by its type.

A message: its file fetched, recorded in the history, an opt-out or opt-in
keyword answered, the ``inbound_message`` observers, routing, and the replies
checked by the policy and queued in the row's own transaction. A status: its
meaning read by its provider (a failed one may teach a lesson), then applied.
A marketing preference: into the consent ledger. An account event: to its
provider and the ``account_update`` observers. Anything else is kept as it
came. Every step may run again after a crash: what it writes is keyed by the
event.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from wahub.core.errors import SendRefused, Unprocessable
from wahub.core.hub import Hub
from wahub.core.inbound.consent import handle_keyword, record_preference
from wahub.core.inbound.media import attach_inbound_media
from wahub.core.models import (
    AccountEvent,
    Conversation,
    Event,
    InboundMessage,
    MessageStatus,
    OutgoingMessage,
    Owner,
    PreferenceEvent,
    StatusEvent,
    event_from_json,
)
from wahub.core.plugins import call_hook
from wahub.core.policy.lessons import learn_from_refusal
from wahub.core.privacy import mask_address
from wahub.core.storage.inbox import InboxRow
from wahub.core.storage.messages import Refusal
from wahub.hookspecs import Answer, Turn

_LOGGER = logging.getLogger(__name__)

#: Tries at fetching an inbound message's file before the message is kept without it.
MEDIA_TRIES = 3
#: Seconds a row waiting for an older row of its sender is put off.
DEFER_SECONDS = 1.0


class Deferred(Exception):
    """The row waits for an older row of the same user under another contact key."""


Step = Callable[[Hub, InboxRow, Any], Awaitable[None]]


async def run_steps(hub: Hub, row: InboxRow) -> None:
    """Run the steps of the row's event; ``Unprocessable`` when the row cannot be read."""
    if row.damage is not None:
        raise Unprocessable(f"the stored row cannot be read: {row.damage}")
    try:
        event = event_from_json(row.payload)
    except (KeyError, TypeError, ValueError) as exc:
        raise Unprocessable(f"the payload is no {row.kind!r} event: {type(exc).__name__}: {exc}") from exc
    await STEPS.get(type(event), unsupported)(hub, row, event)


async def message(hub: Hub, row: InboxRow, message: InboundMessage) -> None:
    await _wait_for_siblings(hub, row, message)
    message = await attach_inbound_media(hub, message, last_try=row.attempts >= MEDIA_TRIES)
    record = await hub.storage.messages.record_inbound(message)
    # An opt-out/opt-in keyword is answered with its confirmation, not routed.
    replies = await handle_keyword(hub, message)
    await call_hook(hub, "inbound_message", hub=hub, message=message)
    if replies is None:
        route = hub.pm.hook.route_message(hub=hub, message=message)
        conversation = Conversation(
            record.conversation_id, message.provider, record.contact_id, message.sender, Owner.BOT, None, 0.0
        )
        answer = await route.respond(hub, Turn((message,), conversation, "en")) if route is not None else []
        replies = answer.replies if isinstance(answer, Answer) else answer
    checked = await _checked(hub, message, replies)
    finished = await hub.storage.finish_with_replies(
        row,
        message,
        checked,
        contact_id=record.contact_id,
        conversation_id=record.conversation_id,
        now=hub.clock.time(),
    )
    if finished.created:
        hub.outbox_ready.set()


async def status(hub: Hub, row: InboxRow, status: StatusEvent) -> None:
    provider = hub.providers.get(status.provider)
    if status.status == MessageStatus.FAILED and status.error_code and provider is not None:
        meaning = provider.classify_error(status.error_code)
        if not status.error_title:
            status = dataclasses.replace(status, error_title=meaning.reason)
        if meaning.lesson is not None:
            # Learnt before the failure shows, so whoever sees it failed sees the lesson too.
            sent = await hub.storage.messages.sent_message(status.provider, status.message_id)
            if sent is not None:
                await learn_from_refusal(
                    hub.storage,
                    status.provider,
                    sent,
                    meaning.lesson,
                    code=status.error_code,
                    evidence=status.message_id,
                )
    await hub.storage.messages.apply_status(status)
    hub.metrics.statuses.labels(status.provider, status.status).inc()
    await call_hook(hub, "status_update", hub=hub, status=status)
    await hub.storage.finish_inbox(row)


async def preference(hub: Hub, row: InboxRow, event: PreferenceEvent) -> None:
    await record_preference(hub, event)
    await hub.storage.finish_inbox(row)


async def account(hub: Hub, row: InboxRow, event: AccountEvent) -> None:
    provider = hub.providers.get(event.provider)
    if provider is not None:
        await provider.account_event(event)
    await call_hook(hub, "account_update", hub=hub, event=event)
    await hub.storage.finish_inbox(row)


async def unsupported(hub: Hub, row: InboxRow, _event: Event) -> None:
    _LOGGER.info("kept an unsupported %s event (inbox row %d)", row.provider, row.id)
    await hub.storage.finish_inbox(row)


#: The steps of each event type; an event of another type is kept as it came.
STEPS: dict[type[Event], Step] = {
    InboundMessage: message,
    StatusEvent: status,
    PreferenceEvent: preference,
    AccountEvent: account,
}


async def _wait_for_siblings(hub: Hub, row: InboxRow, message: InboundMessage) -> None:
    """Keep a user's events in order across its ids: a user who hid their
    phone number sends with its BSUID alone (another contact key) and
    waits for its older events under the wa_id, and the other way round."""
    if await hub.storage.inbox_waits_for_sibling(row, message.identities):
        await hub.storage.defer_inbox(row, time.time() + DEFER_SECONDS)
        raise Deferred


async def _checked(
    hub: Hub, message: InboundMessage, replies: list[OutgoingMessage]
) -> list[OutgoingMessage | Refusal]:
    """The replies as the policy adapts them; a refused reply becomes a
    ``Refusal``, kept in the history as a failed message with its reason."""
    provider = hub.providers.get(message.provider)
    if provider is None:
        return list(replies)
    checked: list[OutgoingMessage | Refusal] = []
    for reply in replies:
        try:
            checked.append((await hub.policy.check(provider, reply, origin="reply")).message)
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
