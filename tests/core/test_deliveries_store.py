"""Integration events in storage: every change point records its event in
the change's own transaction (and a rollback records none), each entry gets
only the types its filter takes, and claims hand out one contact's
deliveries one at a time, in order."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from wahub.core.models import EVENT_TYPES, InboundMessage, OutgoingMessage, StatusEvent
from wahub.core.storage.contacts import ImportedContact
from wahub.core.storage.conversations import Transition
from wahub.core.storage.events import Change, Subscription, record_changes
from wahub.core.storage.schema import deliveries
from wahub.core.storage.store import Storage

USER, OTHER = "15551234567", "15557654321"


def inbound(external_id: str, sender: str = USER, name: str = "Ana") -> InboundMessage:
    return InboundMessage("sandbox", external_id, sender, "text", {"text": {"body": "hi"}}, time.time(), name)


async def recorded(storage: Storage, endpoint: str = "all") -> list[tuple[str, int | None]]:
    async with storage.db.connect() as conn:
        rows = await conn.execute(
            sa.select(deliveries.c.type, deliveries.c.contact_id)
            .where(deliveries.c.endpoint == endpoint)
            .order_by(deliveries.c.id)
        )
        return [(row.type, row.contact_id) for row in rows]


async def test_nothing_is_recorded_without_entries(storage: Storage) -> None:
    await storage.messages.record_inbound(inbound("m1"))
    assert await recorded(storage) == []


async def test_every_change_point_records_its_event_once(storage: Storage) -> None:
    storage.db.subscriptions = (Subscription("all"),)
    first = await storage.messages.record_inbound(inbound("m1"))
    await storage.messages.record_inbound(inbound("m1"))  # a redelivery: no second event
    await storage.messages.record_inbound(inbound("m2", name="Ana Lima"))  # the profile name changed
    reply = OutgoingMessage.text(USER, "hello")
    message_id, _ = await storage.messages.enqueue(
        "sandbox", reply, idempotency_key="k1", contact_id=first.contact_id, conversation_id=first.conversation_id
    )
    await storage.outbox.mark_sent([(message_id, "sandbox", "p1")])
    await storage.messages.apply_status(StatusEvent("sandbox", "s1", "p1", "delivered", time.time()))
    await storage.messages.apply_status(StatusEvent("sandbox", "s2", "p1", "sent", time.time()))  # not newer
    conversation = first.conversation_id
    now = time.time()
    await storage.conversations.change_owner(conversation, Transition("queued", "rule", "asked"), now=now)
    await storage.conversations.change_owner(
        conversation, Transition("assigned", "operator:jo", "", assignee="jo"), now=now
    )
    await storage.conversations.change_owner(conversation, Transition("resolved", "operator:jo", "done"), now=now)
    for action in ("opt_out", "opt_in"):
        await storage.policy.record_consent(
            "sandbox", USER, action=action, scope="all", source="keyword", evidence={}, occurred_at=now
        )
    await storage.contacts.update(first.contact_id, {"tags": ["vip"]})
    types = [kind for kind, _ in await recorded(storage)]
    assert types == [
        "message.received",
        "contact.updated",
        "message.received",
        "message.sent",
        "message.status",
        "conversation.queued",
        "conversation.assigned",
        "conversation.resolved",
        "contact.opted_out",
        "contact.opted_in",
        "contact.updated",
    ]
    assert set(types) == set(EVENT_TYPES)
    assert {contact for _, contact in await recorded(storage)} == {first.contact_id}


async def test_an_event_carries_stable_ids_and_the_contact(storage: Storage) -> None:
    storage.db.subscriptions = (Subscription("all"),)
    first = await storage.messages.record_inbound(inbound("m1"))
    row = (await storage.deliveries.listing(endpoint="all"))[0][0]
    stored = await storage.deliveries.get(row["id"])
    assert stored is not None
    payload = stored["payload"]
    assert payload["type"] == "message.received"
    assert payload["timestamp"].endswith("Z")
    assert payload["data"]["message"]["id"] == first.message_id
    assert payload["data"]["message"]["provider_message_id"] == "m1"
    assert payload["data"]["message"]["text"] == "hi"
    assert payload["data"]["contact"] == {
        "id": first.contact_id,
        "provider": "sandbox",
        "address": USER,
        "phone": "+" + USER,
        "name": "Ana",
        "language": None,
        "tags": [],
    }
    assert stored["event_id"].startswith("evt_")


async def test_each_entry_gets_what_its_filter_takes(storage: Storage) -> None:
    storage.db.subscriptions = (Subscription("all"), Subscription("messages", ("message.*",)))
    first = await storage.messages.record_inbound(inbound("m1"))
    await storage.conversations.change_owner(
        first.conversation_id, Transition("queued", "rule", "asked"), now=time.time()
    )
    assert [kind for kind, _ in await recorded(storage, "messages")] == ["message.received"]
    assert [kind for kind, _ in await recorded(storage, "all")] == ["message.received", "conversation.queued"]
    one, other = (
        (await storage.deliveries.listing(endpoint="all"))[0][-1],
        (await storage.deliveries.listing(endpoint="messages"))[0][-1],
    )
    assert one["event_id"] == other["event_id"]  # one event, two deliveries


async def test_a_rolled_back_change_records_nothing(storage: Storage) -> None:
    storage.db.subscriptions = (Subscription("all"),)
    with pytest.raises(RuntimeError):
        async with storage.db.begin() as conn:
            await record_changes(conn, [Change("contact.updated", None, {})], now=time.time())
            raise RuntimeError("rolled back")
    assert await recorded(storage) == []


async def test_claims_give_each_contact_its_events_one_at_a_time_in_order(storage: Storage) -> None:
    storage.db.subscriptions = (Subscription("all"),)
    ana = await storage.messages.record_inbound(inbound("a1"))
    for external_id in ("a2", "a3"):
        await storage.messages.record_inbound(inbound(external_id))
    bo = await storage.messages.record_inbound(inbound("b1", sender=OTHER, name="Bo"))
    await storage.messages.record_inbound(inbound("b2", sender=OTHER, name="Bo"))
    now = time.time()
    claimed = await storage.deliveries.claim("all", limit=10, now=now, lease_until=now + 60)
    assert [(d.event.contact_id, d.event.data["message"]["provider_message_id"]) for d in claimed] == [
        (ana.contact_id, "a1"),
        (bo.contact_id, "b1"),
    ]
    # Leased: nothing more for these contacts until they are settled.
    assert await storage.deliveries.claim("all", limit=10, now=now, lease_until=now + 60) == []
    await storage.deliveries.delivered(claimed[0], status=200, now=now)
    await storage.deliveries.retry(claimed[1], at=now + 5, status=503, error="down", now=now)
    again = await storage.deliveries.claim("all", limit=10, now=now, lease_until=now + 60)
    assert [d.event.data["message"]["provider_message_id"] for d in again] == ["a2"]  # b1 waits; b2 behind it
    later = await storage.deliveries.claim("all", limit=10, now=now + 6, lease_until=now + 66)
    assert [(d.event.data["message"]["provider_message_id"], d.attempts) for d in later] == [("b1", 1)]


async def test_a_disabled_entry_is_not_claimed_until_enabled(storage: Storage) -> None:
    storage.db.subscriptions = (Subscription("all"),)
    await storage.messages.record_inbound(inbound("m1"))
    now = time.time()
    await storage.deliveries.disable("all", reason="410 Gone", now=now)
    assert await storage.deliveries.claim("all", limit=5, now=now, lease_until=now + 60) == []
    assert (await storage.deliveries.endpoints())["all"]["disabled"]["reason"] == "410 Gone"
    assert await storage.deliveries.enable("all", now=now)
    assert len(await storage.deliveries.claim("all", limit=5, now=now, lease_until=now + 60)) == 1


async def test_failed_deliveries_are_replayed_with_a_fresh_schedule(storage: Storage) -> None:
    storage.db.subscriptions = (Subscription("all"),)
    first = await storage.messages.record_inbound(inbound("m1"))
    now = time.time()
    (claimed,) = await storage.deliveries.claim("all", limit=5, now=now, lease_until=now + 60)
    await storage.deliveries.give_up(claimed, status=400, error="refused", now=now)
    state = await storage.deliveries.sync_state(first.contact_id)
    assert state == [
        {
            "endpoint": "all",
            "pending": 0,
            "failed": 1,
            "delivered_at": None,
            "last_error": None,
            "next_attempt_at": None,
        }
    ]
    assert await storage.deliveries.replay(endpoint="all", now=now) == [claimed.id]
    (again,) = await storage.deliveries.claim("all", limit=5, now=now, lease_until=now + 60)
    assert (again.id, again.attempts) == (claimed.id, 0)


async def test_a_contact_link_is_one_of_its_ids(storage: Storage) -> None:
    first = await storage.messages.record_inbound(inbound("m1"))
    await storage.deliveries.link("hubspot", "contact", first.contact_id, "901", now=time.time())
    await storage.deliveries.link("hubspot", "contact", first.contact_id, "901", now=time.time())
    assert await storage.deliveries.linked("hubspot", "contact", first.contact_id) == ("901", None)
    assert await storage.deliveries.linked_to("hubspot", "contact", "901") == str(first.contact_id)
    assert ("crm:hubspot", "901") in await storage.contacts.identities("sandbox", USER)


async def test_a_lapsed_claim_taken_again_is_settled_once(storage: Storage) -> None:
    storage.db.subscriptions = (Subscription("all"),)
    await storage.messages.record_inbound(inbound("m1"))
    now = time.time()
    (first,) = await storage.deliveries.claim("all", limit=1, now=now, lease_until=now + 30)
    (second,) = await storage.deliveries.claim("all", limit=1, now=now + 31, lease_until=now + 90)
    assert second.id == first.id
    assert await storage.deliveries.delivered(second, status=200, now=now + 32)
    assert not await storage.deliveries.retry(first, at=now + 40, status=503, error="late", now=now + 33)
    (row,) = (await storage.deliveries.listing(endpoint="all"))[0]
    assert (row["state"], row["attempts"], row["last_error"]) == ("delivered", 1, None)


async def test_a_delivery_being_made_is_not_replayed_under_it(storage: Storage) -> None:
    storage.db.subscriptions = (Subscription("all"),)
    await storage.messages.record_inbound(inbound("m1"))
    now = time.time()
    (claimed,) = await storage.deliveries.claim("all", limit=1, now=now, lease_until=now + 60)
    assert await storage.deliveries.replay(ids=[claimed.id], now=now) == []
    await storage.deliveries.delivered(claimed, status=200, now=now)
    assert await storage.deliveries.replay(ids=[claimed.id], now=now) == [claimed.id]  # a delivered one: sent again


async def test_only_real_contact_changes_are_events(storage: Storage) -> None:
    storage.db.subscriptions = (Subscription("all", ("contact.*",)),)
    first = await storage.messages.record_inbound(inbound("m1"))
    await storage.contacts.update(first.contact_id, {"name": "Ana"})  # as it is
    assert await recorded(storage) == []
    await storage.contacts.detected_language(first.contact_id, "pt")
    await storage.contacts.detected_language(first.contact_id, "pt")
    assert await recorded(storage) == [("contact.updated", first.contact_id)]


async def test_an_import_tells_of_the_contacts_it_creates_or_changes(storage: Storage) -> None:
    storage.db.subscriptions = (Subscription("all", ("contact.updated",)),)
    first = await storage.messages.record_inbound(inbound("m1"))
    rows = [ImportedContact(USER, name="Ana"), ImportedContact(OTHER, name="Bo")]
    await storage.contacts.import_contacts("sandbox", rows, now=time.time())
    (bo,) = [contact for _, contact in await recorded(storage)]
    assert bo != first.contact_id  # Ana is as she was: only Bo, new, is news
    await storage.contacts.import_contacts("sandbox", [ImportedContact(USER, tags=("vip",))], now=time.time())
    assert [contact for _, contact in await recorded(storage)] == [bo, first.contact_id]
