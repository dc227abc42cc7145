"""Conversation owners in storage, on a real SQLite file and a real PostgreSQL:
which changes are allowed, that each is recorded once, and that a bot turn
whose owner changed is dropped."""

from __future__ import annotations

import time

import pytest

from tests.helpers import inbox_row
from wahub.core.models import InboundMessage, OutgoingMessage, Owner
from wahub.core.storage.conversations import Transition, TurnEnd
from wahub.core.storage.store import Storage

USER = "15551234567"


def inbound(external_id: str) -> InboundMessage:
    return InboundMessage(
        provider="sandbox",
        external_id=external_id,
        sender=USER,
        type="text",
        content={"text": {"body": "hi"}},
        timestamp=time.time(),
    )


async def conversation(storage: Storage, external_id: str = "m1") -> int:
    return (await storage.messages.record_inbound(inbound(external_id))).conversation_id


async def test_owners_change_only_along_the_allowed_changes(storage: Storage) -> None:
    conversation_id = await conversation(storage)
    api = Transition("queued", "api", "asked by the shop")

    queued = await storage.conversations.change_owner(conversation_id, api, now=10.0)
    assert queued is not None and queued[0].owner == Owner.QUEUED and queued[1].from_owner == Owner.BOT
    assert await storage.conversations.change_owner(conversation_id, api, now=11.0) is None  # already queued
    ann = Transition("assigned", "operator:ann", "took it", assignee="ann")
    assert await storage.conversations.change_owner(conversation_id, ann, now=12.0) is not None
    assert await storage.conversations.change_owner(conversation_id, ann, now=13.0) is None  # ann has it
    bob = Transition("assigned", "operator:bob", "given to bob", assignee="bob")
    given = await storage.conversations.change_owner(conversation_id, bob, now=14.0)
    assert given is not None and given[0].assignee == "bob"
    resolved = await storage.conversations.change_owner(
        conversation_id, Transition("resolved", "operator:bob", "done"), now=15.0
    )
    assert resolved is not None and (resolved[0].owner, resolved[0].assignee) == (Owner.BOT, None)
    assert await storage.conversations.change_owner(conversation_id, Transition("released", "x", ""), now=16.0) is None

    events = await storage.conversations.events(conversation_id)
    assert [(e.change, e.from_owner, e.to_owner, e.actor, e.at) for e in events] == [
        ("queued", "bot", "queued", "api", 10.0),
        ("assigned", "queued", "assigned", "operator:ann", 12.0),
        ("assigned", "assigned", "assigned", "operator:bob", 14.0),
        ("resolved", "assigned", "bot", "operator:bob", 15.0),
    ]
    assert (await storage.conversations.owned(conversation_id)).version == 4


async def test_a_change_with_an_event_key_is_recorded_once(storage: Storage) -> None:
    conversation_id = await conversation(storage)
    phone = Transition("phone", "phone", "answered from the app", event_key="echo:sandbox:e1")
    assert await storage.conversations.change_owner(conversation_id, phone, now=1.0) is not None
    await storage.conversations.change_owner(conversation_id, Transition("resolved", "api", ""), now=2.0)
    # The same echo again (a re-run after a crash) changes nothing.
    assert await storage.conversations.change_owner(conversation_id, phone, now=3.0) is None
    assert (await storage.conversations.owned(conversation_id)).owner == Owner.BOT


async def test_a_change_limited_to_some_owners_or_one_holder_is_checked_under_the_lock(storage: Storage) -> None:
    conversation_id = await conversation(storage)
    change = storage.conversations.change_owner
    await change(conversation_id, Transition("queued", "rule", "asked"), now=1.0)
    takeable = frozenset({Owner.QUEUED, Owner.BOT})
    ann = Transition("assigned", "operator:ann", "taken", assignee="ann", only_from=takeable)
    bob = Transition("assigned", "operator:bob", "taken", assignee="bob", only_from=takeable)
    assert await change(conversation_id, ann, now=2.0) is not None
    # Bob read "queued" a moment ago; his take comes after Ann's and takes nothing.
    assert await change(conversation_id, bob, now=3.0) is None
    # An admin gives it to Bob; Ann's release, asked while it was hers, is refused.
    await change(conversation_id, Transition("assigned", "operator:admin", "given", assignee="bob"), now=4.0)
    assert await change(conversation_id, Transition("released", "operator:ann", "", held_by="ann"), now=5.0) is None
    assert await change(conversation_id, Transition("resolved", "operator:ann", "", held_by="ann"), now=6.0) is None
    done = await change(conversation_id, Transition("resolved", "operator:bob", "", held_by="bob"), now=7.0)
    assert done is not None and done[0].owner == Owner.BOT


async def test_the_quiet_return_is_checked_under_the_lock(storage: Storage) -> None:
    conversation_id = await conversation(storage)
    await storage.conversations.change_owner(conversation_id, Transition("queued", "rule", "asked"), now=100.0)
    assert await storage.conversations.quiet_since(200.0) == [conversation_id]
    # An operator writes after the job listed the conversation, before it returns it.
    await storage.conversations.note_human(conversation_id, 250.0)
    back = Transition("resolved", "system", "quiet", quiet_before=200.0)
    assert await storage.conversations.change_owner(conversation_id, back, now=300.0) is None
    assert await storage.conversations.quiet_since(200.0) == []
    assert await storage.conversations.change_owner(conversation_id, back, now=300.0) is None
    later = Transition("resolved", "system", "quiet", quiet_before=260.0)
    assert await storage.conversations.change_owner(conversation_id, later, now=300.0) is not None


@pytest.mark.parametrize("handoff", [None, ("rule", "asked for a person")])
async def test_a_bot_turn_whose_owner_changed_is_dropped(storage: Storage, handoff: tuple[str, str] | None) -> None:
    message = inbound("m1")
    record = await storage.messages.record_inbound(message)
    started = await storage.conversations.owned(record.conversation_id)
    await storage.insert_inbox([inbox_row("m1")])
    [row] = await storage.claim_inbox(1, lease_seconds=60)
    # A person takes the conversation while the bot works on its answer.
    took = Transition("assigned", "operator:ann", "took it", assignee="ann")
    await storage.conversations.change_owner(record.conversation_id, took, now=time.time())

    finished = await storage.finish_with_replies(
        row,
        message,
        [OutgoingMessage.text(USER, "Hello!")],
        contact_id=record.contact_id,
        conversation_id=record.conversation_id,
        turn=TurnEnd(started.version, record.message_id, handoff),
    )

    assert (finished.created, finished.dropped, finished.change) == (0, True, None)
    page = await storage.conversations.messages(record.conversation_id)
    dropped = next(item for item in page.items if item["direction"] == "out")
    assert (dropped["status"], dropped["error_code"]) == ("failed", "owner_changed")
    assert "owner changed" in dropped["error_reason"]
    owned = await storage.conversations.owned(record.conversation_id)
    assert (owned.owner, owned.answered_through) == (Owner.ASSIGNED, record.message_id)


async def test_a_bot_turn_under_its_owner_queues_and_hands_off_in_one_transaction(storage: Storage) -> None:
    message = inbound("m1")
    record = await storage.messages.record_inbound(message)
    started = await storage.conversations.owned(record.conversation_id)
    await storage.insert_inbox([inbox_row("m1")])
    [row] = await storage.claim_inbox(1, lease_seconds=60)

    finished = await storage.finish_with_replies(
        row,
        message,
        [OutgoingMessage.text(USER, "Connecting you.")],
        contact_id=record.contact_id,
        conversation_id=record.conversation_id,
        turn=TurnEnd(started.version, record.message_id, ("rule", "asked for a person")),
    )

    assert finished.created == 1 and not finished.dropped
    assert finished.change is not None and finished.change[1].change == "queued"
    assert (await storage.conversations.owned(record.conversation_id)).owner == Owner.QUEUED
