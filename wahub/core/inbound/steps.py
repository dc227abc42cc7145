"""The steps of one inbox event, chosen by its type.

A message: the wait for the rest of its sender's burst, its file fetched,
recorded in the history, an opt-out or opt-in keyword answered, the
``inbound_message`` observers, then the bot's turn (``conversations.turns``),
its replies queued in the row's own transaction. An echo of the business app:
kept as a sent message, and a person owns the conversation. A status: its
meaning read by its provider (a failed one may teach a lesson), then applied.
A marketing preference: into the consent ledger. An account event: to its
provider and the ``account_update`` observers. Anything else is kept as it
came. Every step may run again after a crash: what it writes is keyed by the
event.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from wahub.core.conversations.ownership import change_owner
from wahub.core.conversations.turns import checked_replies, take_turn
from wahub.core.errors import LeaseLost, Unprocessable
from wahub.core.hub import Hub
from wahub.core.inbound.consent import handle_keyword, is_keyword, record_preference
from wahub.core.inbound.media import attach_inbound_media
from wahub.core.models import (
    AccountEvent,
    EchoMessage,
    Event,
    InboundMessage,
    MessageStatus,
    PreferenceEvent,
    StatusEvent,
    event_from_json,
)
from wahub.core.plugins import call_hook
from wahub.core.policy.lessons import learn_from_refusal
from wahub.core.storage.inbox import InboxRow

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
    later = await _burst_goes_on(hub, row, message)
    message = await attach_inbound_media(hub, message, last_try=row.attempts >= MEDIA_TRIES)
    record = await hub.storage.messages.record_inbound(message)
    # An opt-out/opt-in keyword is answered with its confirmation, whoever owns the conversation.
    confirmation = await handle_keyword(hub, message, record.contact_id)
    await call_hook(hub, "inbound_message", hub=hub, message=message)
    if confirmation is None and not later:
        await take_turn(hub, row, message, record)
        return
    finished = await hub.storage.finish_with_replies(
        row,
        message,
        await checked_replies(hub, message, confirmation or []),
        contact_id=record.contact_id,
        conversation_id=record.conversation_id,
        now=hub.clock.time(),
        answered_through=record.message_id if confirmation is not None else None,
    )
    if finished.created:
        hub.outbox_ready.set()


async def echo(hub: Hub, row: InboxRow, echo: EchoMessage) -> None:
    """The business answered from its app: kept as a sent message, and a person owns the conversation."""
    record = await hub.storage.messages.record_echo(echo)
    change = await change_owner(
        hub,
        record.conversation_id,
        "phone",
        actor="phone",
        reason="answered from the WhatsApp Business app",
        event_key=f"echo:{echo.provider}:{echo.external_id}",
    )
    if change is None:  # a person already has it: their answer keeps it from going back to the bot
        await hub.storage.conversations.note_human(record.conversation_id, hub.clock.time())
    await hub.storage.finish_inbox(row)


async def status(hub: Hub, row: InboxRow, status: StatusEvent) -> None:
    if await statuses(hub, [(row, status)]):
        raise LeaseLost(row.id)


async def statuses(hub: Hub, batch: Sequence[tuple[InboxRow, StatusEvent]]) -> list[InboxRow]:
    """Apply a batch of delivery statuses, each as if alone: read by its
    provider, all kept and applied in one transaction, then the
    ``status_update`` observers of each in turn (at least once: before the
    rows are done), then the rows marked done in one transaction. Returns the
    rows claimed again meanwhile (their lease ran out), left to that claim."""
    events = [await _read_status(hub, status) for _row, status in batch]
    await hub.storage.messages.apply_statuses(events)
    for event in events:
        hub.metrics.statuses.labels(event.provider, event.status).inc()
        await call_hook(hub, "status_update", hub=hub, status=event)
    return await hub.storage.finish_inbox_rows([row for row, _status in batch])


async def _read_status(hub: Hub, status: StatusEvent) -> StatusEvent:
    """The status with its provider's reading of a failure: the error's title
    when it came without one, and what the failure teaches the send policy."""
    provider = hub.providers.get(status.provider)
    if status.status != MessageStatus.FAILED or not status.error_code or provider is None:
        return status
    meaning = provider.classify_error(status.error_code)
    if not status.error_title:
        status = dataclasses.replace(status, error_title=meaning.reason)
    if meaning.lesson is not None:
        # Learnt before the failure shows, so whoever sees it failed sees the lesson too.
        sent = await hub.storage.messages.sent_message(status.provider, status.message_id)
        if sent is not None:
            await learn_from_refusal(
                hub.storage, status.provider, sent, meaning.lesson, code=status.error_code, evidence=status.message_id
            )
    return status


def batched_status(row: InboxRow) -> StatusEvent | None:
    """The status event of ``row`` when it can run in a batch of statuses;
    None for any other row, and for one that cannot be read (it fails alone)."""
    if row.kind != "status" or row.damage is not None:
        return None
    try:
        event = event_from_json(row.payload)
    except (KeyError, TypeError, ValueError):
        return None
    return event if isinstance(event, StatusEvent) else None


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
    EchoMessage: echo,
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


async def _burst_goes_on(hub: Hub, row: InboxRow, message: InboundMessage) -> bool:
    """Whether a later row of the contact answers this message: a later message
    of the same burst, or the business's own answer from its app. A message
    with none yet waits until ``conversations.debounce_seconds`` after it
    arrived (``Deferred``) in case more come; a keyword never waits. With no
    debounce every message is answered on its own, but a person's answer
    from the app still keeps the bot out."""
    if is_keyword(hub, message):
        return False
    wait = hub.config["conversations"]["debounce_seconds"]
    if await hub.storage.newer_row_waiting(row, ["message", "echo"] if wait > 0 else ["echo"]):
        return True
    due = row.received_at + wait
    if time.time() < due:
        await hub.storage.defer_inbox(row, due)
        # Claimed again when due, not at the claim loop's next poll.
        asyncio.get_running_loop().call_later(due - time.time(), hub.inbox_ready.set)
        raise Deferred
    return False
